"""Muon: momentum + Newton–Schulz orthogonalized updates for matrix parameters (techniques.md §3.2–§3.5, §3.11).

Per matrix W (a 2-D parameter, or each matrix of a 3-D parameter) with gradient G:

    b ← μ·b + G                                 momentum buffer, no dampening
    U ← G + μ·b  (Nesterov)   or   U ← b
    U ← U / max(‖U_row‖₂, 1e-7)                 MuonEq-R (§3.3), optional, in fp32
    O ← newton_schulz(U, steps, coefficients)   bf16 (§3.2 NS5 or §3.5 Polar Express)
    [NorMuon, optional: v ← β2·v + (1−β2)·mean_cols(O²) per row; Ô = O/√(v+ε); O ← Ô·‖O‖_F/‖Ô‖_F]
    O ← O · √max(1, rows/cols)                  shape scale (optional), from the trailing (rows, cols)
    W ← W·(1 − lr·wd)                           decoupled WD with the scheduled lr (§3.6)
    W ← W − lr·O

NorMuon is the paper's version (arXiv:2510.05491, techniques.md §3.4): a per-row second moment of the
post-NS update, with the result rescaled to Muon's Frobenius norm (so the same lr applies). No record uses
it: it is untested on this task.

Banks (golf.optim.banks): the matrices are grouped by shape inside the optimizer, and each bank's updates go
through one batched newton_schulz call (in one process, all banks through one newton_schulz_banks call, whose
kernels overlap on the GPU); the parameters themselves stay in the model's per-layer layout. The
result equals per-matrix Muon (`banks=False`) exactly wherever the batched NS computes each matrix as the
unbatched one does (the CPU reference does).

Distributed, with torch.distributed initialized and world_size > 1:
  distributed="allreduce" (§3.2 non-bank): the gradients are already averaged (DDP). Matrix i of the bank order
    is orthogonalized by rank i % world_size, which writes its bf16 update into a flat buffer that is zero
    elsewhere; one all_reduce(SUM) gives every rank every update. Adding zeros is exact, so every rank ends
    with single-process weights. Every rank advances every momentum buffer (replicated state); NorMuon's
    second moments live on the rank that owns the matrix.
  distributed="sharded" (§3.11 Parallel Muon, with banks as the optimizer-level view): the Muon gradients must
    NOT be averaged by DDP (`exclude_from_ddp`). `launch_reduce_scatters()` stacks each bank's local gradients
    into a zero-padded [ceil(n/ws)·ws, rows, cols] buffer and starts an async reduce_scatter(AVG), largest bank
    first; rank k receives the averaged gradients of matrices [k·s, (k+1)·s), s = ceil(n/ws). `step()` (which
    launches them itself if needed) then, per bank in the same order: waits for its reduce-scatter, updates the
    rank's momentum shard (and NorMuon shard), runs Nesterov / MuonEq-R / NS on the shard, starts an async
    all_gather of the bf16 updates, and applies the previous bank's gathered update. Padding matrices have
    zero gradients and so zero updates. The optimizer state is the rank's shards: the trainer's one optimizer
    file per rank holds them, and loading checks that rank and world size match. Every Muon parameter must have
    a gradient on every step. The reduce-scatter runs in the gradient dtype (fp32 for fp32 parameters: twice
    the records' bf16 bytes, and the same averaged gradient as single-process Muon). On gloo (CPU tests) torch
    implements reduce_scatter as an all-reduce and a slice; NCCL runs the real reduce_scatter.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Literal

import torch
import torch.distributed as dist

from golf.ops.newton_schulz import coefficient_schedule, newton_schulz, newton_schulz_banks
from golf.optim.banks import Bank, Slot, build_banks

ROW_NORM_EPS = 1e-7  # MuonEq-R floor on a row's L2 norm (§3.3)
NORMUON_EPS = 1e-8  # added to NorMuon's second moment before the square root
DISTRIBUTED_MODES = ("allreduce", "sharded")


def shape_scale(shape: torch.Size | tuple[int, ...]) -> float:
    """√max(1, rows/cols) from the trailing two dims: 1 for wide/square, 2 for a (2048, 512) up-projection."""
    rows, cols = shape[-2], shape[-1]
    return math.sqrt(max(1.0, rows / cols))


def normalize_rows(U: torch.Tensor) -> torch.Tensor:
    """MuonEq-R: divide every row of every matrix by max(its L2 norm, 1e-7), computed in fp32."""
    U32 = U.float()
    U32 = U32 / U32.norm(dim=-1, keepdim=True).clamp_min(ROW_NORM_EPS)
    return U32.to(U.dtype)


def normuon_rescale(O: torch.Tensor, v: torch.Tensor, beta2: float) -> torch.Tensor:
    """NorMuon: advance the per-row second moment v [..., rows] (fp32, in place) with O [..., rows, cols] and
    return O/√(v+ε) rescaled per matrix to O's Frobenius norm, in O's dtype. An all-zero O stays zero."""
    O32 = O.float()
    v.mul_(beta2).add_(O32.square().mean(dim=-1), alpha=1.0 - beta2)
    hat = O32 / (v + NORMUON_EPS).sqrt().unsqueeze(-1)
    ratio = O32.norm(dim=(-2, -1), keepdim=True) / hat.norm(dim=(-2, -1), keepdim=True).clamp_min(1e-30)
    return (hat * ratio).to(O.dtype)


def _after_ns(
    O: torch.Tensor, shape: torch.Size, normuon_v: torch.Tensor | None, normuon_beta2: float, shape_scaling: bool
) -> torch.Tensor:
    """Everything after NS: NorMuon's rescale (advancing normuon_v) and the shape scale of `shape`."""
    if normuon_v is not None:
        O = normuon_rescale(O, normuon_v, normuon_beta2)
    if shape_scaling:
        O.mul_(shape_scale(shape))
    return O


