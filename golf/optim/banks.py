"""Parameter banks as an optimizer-level view (techniques.md §3.11, performance.md §A.6).

The records store same-shape matrices as one 3-D parameter so that one batched Newton–Schulz call serves all
of them. golf keeps the model's per-layer parameters in the reference layout (checkpoints, quantization and
export never see a bank) and builds the banks inside Muon instead: a bank is a list of slots, each one
[rows, cols] matrix (a 2-D parameter, or one matrix of a 3-D parameter), all of one shape, dtype and device and
from one param group (so one set of settings applies to the whole bank). Muon stacks a bank's updates into one
[n, rows, cols] tensor, orthogonalizes it with one call and scatters the result back into the parameters.

Order: banks are sorted by size (elements), largest first, and ties keep the order of first appearance (group,
then parameter order). It depends only on the param groups, so every rank of a distributed run builds the same
banks in the same order, which is what lets them issue their collectives in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(eq=False)
class Slot:
    """One matrix of a bank: parameter `param` itself (index None) or its matrix `index` (a 3-D parameter)."""

    param: torch.Tensor
    index: int | None
    name: str

    def view(self, t: torch.Tensor) -> torch.Tensor:
        """The [rows, cols] part of `t`, a tensor shaped like the parameter (the parameter, its grad, a buffer)."""
        return t if self.index is None else t[self.index]


@dataclass(eq=False)
class Bank:
    """Same-shape matrices of one param group, updated by one batched Newton–Schulz call."""

    group: int  # index into the optimizer's param_groups
    shape: tuple[int, int]  # (rows, cols) of every slot
    slots: list[Slot] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.slots)

    @property
    def numel(self) -> int:
        return self.size * self.shape[0] * self.shape[1]

    def params(self) -> list[torch.Tensor]:
        """The distinct parameters behind the slots, in slot order."""
        seen: dict[int, torch.Tensor] = {}
        for s in self.slots:
            seen.setdefault(id(s.param), s.param)
        return list(seen.values())

    def shard_size(self, world_size: int) -> int:
        """Matrices per rank when the bank is split over `world_size` ranks: ceil(n / world_size)."""
        return -(-self.size // world_size)

    def shard(self, rank: int, world_size: int) -> range:
        """Slot indices owned by `rank`: a contiguous block of shard_size (fewer or none at the end)."""
        s = self.shard_size(world_size)
        return range(min(rank * s, self.size), min((rank + 1) * s, self.size))

    def describe(self) -> str:
        return f"{self.size} x {self.shape[0]}x{self.shape[1]}"


def build_banks(param_groups: list[dict[str, Any]], *, enabled: bool = True) -> list[Bank]:
    """Banks of the matrices in `param_groups` (each group's "params", optional "param_names").

    enabled=False gives one bank per parameter (a 2-D parameter alone, a 3-D parameter's matrices together):
    the per-matrix Muon that banks must reproduce.
    """
    banks: list[Bank] = []
    for gi, group in enumerate(param_groups):
        names = group.get("param_names")
        by_key: dict[tuple, Bank] = {}
        for j, p in enumerate(group["params"]):
            name = names[j] if names else f"group {gi} parameter {j}"
            if p.ndim not in (2, 3):
                raise ValueError(f"build_banks: {name!r} has shape {tuple(p.shape)}; banks hold matrices only")
            shape = (int(p.shape[-2]), int(p.shape[-1]))
            if enabled:
                key = (shape, p.dtype, p.device)
                if key not in by_key:
                    by_key[key] = Bank(gi, shape)
                    banks.append(by_key[key])
                bank = by_key[key]
            else:
                bank = Bank(gi, shape)
                banks.append(bank)
            if p.ndim == 2:
                bank.slots.append(Slot(p, None, name))
            else:
                bank.slots.extend(Slot(p, i, f"{name}[{i}]") for i in range(p.shape[0]))
    banks = [b for b in banks if b.size]
    banks.sort(key=lambda b: -b.numel)  # stable: equal sizes keep their first-appearance order
    return banks
