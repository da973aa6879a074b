"""Per-row int-k fake quantization (quantize, then dequantize) of 2-D weights and 3-D banks in one launch.

Math (spec: golf.quant.scheme.fake_quant_ref), for each row r of w [..., R, C] with q = 2^(bits-1) - 1:
    c_r = max|w_r|                  (clip "absmax", "absmax_floor")
    c_r = k * std(w_r)              (clip "sdclip", population std: mean((w - mean)^2) ** 0.5)
    s_r = fp16(max(c_r / q, floor))   floor = 1/q for "absmax_floor", else scheme.MIN_SCALE
    out = clamp(round_half_even(w / s_r), -q, q) * s_r      in fp32, stored in w's dtype
Outputs: out (w's shape and dtype) and the fp16 scales [..., R] (the exporter's stored scales).

Exactness: every step is one IEEE-rounded fp32 operation (divisions are round-to-nearest `div_rn`, not
the approximate division, and rounding uses the 1.5 * 2^23 trick after the clamp, which is exact
round-half-to-even for |x| <= 2^22 and equals torch.round because clamping to the integer q commutes with
rounding), so for "absmax" and "absmax_floor" the results equal the reference bit for bit. For "sdclip" the
fp32 std is a reduction whose summation order differs from torch's; it is rounded to fp16 before use, so the
scales agree unless the fp32 value lies within an ulp of an fp16 rounding boundary (about 2^-13 per row).

Layout: rows of unit last stride, any row stride (a 3-D bank is viewed as [B*R, C] when contiguous). One
program handles BLOCK_R whole rows of up to MAX_COLS columns, so each weight is read once and written once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

try:  # the interpreter's function type tells whether kernels run on the CPU (TRITON_INTERPRET=1 at import)
    from triton.runtime.interpreter import InterpretedFunction as _InterpretedFunction
except ImportError:  # pragma: no cover - very old triton
    _InterpretedFunction = ()

CLIP_CODES = {"absmax": 0, "absmax_floor": 1, "sdclip": 2}
MAX_COLS = 16384  # one row lives in registers; longer rows use the reference (no golf weight has them)
# Launch settings; `fake_quant_fwd(..., config=)` overrides them (benchmarks/bench_fake_quant.py --sweep).
# elems: rows per program = elems / padded cols (at least one row); num_warps: None gives one warp per 512
# padded columns of a row, so a 512-column row never spans two warps (its reductions stay in-warp shuffles,
# and SDClip's fp32 std sums in the same order as before the rule, equal to torch's scales on the core11 banks).
# On the H200 (2026-11-28 sweeps, benchmarks/RESULTS.md) these defaults were the fastest setting over the four
# core11 banks for both clip rules; SDClip's variance in one pass (E[d^2] - E[d]^2, shifted) or one Welford
# reduction was 6-21 % slower than the two passes here.
DEFAULT_CONFIG = {"elems": 1024, "num_warps": None}
_ROUND_MAGIC = tl.constexpr(12582912.0)  # 1.5 * 2^23: x + M - M rounds |x| <= 2^22 to an integer, half to even


@triton.jit
def _fake_quant_kernel(
    w_ptr, out_ptr, scale_ptr, n_rows, n_cols, stride_w, stride_out,
    n_cols_f, qmax, k, floor,
    CLIP: tl.constexpr, ROUND_BF16: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # n_cols_f is n_cols as fp32, passed separately: triton turns an int argument equal to 1 into a constexpr.
    pid = tl.program_id(0)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)  # [BLOCK_R]
    cols = tl.arange(0, BLOCK_C)  # [BLOCK_C]
    row_ok = rows < n_rows
    mask = row_ok[:, None] & (cols[None, :] < n_cols)  # [BLOCK_R, BLOCK_C]
    rows64 = rows.to(tl.int64)
    w = tl.load(w_ptr + rows64[:, None] * stride_w + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if CLIP == 2:  # two passes over the registers: mean, then the centred sum of squares
        mean = tl.math.div_rn(tl.sum(w, axis=1), n_cols_f)  # [BLOCK_R]
        dev = tl.where(mask, w - mean[:, None], 0.0)
        var = tl.math.div_rn(tl.sum(dev * dev, axis=1), n_cols_f)
        c = k * tl.sqrt_rn(var)
    else:
        c = tl.max(tl.abs(w), axis=1)
    s = tl.maximum(tl.math.div_rn(c, qmax), floor)
    s = s.to(tl.float16)  # round to nearest even, as the exporter stores it
    tl.store(scale_ptr + rows64, s, mask=row_ok)
    s32 = s.to(tl.float32)
    x = tl.math.div_rn(w, s32[:, None])
    x = tl.minimum(tl.maximum(x, -qmax), qmax)
    code = (x + _ROUND_MAGIC) - _ROUND_MAGIC
    out = code * s32[:, None]
    if ROUND_BF16:
        # Round to bf16's 8 significand bits (nearest, ties to even) in integer arithmetic, so the cast below is
        # exact: the interpreter's fp32 -> bf16 cast truncates, the GPU's rounds; this way both equal torch's.
        bits = out.to(tl.int32, bitcast=True)
        bits = (bits + (0x7FFF + ((bits >> 16) & 1))) & -65536
        out = bits.to(tl.float32, bitcast=True)
    tl.store(out_ptr + rows64[:, None] * stride_out + cols[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)


INTERPRETED = bool(_InterpretedFunction) and isinstance(_fake_quant_kernel, _InterpretedFunction)


def fake_quant_fwd(w: torch.Tensor, qmax: int, clip: str, k: float, floor: float,
                   config: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch on w [..., R, C] (2-D or 3-D, C <= MAX_COLS, unit last stride) -> (out like w, scales fp16 [..., R]).

    floor is the scale's lower bound before fp16 rounding (scheme.MIN_SCALE, or 1/q for absmax_floor);
    k is only read for clip == "sdclip".
    """
    cols = w.shape[-1]
    w2 = w.reshape(-1, cols)  # [B*R, C]: a view for contiguous banks and 2-D weights with unit last stride
    if w2.stride(-1) != 1:
        w2 = w2.contiguous()
    out = torch.empty(w2.shape, dtype=w.dtype, device=w.device)
    scales = torch.empty(w2.shape[0], dtype=torch.float16, device=w.device)
    n_rows = w2.shape[0]
    cfg = {**DEFAULT_CONFIG, **(config or {})}
    block_c = triton.next_power_of_2(cols)
    block_r = max(1, min(cfg["elems"] // block_c, triton.next_power_of_2(max(n_rows, 1))))
    grid = (triton.cdiv(n_rows, block_r),)
    if n_rows:
        _fake_quant_kernel[grid](
            w2, out, scales, n_rows, cols, w2.stride(0), out.stride(0),
            float(cols), float(qmax), float(k), float(floor),
            CLIP=CLIP_CODES[clip], ROUND_BF16=w.dtype == torch.bfloat16, BLOCK_R=block_r, BLOCK_C=block_c,
            num_warps=cfg["num_warps"] or min(16, max(1, block_c // 512)),
        )
    return out.reshape(w.shape), scales.reshape(w.shape[:-1])
