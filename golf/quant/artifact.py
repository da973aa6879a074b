"""golf's artifact file: quantized weights + a JSON header, compressed, checksummed. Never pickle.

Container (little-endian), 49 bytes then the compressed body:

    offset  size  field
    0       7     magic b"GOLFART"
    7       1     container format version (FORMAT_VERSION)
    8       1     compressor id (golf.quant.compress.COMPRESSOR_IDS: 1 brotli, 2 zstd, 3 lzma)
    9       32    sha256 of every other byte of the file: bytes [0, 9) + bytes [41, end)
    41      8     length of the compressed body, uint64
    49      n     compressed body

The checksum covers the container fields as well as the body, so a flipped byte anywhere in the file is
reported as a checksum mismatch before anything in it is interpreted.

Body (after decompression):

    8 bytes   JSON header length h, uint64
    h bytes   JSON header, UTF-8
    rest      payload: raw little-endian arrays

JSON header: {"format": 1, "meta": {caller's dict, e.g. the model config}, "tensors": [one per entry, in
order: {"name", "kind" ("gptq" | "rtn" | "fp16" | "fp32" | "raw"), "shape", "dtype" (original dtype),
"bits", "clip", "k", "data": ARRAY, "scales": ARRAY or null}]}, where ARRAY = {"dtype" (stored dtype),
"shape", "offset", "nbytes"} locates an array in the payload; arrays lie in entry order, data then scales.

No byte-shuffle (the records' BSHF): the fp16 arrays are ~1% of the payload, and shuffling them changed
the compressed size of a 5.3 MB body (2 layers of the core shapes, SDClip int6) by -210 B with brotli,
-1.3 KB with lzma and +7 KB with zstd. Grouping all int8 codes before the fp16 arrays changed brotli's
size by 159 B. Neither earns a format field.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from golf.quant.compress import COMPRESSOR_IDS, compress, compressor_name, decompress
from golf.quant.export import KINDS, QuantizedTensor

MAGIC = b"GOLFART"
FORMAT_VERSION = 1
_HEAD = struct.Struct("<7sBB32sQ")  # magic, version, compressor id, sha256, body length
HEADER_BYTES = _HEAD.size  # 49
_DIGEST = slice(9, 41)
# Stored array dtypes: torch dtype <-> explicit little-endian numpy dtype.
_DTYPES = {
    "bool": (torch.bool, "|b1"),
    "uint8": (torch.uint8, "|u1"),
    "int8": (torch.int8, "|i1"),
    "int16": (torch.int16, "<i2"),
    "int32": (torch.int32, "<i4"),
    "int64": (torch.int64, "<i8"),
    "float16": (torch.float16, "<f2"),
    "float32": (torch.float32, "<f4"),
    "float64": (torch.float64, "<f8"),
}


@dataclass
class ArtifactInfo:
    path: Path
    model_bytes: int  # the whole file: what counts against the budget
    raw_bytes: int  # the body before compression
    compressor: str
    sha256: str


def _dtype_key(t: Tensor) -> str:
    key = str(t.dtype).removeprefix("torch.")
    if key not in _DTYPES:
        raise ValueError(f"cannot store a {t.dtype} tensor; supported: {sorted(_DTYPES)}")
    return key


class _Payload:
    """Appends arrays to one contiguous payload and describes where each one lies."""

    def __init__(self):
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, t: Tensor) -> dict:
        key = _dtype_key(t)
        raw = t.detach().cpu().contiguous().numpy().astype(_DTYPES[key][1], copy=False).tobytes()
        desc = {"dtype": key, "shape": list(t.shape), "offset": self.size, "nbytes": len(raw)}
        self.parts.append(raw)
        self.size += len(raw)
        return desc


def _tensor_record(name: str, e: QuantizedTensor | Tensor, payload: _Payload) -> dict:
    if isinstance(e, QuantizedTensor):
        if e.kind not in KINDS:
            raise ValueError(f"{name}: kind {e.kind!r} is not one of {KINDS}")
        quantized = e.kind in ("gptq", "rtn")
        return {
            "name": name, "kind": e.kind, "shape": list(e.shape), "dtype": e.dtype, "bits": e.bits,
            "clip": e.clip, "k": e.k, "data": payload.add(e.data),
            "scales": payload.add(e.scales) if quantized else None,
        }
    if isinstance(e, Tensor):
        return {
            "name": name, "kind": "raw", "shape": list(e.shape), "dtype": _dtype_key(e), "bits": None,
            "clip": None, "k": None, "data": payload.add(e), "scales": None,
        }
    raise ValueError(f"entry {name!r} is a {type(e).__name__}; expected QuantizedTensor or Tensor")


def pack_artifact(
    entries: dict[str, QuantizedTensor | Tensor], meta: dict, *, compressor: str = "brotli"
) -> tuple[bytes, int]:
    """The file's bytes and the uncompressed body size."""
    if compressor not in COMPRESSOR_IDS:
        raise ValueError(f"compressor {compressor!r} is unknown; use one of {tuple(COMPRESSOR_IDS)}")
    body = artifact_body(entries, meta)
    packed = compress(body, compressor)
    head = _HEAD.pack(MAGIC, FORMAT_VERSION, COMPRESSOR_IDS[compressor], b"\0" * 32, len(packed))
    digest = hashlib.sha256(head[: _DIGEST.start] + head[_DIGEST.stop :] + packed).digest()
    return head[: _DIGEST.start] + digest + head[_DIGEST.stop :] + packed, len(body)


