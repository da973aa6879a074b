"""Parameter groups by ordered rules (techniques.md §3.1, §2.8; anchors-style.md §9 item 16).

A rule claims a parameter by name (regex, `re.search`) and/or by a predicate on the tensor; the first
matching rule wins and sends the parameter to its group (an optimizer kind with an lr and wd). Building
fails with a ValueError that lists every parameter no rule claims, so a new model feature can never
silently train with the wrong optimizer (or not at all).

Patterns are searched, not anchored to the start, so the same rules work on `model.named_parameters()`
of a plain, `torch.compile`d (`_orig_mod.`) or DDP-wrapped (`module.`) model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Literal

import torch

from golf.config import OptimConfig

GroupKind = Literal["muon", "adam"]

# Control tensors (§2.8): gains, mixes, gates and lambdas. They stay fp32 and train with the scalar Adam even
# when 2-D (resid_mix is (2, D), skip_weights is (num_skips, D)). Matched as regex fragments anywhere in the
# name, like the records' substring test. The model's fp32-restore policy should import this same tuple.
CONTROL_PATTERNS: tuple[str, ...] = (
    r"attn_scale",
    r"mlp_scale",
    r"resid_mix",
    r"q_gain",
    r"skip_weight",  # skip_weight, skip_weights
    r"skip_gate",
    r"smear",  # smear, smear_gate, smear_lambda
    r"bigram\.scale",
    r"ve_[^.]*scale",
    r"lambdas",  # parallel_*_lambdas
    r"attn_gate",
    r"gates",
)
CONTROL_RE = re.compile("|".join(f"(?:{p})" for p in CONTROL_PATTERNS))

# Token-embedding tables: the tied embedding and the extra embeddings trained at its LR (§3.1 "Token").
EMBED_RE = re.compile(r"(?:^|\.)(?:tok_emb|bigram\.embed|ve_shared\.embed)\.weight$")
# Matrices Muon orthogonalizes (§3.1 "Matrix"): 2-D weights inside blocks, the four 3-D banks of §2.18 and the
# non-bank projections of the extra embeddings. An untied head or anything new is left unclaimed on purpose.
MATRIX_RE = re.compile(
    r"(?:^|\.)(?:blocks\.\d+\..+\.weight|[a-z_]+_bank|bigram\.proj\.weight|ve_shared\.proj\.weight)$"
)
# The extra embeddings' projections: Muon matrices by default; the bank scripts (R0323) train them with the
# scalar Adam instead, which OptimConfig.aux_proj_optimizer="adam" selects.
AUX_PROJ_RE = re.compile(r"(?:^|\.)(?:bigram|ve_shared)\.proj\.weight$")


@dataclass(frozen=True)
class GroupSpec:
    """One optimizer group: its name (run log, state_dict key), the optimizer kind, base lr and decoupled wd."""

    name: str
    kind: GroupKind
    lr: float
    wd: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("muon", "adam"):
            raise ValueError(f"group {self.name!r}: kind={self.kind!r} must be 'muon' or 'adam'")
        if self.lr < 0 or self.wd < 0:
            raise ValueError(f"group {self.name!r}: lr={self.lr} and wd={self.wd} must be >= 0")


@dataclass(frozen=True)
class Rule:
    """Claims a parameter when its name matches `pattern` (if given) and `predicate(tensor)` holds (if given)."""

    group: GroupSpec
    pattern: str | None = None
    predicate: Callable[[torch.Tensor], bool] | None = None
    why: str = ""  # shown by `describe()`

    def __post_init__(self) -> None:
        if self.pattern is None and self.predicate is None:
            raise ValueError(f"rule for group {self.group.name!r} needs a pattern, a predicate or both")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as e:
                raise ValueError(f"rule for group {self.group.name!r}: bad regex {self.pattern!r}: {e}") from None

    def matches(self, name: str, p: torch.Tensor) -> bool:
        if self.pattern is not None and re.search(self.pattern, name) is None:
            return False
        return self.predicate is None or bool(self.predicate(p))


def default_rules(cfg: OptimConfig) -> list[Rule]:
    """The records' grouping (§3.1): embeddings → Adam, control tensors and ndim<2 → Adam, matrices → Muon.
    With cfg.aux_proj_optimizer == "adam", bigram.proj and ve_shared.proj go to the scalar Adam (R0323)."""
    embed = GroupSpec("adam_embed", "adam", cfg.embed_lr, cfg.embed_wd)
    scalar = GroupSpec("adam_scalar", "adam", cfg.scalar_lr, cfg.scalar_wd)
    muon = GroupSpec("muon", "muon", cfg.matrix_lr, cfg.muon_wd)
    aux = getattr(cfg, "aux_proj_optimizer", "muon")
    if aux not in ("muon", "adam"):
        raise ValueError(f"optim.aux_proj_optimizer={aux!r}: must be 'muon' or 'adam'")
    rules = [
        Rule(embed, pattern=EMBED_RE.pattern, why="token embedding tables"),
        Rule(scalar, pattern=CONTROL_RE.pattern, why="control tensors (§2.8), even when 2-D"),
        Rule(scalar, predicate=lambda p: p.ndim < 2, why="vectors and scalars"),
    ]
    if aux == "adam":
        rules.append(Rule(scalar, pattern=AUX_PROJ_RE.pattern, why="bigram/VE projections with the scalar Adam (R0323)"))
    rules.append(Rule(muon, pattern=MATRIX_RE.pattern, predicate=lambda p: p.ndim in (2, 3), why="block matrices, banks"))
    return rules


@dataclass
class ParamGroups:
    """The result of applying rules: for each group, its spec and its (name, parameter) pairs in model order."""

    specs: dict[str, GroupSpec]
    members: dict[str, list[tuple[str, torch.nn.Parameter]]]

    def params(self, group: str) -> list[torch.nn.Parameter]:
        return [p for _, p in self.members[group]]

    def names(self, group: str) -> list[str]:
        return [n for n, _ in self.members[group]]

    def of_kind(self, kind: GroupKind) -> list[str]:
        """Names of the non-empty groups of one optimizer kind, in rule order."""
        return [g for g, spec in self.specs.items() if spec.kind == kind and self.members[g]]

    def summary(self) -> dict[str, dict[str, object]]:
        """Per group: optimizer kind, parameter count, element count, base lr and wd (for the run log)."""
        return {
            g: {
                "kind": spec.kind,
                "params": len(self.members[g]),
                "numel": sum(p.numel() for _, p in self.members[g]),
                "lr": spec.lr,
                "wd": spec.wd,
            }
            for g, spec in self.specs.items()
        }


def assign_param_groups(named_params: Iterable[tuple[str, torch.nn.Parameter]], rules: list[Rule]) -> ParamGroups:
    """First matching rule wins. Frozen parameters (requires_grad=False) are skipped.

    Raises ValueError if any trainable parameter is unclaimed, or if two rules give one group name different
    settings.
    """
    specs: dict[str, GroupSpec] = {}
    for rule in rules:
        prev = specs.setdefault(rule.group.name, rule.group)
        if prev != rule.group:
            raise ValueError(f"rules disagree on group {rule.group.name!r}: {prev} vs {rule.group}; use one GroupSpec")
    members: dict[str, list[tuple[str, torch.nn.Parameter]]] = {g: [] for g in specs}
    unclaimed = []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        rule = next((r for r in rules if r.matches(name, p)), None)
        if rule is None:
            unclaimed.append(f"{name} {tuple(p.shape)}")
        else:
            members[rule.group.name].append((name, p))
    if unclaimed:
        raise ValueError(
            "no parameter-group rule claims: " + ", ".join(unclaimed) + ". Add a golf.optim.param_groups.Rule "
            "for them (a name regex and/or a tensor predicate) to the rules passed to build_optimizers"
        )
    return ParamGroups(specs, members)


def describe(rules: list[Rule]) -> list[str]:
    """One line per rule, in match order (for `golf info` and the run log)."""
    lines = []
    for i, r in enumerate(rules):
        parts = ([f"name ~ /{r.pattern}/"] if r.pattern else []) + (["predicate"] if r.predicate else [])
        g = r.group
        lines.append(f"{i}: {' and '.join(parts)} -> {g.name} ({g.kind}, lr={g.lr}, wd={g.wd}) {r.why}".rstrip())
    return lines
