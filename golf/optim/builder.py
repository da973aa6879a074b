"""build_optimizers: parameter groups → one Muon (matrices) + one AdamW per Adam group (techniques.md §3.1).

The trainer drives the result as one object: step, zero_grad, the LR scale of §3.7 (one scale for every
group), the Muon momentum warmup, checkpointing, and a summary for the run log.

Muon options that OptimConfig may not define yet are read with these defaults (`_MUON_OPTION_DEFAULTS`):
muon_normuon=False, muon_normuon_beta2=0.95, muon_shape_scaling=True, muon_banks=True,
muon_distributed="allreduce".
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from golf.config import OptimConfig
from golf.optim.muon import Muon
from golf.optim.param_groups import ParamGroups, Rule, assign_param_groups, default_rules


class Optimizers:
    """The optimizers of one model. `muon` is None when no group is a Muon group; `adams` maps each
    non-empty Adam group's name to its AdamW. Every param group carries `base_lr` (its unscheduled lr)."""

    def __init__(self, groups: ParamGroups, muon: Muon | None, adams: dict[str, torch.optim.AdamW]):
        self.groups = groups
        self.muon = muon
        self.adams = adams

    @property
    def all(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimizer by its state_dict key: 'muon' and the Adam group names."""
        out: dict[str, torch.optim.Optimizer] = {"muon": self.muon} if self.muon is not None else {}
        out.update(self.adams)
        return out

    def step(self) -> None:
        """Adam steps run while sharded Muon's reduce-scatters are in flight (§3.11 phases 1-3); the parameter
        sets are disjoint, so the order changes nothing else."""
        if self.muon is not None:
            self.muon.launch_reduce_scatters()  # a no-op unless distributed="sharded" on several processes
        for opt in self.adams.values():
            opt.step()
        if self.muon is not None:
            self.muon.step()

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor | None:
        """Clip the global L2 norm of the rank-averaged gradients to `max_norm` (§3.8); returns the pre-clip norm
        (None when max_norm is 0).

        With sharded Muon on several ranks, DDP does not average the Muon gradients (their reduce-scatter
        does), so clipping local gradients would give every rank its own coefficient and the replicas of the
        Adam parameters would drift apart. The Muon part of the norm then comes from the averaged shards, and
        one coefficient, equal on every rank, scales the shards and every other gradient, as
        torch.nn.utils.clip_grad_norm_ would on one process.
        """
        muon_sq = self.muon.averaged_grad_sq_norm() if self.muon is not None and max_norm > 0 else None
        if muon_sq is None:
            return clip_grad_norm([p for opt in self.all.values() for g in opt.param_groups for p in g["params"]],
                                  max_norm)
        others = [p.grad for opt in self.adams.values() for g in opt.param_groups for p in g["params"]
                  if p.grad is not None]
        total_sq = muon_sq + sum((g.float().square().sum() for g in others), torch.zeros_like(muon_sq))
        norm = total_sq.sqrt()
        coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)  # clip_grad_norm_'s epsilon and clamp
        if others:
            torch._foreach_mul_(others, coef.to(others[0].device))
        self.muon.scale_averaged_grads(coef)
        return norm

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.all.values():
            opt.zero_grad(set_to_none=set_to_none)

    def set_lr_scale(self, scale: float) -> None:
        """lr = base_lr · scale in every group of every optimizer (§3.7: the records use one scale for all)."""
        for opt in self.all.values():
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * scale

    def set_muon_momentum(self, momentum: float) -> None:
        if not 0 <= momentum < 1:
            raise ValueError(f"set_muon_momentum: momentum={momentum} must be in [0, 1)")
        if self.muon is not None:
            for group in self.muon.param_groups:
                group["momentum"] = momentum

    def state_dict(self) -> dict[str, Any]:
        return {name: opt.state_dict() for name, opt in self.all.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.keys() != self.all.keys():
            raise ValueError(
                f"optimizer state has {sorted(state)} but this model's optimizers are {sorted(self.all)}; "
                f"the checkpoint was saved with other parameter groups"
            )
        for name, opt in self.all.items():
            opt.load_state_dict(state[name])

    def summary(self) -> dict[str, Any]:
        """Per group: kind, parameter and element counts, base lr, wd; plus the optimizers' settings."""
        out: dict[str, Any] = {"groups": self.groups.summary()}
        if self.muon is not None:
            g = self.muon.param_groups[0]
            keys = ("momentum", "nesterov", "ns_steps", "coefficients", "row_normalize", "normuon", "normuon_beta2",
                    "shape_scaling")
            out["muon"] = {k: g[k] for k in keys}
            out["muon"]["distributed"] = self.muon.distributed
            out["muon"]["banks"] = [b.describe() for b in self.muon.banks]
        if self.adams:
            g = next(iter(self.adams.values())).param_groups[0]
            out["adam"] = {"betas": list(g["betas"]), "eps": g["eps"], "fused": bool(g.get("fused"))}
        return out


def build_optimizers(model: nn.Module, cfg: OptimConfig, rules: list[Rule] | None = None) -> Optimizers:
    """Group `model`'s trainable parameters by `rules` (default: `default_rules(cfg)`) and build the optimizers.

    Muon takes cfg.muon_momentum (the warmup overwrites it per step), Nesterov, the NS settings and the options
    muon_* options; AdamW takes (adam_beta1, adam_beta2), adam_eps and the group's decoupled wd, fused only
    when every parameter is on CUDA.
    """
    groups = assign_param_groups(model.named_parameters(), rules if rules is not None else default_rules(cfg))
    muon_groups = [
        {"params": groups.params(g), "lr": groups.specs[g].lr, "base_lr": groups.specs[g].lr,
         "weight_decay": groups.specs[g].wd, "param_names": groups.names(g)}
        for g in groups.of_kind("muon")
    ]
    muon = None
    if muon_groups:
        muon = Muon(
            muon_groups,
            lr=cfg.matrix_lr,
            momentum=cfg.muon_momentum,
            nesterov=cfg.muon_nesterov,
            ns_steps=cfg.muon_ns_steps,
            coefficients=cfg.muon_coefficients,
            row_normalize=cfg.muon_row_normalize,
            normuon=cfg.muon_normuon,
            normuon_beta2=cfg.muon_normuon_beta2,
            shape_scaling=cfg.muon_shape_scaling,
            banks=cfg.muon_banks,
            distributed=cfg.muon_distributed,
        )
    adams = {}
    for g in groups.of_kind("adam"):
        params = groups.params(g)
        spec = groups.specs[g]
        adams[g] = torch.optim.AdamW(
            [{"params": params, "base_lr": spec.lr}],
            lr=spec.lr,
            betas=(cfg.adam_beta1, cfg.adam_beta2),
            eps=cfg.adam_eps,
            weight_decay=spec.wd,
            fused=all(p.is_cuda for p in params),
        )
    return Optimizers(groups, muon, adams)


def clip_grad_norm(params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor | None:
    """Clip the global L2 norm of the gradients to `max_norm` (§3.8) and return the pre-clip norm.

    max_norm = 0 disables clipping and returns None without touching (or reading) the gradients.
    """
    if max_norm < 0:
        raise ValueError(f"clip_grad_norm: max_norm={max_norm} must be >= 0 (0 disables clipping)")
    if max_norm == 0:
        return None
    grads = [p for p in params if p.grad is not None]
    return torch.nn.utils.clip_grad_norm_(grads, max_norm)