def orthogonalize(
    U: torch.Tensor,
    *,
    ns_steps: int,
    coefficients: str,
    row_normalize: bool,
    normuon_v: torch.Tensor | None = None,
    normuon_beta2: float = 0.95,
    shape_scaling: bool = True,
) -> torch.Tensor:
    """Everything after momentum, for U [rows, cols] or a stack [n, rows, cols]: the bf16 update O."""
    if row_normalize:
        U = normalize_rows(U)
    O = newton_schulz(U, steps=ns_steps, coefficients=coefficients)
    return _after_ns(O, U.shape, normuon_v, normuon_beta2, shape_scaling)


def muon_update(
    grad: torch.Tensor,
    momentum_buffer: torch.Tensor,
    *,
    momentum: float,
    nesterov: bool,
    ns_steps: int,
    coefficients: str,
    row_normalize: bool,
    normuon_v: torch.Tensor | None = None,
    normuon_beta2: float = 0.95,
    shape_scaling: bool = True,
) -> torch.Tensor:
    """Advance `momentum_buffer` in place and return the bf16 update O for `grad`.

    grad, momentum_buffer: [rows, cols] or [B, rows, cols] (each matrix handled on its own); normuon_v: the
    NorMuon second moment [rows] or [B, rows] (advanced in place), None for plain Muon.
    """
    momentum_buffer.mul_(momentum).add_(grad)
    U = grad.add(momentum_buffer, alpha=momentum) if nesterov else momentum_buffer
    return orthogonalize(U, ns_steps=ns_steps, coefficients=coefficients, row_normalize=row_normalize,
                         normuon_v=normuon_v, normuon_beta2=normuon_beta2, shape_scaling=shape_scaling)


