"""The challenge's token shard format (techniques.md §1.1), read and written with validation.

A shard is a header of 256 little-endian int32 (magic 20240520, version 1, token count, zeros) followed by
that many little-endian uint16 token ids; the file size is exactly 1024 + 2 * count. golf names shards
train_NNNNNN.bin / val_NNNNNN.bin; the challenge's downloads are fineweb_train_NNNNNN.bin /
fineweb_val_NNNNNN.bin (CaseOps exports add fineweb_val_bytes_NNNNNN.bin sidecars, which are not tokens).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

import numpy as np

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
MAX_TOKENS = 2**31 - 1  # the count is an int32
TOKEN_DTYPE = np.dtype("<u2")
SPLITS = ("train", "val")


def _shard_name_re(split: str) -> re.Pattern:
    # Anchored, so fineweb_val_bytes_000000.bin (a byte-count sidecar) never matches the val split.
    return re.compile(rf"^(fineweb_)?{split}_(\d+)\.bin$")


def shard_path(out_dir, split: str, index: int) -> Path:
    """golf's name for shard `index` of `split`."""
    return Path(out_dir) / f"{split}_{index:06d}.bin"


def write_shard(path, tokens: np.ndarray) -> None:
    """Write tokens (any integer array, 1-D) as a shard; atomic (temporary file, then rename)."""
    path = Path(path)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"write_shard {path}: tokens must be 1-D, got shape {tuple(tokens.shape)}")
    if tokens.size > MAX_TOKENS:
        raise ValueError(f"write_shard {path}: {tokens.size} tokens exceed the format's int32 count; "
                         "write smaller shards")
    if tokens.size and tokens.dtype != TOKEN_DTYPE:
        if not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"write_shard {path}: tokens must be integers, got dtype {tokens.dtype}")
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi > 65535:
            raise ValueError(f"write_shard {path}: token ids must lie in [0, 65535] (uint16), got [{lo}, {hi}]; "
                             "the vocabulary must have at most 65536 entries")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = MAGIC, VERSION, tokens.size
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(header.tobytes())
            f.write(tokens.astype(TOKEN_DTYPE, copy=False).tobytes())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_header(path) -> int:
    """Validate a shard's header and size; return its token count."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ValueError(f"shard {path} does not exist") from None
    if size < HEADER_BYTES:
        raise ValueError(f"shard {path} is {size} bytes, shorter than the {HEADER_BYTES}-byte header: "
                         "the file is truncated or not a token shard; re-create it with `golf data prepare`")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if header[0] != MAGIC:
        raise ValueError(f"shard {path} has magic number {int(header[0])}, expected {MAGIC}: not a token shard "
                         "in the challenge format; re-create it with `golf data prepare`")
    if header[1] != VERSION:
        raise ValueError(f"shard {path} has format version {int(header[1])}, golf reads version {VERSION}; "
                         "re-export it with the challenge's version-1 writer or `golf data prepare`")
    count = int(header[2])
    expected = HEADER_BYTES + 2 * count
    if count < 0 or size != expected:
        raise ValueError(f"shard {path} is {size} bytes but its header says {count} tokens "
                         f"({expected} bytes): the file is truncated or corrupt; download or prepare it again")
    return count


def read_shard(path) -> np.ndarray:
    """The shard's tokens as a read-only uint16 memmap (header and size validated)."""
    count = read_header(path)
    if count == 0:
        return np.zeros(0, dtype=TOKEN_DTYPE)
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(count,))


def check_token_range(tokens: np.ndarray, vocab_size: int, where) -> None:
    """Raise when any token id is >= vocab_size (the data was made with a different tokenizer)."""
    if tokens.size == 0:
        return
    hi = int(tokens.max())
    if hi >= vocab_size:
        raise ValueError(f"{where} holds token id {hi}, but the tokenizer has only {vocab_size} ids: the shards "
                         "were made with a different tokenizer; pass the matching one (--data.tokenizer / "
                         "--tokenizer) or prepare the data again")


def find_shards(data_dir, split: str) -> list[Path]:
    """Shards of `split` ("train" or "val") in data_dir, sorted by name. Reads golf's names and the
    challenge's fineweb_* names (never both at once); *_bytes_* sidecars are excluded."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: use one of {', '.join(SPLITS)}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ValueError(f"data directory {data_dir} does not exist; create it with `golf data prepare` "
                         "or `golf data fineweb`")
    pattern = _shard_name_re(split)
    found = sorted(p for p in data_dir.iterdir() if pattern.match(p.name) and p.is_file())
    if not found:
        raise ValueError(f"no {split} shards ({split}_*.bin or fineweb_{split}_*.bin) in {data_dir}; "
                         "create them with `golf data prepare` or `golf data fineweb`")
    schemes = {bool(pattern.match(p.name).group(1)) for p in found}
    if len(schemes) > 1:
        raise ValueError(f"{data_dir} holds both {split}_*.bin and fineweb_{split}_*.bin shards, which would mix "
                         "two datasets; keep one set per directory")
    return found


def load_tokens(paths: Iterable) -> np.ndarray:
    """All tokens of the given shards, concatenated in the given order (uint16, in memory)."""
    arrays = [read_shard(p) for p in paths]
    if not arrays:
        raise ValueError("load_tokens: no shard paths given")
    return np.concatenate(arrays) if len(arrays) > 1 else np.array(arrays[0])
