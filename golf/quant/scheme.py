"""THE definition of golf's integer grids and clip rules (techniques.md §4.1, §4.2, §4.8).

Every quantizer in golf (QAT fake-quant, GPTQ, round-to-nearest export, the Triton fake-quant kernel's
reference) imports from here, so a weight fake-quantized in training equals its exported dequantization
bit for bit.

Grid: symmetric int-b, codes in [-qmax, qmax] with qmax = 2^(b-1) - 1 (int6: [-31, 31]), one scale per
output row stored as fp16. Codes are computed against the *fp16-rounded* scale, exactly as the exporter
stores it.

Clip rules (the per-row clip value c; scale s = c / qmax):
- "absmax":       c = max|W_r|.
- "absmax_floor": c = max|W_r| with s floored at 1/qmax — the records' int8/int6 rule up to 2026-04-03
                  (rows with max|w| < 1 sit on the absolute grid 1/qmax; techniques.md §4.1 ⚠).
- "sdclip":       c = k * std(W_r) (population std), values beyond +-c clip in the rounding clamp (§4.8).
- "percentile":   c = quantile(|W_r|, k) with k in (0, 1], s floored at 1/qmax as in the records' GPTQ-lite
                  quantizer (§4.5); k = 1 is "absmax_floor". The exporter's "percentile_search" (a config
                  value, not a rule) picks k per matrix from PERCENTILES by reconstruction error.
"""

from __future__ import annotations

import torch

CLIP_RULES = ("absmax", "absmax_floor", "sdclip", "percentile")
# The records' clip candidates (R0322/R0323 GPTQ-lite, R0329/R0403 one full GPTQ per candidate; §4.5, §4.7).
PERCENTILES = (0.999, 0.9995, 0.9999, 0.99999, 1.0)
# The records' fixed row quantile for their int8 tensors (the embedding and lookup tables; §4.1).
INT8_CLIP_PERCENTILE = 0.9999984
SUPPORTED_BITS = (5, 6, 7, 8)
SCALE_DTYPE = torch.float16
# Smallest stored scale: fp16's smallest subnormal, so an all-zero row keeps a finite, non-zero scale.
MIN_SCALE = 2.0**-24


def qmax(bits: int) -> int:
    """Largest code of the symmetric int-`bits` grid: 31 for int6, 127 for int8."""
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits={bits} is not supported; use one of {SUPPORTED_BITS}")
    return 2 ** (bits - 1) - 1


def check_clip(clip: str, k: float | None) -> None:
    if clip not in CLIP_RULES:
        raise ValueError(f"clip={clip!r} is not a clip rule; use one of {CLIP_RULES}")
    if clip == "sdclip" and (k is None or k <= 0):
        raise ValueError(f"clip='sdclip' needs a positive factor k (got k={k}); e.g. k=12.85 for int6")
    if clip == "percentile" and (k is None or not 0 < k <= 1):
        raise ValueError(f"clip='percentile' needs the row quantile k in (0, 1] (got k={k}); e.g. k=0.9999")


def row_scales(w: torch.Tensor, *, bits: int = 6, clip: str = "absmax", k: float | None = None) -> torch.Tensor:
    """Per-row scales of a 2-D weight (or of every matrix of a 3-D bank), rounded to fp16.

    w: [..., rows, cols] float. Returns [..., rows] in SCALE_DTYPE.
    """
    check_clip(clip, k)
    q = qmax(bits)
    wf = w.float()
    if clip == "sdclip":
        c = k * wf.std(dim=-1, correction=0)
    elif clip == "percentile" and k < 1:
        c = torch.quantile(wf.abs(), k, dim=-1)  # linear interpolation, as torch.quantile in the records
    else:
        c = wf.abs().amax(dim=-1)
    s = c / q
    if clip in ("absmax_floor", "percentile"):
        s = s.clamp_min(1.0 / q)
    return s.clamp_min(MIN_SCALE).to(SCALE_DTYPE)


def quantize(w: torch.Tensor, scales: torch.Tensor, *, bits: int = 6) -> torch.Tensor:
    """Round-to-nearest codes (int8) of w [..., rows, cols] on the grid given by fp16 scales [..., rows]."""
    q = qmax(bits)
    return torch.clamp(torch.round(w.float() / scales.float().unsqueeze(-1)), -q, q).to(torch.int8)


def dequantize(codes: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """codes [..., rows, cols] int8 and scales [..., rows] -> float weights of `dtype`."""
    return (codes.float() * scales.float().unsqueeze(-1)).to(dtype)


def fake_quant_ref(w: torch.Tensor, *, bits: int = 6, clip: str = "absmax", k: float | None = None) -> torch.Tensor:
    """Quantize-dequantize w exactly as the exporter does (forward of QAT). Same dtype as w."""
    s = row_scales(w, bits=bits, clip=clip, k=k)
    return dequantize(quantize(w, s, bits=bits), s, w.dtype)
