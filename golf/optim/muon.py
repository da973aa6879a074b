"""Muon: momentum + Newton–Schulz orthogonalized updates for matrix parameters (techniques.md §3.2–§3.5).

Per matrix W (a 2-D parameter, or each matrix of a 3-D bank [B, rows, cols]) with gradient G:

    b ← μ·b + G                                 momentum buffer, no dampening
    U ← G + μ·b  (Nesterov)   or   U ← b
    U ← U / max(‖U_row‖₂, 1e-7)                 MuonEq-R (§3.3), optional, in fp32
    O ← newton_schulz(U, steps, coefficients)   bf16 (§3.2 NS5 or §3.5 Polar Express)
    O ← O · √max(1, rows/cols)                  shape scale, from the trailing (rows, cols)
    W ← W·(1 − lr·wd)                           decoupled WD with the scheduled lr (§3.6)
    W ← W − lr·O

Distributed (§3.2 "Distributed, non-bank"): with torch.distributed initialized and world_size > 1 the
gradients are assumed already averaged (DDP). Parameter i is orthogonalized only by rank i % world_size,
which writes its bf16 update into a flat buffer that is zero elsewhere; one all_reduce(SUM) gives every
rank every update and every rank applies all of them. Adding zeros is exact, so every rank ends with the
same weights as a single process. Unlike the records, every rank also advances every momentum buffer
(the averaged gradients are identical on all ranks and the buffer update is cheap next to NS), so the
optimizer state is replicated and rank 0's state_dict is a complete checkpoint.

The banked Parallel Muon of §3.11 (reduce-scatter of bank gradients, sharded momentum, all-gather of
updates) is a different step schedule built from the same per-matrix math: `muon_update` below works on
any [.., rows, cols] slice of a bank, so that path only needs its own communication around it.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch
import torch.distributed as dist

from golf.ops.newton_schulz import coefficient_schedule, newton_schulz

ROW_NORM_EPS = 1e-7  # MuonEq-R floor on a row's L2 norm (§3.3)


def shape_scale(shape: torch.Size | tuple[int, ...]) -> float:
    """√max(1, rows/cols) from the trailing two dims: 1 for wide/square, 2 for a (2048, 512) up-projection."""
    rows, cols = shape[-2], shape[-1]
    return math.sqrt(max(1.0, rows / cols))


def normalize_rows(U: torch.Tensor) -> torch.Tensor:
    """MuonEq-R: divide every row of every matrix by max(its L2 norm, 1e-7), computed in fp32."""
    U32 = U.float()
    U32 = U32 / U32.norm(dim=-1, keepdim=True).clamp_min(ROW_NORM_EPS)
    return U32.to(U.dtype)


def muon_update(
    grad: torch.Tensor,
    momentum_buffer: torch.Tensor,
    *,
    momentum: float,
    nesterov: bool,
    ns_steps: int,
    coefficients: str,
    row_normalize: bool,
) -> torch.Tensor:
    """Advance `momentum_buffer` in place and return the shape-scaled bf16 update O for `grad`.

    grad, momentum_buffer: [rows, cols] or [B, rows, cols] (each matrix handled on its own).
    """
    momentum_buffer.mul_(momentum).add_(grad)
    U = grad.add(momentum_buffer, alpha=momentum) if nesterov else momentum_buffer
    if row_normalize:
        U = normalize_rows(U)
    O = newton_schulz(U, steps=ns_steps, coefficients=coefficients)
    return O.mul_(shape_scale(grad.shape))


def _dist_world() -> tuple[int, int]:
    """(rank, world_size) of the default process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Muon(torch.optim.Optimizer):
    """Muon for 2-D matrices and 3-D banks of matrices. Every per-group option can be changed between steps
    through `param_groups` (the trainer sets the warmed-up `momentum` and the scheduled `lr` this way)."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float,
        nesterov: bool = True,
        ns_steps: int = 5,
        coefficients: str = "ns5",
        weight_decay: float = 0.0,
        row_normalize: bool = False,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            ns_steps=ns_steps,
            coefficients=coefficients,
            weight_decay=weight_decay,
            row_normalize=row_normalize,
        )
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        _check_group(group, len(self.param_groups) - 1)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        rank, world_size = _dist_world()
        if world_size > 1:
            self._step_distributed(rank, world_size)
        else:
            self._step_local()
        return loss

    def _buffer(self, p: torch.Tensor) -> torch.Tensor:
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p)
        return state["momentum_buffer"]

    def _update(self, p: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        return muon_update(
            p.grad,
            self._buffer(p),
            momentum=group["momentum"],
            nesterov=group["nesterov"],
            ns_steps=group["ns_steps"],
            coefficients=group["coefficients"],
            row_normalize=group["row_normalize"],
        )

    def _step_local(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                O = self._update(p, group)
                _apply(p, O, group)

    def _step_distributed(self, rank: int, world_size: int) -> None:
        """§3.2 non-bank: gradients already averaged by DDP. (Banks sharded over ranks, §3.11, need a
        reduce-scatter of raw gradients instead and will get their own step built on `muon_update`.)"""
        # One flat layout over every parameter of every group, identical on all ranks, so a single
        # all_reduce moves all updates. Parameters without a gradient keep a (zero) slot.
        params = [(p, group) for group in self.param_groups for p in group["params"]]
        total = sum(p.numel() for p, _ in params)
        device = params[0][0].device if params else torch.device("cpu")
        flat = torch.zeros(total, dtype=torch.bfloat16, device=device)
        offset = 0
        for i, (p, group) in enumerate(params):
            if p.grad is not None:
                if i % world_size == rank:
                    flat[offset : offset + p.numel()] = self._update(p, group).flatten()
                else:
                    self._advance_momentum_only(p, group)
            offset += p.numel()
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p, group in params:
            if p.grad is not None:
                _apply(p, flat[offset : offset + p.numel()].view_as(p), group)
            offset += p.numel()

    def _advance_momentum_only(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        """Keep this rank's copy of a buffer it does not own in step with the owner's (see module doc)."""
        self._buffer(p).mul_(group["momentum"]).add_(p.grad)


def _apply(p: torch.Tensor, O: torch.Tensor, group: dict[str, Any]) -> None:
    lr, wd = group["lr"], group["weight_decay"]
    if wd:
        p.mul_(1.0 - lr * wd)
    p.add_(O.to(p.dtype), alpha=-lr)


def _check_group(group: dict[str, Any], index: int) -> None:
    """Fail at construction, not at the first step, on settings or parameters Muon cannot handle."""
    names = group.get("param_names")
    for j, p in enumerate(group["params"]):
        if p.ndim not in (2, 3):
            who = repr(names[j]) if names else f"parameter {j} of group {index}"
            raise ValueError(
                f"Muon: {who} has shape {tuple(p.shape)}; Muon orthogonalizes matrices [rows, cols] or banks "
                f"[B, rows, cols] only. Put vectors, scalars and control tensors in an Adam group "
                f"(golf.optim.param_groups rules)"
            )
        if p.is_sparse:
            raise ValueError(f"Muon: parameter {j} of group {index} is sparse; Muon needs dense gradients")
    if group["lr"] < 0:
        raise ValueError(f"Muon: lr={group['lr']} must be >= 0")
    if not 0 <= group["momentum"] < 1:
        raise ValueError(f"Muon: momentum={group['momentum']} must be in [0, 1)")
    if group["weight_decay"] < 0:
        raise ValueError(f"Muon: weight_decay={group['weight_decay']} must be >= 0")
    if not isinstance(group["ns_steps"], int) or group["ns_steps"] < 0:
        raise ValueError(f"Muon: ns_steps={group['ns_steps']!r} must be an integer >= 0")
    coefficient_schedule(group["coefficients"], group["ns_steps"])  # raises ValueError on an unknown set
