"""prepare(): tokenizer + shards + meta.json; document readers; open_dataset's validation."""

import json
import random
from pathlib import Path

import numpy as np
import pytest

from golf.data.dataset import open_dataset, resolve_tokenizer
from golf.data.prepare import JsonlDocuments, TextDocuments, default_cache_dir, prepare
from golf.data.shards import find_shards, load_tokens, read_shard, write_shard
from golf.data.tokenizer import file_sha256, load_tokenizer

SAMPLE = Path(__file__).parent / "data" / "sample.txt"


def _docs(n=120, seed=0):
    paragraphs = [p for block in TextDocuments(SAMPLE) for p in block.split("\n")]
    rng = random.Random(seed)
    return ["\n".join(rng.sample(paragraphs, 3)) for _ in range(n)]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "data"
    docs = _docs()
    meta = prepare(docs, out, vocab_size=360, val_docs=10, shard_tokens=2000, threads=1)
    return out, docs, meta


def test_layout_and_meta(prepared):
    out, docs, meta = prepared
    sp = load_tokenizer(out / "tokenizer.model")
    assert json.loads((out / "meta.json").read_text()) == meta
    assert meta["vocab_size"] == sp.vocab_size() and meta["tokenizer_sha256"] == file_sha256(out / "tokenizer.model")
    train, val = find_shards(out, "train"), find_shards(out, "val")
    assert [p.name for p in val] == meta["splits"]["val"]["files"] and len(train) > 1  # tiny shards
    assert all(read_shard(p).size == 2000 for p in train[:-1])  # full shards, the last one partial
    for split, files, split_docs in (("val", val, docs[:10]), ("train", train, docs[10:])):
        tokens = load_tokens(files)
        expected = []
        for d in split_docs:  # [BOS] + tokens per document, in order, no EOS
            expected += [sp.bos_id()] + sp.encode(d)
        assert tokens.tolist() == expected
        st = meta["splits"][split]
        assert st["docs"] == len(split_docs) and st["tokens"] == len(expected)
        assert st["bytes"] == sum(len(sp.decode(sp.encode(d)).encode()) for d in split_docs)
        assert st["bytes_per_token"] == pytest.approx(st["bytes"] / st["tokens"])
    assert not list(out.parent.glob(".*partial*"))


def test_reuse_tokenizer_and_iterators(prepared, tmp_path):
    out, docs, meta = prepared
    again = prepare(iter(docs), tmp_path / "again", vocab_size=0, val_docs=10, tokenizer=str(out / "tokenizer.model"),
                    shard_tokens=10**6, threads=2)  # a one-shot iterator works too
    assert again["tokenizer_sha256"] == meta["tokenizer_sha256"]
    again_tokens = load_tokens(find_shards(tmp_path / "again", "train"))
    assert again_tokens.tolist() == load_tokens(find_shards(out, "train")).tolist()
    with pytest.raises(ValueError, match=r"vocab_size=999 disagrees with tokenizer .*\(\d+ pieces\)"):
        prepare(docs, tmp_path / "x", vocab_size=999, val_docs=10, tokenizer=str(out / "tokenizer.model"))


def test_prepare_errors(prepared, tmp_path):
    out, docs, _ = prepared
    with pytest.raises(ValueError, match="exists and is not empty"):
        prepare(docs, out, vocab_size=360, val_docs=10)
    with pytest.raises(ValueError, match=r"only 5 documents: val_docs=5 leaves none for training"):
        prepare(docs[:5], tmp_path / "few", vocab_size=0, val_docs=5, tokenizer=str(out / "tokenizer.model"))
    assert not (tmp_path / "few").exists() and not list(tmp_path.glob(".*partial*"))
    with pytest.raises(ValueError, match="val_docs=0"):
        prepare(docs, tmp_path / "y", vocab_size=360, val_docs=0)
    with pytest.raises(ValueError, match="--vocab-size"):
        prepare(docs, tmp_path / "z", vocab_size=0, val_docs=1)


