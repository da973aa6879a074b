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
"""

from __future__ import annotations

import torch

CLIP_RULES = ("absmax", "absmax_floor", "sdclip")
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


def row_scales(w: torch.Tensor, *, bits: int = 6, clip: str = "absmax", k: float | None = None) -> torch.Tensor:
    """Per-row scales of a 2-D weight (or of every matrix of a 3-D bank), rounded to fp16.

    w: [..., rows, cols] float. Returns [..., rows] in SCALE_DTYPE.
    """
    check_clip(clip, k)
    q = qmax(bits)
    wf = w.float()
    if clip == "sdclip":
        c = k * wf.std(dim=-1, correction=0)
    else:
        c = wf.abs().amax(dim=-1)
    s = c / q
    if clip == "absmax_floor":
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
