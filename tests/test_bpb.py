"""val_bpb byte accounting: the LUT rules of techniques.md §1.4.2 and the identity
LUT byte total == sum over documents of len(decode(document).encode("utf-8"))."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from golf.data.prepare import TextDocuments
from golf.data.tokenizer import load_tokenizer, train_tokenizer, training_sentences
from golf.eval.bpb import bits_per_byte, build_byte_luts, byte_tables, stream_bytes, token_bytes

SAMPLE = Path(__file__).parent / "data" / "sample.txt"
CRAFTED = [
    "  leading spaces and   multiple   spaces  ",
    "digits 1234567890 and 3.14159, years 1811 and 2024",
    "naïve café façade — “quotes” ‘single’ 日本語 😀 α β γ",
    "\u2581literal block character and \u00a0no-break\u00a0space",
    "tabs\tand\nnewlines\r\n end",
    "ﬁ ligature ① circled ＡＢＣ full width",
    " ",
    "",
    "a",
    "\x00nul\x01ctl",
    " 日",
    "The End.",
]


@pytest.fixture(scope="module")
def sp(tmp_path_factory):
    path = tmp_path_factory.mktemp("bpb") / "tok.model"
    train_tokenizer(training_sentences(TextDocuments(SAMPLE)), path, vocab_size=360, threads=1)
    return load_tokenizer(path)


def _decoded_bytes(sp, docs):
    return sum(len(sp.decode(sp.encode(d)).encode("utf-8")) for d in docs)


def _stream(sp, docs):
    out = []
    for d in docs:
        out += [sp.bos_id()] + sp.encode(d)
    return np.array(out, dtype=np.uint16)


def test_lut_rules(sp):
    V = sp.vocab_size() + 8  # model vocab padded past the tokenizer's
    lut = build_byte_luts(sp, V)
    assert lut.base_bytes.dtype == torch.int16 and lut.base_bytes.shape == (V,)
    for i in range(4):  # pad, bos, eos, unk: 0 bytes, boundary
        assert lut.base_bytes[i] == 0 and bool(lut.is_boundary[i]) and not bool(lut.has_leading_space[i])
    for i in range(4, 260):  # byte-fallback pieces: 1 byte
        assert lut.base_bytes[i] == 1 and not bool(lut.is_boundary[i]) and not bool(lut.has_leading_space[i])
    for i in range(260, sp.vocab_size()):
        piece = sp.id_to_piece(i)
        lead = piece.startswith("\u2581")
        assert bool(lut.has_leading_space[i]) == lead
        assert int(lut.base_bytes[i]) == len(piece[1:].encode() if lead else piece.encode())
    assert not lut.base_bytes[sp.vocab_size():].any() and lut.is_boundary[sp.vocab_size():].all()
    space = sp.piece_to_id("\u2581")
    word = next(i for i in range(260, sp.vocab_size()) if not sp.id_to_piece(i).startswith("\u2581"))
    got = token_bytes(lut, torch.tensor([word, sp.bos_id(), V - 1]), torch.tensor([space, space, space]))
    assert got.tolist() == [1, 0, 0]  # "▁" alone: 1 byte after a normal token, 0 after BOS or a padding id


def test_byte_identity_on_crafted_text(sp):
    for doc in CRAFTED:  # each alone, then all as one stream
        assert stream_bytes(byte_tables(sp, sp.vocab_size()), _stream(sp, [doc])) == _decoded_bytes(sp, [doc]), doc
    stream = _stream(sp, CRAFTED)
    expected = _decoded_bytes(sp, CRAFTED)
    assert stream_bytes(byte_tables(sp, sp.vocab_size()), stream) == expected
    t = torch.from_numpy(stream.astype(np.int64))
    lut = build_byte_luts(sp, 1024)
    assert int(token_bytes(lut, t[:-1], t[1:]).sum(dtype=torch.int64)) == expected  # targets = all but the first BOS
    assert any(sp.is_byte(int(i)) for i in stream)  # the crafted text does exercise byte fallback


def test_stream_bytes_across_a_split(sp):
    stream = _stream(sp, ["one two three", "four five"])
    tables = byte_tables(sp, sp.vocab_size())
    for cut in range(1, stream.size):
        whole = stream_bytes(tables, stream)
        assert stream_bytes(tables, stream[:cut]) + stream_bytes(tables, stream[cut:], int(stream[cut - 1])) == whole


def test_bits_per_byte():
    assert bits_per_byte(1000.0, 500) == pytest.approx(1000.0 / (math.log(2) * 500))
    with pytest.raises(ValueError, match="byte_count=0"):
        bits_per_byte(1.0, 0)


def test_lut_to_device(sp):
    lut = build_byte_luts(sp, 512).to("cpu")
    assert lut.size == 512 and lut.is_boundary.device.type == "cpu"


# ---------------------------------------------------------------- the builtin corpus (slow: builds it once)


@pytest.fixture(scope="session")
def builtin_dir(tmp_path_factory):
    from golf.data.prepare import builtin_data_dir, default_cache_dir, ensure_builtin

    cache = default_cache_dir()
    if not (builtin_data_dir(cache, 1024, 500) / "meta.json").is_file():
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            pytest.skip("the builtin corpus needs apt-get and dpkg-deb (a Debian machine)")
        cache = tmp_path_factory.mktemp("golf-cache")
    return ensure_builtin(cache, vocab_size=1024, val_docs=500)


@pytest.mark.slow
def test_byte_identity_on_builtin_val_split(builtin_dir):
    from golf.data.dataset import open_dataset

    ds = open_dataset(builtin_dir, model_vocab_size=1024)
    sp = ds.processor()
    tokens = ds.val_tokens()
    starts = np.flatnonzero(tokens == sp.bos_id())
    assert starts[0] == 0 and starts.size == 500
    ends = [*starts[1:], tokens.size]
    decoded = sum(len(sp.decode(tokens[s + 1 : e].tolist()).encode("utf-8")) for s, e in zip(starts, ends))
    assert stream_bytes(byte_tables(sp, 1024), tokens) == decoded
    t = torch.from_numpy(tokens.astype(np.int64))
    assert int(token_bytes(build_byte_luts(sp, 1024), t[:-1], t[1:]).sum(dtype=torch.int64)) == decoded
    meta = json.loads((builtin_dir / "meta.json").read_text())
    assert meta["splits"]["val"]["bytes"] == decoded


@pytest.mark.slow
def test_builtin_corpus_meets_the_issue_targets(builtin_dir):
    """Issue 2's done-when: at vocab 1024, >= 30M train tokens and >= 400 val documents, val mixing sources."""
    meta = json.loads((builtin_dir / "meta.json").read_text())
    assert meta["vocab_size"] == 1024
    assert meta["splits"]["train"]["tokens"] >= 30_000_000
    assert meta["splits"]["val"]["docs"] >= 400
    from golf.data.corpus import read_corpus

    val_sources = {doc["source"] for doc, _ in zip(read_corpus(meta["corpus_file"]), range(500))}
    assert len(val_sources) >= 10
