"""Carry prepared data directories to the GPU machine, which has no network and takes at most 64 MiB of
carried files in all: the tokenizer and val shards as they are, each train shard zstd-compressed (uint16
tokens compress about 2.9x, so the whole builtin corpus at vocab 1024 and at 4096 fit together).

    python scripts/pack_gpu_data.py pack ~/.cache/golf/data/builtin-v1-sp1024-val500 .gpu/data
    python scripts/pack_gpu_data.py unpack .gpu/data ~/.cache/golf/data          # on the GPU machine

`--train-tokens N` cuts the train stream to its first N tokens (meta.json records the cut). Unpacked under
a cache root's `golf/data`, the builtin directories are what `golf train` finds when XDG_CACHE_HOME points
at that root.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import zstandard

from golf.data.shards import find_shards, load_tokens, write_shard

SUFFIX = ".zst"


def pack(src: Path, dst_root: Path, train_tokens: int = 0, level: int = 19) -> Path:
    """Copy src into dst_root/src.name with its train shards compressed; returns the new directory."""
    dst = dst_root / src.name
    dst.mkdir(parents=True, exist_ok=True)
    meta = json.loads((src / "meta.json").read_text())
    shutil.copy(src / meta.get("tokenizer", "tokenizer.model"), dst / "tokenizer.model")
    for f in find_shards(src, "val"):
        shutil.copy(f, dst / f.name)
    train_files = find_shards(src, "train")
    if train_tokens:
        train = load_tokens(train_files)[:train_tokens]
        write_shard(dst / "train_000000.bin", train.copy())
        train_files = [dst / "train_000000.bin"]
        meta["splits"]["train"].update(tokens=int(train.size), files=["train_000000.bin"],
                                       note=f"cut to the first {train.size:,} tokens for the GPU machine")
    compressor = zstandard.ZstdCompressor(level=level, threads=-1)
    for f in train_files:
        _write_atomic(dst / (f.name + SUFFIX), compressor.compress(f.read_bytes()))
        if f.parent == dst:
            f.unlink()
    (dst / "meta.json").write_text(json.dumps(meta, indent=2))
    return dst


def unpack(src_root: Path, dst_root: Path) -> list[Path]:
    """Every packed directory under src_root -> dst_root/<name>, train shards decompressed."""
    out = []
    for src in sorted(p for p in src_root.iterdir() if (p / "meta.json").exists()):
        dst = dst_root / src.name
        dst.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            if f.name.endswith(SUFFIX):
                _write_atomic(dst / f.name[: -len(SUFFIX)], zstandard.ZstdDecompressor().decompress(f.read_bytes()))
            else:
                shutil.copy(f, dst / f.name)
        out.append(dst)
    return out


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack", help="compress one prepared data directory for carrying")
    a.add_argument("src", type=Path)
    a.add_argument("dst_root", type=Path)
    a.add_argument("--train-tokens", type=int, default=0, help="keep only the first N train tokens (0: all)")
    b = sub.add_parser("unpack", help="restore every packed directory under SRC_ROOT")
    b.add_argument("src_root", type=Path)
    b.add_argument("dst_root", type=Path)
    args = p.parse_args()
    if args.cmd == "pack":
        out = pack(args.src, args.dst_root, args.train_tokens)
        print(out, f"{sum(f.stat().st_size for f in out.iterdir()) / 1e6:.1f} MB")
    else:
        for d in unpack(args.src_root, args.dst_root):
            print(d)


if __name__ == "__main__":
    main()