def test_text_documents_split_on_blank_lines(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("first line\nsecond line\n\n\n  \nnext doc\r\n\t\nlast\n")
    docs = TextDocuments(path)
    assert list(docs) == ["first line\nsecond line", "next doc", "last"]
    assert list(docs) == list(docs)  # re-iterable
    with pytest.raises(ValueError, match=r"--text .*missing\.txt does not exist"):
        TextDocuments(tmp_path / "missing.txt")


def test_jsonl_documents(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "a\nb", "id": 1}) + "\n\n" + json.dumps({"text": "c"}) + "\n")
    assert list(JsonlDocuments(path)) == ["a\nb", "c"]
    path.write_text('{"text": "ok"}\n{"txt": "no"}\n')
    with pytest.raises(ValueError, match=r"d\.jsonl:2: no string \"text\" field"):
        list(JsonlDocuments(path))
    path.write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(ValueError, match=r"d\.jsonl:2: not a JSON object"):
        list(JsonlDocuments(path))


def test_default_cache_dir_reads_env_at_call_time(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "golf"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "golf"


def test_open_dataset(prepared):
    out, _, meta = prepared
    ds = open_dataset(out, model_vocab_size=meta["vocab_size"] + 64)
    assert ds.vocab_size == meta["vocab_size"] and ds.tokenizer_path == out / "tokenizer.model"
    assert ds.val_tokens().size == meta["splits"]["val"]["tokens"]
    assert ds.val_tokens(max_tokens=7).size == 7
    assert ds.processor().bos_id() == 1
    x, y = ds.loader(batch_tokens=64, seq_len=16).next_batch()
    assert x.shape == (4, 16)


def test_open_dataset_errors(prepared, tmp_path):
    out, _, meta = prepared
    with pytest.raises(ValueError, match=rf"model.vocab_size=300 is smaller than the tokenizer's {meta['vocab_size']} "
                                         rf"pieces.*--model.vocab_size={meta['vocab_size']}"):
        open_dataset(out, model_vocab_size=300)
    with pytest.raises(ValueError, match="does not exist"):
        open_dataset(tmp_path / "nowhere")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tokenizer.model").write_bytes((out / "tokenizer.model").read_bytes())
    write_shard(bad / "train_000000.bin", np.array([1, 5, 6]))
    write_shard(bad / "val_000000.bin", np.array([1, 5, 60000]))
    with pytest.raises(ValueError, match=r"val_000000\.bin holds token id 60000, but the tokenizer has only"):
        open_dataset(bad)
    write_shard(bad / "val_000000.bin", np.array([1, 5, 6]))
    (bad / "train_000001.bin").write_bytes(b"\x00" * 2000)
    with pytest.raises(ValueError, match=r"train_000001\.bin has magic number 0"):
        open_dataset(bad)


def test_tokenizer_resolution(prepared, tmp_path):
    out, _, _ = prepared
    model = (out / "tokenizer.model").read_bytes()
    fw = tmp_path / "data" / "datasets" / "fineweb10B_sp360"
    fw.mkdir(parents=True)
    (tmp_path / "data" / "tokenizers").mkdir()
    with pytest.raises(ValueError, match="no tokenizer found.*--data.tokenizer"):
        resolve_tokenizer(fw)
    (tmp_path / "data" / "tokenizers" / "fineweb_360_bpe.model").write_bytes(model)  # the challenge's layout
    assert resolve_tokenizer(fw).name == "fineweb_360_bpe.model"
    (fw / "a.model").write_bytes(model)
    assert resolve_tokenizer(fw).name == "a.model"
    (fw / "b.model").write_bytes(model)
    with pytest.raises(ValueError, match=r"several tokenizers \(a\.model, b\.model\)"):
        resolve_tokenizer(fw)
    assert resolve_tokenizer(fw, str(fw / "b.model")).name == "b.model"
    with pytest.raises(ValueError, match="c.model does not exist"):
        resolve_tokenizer(fw, str(fw / "c.model"))
