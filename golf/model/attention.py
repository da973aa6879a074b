"""Causal self-attention: GQA, QK RMS-norm, partial RoPE, learned per-head q_gain (techniques.md §2.3).

Backends (§6.3): FlashAttention-3 (`flash_attn_interface.flash_attn_func`, (B,T,H,Dh) layout, native GQA,
Hopper) when importable and on CUDA; otherwise torch SDPA in (B,H,T,Dh) with is_causal and enable_gqa. On
CUDA the SDPA call prefers cuDNN (it measured fastest on the H200), then flash, mem-efficient, math.
Query head h reads KV head h // (H / Hkv) in every backend.

Shape letters: B batch, T sequence, H query heads, Hkv KV heads, Dh head_dim, D model_dim.
"""

from __future__ import annotations

import importlib
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from golf.config import ModelConfig
from golf.model.features import attention_gate, attn_gate_weight, xsa
from golf.model.layers import CastedLinear, Rotary, apply_rotary, rms_norm
from golf.ops._dispatch import fallback, note_impl

BACKENDS = ("auto", "sdpa", "fa3")

# cuDNN first: fastest SDPA backend measured on the H200; the rest in torch's usual order as fallbacks.
_SDPA_PRIORITY = [
    SDPBackend.CUDNN_ATTENTION,
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.MATH,
]

_FA3: dict[str, Callable | str | None] = {}  # "func": flash_attn_func or None, "error": why not


def _load_fa3() -> Callable | None:
    """flash_attn_interface.flash_attn_func, or None (the reason is kept for error messages)."""
    if "func" not in _FA3:
        try:
            _FA3["func"] = importlib.import_module("flash_attn_interface").flash_attn_func
        except (ImportError, AttributeError) as e:
            _FA3["func"], _FA3["error"] = None, f"{type(e).__name__}: {e}"
    return _FA3["func"]  # type: ignore[return-value]


def resolve_backend(requested: str, cuda_available: bool | None = None) -> str:
    """'auto' -> 'fa3' when FA3 imports and CUDA is present, else 'sdpa'; 'fa3' without them -> ValueError."""
    if requested not in BACKENDS:
        raise ValueError(f"model.attention={requested!r}: must be one of {', '.join(BACKENDS)}")
    if requested == "sdpa":
        return "sdpa"
    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    have_fa3 = _load_fa3() is not None
    if requested == "fa3" and not (cuda and have_fa3):
        why = "no CUDA device" if not cuda else f"flash_attn_interface does not import ({_FA3.get('error')})"
        raise ValueError(
            f"model.attention='fa3' is unavailable: {why}. Install FlashAttention-3 (the `flash_attn_3` "
            "wheel for your CUDA/torch, Hopper GPUs) or use --model.attention=sdpa (or auto)"
        )
    return "fa3" if (cuda and have_fa3) else "sdpa"


def _sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H|Hkv, T, Dh]
    gqa = q.size(1) != k.size(1)
    if q.is_cuda:
        with sdpa_kernel(_SDPA_PRIORITY, set_priority=True):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    else:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    return y.transpose(1, 2)  # [B, T, H, Dh]