def _dist_world() -> tuple[int, int]:
    """(rank, world_size) of the default process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _reduce_scatter_avg(out: torch.Tensor, inp: torch.Tensor):
    # torch 2.13 renamed reduce_scatter_tensor to reduce_scatter_single; the GPU machine's 2.11 has only the former.
    fn = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    return fn(out, inp, op=dist.ReduceOp.AVG, async_op=True)


def _all_gather(out: torch.Tensor, inp: torch.Tensor):
    fn = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    return fn(out, inp, async_op=True)


class Muon(torch.optim.Optimizer):
    """Muon for 2-D matrices and 3-D stacks of matrices. Every per-group option can be changed between steps
    through `param_groups` (the trainer sets the warmed-up `momentum` and the scheduled `lr` this way).

    banks: batch same-shape matrices into one Newton–Schulz call (False: one call per parameter).
    distributed: "allreduce" or "sharded" (module docstring); ignored without a process group of size > 1.
    """

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
        normuon: bool = False,
        normuon_beta2: float = 0.95,
        shape_scaling: bool = True,
        banks: bool = True,
        distributed: Literal["allreduce", "sharded"] = "allreduce",
    ):
        if distributed not in DISTRIBUTED_MODES:
            raise ValueError(f"Muon: distributed={distributed!r}: use one of {DISTRIBUTED_MODES}")
        defaults = dict(
            lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps, coefficients=coefficients,
            weight_decay=weight_decay, row_normalize=row_normalize, normuon=normuon, normuon_beta2=normuon_beta2,
            shape_scaling=shape_scaling,
        )
        self.distributed = distributed
        self.use_banks = bool(banks)
        self._shards: dict[int, dict[str, torch.Tensor]] = {}  # sharded mode: bank index -> this rank's state
        self._buffers: dict[tuple, torch.Tensor] = {}  # sharded mode: communication buffers kept across steps
        self._pending: list | None = None  # sharded mode: reduce-scatters in flight, one per bank
        self._grad_scale: torch.Tensor | float | None = None  # sharded mode: this step's clip factor
        super().__init__(params, defaults)
        self.banks: list[Bank] = build_banks(self.param_groups, enabled=self.use_banks)
        rank, world_size = _dist_world()
        if distributed == "sharded" and world_size > 1:
            # DDP does not broadcast the parameters it ignores; start every rank from rank 0's weights.
            for p in self._all_params():
                dist.broadcast(p.detach(), src=0)

    def _all_params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        _check_group(self.param_groups[-1], len(self.param_groups) - 1)
        if hasattr(self, "banks"):  # a group added after construction
            if self._shards:
                raise ValueError("Muon: cannot add a param group after a sharded step; build Muon with every group")
            self.banks = build_banks(self.param_groups, enabled=self.use_banks)
            self._buffers.clear()

    # -- the step ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        rank, world_size = _dist_world()
        if world_size == 1:
            self._step_local()
        elif self.distributed == "sharded":
            self._step_sharded(rank, world_size)
        else:
            self._step_allreduce(rank, world_size)
        return loss

    def _buffer(self, p: torch.Tensor) -> torch.Tensor:
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p)
        return state["momentum_buffer"]

    def _normuon_v(self, p: torch.Tensor) -> torch.Tensor:
        state = self.state[p]
        if "normuon_v" not in state:
            state["normuon_v"] = torch.zeros(p.shape[:-1], device=p.device, dtype=torch.float32)
        return state["normuon_v"]

    def _advance(self, params: list[torch.Tensor], group: dict[str, Any]) -> list[torch.Tensor]:
        """b ← μ·b + G for each parameter (one fused launch per list on CUDA); returns the buffers."""
        bufs = [self._buffer(p) for p in params]
        torch._foreach_mul_(bufs, group["momentum"])
        torch._foreach_add_(bufs, [p.grad for p in params])
        return bufs

    def _nesterov(self, params: list[torch.Tensor], group: dict[str, Any]) -> dict[int, torch.Tensor]:
        """Advance the momentum buffers of `params`; return U (parameter-shaped) by id(param)."""
        bufs = self._advance(params, group)
        grads = [p.grad for p in params]
        us = torch._foreach_add(grads, bufs, alpha=group["momentum"]) if group["nesterov"] else bufs
        return {id(p): u for p, u in zip(params, us)}

    def _stack_u(self, bi: int, slots: list[Slot], us: dict[int, torch.Tensor]) -> torch.Tensor:
        """NS's input [len(slots), rows, cols] for `slots` of bank `bi`: their U stacked (and MuonEq-R'd)."""
        U = torch.stack([s.view(us[id(s.param)]) for s in slots])  # [n, rows, cols]
        return normalize_rows(U) if self.param_groups[self.banks[bi].group]["row_normalize"] else U

    def _finish_slots(self, bi: int, slots: list[Slot], O: torch.Tensor) -> torch.Tensor:
        """NorMuon (advancing its state) and the shape scale on the NS output O [len(slots), rows, cols]."""
        group = self.param_groups[self.banks[bi].group]
        v = None
        if group["normuon"]:
            v = torch.stack([s.view(self._normuon_v(s.param)) for s in slots])  # [n, rows]
        O = _after_ns(O, O.shape, v, group["normuon_beta2"], group["shape_scaling"])
        if v is not None:
            torch._foreach_copy_([s.view(self._normuon_v(s.param)) for s in slots], list(v.unbind(0)))
        return O

    def _orthogonalize_slots(self, bi: int, slots: list[Slot], us: dict[int, torch.Tensor]) -> torch.Tensor:
        """The bf16 updates [len(slots), rows, cols] of `slots` of bank `bi` from their U; advances NorMuon state."""
        group = self.param_groups[self.banks[bi].group]
        O = newton_schulz(self._stack_u(bi, slots, us), steps=group["ns_steps"], coefficients=group["coefficients"])
        return self._finish_slots(bi, slots, O)

    def _step_local(self) -> None:
        """Every bank's NS input first, then one newton_schulz_banks call per NS setting (the banks' kernels
        overlap on the GPU), then the updates."""
        work: dict[tuple[int, str], list[tuple[int, list[Slot], torch.Tensor]]] = {}
        for bi, bank in enumerate(self.banks):
            group = self.param_groups[bank.group]
            slots = [s for s in bank.slots if s.param.grad is not None]
            if not slots:
                continue
            U = self._stack_u(bi, slots, self._nesterov(_params_of(slots), group))
            work.setdefault((group["ns_steps"], group["coefficients"]), []).append((bi, slots, U))
        for (steps, coefficients), items in work.items():
            Os = newton_schulz_banks([U for _, _, U in items], steps=steps, coefficients=coefficients)
            for (bi, slots, _), O in zip(items, Os):
                _apply(slots, self._finish_slots(bi, slots, O), self.param_groups[self.banks[bi].group])

    def _step_allreduce(self, rank: int, world_size: int) -> None:
        """Gradients already averaged by DDP; matrix i (bank order) is orthogonalized by rank i % world_size."""
        total = sum(bank.numel for bank in self.banks)
        device = self.banks[0].slots[0].param.device if self.banks else torch.device("cpu")
        flat = torch.zeros(total, dtype=torch.bfloat16, device=device)  # [all matrices, flattened]
        offset, index = 0, 0
        for bi, bank in enumerate(self.banks):
            group = self.param_groups[bank.group]
            have = [j for j, s in enumerate(bank.slots) if s.param.grad is not None]
            mine = [j for j in have if (index + j) % world_size == rank]
            own_slots = [bank.slots[j] for j in mine]
            us = self._nesterov(_params_of(own_slots), group) if own_slots else {}
            # Keep every momentum buffer in step on every rank (replicated state, see the module docstring).
            rest = [p for p in _params_of([bank.slots[j] for j in have]) if id(p) not in us]
            if rest:
                self._advance(rest, group)
            if own_slots:
                O = self._orthogonalize_slots(bi, own_slots, us)
                view = flat[offset : offset + bank.numel].view(bank.size, *bank.shape)  # [n, rows, cols]
                view[torch.tensor(mine, device=device)] = O
            offset += bank.numel
            index += bank.size
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for bank in self.banks:
            view = flat[offset : offset + bank.numel].view(bank.size, *bank.shape)
            have = [j for j, s in enumerate(bank.slots) if s.param.grad is not None]
            if have:
                _apply([bank.slots[j] for j in have], view[have] if len(have) < bank.size else view,
                       self.param_groups[bank.group])
            offset += bank.numel

    # -- sharded (Parallel Muon) ---------------------------------------------------------------------------
    def _persistent(self, key: tuple, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A zero-initialized buffer kept across steps (padding rows stay zero: nothing ever writes them)."""
        buf = self._buffers.get(key)
        if buf is None or tuple(buf.shape) != shape or buf.dtype != dtype:
            buf = self._buffers[key] = torch.zeros(shape, dtype=dtype, device=device)
        return buf

    def launch_reduce_scatters(self) -> None:
        """Start the async reduce-scatter(AVG) of every bank's local gradients, largest bank first.

        Call right after backward so the Adam steps overlap the communication; `step()` calls it if nobody did.
        A no-op unless distributed="sharded" with world_size > 1, or when already launched for this step.
        """
        rank, world_size = _dist_world()
        if self.distributed != "sharded" or world_size == 1 or self._pending is not None:
            return
        pending = []
        for bi, bank in enumerate(self.banks):
            missing = [s.name for s in bank.slots if s.param.grad is None]
            if missing:
                raise ValueError(
                    f"Muon(distributed='sharded'): {missing[:4]} have no gradient; every rank must reduce-scatter "
                    f"whole banks, so every Muon parameter needs a gradient each step (freeze unused parameters "
                    f"or use distributed='allreduce')"
                )
            grads = [s.view(s.param.grad) for s in bank.slots]
            s_ = bank.shard_size(world_size)
            full = self._persistent(("rs_in", bi), (s_ * world_size, *bank.shape), grads[0].dtype, grads[0].device)
            torch.stack(grads, out=full[: bank.size])
            shard = self._persistent(("rs_out", bi), (s_, *bank.shape), grads[0].dtype, grads[0].device)
            pending.append((_reduce_scatter_avg(shard, full), shard))
        self._pending = pending

    def averaged_grad_sq_norm(self) -> torch.Tensor | None:
        """Sharded mode on several ranks: the squared L2 norm of the Muon gradients averaged over ranks, equal
        on every rank (the reduce-scatters are launched and waited for, each rank sums the squares of its
        shards, one all-reduce adds them; padding matrices are zero). None in every other mode, where DDP has
        already averaged the gradients and a local norm is the global one."""
        _, world_size = _dist_world()
        if self.distributed != "sharded" or world_size == 1:
            return None
        self.launch_reduce_scatters()
        total = None
        for work, shard in self._pending:
            work.wait()
            sq = shard.float().square().sum()
            total = sq if total is None else total + sq
        if total is None:
            return None
        dist.all_reduce(total)
        return total

    def scale_averaged_grads(self, factor: torch.Tensor | float) -> None:
        """Scale this step's reduce-scattered (averaged) gradients by `factor` (gradient clipping). Applied
        when `step()` reads them, not in place: a backend may fill the shard buffer again when waited on."""
        if self._pending is None:
            raise ValueError("Muon.scale_averaged_grads: no reduce-scatter of this step; "
                             "call averaged_grad_sq_norm first")
        self._grad_scale = factor

    def _shard_state(self, bi: int, like: torch.Tensor, normuon: bool) -> dict[str, torch.Tensor]:
        st = self._shards.setdefault(bi, {})
        if "momentum" not in st:
            st["momentum"] = torch.zeros_like(like)  # [s, rows, cols]
        if normuon and "normuon_v" not in st:
            st["normuon_v"] = torch.zeros(like.shape[:-1], device=like.device, dtype=torch.float32)  # [s, rows]
        return st

    def _step_sharded(self, rank: int, world_size: int) -> None:
        if self._pending is None:
            self.launch_reduce_scatters()
        pending, self._pending = self._pending, None
        scale, self._grad_scale = self._grad_scale, None
        previous = None
        for bi, (bank, (work, g)) in enumerate(zip(self.banks, pending)):
            group = self.param_groups[bank.group]
            work.wait()
            if scale is not None:
                g = g * scale
            st = self._shard_state(bi, g, group["normuon"])
            mom = st["momentum"]
            mom.mul_(group["momentum"]).add_(g)
            U = g.add(mom, alpha=group["momentum"]) if group["nesterov"] else mom
            O = orthogonalize(U, ns_steps=group["ns_steps"], coefficients=group["coefficients"],
                              row_normalize=group["row_normalize"], normuon_v=st.get("normuon_v"),
                              normuon_beta2=group["normuon_beta2"], shape_scaling=group["shape_scaling"])
            gathered = self._persistent(("ag", bi), (g.shape[0] * world_size, *bank.shape), O.dtype, O.device)
            O = O.contiguous()
            handle = _all_gather(gathered, O)
            if previous is not None:
                _finish(*previous)
            previous = (bank, handle, gathered, group, O)  # O stays referenced until its all-gather is waited on
        if previous is not None:
            _finish(*previous)

    # -- checkpoints ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """torch's optimizer state plus, in sharded mode, this rank's momentum / NorMuon shards per bank."""
        sd = super().state_dict()
        rank, world_size = _dist_world()
        if self.distributed == "sharded" and (world_size > 1 or self._shards):
            sd["muon_shards"] = {
                "rank": rank,
                "world_size": world_size,
                "banks": [[bank.size, *bank.shape] for bank in self.banks],
                "state": [dict(self._shards.get(bi, {})) for bi in range(len(self.banks))],
            }
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        shards = state_dict.pop("muon_shards", None)
        rank, world_size = _dist_world()
        sharded = self.distributed == "sharded" and world_size > 1
        if sharded and shards is None and state_dict.get("state"):
            raise ValueError("Muon(distributed='sharded'): this optimizer state holds per-parameter Muon state "
                             "(saved with distributed='allreduce' or by one process); resume with the settings and "
                             "process count of the run that saved it")
        if shards is not None:
            banks = [[bank.size, *bank.shape] for bank in self.banks]
            saved = [list(b) for b in shards["banks"]]
            if (shards["rank"], shards["world_size"]) != (rank, world_size) or saved != banks:
                raise ValueError(
                    f"Muon: the sharded state was saved by rank {shards['rank']} of {shards['world_size']} with banks "
                    f"{saved}; this is rank {rank} of {world_size} with banks {banks}. Resume with the same number "
                    f"of processes and the same model"
                )
        super().load_state_dict(state_dict)
        self._pending = None
        self._shards = {}
        if shards is not None:
            for bi, st in enumerate(shards["state"]):
                if st:
                    device = self.banks[bi].slots[0].param.device
                    self._shards[bi] = {k: v.to(device) for k, v in st.items()}