def artifact_body(entries: dict[str, QuantizedTensor | Tensor], meta: dict) -> bytes:
    """The uncompressed body of the artifact: header length, JSON header, tensor payload."""
    payload = _Payload()
    tensors = [_tensor_record(name, e, payload) for name, e in entries.items()]
    data = b"".join(payload.parts)
    try:
        header = json.dumps({"format": FORMAT_VERSION, "meta": meta, "tensors": tensors}, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"artifact meta must be JSON-serializable (plain dicts, lists, str, finite numbers): {e}"
        ) from e
    hb = header.encode("utf-8")
    return struct.pack("<Q", len(hb)) + hb + data


def write_artifact(
    path: str | Path,
    entries: dict[str, QuantizedTensor | Tensor],
    meta: dict,
    *,
    compressor: str = "brotli",
) -> ArtifactInfo:
    """Write atomically (a temporary file in the same folder, then rename)."""
    path = Path(path)
    blob, raw_bytes = pack_artifact(entries, meta, compressor=compressor)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return ArtifactInfo(path, len(blob), raw_bytes, compressor, blob[_DIGEST].hex())


def _verify(blob: bytes, source: str) -> str:
    """Checks size and checksum; returns the compressor name."""
    if len(blob) < HEADER_BYTES:
        what = "is truncated" if blob[: len(MAGIC)] == MAGIC[: len(blob)] else "is not a golf artifact"
        raise ValueError(f"{source} {what}: {len(blob)} bytes, shorter than the {HEADER_BYTES}-byte header")
    magic, version, cid, digest, body_len = _HEAD.unpack_from(blob)
    if hashlib.sha256(blob[: _DIGEST.start] + blob[_DIGEST.stop :]).digest() != digest:
        if magic != MAGIC:
            raise ValueError(
                f"{source} is not a golf artifact: it starts with {magic!r}, not {MAGIC!r} (checksum mismatch too)"
            )
        if body_len != len(blob) - HEADER_BYTES:
            raise ValueError(
                f"{source}: checksum mismatch: the header says the body has {body_len} bytes, the file holds "
                f"{len(blob) - HEADER_BYTES} (truncated or corrupted)"
            )
        raise ValueError(f"{source}: checksum mismatch: the file is corrupted; write the artifact again")
    if version != FORMAT_VERSION:
        raise ValueError(f"{source} has artifact format {version}; this golf reads format {FORMAT_VERSION}")
    return compressor_name(cid)


def _array(desc: dict, data: memoryview, name: str) -> Tensor:
    key = desc["dtype"]
    if key not in _DTYPES:
        raise ValueError(f"{name}: stored dtype {key!r} is unknown")
    torch_dtype, np_dtype = _DTYPES[key]
    shape = [int(s) for s in desc["shape"]]
    size = np.dtype(np_dtype).itemsize
    n = int(np.prod(shape)) if shape else 1
    off, nbytes = int(desc["offset"]), int(desc["nbytes"])
    if nbytes != n * size or off < 0 or off + nbytes > len(data):
        raise ValueError(f"{name}: array of {shape} {key} does not fit the payload (offset {off}, {nbytes} bytes)")
    arr = np.frombuffer(data, dtype=np_dtype, count=n, offset=off).reshape(shape)
    # astype copies into native byte order and owned, writable memory
    return torch.from_numpy(arr.astype(arr.dtype.newbyteorder("="))).to(torch_dtype)


def unpack_artifact(blob: bytes, source: str = "artifact") -> tuple[dict[str, QuantizedTensor | Tensor], dict]:
    """Inverse of pack_artifact: (entries, meta)."""
    compressor = _verify(blob, source)
    body = memoryview(decompress(blob[HEADER_BYTES:], compressor))
    (hlen,) = struct.unpack_from("<Q", body)
    header = json.loads(bytes(body[8 : 8 + hlen]).decode("utf-8"))
    if header.get("format") != FORMAT_VERSION:
        raise ValueError(f"{source}: body format {header.get('format')!r}; this golf reads {FORMAT_VERSION}")
    data = body[8 + hlen :]
    entries: dict[str, QuantizedTensor | Tensor] = {}
    for rec in header["tensors"]:
        name = rec["name"]
        tensor = _array(rec["data"], data, name)
        if rec["kind"] == "raw":
            entries[name] = tensor
            continue
        if rec["kind"] not in KINDS:
            raise ValueError(f"{source}: {name} has unknown kind {rec['kind']!r}")
        scales = _array(rec["scales"], data, name) if rec["scales"] is not None else None
        entries[name] = QuantizedTensor(
            rec["kind"], tensor, scales, rec["bits"], rec["clip"], rec["k"], tuple(rec["shape"]), rec["dtype"]
        )
    return entries, header["meta"]


def read_artifact(path: str | Path) -> tuple[dict[str, QuantizedTensor | Tensor], dict]:
    """(entries, meta) of an artifact file; ValueError for a corrupt, truncated or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"artifact {path} does not exist; write one with `golf train` or `golf quantize`")
    return unpack_artifact(path.read_bytes(), str(path))
