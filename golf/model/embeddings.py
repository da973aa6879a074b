"""Extra embedding tables of the records: BigramHash (techniques.md §2.10) and value embeddings (§2.11).

Both are a table followed by a CastedLinear projection and a learned scale, with the records' state-dict
names (`bigram.embed.weight`, `bigram.proj.weight`, `bigram.scale`; `ve_shared.embed.weight`,
`ve_shared.proj.weight`, `ve_shared.scale`). The projections are *not* flagged `_zero_init`: GPT's init
loop gives them OrthoInit (or torch's default under init="default"), as the records' global init loop
does after their constructors zeroed them. With the BigramHash table at zero, a zero projection would
never receive a gradient, so it must not stay zero.

Shape letters: B batch, T sequence, D model_dim, Vb bigram_vocab, db bigram_dim.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from golf.model.layers import CastedLinear

# The records' hash multipliers (R0320 code and later; the README formulas differ, techniques.md §2.10 ⚠).
HASH_MUL_CUR = 36313
HASH_MUL_PREV = 27191


def bigram_hash(input_ids: Tensor, bigram_vocab: int) -> Tensor:
    """[B, T] token ids -> [B, T] int64 bucket ids in [0, bigram_vocab).

    h_0 = Vb - 1 (first position of every row); h_i = ((36313 * t_i) XOR (27191 * t_{i-1})) mod (Vb - 1),
    computed in int32 like the records (exact for ids < 59139). BOS is not special-cased.
    """
    t = input_ids.to(torch.int32)
    mod = bigram_vocab - 1
    pairs = torch.bitwise_xor(HASH_MUL_CUR * t[..., 1:], HASH_MUL_PREV * t[..., :-1]) % mod  # [B, T-1]
    first = torch.full_like(t[..., :1], mod)
    return torch.cat((first, pairs), dim=-1).long()


class _TableProjScale(nn.Module):
    """embed [V, d] -> proj (d -> out, omitted when d == out) -> * scale (a learned 0-dim scalar)."""

    def __init__(self, num_rows: int, dim: int, out_dim: int, scale_init: float):
        super().__init__()
        self.embed = nn.Embedding(num_rows, dim)
        self.proj = CastedLinear(dim, out_dim) if dim != out_dim else None
        self.scale = nn.Parameter(torch.full((), float(scale_init), dtype=torch.float32))

    def _lookup(self, rows: Tensor) -> Tensor:
        h = self.embed(rows)  # [B, T, d]
        if self.proj is not None:
            h = self.proj(h)
        return h * self.scale.to(h.dtype)


class BigramHash(_TableProjScale):
    """x += scale * proj(E_b[hash(t_{i-1}, t_i)]), added to the token embedding before its RMSNorm.

    E_b [Vb, db] starts at zero, scale at 0.05; proj gets GPT's OrthoInit.
    """

    def __init__(self, bigram_vocab: int, bigram_dim: int, model_dim: int):
        super().__init__(bigram_vocab, bigram_dim, model_dim, scale_init=0.05)
        nn.init.zeros_(self.embed.weight)
        self.bigram_vocab = bigram_vocab

    def forward(self, input_ids: Tensor) -> Tensor:
        """input_ids [B, T] -> [B, T, D]."""
        return self._lookup(bigram_hash(input_ids, self.bigram_vocab))


class ValueEmbedding(_TableProjScale):
    """The shared value-embedding table: scale * proj(E_v[t]) with E_v [V, ve_dim] ~ N(0, 0.01^2) and
    scale 0.1. Layer l adds ve_layer_scales[l] times it to its values (c_v(x)) before the head reshape."""

    def __init__(self, vocab_size: int, ve_dim: int, kv_dim: int):
        super().__init__(vocab_size, ve_dim, kv_dim, scale_init=0.1)
        nn.init.normal_(self.embed.weight, mean=0.0, std=0.01)

    def forward(self, input_ids: Tensor) -> Tensor:
        """input_ids [B, T] -> [B, T, Hkv * Dh]."""
        return self._lookup(input_ids)
