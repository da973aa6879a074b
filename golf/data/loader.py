"""The training token loader: the challenge's sequential stream (techniques.md §1.6a), rank-aware,
deterministic and resumable.

The stream reads the shards in sorted order and wraps around forever. Each `next_batch` call consumes one
contiguous chunk of world_size * (local_tokens + 1) tokens; rank r uses the slice [r*span, (r+1)*span) with
span = local_tokens + 1, and
    x = span[:-1].view(-1, seq_len),  y = span[1:].view(-1, seq_len)
where local_tokens = batch_tokens // (world_size * grad_accum). One call is one micro-batch of one rank; a
training step calls it grad_accum times. Every rank walks the same stream, so ranks agree without talking.

`seed` is accepted for loaders with shuffled orders; the sequential stream ignores it, as the records'
loaders do (techniques.md §1.6: none of them depends on SEED).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from golf.data.shards import check_token_range, read_header, read_shard

STATE_KIND = "sequential-v1"


class TokenLoader:
    def __init__(self, files: Sequence, *, batch_tokens: int, seq_len: int, grad_accum: int = 1, rank: int = 0,
                 world_size: int = 1, seed: int = 0, vocab_size: int = 0):
        """files: shard paths (sorted here). vocab_size > 0 checks each shard's ids when it is first read."""
        self.files = sorted(Path(f) for f in files)
        if not self.files:
            raise ValueError("TokenLoader: no shard files given; check the data directory (golf data stats DIR)")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"TokenLoader: rank={rank} must lie in [0, world_size={world_size})")
        if grad_accum < 1 or seq_len < 1:
            raise ValueError(f"TokenLoader: grad_accum={grad_accum} and seq_len={seq_len} must be >= 1")
        per_call = world_size * grad_accum
        local = batch_tokens // per_call if batch_tokens > 0 else 0
        if local == 0 or local * per_call != batch_tokens or local % seq_len:
            raise ValueError(
                f"TokenLoader: batch_tokens={batch_tokens} must split into world_size*grad_accum={per_call} equal "
                f"micro-batches of whole sequences of seq_len={seq_len}: use a multiple of {per_call * seq_len}")
        self.batch_tokens, self.seq_len, self.grad_accum = batch_tokens, seq_len, grad_accum
        self.rank, self.world_size, self.seed, self.vocab_size = rank, world_size, seed, vocab_size
        self.local_tokens = local
        self.counts = [read_header(f) for f in self.files]  # validates every header up front
        if sum(self.counts) == 0:
            raise ValueError(f"TokenLoader: the shards {self.files[0]} ... hold no tokens")
        self._checked: set[int] = set()
        self._file_index = 0
        self._pos = 0
        self._tokens = self._load(0)

    def _load(self, index: int) -> np.ndarray:
        tokens = read_shard(self.files[index])
        if self.vocab_size and index not in self._checked:
            check_token_range(tokens, self.vocab_size, f"shard {self.files[index]}")
            self._checked.add(index)
        return tokens

    def _advance_file(self) -> None:
        self._file_index = (self._file_index + 1) % len(self.files)
        self._pos = 0
        self._tokens = self._load(self._file_index)

    def _read(self, n: int, keep: bool) -> np.ndarray | None:
        """Consume n tokens of the stream (crossing shard ends, wrapping after the last); return them if keep."""
        parts = []
        while n > 0:
            avail = self._tokens.size - self._pos
            if avail <= 0:
                self._advance_file()
                continue
            k = min(n, avail)
            if keep:
                parts.append(self._tokens[self._pos : self._pos + k])
            self._pos += k
            n -= k
        if not keep:
            return None
        return np.concatenate(parts) if len(parts) > 1 else parts[0]  # the caller copies (astype)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One micro-batch of this rank: x, y int64 [local_tokens // seq_len, seq_len] on the CPU."""
        span = self.local_tokens + 1
        self._read(self.rank * span, keep=False)
        local = torch.from_numpy(self._read(span, keep=True).astype(np.int64))
        self._read((self.world_size - 1 - self.rank) * span, keep=False)
        x = local[:-1].view(-1, self.seq_len)  # [local_tokens // T, T]
        y = local[1:].view(-1, self.seq_len)
        return x, y

    def state_dict(self) -> dict:
        """The stream position (shared by all ranks), with the shard names to check on resume."""
        return {"kind": STATE_KIND, "file_index": self._file_index, "pos": self._pos,
                "files": [f.name for f in self.files]}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != STATE_KIND:
            raise ValueError(f"loader state of kind {state.get('kind')!r} cannot resume a {STATE_KIND} loader")
        names = [f.name for f in self.files]
        if state.get("files") != names:
            raise ValueError(f"loader state was saved over shards {state.get('files')}, this loader reads {names}: "
                             "resume with the same data directory")
        index, pos = int(state["file_index"]), int(state["pos"])
        if not (0 <= index < len(self.files) and 0 <= pos <= self.counts[index]):
            raise ValueError(f"loader state position (file {index}, token {pos}) lies outside the shards")
        self._file_index, self._pos = index, pos
        self._tokens = self._load(index)