def _fa3(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    # FA3 computes only in 16-bit; an fp32 model run without autocast is cast to bf16 here and back.
    in_dtype = q.dtype
    if in_dtype not in (torch.bfloat16, torch.float16):
        q, k, v = (t.to(torch.bfloat16) for t in (q, k, v))
    y = _FA3["func"](q, k, v, causal=True)  # type: ignore[operator]
    if isinstance(y, tuple):  # some FA3 builds also return the softmax LSE
        y = y[0]
    return y.to(in_dtype)


def causal_attention(q: Tensor, k: Tensor, v: Tensor, backend: str = "sdpa") -> Tensor:
    """Causal softmax attention with scale 1/sqrt(Dh) and grouped KV heads.

    q: [B, T, H, Dh]; k, v: [B, T, Hkv, Dh] with H % Hkv == 0 -> [B, T, H, Dh].
    backend 'fa3' on a non-CUDA tensor falls back to SDPA with one warning (recorded in golf.ops).
    """
    if backend == "fa3":
        if q.is_cuda:
            note_impl("attention", "fa3")
            return _fa3(q, k, v)
        fallback("attention", "FlashAttention-3 needs CUDA tensors; using SDPA")
        return _sdpa(q, k, v)
    note_impl("attention", "sdpa")
    return _sdpa(q, k, v)


class CausalSelfAttention(nn.Module):
    """c_q/c_k/c_v [+ value embedding, value residual] -> QK RMS-norm -> partial RoPE -> q * q_gain ->
    causal GQA attention [-> XSA -> attention gate] -> proj (techniques.md §2.3, §2.4, §2.11–§2.13)."""

    def __init__(self, cfg: ModelConfig, backend: str, layer_idx: int = 0):
        super().__init__()
        d, h, hkv, dh = cfg.model_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = h, hkv, dh
        self.backend = backend
        self.c_q = CastedLinear(d, h * dh)
        self.c_k = CastedLinear(d, hkv * dh)
        self.c_v = CastedLinear(d, hkv * dh)
        self.proj = CastedLinear(h * dh, d)
        self.proj._zero_init = True
        self.q_gain = nn.Parameter(torch.full((h,), float(cfg.qk_gain_init), dtype=torch.float32))
        self.rotary = Rotary(cfg.rope_dims, cfg.rope_base, cfg.rope_ntk_seq_len)
        # Fixed per physical layer at construction (constants of the compiled graph, never switched later).
        self.use_xsa = layer_idx >= cfg.num_layers - cfg.xsa_last_n if cfg.xsa_last_n > 0 else False
        self.gate_kind = cfg.attn_gate
        self.gate_scale = float(cfg.attn_gate_scale)
        self.attn_gate_w = attn_gate_weight(cfg) if cfg.attn_gate != "off" else None
        # Value residual (§2.12): every layer but the first mixes in layer 0's raw values v_0. Named
        # `vr_lambdas` (R0323: `vr_lambda`) so the control-tensor pattern "lambdas" claims it.
        self.vr_lambdas = (
            nn.Parameter(torch.full((2,), 0.5, dtype=torch.float32)) if cfg.value_residual and layer_idx > 0 else None
        )

    def forward(
        self, x: Tensor, v_embed: Tensor | None = None, v0: Tensor | None = None, return_v: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """x: [B, T, D], already RMS-normalized by the block -> [B, T, D].

        v_embed [B, T, Hkv*Dh]: value embedding added to c_v(x) (§2.11). v0 [B, T, Hkv, Dh]: the first
        layer's raw values, mixed in by value residual. return_v: also return this layer's raw values
        (after the value embedding, before the value-residual mix), the v0 of later layers.
        """
        bsz, seq_len, _ = x.shape
        q = self.c_q(x).view(bsz, seq_len, self.num_heads, self.head_dim)  # [B, T, H, Dh]
        k = self.c_k(x).view(bsz, seq_len, self.num_kv_heads, self.head_dim)  # [B, T, Hkv, Dh]
        v = self.c_v(x)
        if v_embed is not None:
            v = v + v_embed
        v = v.view(bsz, seq_len, self.num_kv_heads, self.head_dim)  # [B, T, Hkv, Dh]
        raw_v = v
        if v0 is not None and self.vr_lambdas is not None:
            lam = self.vr_lambdas.to(v.dtype)
            v = lam[0] * v0 + lam[1] * v
        q, k = rms_norm(q), rms_norm(k)
        cos, sin = self.rotary(seq_len, x.device, q.dtype)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q = q * self.q_gain.to(q.dtype)[None, None, :, None]
        y = causal_attention(q, k, v, self.backend)  # [B, T, H, Dh]
        if self.use_xsa:
            y = xsa(y, v)
        if self.attn_gate_w is not None:
            y = y * attention_gate(self.gate_kind, self.attn_gate_w, x, self.gate_scale)
        out = self.proj(y.reshape(bsz, seq_len, self.num_heads * self.head_dim))
        return (out, raw_v) if return_v else out
