"""Tokenizer training with the challenge's settings, loading checks, and document encoding."""

from pathlib import Path

import numpy as np
import pytest

from golf.data.prepare import TextDocuments
from golf.data.tokenizer import (
    BYTE_PIECES,
    SPECIAL_PIECES,
    encode_documents,
    file_sha256,
    load_tokenizer,
    train_tokenizer,
    training_sentences,
)

SAMPLE = Path(__file__).parent / "data" / "sample.txt"


@pytest.fixture(scope="module")
def sp(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tok.model"
    train_tokenizer(training_sentences(TextDocuments(SAMPLE)), path, vocab_size=400, threads=1)
    return load_tokenizer(path)


def test_challenge_id_layout(sp):
    assert [sp.id_to_piece(i) for i in range(SPECIAL_PIECES)] == ["<pad>", "<s>", "</s>", "<unk>"]
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)
    assert all(sp.is_byte(i) for i in range(SPECIAL_PIECES, SPECIAL_PIECES + BYTE_PIECES))
    assert sp.id_to_piece(SPECIAL_PIECES) == "<0x00>"
    assert SPECIAL_PIECES + BYTE_PIECES < sp.vocab_size() <= 400  # hard_vocab_limit=False: may stop short


def test_challenge_normalization(sp):
    ids = sp.encode("In 1811 there, 1811")
    assert not sp.id_to_piece(ids[0]).startswith("\u2581")  # add_dummy_prefix=False
    digit_pieces = [sp.id_to_piece(i) for i in ids if not sp.is_byte(i) and any(c.isdigit() for c in sp.id_to_piece(i))]
    assert digit_pieces and all(len(p.lstrip("\u2581")) == 1 for p in digit_pieces)  # split_digits
    assert sp.encode("\uff21\uff22") == sp.encode("AB")  # NFKC folds full-width letters
    assert sp.decode(sp.encode("x  \t  y")) == "x y"  # whitespace runs collapse


def test_newline_encodes_as_a_space(sp):
    """Why documents join paragraphs with "\\n" (golf.data.corpus.make_documents): nmt_nfkc maps the newline
    to a space, so no byte-fallback token appears and the tokens equal those of a space join."""
    a, b = "She smiled at him.", "He bowed and left the room."
    assert sp.encode(f"{a}\n{b}") == sp.encode(f"{a} {b}")
    assert sp.piece_to_id("<0x0A>") not in sp.encode(f"{a}\n\n{b}")


def test_training_sentences_match_the_challenge_preprocessing():
    docs = ["  a\x00b  ", "", "   ", "c\nd", "e"]
    assert list(training_sentences(docs)) == ["a b", "c\nd", "e"]
    assert list(training_sentences(docs, max_docs=2)) == ["a b"]


def test_encode_documents_prepends_bos_without_eos(sp):
    docs = ["Emma smiled.", "", "Dear me!"]
    out = encode_documents(sp, docs, threads=2)
    expected = []
    for d in docs:
        expected += [sp.bos_id()] + sp.encode(d)
    assert out.dtype == np.uint16 and out.tolist() == expected
    assert sp.eos_id() not in out.tolist()


def test_train_rejects_bad_vocab_sizes(tmp_path):
    with pytest.raises(ValueError, match=r"vocab_size=200: must be in \[261, 65536\]"):
        train_tokenizer(["some text"], tmp_path / "t.model", vocab_size=200)
    with pytest.raises(ValueError, match="vocab_size=70000"):
        train_tokenizer(["some text"], tmp_path / "t.model", vocab_size=70000)


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match=r"tokenizer .*nope\.model does not exist"):
        load_tokenizer(tmp_path / "nope.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"bad\.model is not a SentencePiece model"):
        load_tokenizer(bad)


def test_sha256(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    assert file_sha256(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
