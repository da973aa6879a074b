"""GPTQ Hessians: H = mean over calibration batches of X^T X, per quantizable weight (techniques.md §4.7).

X [tokens, in_features] is the fp32 input that multiplies a weight in the model's forward, reported by
`model.linear_inputs(callback)` (golf.model.GPT) under the weight's state-dict name: c_q/c_k/c_v share the
normalized attention input, attn.proj gets the attention output, mlp.fc the normalized MLP input, mlp.proj
the activation, tok_emb.weight (tied head) the final-norm output. A weight reached twice in one forward
(depth recurrence) adds both inputs. Under torchrun, `collect_hessians_over_ranks` lets every rank calibrate
on its own share of the batches and averages the sums over ranks.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from golf.quant.gptq import fp32_matmuls


_MM_OUT_DTYPE = {"ok": True}


def xtx_fp32(x: Tensor) -> Tensor:
    """X^T X in fp32 for X [N, cols].

    A bf16 or fp16 X on CUDA runs on the tensor cores with fp32 output (`torch.mm(..., out_dtype=)`): 15x
    faster than the fp32 SIMT matmul on the H200 (0.62 vs 9.16 ms for a [98,304, 1536] batch,
    benchmarks/bench_hessian.py), the fp32 X^T X of the MLP down projections' inputs being most of a
    calibration. It is less exact: the tensor cores' fp32 accumulation left about 2e-5 of max |H| of error
    against fp64 where the fp32 path left 2e-6, far below the 1 % damping GPTQ adds (tests/test_gptq.py checks
    that GPTQ's codes do not change beyond rounding cascades). fp32 X (and the CPU) take the true fp32 matmul:
    autocast would turn it into bf16, and a trainer's TF32 setting would round its inputs.
    """
    with torch.autocast(x.device.type, enabled=False):
        if x.is_cuda and x.dtype in (torch.bfloat16, torch.float16) and _MM_OUT_DTYPE["ok"]:
            try:
                return torch.mm(x.T, x, out_dtype=torch.float32)
            except (TypeError, RuntimeError):  # a torch without aten::mm.dtype: the fp32 path from now on
                _MM_OUT_DTYPE["ok"] = False
        with fp32_matmuls():
            x32 = x.float()
            return x32.T @ x32


class _HessianSums:
    """The callback given to model.linear_inputs: adds X^T X (fp32, on `device`) per weight name."""

    def __init__(self, device: torch.device):
        self.device = device
        self.sums: dict[str, Tensor] = {}
        # c_q, c_k and c_v receive the very same tensor: its X^T X is computed once and added three times.
        self._last: tuple[Tensor, int, Tensor] | None = None

    def __call__(self, name: str, x: Tensor) -> None:
        last = self._last
        if last is not None and last[0] is x and last[1] == x._version:
            xtx = last[2]
        else:
            xtx = xtx_fp32(x.detach().reshape(-1, x.shape[-1]).to(self.device))
            self._last = (x, x._version, xtx)
        acc = self.sums.get(name)
        if acc is None:
            self.sums[name] = xtx.clone()
        else:
            if acc.shape != xtx.shape:
                raise ValueError(f"{name}: its input width changed between calls ({acc.shape[0]} vs {xtx.shape[0]})")
            acc += xtx


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def collect_hessians(
    model: nn.Module, batches: Iterable[Tensor], *, device: torch.device | str | None = None
) -> dict[str, Tensor]:
    """{weight name: H fp32 [in_features, in_features]} averaged over the batches.

    model: has `linear_inputs(callback)` (golf.model.GPT); its forward runs as `model.logits(ids)` when it
    has one (no loss needed), else `model(ids)`. batches: input_ids [B, T] tensors (or (inputs, targets)
    pairs). device: where the batches run and H accumulates; default the model's device. Runs under
    torch.no_grad in eval mode (the model's mode is restored). To calibrate in bf16 as training runs, call
    it inside torch.autocast: X is upcast to fp32 before X^T X either way.
    """
    sums, num_batches = _collect_sums(model, batches, device)
    if num_batches == 0:
        raise ValueError("collect_hessians got no calibration batches; set quant.calib_batches > 0")
    return {name: h.div_(num_batches) for name, h in sums.items()}


def collect_hessians_over_ranks(
    model: nn.Module, batches: Iterable[Tensor], *, device: torch.device | str | None = None
) -> dict[str, Tensor]:
    """collect_hessians where every rank of the default process group passes its own batches: the result,
    equal on every rank, is the mean over all ranks' batches (each rank's X^T X sums and batch count are
    all-reduced, weights in sorted name order). Without a process group it is collect_hessians.
    Every rank needs at least one batch (each must report the same weights)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return collect_hessians(model, batches, device=device)
    sums, num_batches = _collect_sums(model, batches, device)
    if num_batches == 0:
        raise ValueError(f"rank {dist.get_rank()} got no calibration batches; set quant.calib_batches >= the "
                         f"number of processes ({dist.get_world_size()})")
    dev = next(iter(sums.values())).device
    count = torch.tensor([float(num_batches)], device=dev)
    dist.all_reduce(count)
    for name in sorted(sums):
        dist.all_reduce(sums[name])
    return {name: h.div_(count) for name, h in sums.items()}


def _collect_sums(model: nn.Module, batches: Iterable[Tensor], device) -> tuple[dict[str, Tensor], int]:
    """({weight name: sum of X^T X over the batches}, number of batches)."""
    dev = torch.device(device) if device is not None else _model_device(model)
    if not hasattr(model, "linear_inputs"):
        raise ValueError(f"{type(model).__name__} has no linear_inputs(callback); use golf.model.GPT")
    forward = getattr(model, "logits", model)
    sums = _HessianSums(dev)
    num_batches = 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), model.linear_inputs(sums):
            for batch in batches:
                ids = batch[0] if isinstance(batch, (tuple, list)) else batch
                forward(ids.to(dev))
                sums._last = None  # release the last activation between batches
                num_batches += 1
    finally:
        model.train(was_training)
    return sums.sums, num_batches
