"""The artifact's entropy coders (techniques.md §4.14) at the records' strongest settings.

    brotli  quality 11 (the records' R0331+ choice; the default)
    zstd    level 22 (R0319–R0322)
    lzma    preset 9 (R0325)

Each has a one-byte id that the artifact container stores, so a file names its own decompressor.
"""

from __future__ import annotations

import lzma

import brotli
import zstandard

COMPRESSORS = ("brotli", "zstd", "lzma")
COMPRESSOR_IDS = {"brotli": 1, "zstd": 2, "lzma": 3}
BROTLI_QUALITY = 11
ZSTD_LEVEL = 22
LZMA_PRESET = 9
# zstd frames written here carry their content size; this bounds what a corrupt frame could claim.
MAX_DECOMPRESSED = 1 << 32


def _check(name: str) -> None:
    if name not in COMPRESSOR_IDS:
        raise ValueError(f"compressor {name!r} is unknown; use one of {COMPRESSORS} (quant.compressor)")


def compress(data: bytes, name: str = "brotli") -> bytes:
    _check(name)
    if name == "brotli":
        # brotli's default window (2^22) measured the same as its largest (2^24; +115 B on a 5.3 MB body)
        return brotli.compress(data, quality=BROTLI_QUALITY)
    if name == "zstd":
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True).compress(data)
    return lzma.compress(data, format=lzma.FORMAT_XZ, preset=LZMA_PRESET)


def decompress(data: bytes, name: str) -> bytes:
    """Inverse of compress; a stream that does not decode raises ValueError naming the compressor."""
    _check(name)
    try:
        if name == "brotli":
            return brotli.decompress(data)
        if name == "zstd":
            return zstandard.ZstdDecompressor().decompress(data, max_output_size=MAX_DECOMPRESSED)
        return lzma.decompress(data, format=lzma.FORMAT_XZ)
    except (brotli.error, zstandard.ZstdError, lzma.LZMAError) as e:
        raise ValueError(f"the {name} stream does not decode ({e}); the data is corrupt or not {name}") from e


def compressor_name(cid: int) -> str:
    for name, i in COMPRESSOR_IDS.items():
        if i == cid:
            return name
    raise ValueError(f"compressor id {cid} is unknown (known: {COMPRESSOR_IDS})")
