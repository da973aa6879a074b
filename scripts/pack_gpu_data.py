"""Copy a prepared data directory for the GPU machine, which has no network and takes at most 64 MiB of
carried files: the tokenizer and val shards as they are, the train stream cut to its first N tokens.

    python scripts/pack_gpu_data.py ~/.cache/golf/data/builtin-v1-sp1024-val500 .gpu/cache/golf/data --train-tokens 16000000

Keeping the directory name under a cache root lets `golf train` (builtin default) find it there when
XDG_CACHE_HOME points at the copy's parent of `golf/`. meta.json records the cut.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from golf.data.shards import find_shards, load_tokens, write_shard


def pack(src: Path, dst_root: Path, train_tokens: int) -> Path:
    dst = dst_root / src.name
    dst.mkdir(parents=True, exist_ok=True)
    meta = json.loads((src / "meta.json").read_text())
    shutil.copy(src / meta.get("tokenizer", "tokenizer.model"), dst / "tokenizer.model")
    for f in find_shards(src, "val"):
        shutil.copy(f, dst / f.name)
    train = load_tokens(find_shards(src, "train"))[:train_tokens]
    write_shard(dst / "train_000000.bin", train.copy())
    meta["splits"]["train"].update(tokens=int(train.size), files=["train_000000.bin"],
                                   note=f"cut to the first {train.size:,} tokens for the GPU machine")
    (dst / "meta.json").write_text(json.dumps(meta, indent=2))
    return dst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path)
    p.add_argument("dst_root", type=Path)
    p.add_argument("--train-tokens", type=int, default=16_000_000)
    args = p.parse_args()
    out = pack(args.src, args.dst_root, args.train_tokens)
    print(out, f"{sum(f.stat().st_size for f in out.iterdir()) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
