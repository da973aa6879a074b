"""Full-Hessian GPTQ of one weight matrix (techniques.md §4.7; Frantar et al. 2022 with act-order).

The scheme (int grid, clip rule, fp16 scales) comes from golf.quant.scheme; this module only decides the
codes. Per-row scales are fixed before the sweep, so GPTQ and round-to-nearest share the same grid and the
exporter stores both the same way. The serial per-column sweep inside each block is the op
golf.ops.gptq.gptq_block_update (CUDA / C++ kernel or its torch reference); the trailing update of the
remaining columns is one matmul per block.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import Tensor

from golf.ops.gptq import gptq_block_update
from golf.quant import scheme

DAMP_RETRIES = 3  # a failed factorization is retried with 10x, 100x, 1000x the damping


@contextlib.contextmanager
def fp32_matmuls():
    """GPTQ's error propagation needs true fp32 matmuls; TF32 (a trainer's global setting) would add ~1e-3
    relative error per block. The previous setting is restored, so nothing global changes."""
    prev = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(prev)


def inverse_cholesky_upper(H: Tensor, damp: float = 0.01, retries: int = DAMP_RETRIES) -> tuple[Tensor, float]:
    """U (upper triangular) with U^T U = (H + d * mean(diag H) * I)^-1, and the damping d used.

    H: fp32 [n, n] symmetric positive semi-definite. Starts at d = damp and multiplies d by 10 after each
    failed factorization (at most `retries` times; damp = 0 retries from 0.01), then raises ValueError.
    """
    n = H.shape[0]
    mean_diag = H.diagonal().mean()
    d = float(damp)
    for attempt in range(retries + 1):
        Hd = H.clone()
        Hd.diagonal().add_(d * mean_diag)
        L, info = torch.linalg.cholesky_ex(Hd)
        if int(info) == 0:
            # H^-1 = L^-T L^-1, i.e. torch.cholesky_inverse(L); spelled out because MKL's potri behind
            # cholesky_inverse took 1.7 s for a 512x512 H on the CPU machine vs 0.09 s for this.
            Linv = torch.linalg.solve_triangular(L, torch.eye(n, dtype=H.dtype, device=H.device), upper=False)
            with fp32_matmuls():
                Hinv = Linv.mT @ Linv
            U, info = torch.linalg.cholesky_ex(Hinv, upper=True)
            if int(info) == 0 and bool(torch.isfinite(U).all()):
                return U.contiguous(), d  # LAPACK returns it column-major; the column update wants rows
        if attempt == retries:
            break
        nxt = d * 10 if d > 0 else 0.01
        warnings.warn(
            f"GPTQ: Cholesky of the Hessian failed with damping {d:g}; retrying with {nxt:g}",
            RuntimeWarning,
            stacklevel=3,
        )
        d = nxt
    raise ValueError(
        f"GPTQ: the Hessian [{H.shape[0]}x{H.shape[1]}] is not positive definite even with damping {d:g} "
        "(quant.damp x 10^retries). Check the calibration data (enough tokens? NaN/inf activations?), "
        "or quantize this tensor with round-to-nearest (quant.gptq=false)."
    )


def _check_inputs(W: Tensor, H: Tensor, block_size: int, damp: float) -> None:
    if W.dim() != 2 or not W.is_floating_point():
        raise ValueError(f"gptq_quantize: W must be a 2-D float matrix [rows, cols], got {W.dtype} {list(W.shape)}")
    cols = W.shape[1]
    if tuple(H.shape) != (cols, cols):
        raise ValueError(
            f"gptq_quantize: H must be [cols, cols] = [{cols}, {cols}] for W {list(W.shape)}, got {list(H.shape)}"
        )
    if block_size <= 0:
        raise ValueError(f"gptq_quantize: block_size={block_size} must be positive (128 is the records' value)")
    if damp < 0:
        raise ValueError(f"gptq_quantize: damp={damp} must be >= 0 (0.01 is the records' value)")
    if not bool(torch.isfinite(W).all()):
        raise ValueError("gptq_quantize: W has NaN/inf entries; quantize a finite checkpoint")
    if not bool(torch.isfinite(H).all()):
        raise ValueError(
            "gptq_quantize: H has NaN/inf entries; the calibration forward produced non-finite activations"
        )


def gptq_quantize(
    W: Tensor,
    H: Tensor,
    *,
    bits: int = 6,
    block_size: int = 128,
    damp: float = 0.01,
    act_order: bool = True,
    clip: str = "absmax",
    k: float | None = None,
    impl: str = "auto",
) -> tuple[Tensor, Tensor]:
    """GPTQ codes and per-row scales of W on golf.quant.scheme's int-`bits` grid.

    W: float [rows, cols] (any float dtype; computed in fp32 on W's device). H: [cols, cols], the mean of
    X^T X over calibration batches for this layer's input X (golf.quant.hessian). Returns
    (codes int8 [rows, cols], scales fp16 [rows]), both on W's device, with W ~ codes * scales[:, None]
    (golf.quant.scheme.dequantize). `impl` picks the column-update implementation (golf.ops.gptq).

    Columns whose Hessian diagonal is 0 never see a non-zero input: they are zeroed before the scales are
    computed (as in the records) and get code 0.
    """
    _check_inputs(W, H, block_size, damp)
    q = scheme.qmax(bits)
    scheme.check_clip(clip, k)
    rows, cols = W.shape
    W = W.detach().float().clone()
    H = H.detach().to(device=W.device, dtype=torch.float32).clone()

    dead = H.diagonal() == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    scales = scheme.row_scales(W, bits=bits, clip=clip, k=k)  # [rows] fp16, fixed for the whole sweep
    if cols == 0 or rows == 0:
        return torch.zeros(rows, cols, dtype=torch.int8, device=W.device), scales

    if act_order:  # most-activated input columns first, while the most error budget is left
        perm = torch.argsort(H.diagonal(), descending=True, stable=True)
        W, H = W[:, perm], H[perm][:, perm]
    Hinv, _ = inverse_cholesky_upper(H, damp)

    codes = torch.empty(rows, cols, dtype=torch.int8, device=W.device)
    s32 = scales.float()
    with fp32_matmuls():
        for i1 in range(0, cols, block_size):
            i2 = min(i1 + block_size, cols)
            codes[:, i1:i2], err = gptq_block_update(W[:, i1:i2], Hinv[i1:i2, i1:i2], s32, q, impl=impl)
            if i2 < cols:
                W[:, i2:] -= err @ Hinv[i1:i2, i2:]  # [rows, B] @ [B, cols - i2]
    if act_order:
        codes = codes[:, torch.argsort(perm)]
    return codes, scales
