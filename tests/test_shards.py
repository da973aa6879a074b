"""The challenge shard format: round trip, the header/size checks and their messages, shard discovery."""

import numpy as np
import pytest

from golf.data.shards import (
    HEADER_BYTES,
    MAGIC,
    VERSION,
    check_token_range,
    find_shards,
    load_tokens,
    read_header,
    read_shard,
    write_shard,
)


def test_round_trip_and_layout(tmp_path):
    tokens = np.array([1, 0, 65535, 7, 1024, 3], dtype=np.int64)
    path = tmp_path / "train_000000.bin"
    write_shard(path, tokens)
    raw = path.read_bytes()
    assert len(raw) == HEADER_BYTES + 2 * tokens.size
    header = np.frombuffer(raw[:HEADER_BYTES], dtype="<i4")
    assert (header[0], header[1], header[2]) == (MAGIC, VERSION, tokens.size)
    assert not header[3:].any()
    assert np.frombuffer(raw[HEADER_BYTES:], dtype="<u2").tolist() == tokens.tolist()
    got = read_shard(path)
    assert got.dtype == np.dtype("<u2") and got.tolist() == tokens.tolist()
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file was renamed away


def test_empty_shard(tmp_path):
    write_shard(tmp_path / "val_000000.bin", np.zeros(0, dtype=np.uint16))
    assert read_shard(tmp_path / "val_000000.bin").size == 0


@pytest.mark.parametrize(
    "tokens, match",
    [
        (np.array([1, 65536]), r"must lie in \[0, 65535\].*got \[1, 65536\]"),
        (np.array([-1, 5]), r"must lie in \[0, 65535\]"),
        (np.zeros((2, 2), dtype=np.int32), "must be 1-D"),
        (np.array([1.5, 2.0]), "must be integers"),
    ],
)
def test_write_rejects_bad_tokens(tmp_path, tokens, match):
    with pytest.raises(ValueError, match=match):
        write_shard(tmp_path / "x.bin", tokens)
    assert not (tmp_path / "x.bin").exists()


def _corrupt(path, offset, value):
    raw = bytearray(path.read_bytes())
    raw[offset : offset + 4] = np.array([value], dtype="<i4").tobytes()
    path.write_bytes(bytes(raw))


def test_header_errors_name_file_problem_and_fix(tmp_path):
    path = tmp_path / "train_000000.bin"
    write_shard(path, np.arange(10))

    _corrupt(path, 0, 12345)
    with pytest.raises(ValueError, match=rf"{path}.*magic number 12345, expected {MAGIC}.*golf data prepare"):
        read_shard(path)
    _corrupt(path, 0, MAGIC)

    _corrupt(path, 4, 2)
    with pytest.raises(ValueError, match=rf"{path}.*format version 2.*version {VERSION}"):
        read_shard(path)
    _corrupt(path, 4, VERSION)

    _corrupt(path, 8, 11)  # header claims one more token than the file holds
    with pytest.raises(ValueError, match=rf"{path} is 1044 bytes but its header says 11 tokens \(1046 bytes\).*again"):
        read_shard(path)
    _corrupt(path, 8, 10)
    assert read_header(path) == 10

    path.write_bytes(path.read_bytes()[:-2])  # truncated payload
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_shard(path)

    path.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match=r"100 bytes, shorter than the 1024-byte header"):
        read_shard(path)

    with pytest.raises(ValueError, match=r"missing\.bin does not exist"):
        read_shard(tmp_path / "missing.bin")


def test_token_range_check():
    check_token_range(np.array([0, 5, 9], dtype=np.uint16), 10, "shard a.bin")
    with pytest.raises(ValueError, match=r"shard a\.bin holds token id 10, but the tokenizer has only 10 ids"):
        check_token_range(np.array([0, 10], dtype=np.uint16), 10, "shard a.bin")


def test_find_shards_golf_and_challenge_names(tmp_path):
    golf_dir, fw_dir = tmp_path / "golf", tmp_path / "fw"
    golf_dir.mkdir(), fw_dir.mkdir()
    for name in ["train_000001.bin", "train_000000.bin", "val_000000.bin", "notes.txt"]:
        write_shard(golf_dir / name, np.arange(3)) if name.endswith(".bin") else (golf_dir / name).write_text("x")
    for name in ["fineweb_train_000000.bin", "fineweb_val_000000.bin", "fineweb_val_bytes_000000.bin"]:
        write_shard(fw_dir / name, np.arange(3))
    assert [p.name for p in find_shards(golf_dir, "train")] == ["train_000000.bin", "train_000001.bin"]
    assert [p.name for p in find_shards(golf_dir, "val")] == ["val_000000.bin"]
    assert [p.name for p in find_shards(fw_dir, "val")] == ["fineweb_val_000000.bin"]  # no *_bytes_* sidecar
    assert [p.name for p in find_shards(fw_dir, "train")] == ["fineweb_train_000000.bin"]


def test_find_shards_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist.*golf data prepare"):
        find_shards(tmp_path / "nope", "train")
    with pytest.raises(ValueError, match=r"no val shards \(val_\*\.bin or fineweb_val_\*\.bin\)"):
        find_shards(tmp_path, "val")
    with pytest.raises(ValueError, match="split 'test'"):
        find_shards(tmp_path, "test")
    write_shard(tmp_path / "train_000000.bin", np.arange(3))
    write_shard(tmp_path / "fineweb_train_000000.bin", np.arange(3))
    with pytest.raises(ValueError, match="both train_\\*.bin and fineweb_train_\\*.bin"):
        find_shards(tmp_path, "train")


def test_load_tokens_concatenates_in_order(tmp_path):
    write_shard(tmp_path / "a.bin", np.array([1, 2, 3]))
    write_shard(tmp_path / "b.bin", np.array([4, 5]))
    got = load_tokens([tmp_path / "a.bin", tmp_path / "b.bin"])
    assert got.dtype == np.uint16 and got.tolist() == [1, 2, 3, 4, 5]
    assert load_tokens([tmp_path / "b.bin"]).tolist() == [4, 5]
    with pytest.raises(ValueError, match="no shard paths"):
        load_tokens([])
