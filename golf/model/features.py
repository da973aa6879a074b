"""Record features that act on the token stream or on attention outputs (techniques.md §2.4, §2.9, §2.13).

- `xsa`: Exclusive Self-Attention, the efficient GQA-aware form (no repeat_interleave).
- `SmearGate` (v1, R0320–R0331) and `smear_v2` (R0416/R0427, with the BOS mask).
- `attention_gate`: the dense (Qwen G1), output (2σ) and sparse attention gates, all with `attn_gate_w`.

Shape letters: B batch, T sequence, H query heads, Hkv KV heads, Dh head_dim, D model_dim, w gate_window.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from golf.config import ModelConfig


def xsa(y: Tensor, v: Tensor) -> Tensor:
    """Remove from each head's output its component along the token's own (normalized) value vector.

    y: [B, T, H, Dh] attention output, v: [B, T, Hkv, Dh] the values it attended over -> [B, T, H, Dh].
    Query head h reads KV head h // (H / Hkv), so y is viewed as [B, T, Hkv, g, Dh] and the unit value
    [B, T, Hkv, 1, Dh] broadcasts over the g heads of its group.
    """
    bsz, seq_len, num_heads, head_dim = y.shape
    num_kv = v.size(2)
    # reshape, not view: SDPA hands back y as a transposed (non-contiguous) [B, T, H, Dh].
    yg = y.reshape(bsz, seq_len, num_kv, num_heads // num_kv, head_dim)  # [B, T, Hkv, g, Dh]
    vn = F.normalize(v, dim=-1).unsqueeze(-2)  # [B, T, Hkv, 1, Dh]
    return (yg - (yg * vn).sum(dim=-1, keepdim=True) * vn).reshape(bsz, seq_len, num_heads, head_dim)


class SmearGate(nn.Module):
    """SmearGate v1 (R0320 code), after the embedding RMSNorm: x_t = (1-g)*x_t + g*x_{t-1}, x_{-1} = 0.

    g = sigmoid(gate) per channel, gate initialised to 0 (a 50/50 blend; the code's init, not the σ(3) of
    one README, techniques.md §2.9 ⚠). Like the records, v1 has no document mask.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(dim, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, T, D] -> [B, T, D]."""
        g = torch.sigmoid(self.gate.to(x.dtype))
        x_prev = torch.cat((torch.zeros_like(x[:, :1]), x[:, :-1]), dim=1)
        return (1 - g) * x + g * x_prev


def smear_v2(x: Tensor, input_ids: Tensor, gate: nn.Module, lam: Tensor, window: int, bos_id: int) -> Tensor:
    """SmearGate v2 (R0427), on the raw embedding before its RMSNorm:

    x_t = x_t + lam * sigmoid(gate(x_t[:window])) * x_{t-1} * [input_ids_t != bos_id]   for t >= 1; x_0 unchanged.

    The mask keeps the last token of document N out of the BOS that starts document N+1 in a packed
    stream. x: [B, T, D], input_ids: [B, T], gate: a (window -> 1) linear, lam: [1].
    """
    g = lam.to(x.dtype) * torch.sigmoid(gate(x[:, 1:, :window]))  # [B, T-1, 1]
    not_bos = (input_ids[:, 1:] != bos_id).to(x.dtype).unsqueeze(-1)  # [B, T-1, 1]
    return torch.cat((x[:, :1], x[:, 1:] + g * x[:, :-1] * not_bos), dim=1)


ATTN_GATES = ("dense", "output", "sparse")


def attn_gate_weight(cfg: ModelConfig) -> nn.Parameter:
    """The `attn_gate_w` of one attention layer: [H, D] ~ N(0, std^2) for "dense", [H, w] zeros otherwise."""
    if cfg.attn_gate not in ATTN_GATES:
        raise ValueError(f"model.attn_gate={cfg.attn_gate!r}: must be one of off, {', '.join(ATTN_GATES)}")
    width = cfg.model_dim if cfg.attn_gate == "dense" else cfg.gate_window
    w = torch.zeros(cfg.num_heads, width, dtype=torch.float32)
    if cfg.attn_gate == "dense" and cfg.attn_gate_init_std > 0:
        nn.init.normal_(w, mean=0.0, std=cfg.attn_gate_init_std)
    return nn.Parameter(w)


def attention_gate(kind: str, w: Tensor, x: Tensor, scale: float = 1.0) -> Tensor:
    """Per-head gate g [B, T, H, 1] that multiplies the attention output y [B, T, H, Dh] (§2.13).

    x: [B, T, D], the attention module's input (the normalized block input); w: `attn_gate_w` [H, width].
    "dense":  g = sigmoid(x @ W^T)                    W [H, D] ~ N(0, std^2)  (Qwen G1, R0419)
    "output": g = 2 * sigmoid(x[..., :w] @ W^T)       W [H, w] zeros -> 1     (R0416)
    "sparse": g = sigmoid(scale * x[..., :w] @ W^T)   W [H, w] zeros -> 0.5   (R0423, R0427)
    """
    z = F.linear(x[..., : w.size(1)], w.to(x.dtype))  # [B, T, H]
    if kind == "output":
        g = 2.0 * torch.sigmoid(z)
    elif kind == "sparse":
        g = torch.sigmoid(scale * z)
    else:
        g = torch.sigmoid(z)
    return g.unsqueeze(-1)
