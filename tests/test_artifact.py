"""golf.quant.artifact (file format), golf.quant.compress and golf.quant.codesize (the byte budget)."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import brotli
import pytest
import torch

from golf.config import QuantConfig
from golf.quant import artifact as art
from golf.quant.codesize import check_budget, code_bytes
from golf.quant.compress import COMPRESSORS, compress, decompress
from golf.quant.export import QuantizedTensor, dequantize_state_dict, quantize_state_dict

META = {"config": {"model": {"num_layers": 2, "model_dim": 64}, "note": "ünïcode"}, "k": 12.85, "list": [1, 2]}


@pytest.fixture(scope="module")
def entries():
    torch.manual_seed(0)
    sd = {
        "tok_emb.weight": torch.randn(96, 64) * 0.05,
        "blocks.0.attn.c_q.weight": torch.randn(64, 64) * 0.02,
        "blocks.0.mlp.proj.weight": torch.randn(64, 128).bfloat16() * 0.02,
        "blocks.0.attn_scale": torch.rand(64),
        "scalar": torch.tensor(0.5),
        "empty": torch.zeros(0, 4),
        "step": torch.tensor(12345678901, dtype=torch.int64),
        "ids": torch.arange(-3, 3, dtype=torch.int32),
        "mask": torch.tensor([True, False]),
    }
    e = quantize_state_dict(sd, None, QuantConfig(passthrough_numel=2048, clip="sdclip", embed_bits=7, gptq=False))
    e["huge"] = QuantizedTensor("fp32", torch.tensor([1e6, -2.5]), None, 32, None, None, (2,), "float32")
    return e


def assert_same_entries(a, b):
    assert list(a) == list(b)
    for name in a:
        x, y = a[name], b[name]
        if isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor) and y.dtype == x.dtype and torch.equal(x, y), name
            continue
        assert (x.kind, x.bits, x.clip, x.k, x.shape, x.dtype) == (y.kind, y.bits, y.clip, y.k, y.shape, y.dtype), name
        assert y.data.dtype == x.data.dtype and torch.equal(x.data, y.data), name
        assert (x.scales is None) == (y.scales is None)
        if x.scales is not None:
            assert torch.equal(x.scales, y.scales), name


@pytest.mark.parametrize("compressor", COMPRESSORS)
def test_roundtrip(entries, compressor, tmp_path):
    path = tmp_path / f"model.{compressor}.golf"
    info = art.write_artifact(path, entries, META, compressor=compressor)
    assert info.model_bytes == path.stat().st_size and info.compressor == compressor
    assert info.raw_bytes > 0 and info.sha256 == path.read_bytes()[9:41].hex()
    got, meta = art.read_artifact(path)
    assert meta == META
    assert_same_entries(entries, got)
    for name, t in dequantize_state_dict(entries).items():
        assert torch.equal(dequantize_state_dict(got)[name], t)
    assert sorted(os.listdir(tmp_path)) == [path.name]  # no temporary file left behind


def test_container_layout(entries):
    blob, raw = art.pack_artifact(entries, META)
    magic, version, cid, digest, n = struct.unpack_from("<7sBB32sQ", blob)
    assert (magic, version, cid, n) == (b"GOLFART", 1, 1, len(blob) - 49)
    assert digest == hashlib.sha256(blob[:9] + blob[41:]).digest()
    body = brotli.decompress(blob[49:])
    assert len(body) == raw
    (hlen,) = struct.unpack_from("<Q", body)
    assert body[8 : 8 + hlen].startswith(b'{"format": 1')  # a JSON header a human can read, then raw arrays


def test_every_flipped_byte_is_rejected(entries, tmp_path):
    blob, _ = art.pack_artifact({k: entries[k] for k in ("blocks.0.attn.c_q.weight", "step")}, META)
    # every byte of the container header and the first 64 of the body (where the JSON header's compressed
    # form starts), then a spread over the rest, the last byte included
    spread = range(49 + 64, len(blob), max(1, len(blob) // 300))
    positions = sorted(set(range(0, 49 + 64)) | set(spread) | {len(blob) - 1})
    for pos in positions:
        bad = bytearray(blob)
        bad[pos] ^= 1 << (pos % 8)
        with pytest.raises(ValueError, match="checksum"):
            art.unpack_artifact(bytes(bad), "flipped")


def test_truncated_foreign_and_missing_files(entries, tmp_path):
    blob, _ = art.pack_artifact(entries, META)
    for cut in (0, 5, 48, 49, len(blob) // 2, len(blob) - 1):
        with pytest.raises(ValueError, match="truncated|not a golf artifact") as e:
            art.unpack_artifact(blob[:cut], "cut")
        assert "cut" in str(e.value)
    with pytest.raises(ValueError, match="checksum mismatch: the header says the body has"):
        art.unpack_artifact(blob[:-10], "cut")
    foreign = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match=f"{foreign} is not a golf artifact"):
        art.read_artifact(foreign)
    with pytest.raises(ValueError, match="does not exist"):
        art.read_artifact(tmp_path / "nope.golf")


def test_other_format_version_is_named(entries):
    blob = bytearray(art.pack_artifact(entries, META)[0])
    blob[7] = 2
    blob[9:41] = hashlib.sha256(bytes(blob[:9] + blob[41:])).digest()  # a valid file of a future format
    with pytest.raises(ValueError, match="format 2; this golf reads format 1"):
        art.unpack_artifact(bytes(blob))


def test_failed_write_keeps_the_old_file(entries, tmp_path):
    path = tmp_path / "a.golf"
    art.write_artifact(path, entries, META)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="JSON-serializable"):
        art.write_artifact(path, entries, {"obj": object()})
    with pytest.raises(ValueError, match="JSON-serializable"):
        art.write_artifact(path, entries, {"x": float("nan")})
    with pytest.raises(ValueError, match="compressor 'zip' is unknown"):
        art.write_artifact(path, entries, META, compressor="zip")
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["a.golf"]


def test_unsupported_tensor_dtype_is_named():
    with pytest.raises(ValueError, match="complex64"):
        art.pack_artifact({"z": torch.zeros(2, dtype=torch.complex64)}, {})


@pytest.mark.parametrize("name", COMPRESSORS)
def test_compressors_roundtrip_and_reject_garbage(name):
    data = bytes(range(256)) * 40 + os.urandom(1000)
    packed = compress(data, name)
    assert decompress(packed, name) == data and len(packed) < len(data)
    with pytest.raises(ValueError, match=f"the {name} stream does not decode"):
        decompress(b"\x00garbage" * 10, name)
    with pytest.raises(ValueError, match="compressor 'gzip' is unknown"):
        compress(data, "gzip")


# ---- the byte budget ---------------------------------------------------------------------------------


def test_code_bytes_counts_the_golf_modules_an_import_loads():
    size = code_bytes(("golf.quant.compress",))  # imports no torch: a fast subprocess
    assert size.files == ("golf/__init__.py", "golf/quant/__init__.py", "golf/quant/compress.py")
    root = Path(art.__file__).resolve().parents[2]
    raw = b"".join((root / f).read_bytes() for f in size.files)
    assert size.raw_bytes == len(raw) and size.bytes == len(brotli.compress(raw, quality=11))
    more = code_bytes(("golf.quant.compress", "golf.quant.codesize"))
    assert more.bytes > size.bytes and set(more.files) == set(size.files) | {"golf/quant/codesize.py"}


def test_code_bytes_of_the_artifact_reader():
    files = set(code_bytes(("golf.quant.artifact",)).files)
    assert {"golf/quant/artifact.py", "golf/quant/export.py", "golf/quant/scheme.py"} <= files
    assert not {"golf/quant/gptq.py", "golf/ops/gptq.py"} & files  # quantizing code is not loaded to read
    assert not any(f.startswith("golf/model/") for f in files)


def test_code_bytes_counts_the_compiled_ops_as_their_sources():
    from golf import _ext

    if not _ext.HAS_EXT:
        pytest.skip(f"golf._C is not built ({_ext.IMPORT_ERROR})")
    files = code_bytes(("golf._ext",)).files
    assert "golf/_ext.py" in files and "csrc/golf_ops.cpp" in files and "csrc/gptq_update.cu" in files


def test_code_bytes_rejects_bad_entry_modules():
    with pytest.raises(ValueError, match="not golf modules"):
        code_bytes(("json",))
    with pytest.raises(ValueError, match="golf.no_such_module"):
        code_bytes(("golf.no_such_module",))


def test_check_budget():
    assert check_budget(15_000_000, 900_000, 16_000_000) == 15_900_000
    assert check_budget(15_000_000, 1_000_000, 16_000_000) == 16_000_000  # the cap itself is allowed
    with pytest.raises(ValueError, match=r"1 bytes over the budget of 16,000,000.*quant.bits.*clip_k.*compressor"):
        check_budget(15_000_001, 1_000_000, 16_000_000)
    with pytest.warns(RuntimeWarning, match="12,345 bytes over"):
        assert check_budget(16_000_000, 12_345, 16_000_000, allow_over=True) == 16_012_345
