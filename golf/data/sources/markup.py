"""Markup to raw paragraphs: reStructuredText (Python and Linux docs), POD (Perl docs) and HTML
(PostgreSQL and Django docs). Each function takes one document's text and returns its paragraphs in order,
unfiltered (text.clean_paragraphs decides what is prose)."""

from __future__ import annotations

import re
from html import unescape

# ---------------------------------------------------------------- reStructuredText

# Section over/underlines and simple-table borders: one punctuation character repeated, possibly in columns.
_RST_RULE = re.compile(r"^([=\-~^\"'`#*+<>:._])\1{2,}(\s+\1{2,})*\s*$")
_RST_DIRECTIVE = re.compile(r"^\.\.\s+([\w:.+-]+)::")
_RST_BULLET = re.compile(r"^(?:[-*+\u2022]|\d+[.)]|#\.)\s+")
_RST_ROLE = re.compile(r":[\w:+.-]+:`([^`]*)`")
_RST_LITERAL = re.compile(r"``(.+?)``")
_RST_LINK = re.compile(r"`([^`<]*?)\s*(?:<[^`>]*>)?`_{1,2}")
_RST_DEFAULT_ROLE = re.compile(r"`([^`]+)`")
_RST_FOOTNOTE_REF = re.compile(r"\s*\[(?:#\w*|\d+|\*)\]_")
_RST_STRONG = re.compile(r"\*\*([^*]+)\*\*")
_RST_EMPH = re.compile(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])")

# Directives whose indented body is code, data or navigation. Every other directive (note, warning,
# function, class, versionchanged, ...) has a prose body that is kept; only its own line is dropped.
_RST_NON_PROSE = frozenset(
    "code code-block sourcecode literalinclude highlight doctest testcode testoutput testsetup "
    "productionlist math csv-table list-table table toctree image figure raw kernel-doc kernel-abi "
    "kernel-feat kernel-include include graphviz only ifconfig parsed-literal c:macro autosummary "
    "automodule autoclass autofunction flat-table".split()
)


def _rst_role_text(m: re.Match) -> str:
    inner = m.group(1)
    if inner.endswith(">") and "<" in inner:  # :ref:`title <target>` shows the title
        inner = inner[: inner.rfind("<")].strip()
    if inner.startswith("~"):  # :func:`~a.b.c` shows the last component
        inner = inner[1:].rsplit(".", 1)[-1]
    return inner.lstrip("!")


def rst_inline(text: str) -> str:
    """Unwrap inline markup to the text a reader sees. (The guards skip the regexes for the many paragraphs
    without markup: this runs on ~100k paragraphs.)"""
    if "]_" in text:
        text = _RST_FOOTNOTE_REF.sub("", text)
    if "`" in text:
        text = _RST_ROLE.sub(_rst_role_text, text)
        text = _RST_LITERAL.sub(r"\1", text)
        text = _RST_LINK.sub(r"\1", text)
        text = _RST_DEFAULT_ROLE.sub(r"\1", text)
    if "*" in text:
        text = _RST_STRONG.sub(r"\1", text)
        text = _RST_EMPH.sub(r"\1", text)
    return text


def rst_paragraphs(text: str) -> list[str]:
    """Paragraphs of a reST document: headings, comments, code/literal blocks and tables are dropped;
    list items become their own paragraphs."""
    out: list[str] = []
    cur: list[str] = []
    skip_deeper_than = -1  # >= 0: inside a block to skip, which lasts while lines are indented deeper

    def flush():
        if cur:
            out.append(rst_inline(" ".join(cur)))
            cur.clear()

    for line in text.replace("\r\n", "\n").split("\n"):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if skip_deeper_than >= 0:
            if not stripped or indent > skip_deeper_than:
                continue
            skip_deeper_than = -1
        if not stripped:
            flush()
            continue
        if _RST_RULE.match(stripped):
            cur.clear()  # the heading text or table row collected so far is not prose
            continue
        if stripped.startswith(".."):
            flush()
            m = _RST_DIRECTIVE.match(stripped)
            if m is None or m.group(1) in _RST_NON_PROSE:  # comment, target, footnote or code-like body
                skip_deeper_than = indent
            continue
        if stripped == "::" or stripped.endswith("::"):
            # "Example::" introduces an indented literal (code) block; the sentence itself is kept.
            if stripped != "::":
                cur.append(stripped[:-1])
            flush()
            skip_deeper_than = indent
            continue
        if _RST_BULLET.match(stripped):
            flush()
            stripped = _RST_BULLET.sub("", stripped, count=1)
        cur.append(stripped)
    flush()
    return out