def _params_of(slots: list[Slot]) -> list[torch.Tensor]:
    """The distinct parameters behind `slots`, in slot order."""
    return Bank(0, (0, 0), slots).params()


def _finish(bank: Bank, handle, gathered: torch.Tensor, group: dict[str, Any], sent: torch.Tensor) -> None:
    handle.wait()
    del sent
    _apply(bank.slots, gathered[: bank.size], group)


def _apply(slots: list[Slot], O: torch.Tensor, group: dict[str, Any]) -> None:
    """W ← W·(1 − lr·wd) − lr·O for each slot's matrix; O [len(slots), rows, cols]."""
    lr, wd = group["lr"], group["weight_decay"]
    mats = [s.view(s.param) for s in slots]
    if wd:
        torch._foreach_mul_(mats, 1.0 - lr * wd)
    torch._foreach_add_(mats, list(O.to(mats[0].dtype).unbind(0)), alpha=-lr)


def exclude_from_ddp(module: torch.nn.Module, muon: Muon) -> list[str]:
    """Tell DDP not to average (or broadcast) Muon's parameters: call on the module about to be wrapped by
    DistributedDataParallel (the compiled wrapper if that is what DDP gets), before wrapping. Returns the names.
    For distributed="sharded", whose reduce-scatter averages those gradients itself."""
    ours = {id(p) for p in muon._all_params()}
    names = [n for n, p in module.named_parameters() if id(p) in ours]
    if len(names) != len(ours):
        raise ValueError(f"exclude_from_ddp: found {len(names)} of Muon's {len(ours)} parameters in the module; "
                         "pass the module whose parameters Muon updates (the one DDP will wrap)")
    torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, names)
    return names


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
    if not 0 <= group["normuon_beta2"] < 1:
        raise ValueError(f"Muon: normuon_beta2={group['normuon_beta2']} must be in [0, 1)")
    coefficient_schedule(group["coefficients"], group["ns_steps"])  # raises ValueError on an unknown set
