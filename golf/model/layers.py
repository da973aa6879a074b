"""Building blocks shared by the model: parameter-free RMSNorm, CastedLinear, rotary embeddings.

Shape letters: B batch, T sequence, H query heads, Hkv KV heads, Dh head_dim, D model_dim, rd rope_dims.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from golf.ops.fake_quant import fake_quant


def rms_norm(x: Tensor) -> Tensor:
    """Parameter-free RMSNorm over the last dim (techniques.md §2.2); eps=None is torch's finfo(dtype).eps."""
    return F.rms_norm(x, (x.size(-1),), eps=None)


class CastedLinear(nn.Linear):
    """Bias-free linear whose fp32 weight is cast to the input's dtype at matmul time (techniques.md §2.8).

    The weight stays fp32 for the optimizer and EMA. Casting explicitly (rather than relying on autocast)
    makes a bf16 input work without autocast and keeps autocast's own cast a no-op. Every quantizable
    matrix of the model is a CastedLinear, so later features (QAT) hook in one place.

    `input_observer`, when set, is called with every input before the matmul (GPTQ calibration; see
    GPT.linear_inputs). It is None in training, and dynamo guards on it, so setting it recompiles.

    QAT (golf.quant.qat.set_qat): while the instance attribute `qat` is True the matmul uses
    `effective_weight()`, the weight fake-quantized on the exporter's grid (qat_bits, qat_clip, qat_k) with a
    straight-through backward (qat_ste). These are plain Python attributes of each instance, never of the
    class: dynamo guards on them, so switching QAT on recompiles once instead of being constant-folded away
    (techniques.md §4.4 ⚠).
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, bias=False)
        self.input_observer: Callable[[Tensor], None] | None = None
        self._zero_init = False  # output projections start at zero (techniques.md §2.14)
        self.qat = False
        self.qat_bits = 6
        self.qat_clip = "absmax"
        self.qat_k: float | None = None
        self.qat_ste = "identity"

    def effective_weight(self) -> Tensor:
        """The fp32 weight the matmul uses: fake-quantized (STE) while QAT is on, else the weight itself."""
        if self.qat:
            return fake_quant(self.weight, bits=self.qat_bits, clip=self.qat_clip, k=self.qat_k, ste=self.qat_ste)
        return self.weight

    def forward(self, x: Tensor) -> Tensor:
        if self.input_observer is not None:
            self.input_observer(x)
        return F.linear(x, self.effective_weight().to(x.dtype))


def ntk_rope_base(base: float, rope_dims: int, seq_len: int, ntk_seq_len: int) -> float:
    """The records' NTK-scaled RoPE base (techniques.md §2.3 ⚠).

    base' = base * (seq_len / ntk_seq_len) ** (rd / (rd - 2)) when ntk_seq_len > 0 and seq_len exceeds it,
    else base. R0321–R0331 pass ntk_seq_len=1024 while training at 2048, so the scaled base
    (10000 * 2**(16/14) ≈ 22,082 at rd=16) is active in training and eval alike; golf reproduces that.
    """
    if ntk_seq_len <= 0 or seq_len <= ntk_seq_len:
        return float(base)
    if rope_dims <= 2:
        raise ValueError(
            f"model.rope_dims={rope_dims}: NTK base scaling divides by rope_dims-2; "
            "use rope_dims >= 4 or set model.rope_ntk_seq_len=0"
        )
    return float(base) * (seq_len / ntk_seq_len) ** (rope_dims / (rope_dims - 2))


class Rotary(nn.Module):
    """cos/sin tables for the half-split RoPE on the first `rope_dims` dims of each head.

    Tables are rebuilt on every call rather than cached: they are [T, rd/2] (tiny next to the matmuls),
    and a cache keyed by seq_len would be module state mutated inside compiled graphs (TTT compiles with
    dynamic shapes). inv_freq is computed in fp32 as 1 / base'^(arange(0, rd, 2) / rd).
    """

    def __init__(self, rope_dims: int, base: float, ntk_seq_len: int = 0):
        super().__init__()
        if rope_dims < 0 or rope_dims % 2:
            raise ValueError(f"model.rope_dims={rope_dims}: must be even and >= 0")
        if base <= 0 or not math.isfinite(base):
            raise ValueError(f"model.rope_base={base}: must be a positive finite number")
        self.rope_dims = rope_dims
        self.base = float(base)
        self.ntk_seq_len = int(ntk_seq_len)

    def inv_freq(self, seq_len: int, device: torch.device | None = None) -> Tensor:
        """[rd/2] fp32 inverse frequencies for a sequence of length seq_len (NTK-scaled if it applies)."""
        base = ntk_rope_base(self.base, self.rope_dims, seq_len, self.ntk_seq_len)
        exponents = torch.arange(0, self.rope_dims, 2, dtype=torch.float32, device=device) / self.rope_dims
        return 1.0 / (base**exponents)

    def forward(self, seq_len: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """(cos, sin), each [1, T, 1, rd/2] in `dtype`, broadcasting over (B, T, H, rd/2)."""
        positions = torch.arange(seq_len, dtype=torch.float32, device=device)
        freqs = torch.outer(positions, self.inv_freq(seq_len, device))  # [T, rd/2]
        return freqs.cos()[None, :, None, :].to(dtype), freqs.sin()[None, :, None, :].to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Half-split RoPE on the first rd = 2*cos.size(-1) dims of x [B, T, H, Dh]; dims rd.. pass through.

    With x1 = x[..., :rd/2], x2 = x[..., rd/2:rd]: out = [x1*cos + x2*sin, -x1*sin + x2*cos] (§2.3).
    """
    half = cos.size(-1)
    if half == 0:
        return x
    rd = 2 * half
    x1, x2 = x[..., :half], x[..., half:rd]
    rotated = torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)
    if rd == x.size(-1):
        return rotated
    return torch.cat((rotated, x[..., rd:]), dim=-1)
