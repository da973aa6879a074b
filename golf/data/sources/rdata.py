"""Jane Austen's six novels from the Debian package r-cran-janeaustenr, read without R.

The package's `data/Rdata.rdb` is R's lazy-load database: a sequence of records, each a 4-byte big-endian
uncompressed length followed by a zlib stream. Each stream holds an R serialization in XDR format
("X\\n", format version, writer version, minimal reader version, and for format 3 the native encoding),
whose top object for this package is a character vector (SEXP type 16) holding one novel, a line per element.
"""

from __future__ import annotations

import struct
import zlib

_STRSXP = 16
_CHARSXP = 9
_LATIN1_MASK = 1 << 2  # CHARSXP "levels" bits: the element's declared encoding
_NA_LENGTH = -1


class _Reader:
    def __init__(self, data: bytes, where: str):
        self.data, self.pos, self.where = data, 0, where

    def int(self) -> int:
        if self.pos + 4 > len(self.data):
            raise ValueError(f"{self.where}: R serialization ends early at byte {self.pos}")
        (v,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return v

    def bytes(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError(f"{self.where}: R serialization ends early at byte {self.pos}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out


def rdb_records(data: bytes, where: str = "Rdata.rdb") -> list[bytes]:
    """Decompressed serializations of every record in a lazy-load .rdb file, in file order."""
    records = []
    pos = 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise ValueError(f"{where}: truncated record header at byte {pos}")
        (length,) = struct.unpack_from(">I", data, pos)
        d = zlib.decompressobj()
        try:
            payload = d.decompress(data[pos + 4 :])
        except zlib.error as e:
            raise ValueError(f"{where}: record at byte {pos} is not a zlib stream ({e})") from e
        if len(payload) != length or not d.eof:
            raise ValueError(f"{where}: record at byte {pos} holds {len(payload)} bytes, header says {length}")
        records.append(payload)
        pos = len(data) - len(d.unused_data)
    return records


def unserialize_strings(payload: bytes, where: str = "R object") -> list[str | None] | None:
    """The character vector at the top of an XDR R serialization (None elements are NA), or None when the
    top object is something else (this package also stores a few non-text objects)."""
    r = _Reader(payload, where)
    if r.bytes(2) != b"X\n":
        raise ValueError(f"{where}: not an XDR R serialization (expected 'X\\n' header)")
    version = r.int()
    r.int(), r.int()  # writer version, minimal reader version
    if version == 3:
        r.bytes(r.int())  # native encoding name
    elif version != 2:
        raise ValueError(f"{where}: R serialization format {version} is not supported (only 2 and 3)")
    if r.int() & 0xFF != _STRSXP:
        return None
    n = r.int()
    if n == -1:  # long vector: length as two ints
        n = (r.int() << 32) | r.int()
    out: list[str | None] = []
    for _ in range(n):
        flags = r.int()
        if flags & 0xFF != _CHARSXP:
            raise ValueError(f"{where}: string vector element has SEXP type {flags & 0xFF}, expected 9")
        length = r.int()
        if length == _NA_LENGTH:
            out.append(None)
            continue
        raw = r.bytes(length)
        latin1 = (flags >> 12) & _LATIN1_MASK
        out.append(raw.decode("latin-1") if latin1 else raw.decode("utf-8", errors="replace"))
    return out


def lines_to_paragraphs(lines: list[str | None]) -> list[str]:
    """Join consecutive non-blank lines; a blank (or NA) line ends a paragraph."""
    paragraphs, cur = [], []
    for line in lines:
        if line is None or not line.strip():
            if cur:
                paragraphs.append(" ".join(cur))
                cur = []
        else:
            cur.append(line.strip())
    if cur:
        paragraphs.append(" ".join(cur))
    return paragraphs


def austen_paragraphs(rdb: bytes) -> list[str]:
    """Paragraphs of every character vector stored in janeaustenr's data/Rdata.rdb, record by record."""
    out = []
    for i, payload in enumerate(rdb_records(rdb)):
        lines = unserialize_strings(payload, where=f"Rdata.rdb record {i}")
        if lines is not None:
            out.extend(lines_to_paragraphs(lines))
    return out
