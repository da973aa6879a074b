"""Per-format paragraph extractors for plain-text sources: Gutenberg texts (Shakespeare, Milton), GCIDE and
FOLDOC dictionary entries, WordNet glosses, fortune cookies and the Jargon File. Each takes one file's text and
returns raw paragraphs in order (text.clean_paragraphs filters them)."""

from __future__ import annotations

import re

from golf.data.sources.text import split_blocks

_GUTENBERG_START = re.compile(r"^\*\*\* ?START OF[^\n]*$", re.M)
_GUTENBERG_END = re.compile(r"^\*\*\* ?END OF[^\n]*$", re.M)
_BRACKETED = re.compile(r"\[[^\]]*\]")
_CITATION = re.compile(r"\s--(?=[A-Z]).*")  # GCIDE "--Shak." style author citations end a definition
_SENSE_PREFIX = re.compile(r"^(?:\d+\.\s*|\([^)]{1,40}\)\s*)+")
_ATTRIBUTION = re.compile(r"^\s*--\s", re.M)
_GCIDE_HEADWORD = re.compile(r"^([^\\,\[]*)")  # up to the pronunciation \Ab*do"men\, a comma or a bracket
_FOLDOC_URL = re.compile(r"\{\([^)}]*\)\}")
_FOLDOC_PREFIX = re.compile(r"^(?:\d+\.\s*|<[^<>]{1,40}>\s*)+")
_WORDNET_MARKER = re.compile(r"\((?:a|p|ip)\)$")


def decode_text(raw: bytes) -> str:
    """UTF-8 (with or without BOM) when it decodes, else Latin-1 (the older Gutenberg files)."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def gutenberg_paragraphs(text: str) -> list[str]:
    """Blank-line-separated paragraphs of a Gutenberg text, cut to the part between its
    `*** START OF` / `*** END OF` markers when it has them (the licence boilerplate lies outside)."""
    text = text.replace("\r\n", "\n")
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end() :]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return split_blocks(text)


def _entries(text: str):
    """(headword line or None, body lines) per blank-line-separated block of a dictd dictionary: a block
    whose first line starts at column 0 opens an entry; indented blocks continue the current one."""
    for block in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")):
        lines = block.split("\n")
        if lines and lines[0] and not lines[0][0].isspace():
            yield lines[0], lines[1:]
        else:
            yield None, lines


def _with_headword(headword: str, body: str) -> str:
    # Definitions read as text only with their word: "Abdomen: The belly, ...". Overlong "headwords"
    # (a database banner, a phrase) are left off.
    return f"{headword}: {body}" if headword and len(headword.split()) <= 4 else body


def gcide_paragraphs(text: str) -> list[str]:
    """'Headword: definition.' paragraphs from the dictd form of GCIDE (gcide.dict, gunzipped).

    The headword line (pronunciation, part of speech) and any continuation of its bracketed etymology are
    dropped; the remainder is definition text. Source tags such as `[1913 Webster]`, `[Obs.]` and
    etymologies (all bracketed), `--Author.` citations, sense numbers and field labels like `(Anat.)` are
    removed; `{cross references}` keep their text."""
    out, headword = [], ""
    for head, lines in _entries(text):
        if head is not None:
            headword = _GCIDE_HEADWORD.match(head).group(1).strip()
            depth = head.count("[") - head.count("]")
            i = 0
            while depth > 0 and i < len(lines):
                depth += lines[i].count("[") - lines[i].count("]")
                i += 1
            lines = lines[i:]
        body = " ".join(line.strip() for line in lines if line.strip())
        body = _CITATION.sub("", _BRACKETED.sub("", body))
        body = _SENSE_PREFIX.sub("", body.strip()).replace("{", "").replace("}", "")
        if body:
            out.append(_with_headword(headword, body))
    return out


def foldoc_paragraphs(text: str) -> list[str]:
    """'Headword: definition' paragraphs from the dictd form of FOLDOC (foldoc.dict, gunzipped):
    `<category>` labels, sense numbers, `{(url)}` links, bracketed references and `__emphasis__` marks are
    removed; `{cross references}` keep their text."""
    out, headword = [], ""
    for head, lines in _entries(text):
        if head is not None:
            headword = head.strip()
        body = " ".join(line.strip() for line in lines if line.strip())
        body = _BRACKETED.sub("", _FOLDOC_URL.sub("", body)).replace("__", "")
        body = _FOLDOC_PREFIX.sub("", body).replace("{", "").replace("}", "")
        if body:
            out.append(_with_headword(headword, body))
    return out


def wordnet_paragraphs(text: str) -> list[str]:
    """One 'Lemma: gloss.' paragraph per synset line of a WordNet data.* file.

    Synset lines are `offset lex_filenum ss_type w_cnt word ... | gloss`; the licence header lines start
    with two spaces. The gloss gets a final period (WordNet omits it) so it reads as a sentence."""
    out = []
    for line in text.splitlines():
        if line.startswith("  ") or " | " not in line:
            continue
        fields, _, gloss = line.partition(" | ")
        parts = fields.split(" ")
        if len(parts) < 5:
            continue
        lemma = _WORDNET_MARKER.sub("", parts[4]).replace("_", " ")
        gloss = gloss.strip().replace("`", "'")
        if not gloss or not lemma:
            continue
        if gloss[-1] not in ".!?":
            gloss += "."
        out.append(f"{lemma[0].upper()}{lemma[1:]}: {gloss}")
    return out


def fortune_paragraphs(text: str) -> list[str]:
    """Fortune cookies (separated by `%` lines), each without its trailing `-- Author` attribution."""
    out = []
    for cookie in re.split(r"^%[ \t]*$", text.replace("\r\n", "\n"), flags=re.M):
        m = _ATTRIBUTION.search(cookie)
        if m:
            cookie = cookie[: m.start()]
        cookie = " ".join(cookie.split())
        if cookie:
            out.append(cookie)
    return out


def jargon_paragraphs(text: str) -> list[str]:
    """Paragraphs of the Jargon File's text edition, `{cross references}` unwrapped and sense numbers
    dropped. Headword lines (`:word: n.`) are short and fall to the prose filter."""
    out = []
    for block in split_blocks(text):
        block = _SENSE_PREFIX.sub("", block.replace("{", "").replace("}", ""))
        if block:
            out.append(block)
    return out
