"""Bible text and commentaries from SWORD modules (Debian sword-text-*, sword-comm-*), read without
libsword or its `mod2imp` tool (which would need a root install).

A compressed SWORD module (drivers zText, zCom, zText4, zCom4) stores each testament in three files:
  *.?zs  block index: per block, uint32 LE offset, compressed size, uncompressed size
  *.?zz  the zlib-compressed blocks back to back
  *.?zv  verse index: per verse, uint32 LE block number, uint32 LE start in the uncompressed block, and the
         size as uint16 (zText/zCom) or uint32 (the "4" drivers)
The middle letter is the block type (b = book, c = chapter, ...). Modules from Debian do not always declare
the driver that matches their verse index, so the entry size is inferred from the data (see _verse_entries).
The text is OSIS XML; paragraphs are delimited by `<div type="x-p"/>` milestones (and <p>, <lb/>).
"""

from __future__ import annotations

import html
import re
import struct
import zlib

_NOTE_OR_TITLE = re.compile(r"<note\b.*?</note>|<title\b.*?</title>", re.S)
# Paragraph boundaries: milestone divs (x-p, book/chapter starts), <p>, <lb/>, and table/list/poetry structure.
_PARAGRAPH_BREAK = re.compile(r"<div\b[^>]*/>|</?p\b[^>]*>|<lb\b[^>]*/>|</?(?:row|table|list|item|lg|l)\b[^>]*>")
_TAG = re.compile(r"<[^>]*>")


def _blocks(block_index: bytes, data: bytes, where: str) -> list[bytes]:
    if len(block_index) % 12:
        raise ValueError(f"{where}: block index size {len(block_index)} is not a multiple of 12")
    blocks = []
    for offset, size, usize in struct.iter_unpack("<III", block_index):
        if size == 0:
            blocks.append(b"")
            continue
        if offset + size > len(data):
            raise ValueError(f"{where}: block at {offset}+{size} lies beyond the data file ({len(data)} bytes)")
        raw = zlib.decompress(data[offset : offset + size])
        if len(raw) != usize:
            raise ValueError(f"{where}: block at {offset} holds {len(raw)} bytes, index says {usize}")
        blocks.append(raw)
    return blocks


def _fits(entries: list[tuple[int, int, int]], blocks: list[bytes]) -> bool:
    return all(s == 0 or (b < len(blocks) and start + s <= len(blocks[b])) for b, start, s in entries)


def _verse_entries(verse_index: bytes, blocks: list[bytes], where: str) -> list[tuple[int, int, int]]:
    """(block, start, size) per verse. Entries are 12 bytes (uint32 size) or 10 bytes (uint16 size); the
    layout whose every entry lies inside its block is the real one."""
    candidates = []
    if len(verse_index) % 12 == 0:
        candidates.append(list(struct.iter_unpack("<III", verse_index)))
    if len(verse_index) % 10 == 0:
        candidates.append(list(struct.iter_unpack("<IIH", verse_index)))
    for entries in candidates:
        if _fits(entries, blocks):
            return entries
    raise ValueError(f"{where}: verse index ({len(verse_index)} bytes) matches neither SWORD layout")


def osis_paragraphs(osis: str) -> list[str]:
    """Plain paragraphs of OSIS XML: notes and titles dropped, tags stripped, entities decoded."""
    out = []
    for part in _PARAGRAPH_BREAK.split(_NOTE_OR_TITLE.sub("", osis)):
        text = " ".join(html.unescape(_TAG.sub("", part)).split())
        if text:
            out.append(text)
    return out


def sword_paragraphs(block_index: bytes, data: bytes, verse_index: bytes, where: str = "SWORD module") -> list[str]:
    """Paragraphs of one testament of a compressed SWORD module, in canonical verse order.

    Verses are joined with a space: a verse's stored text does not always end in whitespace, and plain
    concatenation glues the last word of one verse to the first of the next."""
    blocks = _blocks(block_index, data, where)
    verses = [
        blocks[b][start : start + size].decode("utf-8", errors="replace")
        for b, start, size in _verse_entries(verse_index, blocks, where)
        if size
    ]
    return osis_paragraphs(" ".join(verses))
