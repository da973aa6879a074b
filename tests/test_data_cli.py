"""`golf data ...` through the real CLI router: prepare (--jsonl, --text), stats, fineweb's file selection and
its offline failure, the no-apt failure of --corpus builtin, and --help for every option."""

import json
import shutil
import sys
import types
from pathlib import Path

import pytest

from golf.cli import build_parser, main
from golf.data import fineweb
from golf.data.prepare import TextDocuments

SAMPLE = Path(__file__).parent / "data" / "sample.txt"


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "docs.jsonl"
    blocks = list(TextDocuments(SAMPLE))
    with open(path, "w") as f:
        for i in range(60):
            f.write(json.dumps({"text": blocks[i % len(blocks)] + f"\nDocument number {i}."}) + "\n")
    return path


def test_prepare_jsonl_then_stats(jsonl, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["data", "prepare", "--jsonl", str(jsonl), "--vocab-size", "340", "--val-docs", "8", "--out", str(out),
               "--shard-tokens", "3000", "--threads", "1"])
    assert rc == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["splits"]["val"]["docs"] == 8 and meta["splits"]["train"]["docs"] == 52
    assert meta["source"] == str(jsonl) and len(meta["splits"]["train"]["files"]) > 1
    capsys.readouterr()
    assert main(["data", "stats", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"tokenizer {out / 'tokenizer.model'} ({meta['vocab_size']} pieces)" in printed
    for split in ("train", "val"):
        st = meta["splits"][split]
        row = next(line for line in printed.splitlines() if line.startswith(split))
        assert row.split() == [split, str(len(st["files"])), f"{st['docs']:,}", f"{st['tokens']:,}", f"{st['bytes']:,}",
                               f"{st['bytes_per_token']:.4f}"]


def test_prepare_text_splits_blank_line_blocks(tmp_path):
    text = tmp_path / "t.txt"
    blocks = list(TextDocuments(SAMPLE))
    text.write_text("\n\n".join(blocks) + "\n")
    out = tmp_path / "out"
    assert main(["data", "prepare", "--text", str(text), "--vocab-size", "340", "--val-docs", "3", "--out", str(out),
                 "--threads", "1"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["splits"]["val"]["docs"] + meta["splits"]["train"]["docs"] == len(blocks)


def test_prepare_errors_exit_2(tmp_path, capsys):
    rc = main(["data", "prepare", "--text", str(tmp_path / "missing.txt"), "--vocab-size", "300", "--out",
               str(tmp_path / "o")])
    assert rc == 2
    assert "golf data prepare: error: --text" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # exactly one source is required
        main(["data", "prepare", "--text", "a", "--jsonl", "b", "--out", "o"])


def test_builtin_without_apt_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    rc = main(["data", "prepare", "--corpus", "builtin", "--vocab-size", "1024", "--out", str(tmp_path / "o"),
               "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc == 2 and "golf data prepare: error:" in err and "lacks apt-get and dpkg-deb" in err
    assert "--text FILE" in err and "golf data fineweb" in err


def test_stats_error_exit_2(tmp_path, capsys):
    assert main(["data", "stats", str(tmp_path / "none")]) == 2
    assert "golf data stats: error: data directory" in capsys.readouterr().err


MANIFEST = {
    "datasets": [{"name": "fineweb10B_sp1024", "tokenizer_name": "sp_bpe_1024",
                  "stats": {"files_train": 195, "files_val": 1}}],
    "tokenizers": [{"name": "sp_bpe_1024", "model_path": "tokenizers/fineweb_1024_bpe.model",
                    "vocab_path": "tokenizers/fineweb_1024_bpe.vocab"}],
}


def test_fineweb_file_selection():
    files = fineweb.remote_files("sp1024", 2, MANIFEST)
    assert files == ["datasets/datasets/fineweb10B_sp1024/fineweb_val_000000.bin",
                     "datasets/datasets/fineweb10B_sp1024/fineweb_train_000000.bin",
                     "datasets/datasets/fineweb10B_sp1024/fineweb_train_000001.bin",
                     "datasets/tokenizers/fineweb_1024_bpe.model"]
    assert fineweb.VARIANTS["sp8192"].repo == "kevclark/parameter-golf"
    with pytest.raises(ValueError, match="sp1024 has 195 train shards on willdepueoai/parameter-golf; asked for 196"):
        fineweb.remote_files("sp1024", 196, MANIFEST)
    with pytest.raises(ValueError, match="lists no dataset fineweb10B_sp4096"):
        fineweb.remote_files("sp4096", 1, MANIFEST)
    with pytest.raises(ValueError, match="variant 'sp2048'"):
        fineweb.remote_files("sp2048", 1, MANIFEST)


def test_fineweb_without_huggingface_hub(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    assert main(["data", "fineweb", "--variant", "sp1024", "--train-shards", "1", "--out", str(tmp_path)]) == 2
    assert "needs huggingface_hub: pip install 'golf[fineweb]'" in capsys.readouterr().err


def test_fineweb_offline(monkeypatch, tmp_path, capsys):
    def offline(**kwargs):
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=offline))
    assert main(["data", "fineweb", "--variant", "sp4096", "--train-shards", "1", "--out", str(tmp_path / "fw")]) == 2
    err = capsys.readouterr().err
    assert "could not download datasets/manifest.json from the Hugging Face dataset kevclark/parameter-golf" in err
    assert "ConnectionError" in err and "golf data prepare --corpus builtin" in err


def test_fineweb_downloads_into_out(monkeypatch, tmp_path):
    """The download loop with a stand-in hub: selected files land in OUT under their own names."""
    hub = tmp_path / "hub"

    def fake_download(repo_id, filename, repo_type):
        assert repo_type == "dataset" and repo_id == "willdepueoai/parameter-golf"
        path = hub / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(MANIFEST) if filename.endswith("manifest.json") else filename)
        return str(path)

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=fake_download))
    got = fineweb.download("sp1024", 1, tmp_path / "out")
    assert [p.name for p in got] == ["fineweb_val_000000.bin", "fineweb_train_000000.bin", "fineweb_1024_bpe.model"]
    assert (tmp_path / "out" / "fineweb_train_000000.bin").read_text().endswith("fineweb_train_000000.bin")


def test_every_option_has_help():
    parser = build_parser()
    data = parser._subparsers._group_actions[0].choices["data"]
    subs = data._subparsers._group_actions[0].choices
    assert set(subs) == {"prepare", "fineweb", "stats"}
    for name, sub in subs.items():
        for action in sub._actions:
            assert action.help, f"golf data {name} {action.option_strings or action.dest} has no help"
        sub.format_help()
