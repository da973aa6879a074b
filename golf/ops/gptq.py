"""GPTQ's per-block column update (techniques.md §4.7; IST-DASLab `fasterquant`'s inner loop) as an op.

For each row independently, columns j = 0..B-1 in order:

    q_j = clamp(round(w_j / s), -qmax, qmax)          round half to even, as torch.round
    e_j = (w_j - q_j * s) / Hinv[j, j]
    w_k -= e_j * Hinv[j, k]            for k > j

    w_block    fp32 [rows, B]  one block of GPTQ's working weights (not modified)
    hinv_block fp32 [B, B]     the block's diagonal block of the upper Cholesky factor of H^-1
    scales     [rows]          per-row steps (fp16 scales are widened to fp32 exactly)
    qmax       int             codes lie in [-qmax, qmax] (golf.quant.scheme.qmax(bits))
    returns    (codes int8 [rows, B], err fp32 [rows, B])

Every step is one IEEE-rounded fp32 operation, so the implementations agree bit for bit:
`gptq_block_update_ref` (this torch loop, the spec), the C++ kernel (csrc/golf_ops.cpp, parallel over
rows) and the CUDA kernel (csrc/gptq_update.cu, one warp per row, B <= 128), both registered as
torch.ops.golf.gptq_block_update by golf._C.
"""

from __future__ import annotations

import torch
from torch import Tensor

from golf import _ext
from golf.ops._dispatch import fallback, kernels_enabled, note_impl

OP = "gptq_block_update"
IMPLS = ("auto", "cuda", "cpp", "reference")
CUDA_MAX_BLOCK = 128  # csrc/gptq_update_kernel.h: kGptqCudaMaxBlockCols


def _check_args(w_block: Tensor, hinv_block: Tensor, scales: Tensor, qmax: int) -> None:
    if w_block.dim() != 2 or w_block.dtype != torch.float32:
        raise ValueError(
            f"gptq_block_update: w_block must be float32 [rows, B], got {w_block.dtype} {list(w_block.shape)}"
        )
    rows, b = w_block.shape
    if hinv_block.dtype != torch.float32 or tuple(hinv_block.shape) != (b, b):
        raise ValueError(
            f"gptq_block_update: hinv_block must be float32 [{b}, {b}] to match w_block, "
            f"got {hinv_block.dtype} {list(hinv_block.shape)}"
        )
    if not scales.is_floating_point() or tuple(scales.shape) != (rows,):
        raise ValueError(f"gptq_block_update: scales must be float [{rows}], got {scales.dtype} {list(scales.shape)}")
    if not (w_block.device == hinv_block.device == scales.device):
        raise ValueError(
            "gptq_block_update: tensors must share one device, got "
            f"{w_block.device}, {hinv_block.device}, {scales.device}"
        )
    if not 1 <= int(qmax) <= 127:
        raise ValueError(f"gptq_block_update: qmax={qmax} must be in [1, 127] (codes are int8)")


def gptq_block_update_ref(w_block: Tensor, hinv_block: Tensor, scales: Tensor, qmax: int) -> tuple[Tensor, Tensor]:
    """The pure-torch column loop: the spec of the op (see the module docstring)."""
    _check_args(w_block, hinv_block, scales, qmax)
    w = w_block.clone()
    s = scales.float()
    rows, b = w.shape
    codes = torch.empty(rows, b, dtype=torch.int8, device=w.device)
    err = torch.empty_like(w)
    for j in range(b):
        q = torch.clamp(torch.round(w[:, j] / s), -qmax, qmax)
        e = (w[:, j] - q * s) / hinv_block[j, j]
        # Product, then subtraction: two roundings, as the kernels do (no fused multiply-add).
        w[:, j + 1 :] -= e[:, None] * hinv_block[j, j + 1 :][None, :]
        codes[:, j] = q.to(torch.int8)
        err[:, j] = e
    return codes, err


def _choose(w_block: Tensor, impl: str) -> str:
    """The implementation to run, recorded with note_impl; raises for an explicit impl that cannot run and
    warns once (golf.ops._dispatch.fallback) when "auto" has to fall back to the reference."""
    dev = w_block.device.type
    if impl == "cpp" and dev != "cpu":
        raise ValueError(f"gptq_block_update: impl='cpp' needs CPU tensors, got {w_block.device}; use impl='auto'")
    if impl == "cuda" and dev != "cuda":
        raise ValueError(f"gptq_block_update: impl='cuda' needs CUDA tensors, got {w_block.device}; use impl='auto'")
    if impl == "reference" or (impl == "auto" and not kernels_enabled()):
        note_impl(OP, "reference")
        return "reference"
    if dev == "cpu":
        if _ext.HAS_EXT:
            note_impl(OP, "cpp")
            return "cpp"
        reason = f"golf._C is not built ({_ext.IMPORT_ERROR}); rebuild with `pip install --no-build-isolation -e .`"
    elif dev == "cuda":
        if not _ext.has_cuda_ops():
            reason = "golf._C has no CUDA kernels (built without CUDA/nvcc, or not built)"
        elif w_block.shape[1] > CUDA_MAX_BLOCK:
            reason = f"the CUDA kernel takes blocks of at most {CUDA_MAX_BLOCK} columns, got {w_block.shape[1]}"
        else:
            note_impl(OP, "cuda")
            return "cuda"
    else:
        reason = f"no kernel for device {w_block.device}"
    if impl != "auto":
        raise ValueError(f"gptq_block_update: impl={impl!r} cannot run: {reason}")
    fallback(OP, reason)
    return "reference"


def gptq_block_update(
    w_block: Tensor, hinv_block: Tensor, scales: Tensor, qmax: int, *, impl: str = "auto"
) -> tuple[Tensor, Tensor]:
    """Dispatcher with the reference's signature; impl: "auto" | "cuda" | "cpp" | "reference".

    "auto" runs the CUDA kernel for CUDA tensors and the C++ kernel for CPU tensors, and falls back to the
    reference (one warning) when golf._C or its CUDA part is missing. `golf.ops.implementations()` shows
    which one ran.
    """
    if impl not in IMPLS:
        raise ValueError(f"gptq_block_update: impl={impl!r} is not one of {IMPLS}")
    _check_args(w_block, hinv_block, scales, qmax)
    if _choose(w_block, impl) == "reference":
        return gptq_block_update_ref(w_block, hinv_block, scales, qmax)
    if w_block.stride(1) != 1:
        w_block = w_block.contiguous()
    if hinv_block.stride(1) != 1:
        hinv_block = hinv_block.contiguous()
    return torch.ops.golf.gptq_block_update(w_block, hinv_block, scales.float().contiguous(), int(qmax))


if _ext.HAS_EXT:

    @torch.library.register_fake("golf::gptq_block_update")
    def _gptq_block_update_fake(w_block, hinv_block, scales, qmax):
        rows, b = w_block.shape
        return w_block.new_empty(rows, b, dtype=torch.int8), w_block.new_empty(rows, b)