# ---------------------------------------------------------------- POD

_POD_ENTITIES = {"lt": "\ue000", "gt": "\ue001", "verbar": "|", "sol": "/", "quot": '"', "amp": "&", "apos": "'"}
_POD_ESCAPE = re.compile(r"E<(\w+)>")
_POD_MULTI = [re.compile(rf"([A-Z]){'<' * n}\s+(.*?)\s+{'>' * n}", re.S) for n in (4, 3, 2)]
_POD_SINGLE = re.compile(r"([A-Z])<([^<>]*)>")


def _pod_escape(m: re.Match) -> str:
    name = m.group(1)
    if name in _POD_ENTITIES:
        return _POD_ENTITIES[name]
    if name.isdigit():
        return chr(int(name))
    if name.lower().startswith("0x"):
        return chr(int(name, 16))
    return ""


def _pod_code(m: re.Match) -> str:
    code, inner = m.group(1), m.group(2)
    if code in "XZ":  # index entries and zero-width markers render as nothing
        return ""
    if code == "L":
        if "|" in inner:
            return inner.split("|", 1)[0]
        page, _, section = inner.partition("/")
        section = section.strip('"')
        return f"{section} in {page}" if page and section else section or page
    return inner


def pod_inline(text: str) -> str:
    if "<" not in text:
        return text
    if "E<" in text:
        text = _POD_ESCAPE.sub(_pod_escape, text)
    if "<<" in text:
        for pattern in _POD_MULTI:
            text = pattern.sub(_pod_code, text)
    while True:  # innermost codes first, until none is left
        new = _POD_SINGLE.sub(_pod_code, text)
        if new == text:
            break
        text = new
    return text.replace("\ue000", "<").replace("\ue001", ">")


def pod_paragraphs(text: str) -> list[str]:
    """Ordinary paragraphs of POD: `=command` paragraphs, `=begin`..`=end` regions, verbatim (indented,
    i.e. code) paragraphs and, in a Perl module, the code between `=cut` and the next command are dropped.
    A file that starts with code (a .pm) is in code until its first command paragraph."""
    out: list[str] = []
    in_region = False
    in_code = not text.lstrip().startswith("=")
    for block in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")):
        block = block.strip("\n")
        if not block.strip():
            continue
        if block.startswith("="):
            if block.startswith("=begin"):
                in_region = True
            elif block.startswith("=end"):
                in_region = False
            in_code = block.startswith("=cut")
            continue
        if in_code or in_region or block[0] in " \t":
            continue
        out.append(pod_inline(" ".join(block.split())))
    return out


# ---------------------------------------------------------------- HTML

_HTML_CAPTURE = frozenset({"p", "li", "dd", "blockquote"})
_HTML_SKIP = frozenset({"pre", "table", "script", "style", "head", "title"})
# A comment, or a start/end tag: group 1 is "/" for end tags, group 2 the tag name, group 3 the attributes.
_HTML_TAG = re.compile(r"<!--.*?-->|<(/?)([a-zA-Z][a-zA-Z0-9]*)([^>]*)>", re.S)
_HTML_CLASS_PARA = re.compile(r"""class\s*=\s*["']?(?:[^"'>]*\s)?para[\s"'>]""")


def html_paragraphs(html: str) -> list[str]:
    """Text of <p>, <li>, <dd>, <blockquote> and DocBook div.para elements; <pre>, tables, scripts and the
    head are skipped. A capture opening inside another ends the outer one, so nested elements split into
    separate paragraphs rather than duplicating text.

    A regex scan over tags rather than html.parser: this reads ~50 MB of HTML, and html.parser's Python
    loop is several times slower; the generated documentation it reads is well-formed enough."""
    out: list[str] = []
    buf: list[str] | None = None
    skip_depth = 0
    pos = 0

    def flush():
        if buf:
            text = " ".join(unescape("".join(buf)).split())
            if text:
                out.append(text)

    for m in _HTML_TAG.finditer(html):
        if buf is not None and skip_depth == 0 and m.start() > pos:
            buf.append(html[pos : m.start()])
        pos = m.end()
        name = m.group(2)
        if name is None:  # comment
            continue
        name = name.lower()
        if name in _HTML_SKIP:
            skip_depth = max(0, skip_depth + (-1 if m.group(1) else 1))
        elif name in _HTML_CAPTURE or name == "div":
            opens_para = not m.group(1) and (name != "div" or _HTML_CLASS_PARA.search(m.group(3)))
            if opens_para or m.group(1):
                flush()
                buf = [] if opens_para else None
        elif name == "br" and buf is not None:
            buf.append(" ")
    flush()
    return out
