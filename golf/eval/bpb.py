"""val_bpb byte accounting: THE definition of how many UTF-8 bytes each target token stands for
(techniques.md §1.4.2), and the conversion of summed NLL into bits per byte (§1.4.1).

Bytes are those of the SentencePiece-normalized text, i.e. the concatenation of decoded pieces:
  bytes(y | x) = base_bytes[y] + (has_leading_space[y] and not is_boundary[x])
where a piece's leading "▁" is one space byte unless the previous token is a boundary (BOS, other control
or unknown pieces, and ids past the tokenizer's vocabulary). Byte-fallback pieces are one byte each.
Summed over a document that starts with BOS this equals len(sp.decode(ids).encode("utf-8")).

The tables are built once with numpy (`byte_tables`); `ByteLUT` holds them as torch tensors for the
evaluation loops, and `stream_bytes` counts a whole uint16 token stream on the CPU (data preparation, stats).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

SPACE_PIECE = "\u2581"  # SentencePiece's visible space "▁"


def byte_tables(sp, vocab_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(base_bytes int16, has_leading_space bool, is_boundary bool), each of size max(sp vocab, vocab_size)."""
    sp_vocab = int(sp.vocab_size())
    size = max(sp_vocab, int(vocab_size))
    base = np.zeros(size, dtype=np.int16)
    space = np.zeros(size, dtype=np.bool_)
    boundary = np.ones(size, dtype=np.bool_)
    for i in range(sp_vocab):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue  # 0 bytes, boundary
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith(SPACE_PIECE):
            space[i] = True
            piece = piece[1:]
        base[i] = len(piece.encode("utf-8"))
    return base, space, boundary


@dataclass
class ByteLUT:
    base_bytes: torch.Tensor  # int16 [V]
    has_leading_space: torch.Tensor  # bool [V]
    is_boundary: torch.Tensor  # bool [V]

    def to(self, device) -> "ByteLUT":
        return ByteLUT(self.base_bytes.to(device), self.has_leading_space.to(device), self.is_boundary.to(device))

    @property
    def size(self) -> int:
        return int(self.base_bytes.numel())


def build_byte_luts(sp, vocab_size: int) -> ByteLUT:
    """LUTs over max(sp.vocab_size(), vocab_size) ids; ids the tokenizer lacks count 0 bytes and are boundaries."""
    base, space, boundary = byte_tables(sp, vocab_size)
    return ByteLUT(torch.from_numpy(base), torch.from_numpy(space), torch.from_numpy(boundary))


def token_bytes(lut: ByteLUT, prev_ids: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
    """Bytes each target token stands for given the token before it; int16, same shape as target_ids.
    Sum it in int64 or float64 (an int16 sum overflows)."""
    base = lut.base_bytes[target_ids]
    extra = lut.has_leading_space[target_ids] & ~lut.is_boundary[prev_ids]
    return base + extra.to(base.dtype)


def stream_bytes(tables: tuple[np.ndarray, np.ndarray, np.ndarray], tokens: np.ndarray, prev: int = -1) -> int:
    """Total bytes of a 1-D token stream. `prev` is the token before the stream (e.g. the last token of the
    previous shard); -1 means none, i.e. the first token follows a boundary, as after BOS. For a stream of
    whole documents each starting with BOS this is the sum of their decoded UTF-8 lengths."""
    base, space, boundary = tables
    if tokens.size == 0:
        return 0
    ids = tokens.astype(np.int64, copy=False)
    total = int(base[ids].sum(dtype=np.int64)) + int(np.count_nonzero(space[ids[1:]] & ~boundary[ids[:-1]]))
    if prev >= 0 and space[ids[0]] and not boundary[prev]:
        total += 1
    return total


def bits_per_byte(nll_sum_nats: float, byte_count: int) -> float:
    """val_bpb = Σ NLL / (ln 2 · N_bytes). Inputs should be float64 / int sums (all-reduced with SUM on DDP)."""
    if byte_count <= 0:
        raise ValueError(f"byte_count={byte_count}: val_bpb needs a positive byte count (is the val split empty?)")
    return float(nll_sum_nats) / (math.log(2.0) * float(byte_count))
