"""`golf data fineweb`: the challenge's published FineWeb shards and tokenizers from Hugging Face.

Where they are (openai/parameter-golf data/cached_challenge_fineweb.py and the records' READMEs): dataset
repos whose files sit under the prefix `datasets/`:
  datasets/manifest.json                                  counts per dataset (stats.files_train/files_val)
  datasets/datasets/fineweb10B_spN/fineweb_val_%06d.bin   the whole val split (first 50,000 documents)
  datasets/datasets/fineweb10B_spN/fineweb_train_%06d.bin train shards of 10^8 tokens, numbered from 0
  datasets/tokenizers/fineweb_N_bpe.model                 the SentencePiece model (path also in the manifest)
sp1024 is published by willdepueoai/parameter-golf; sp4096 and sp8192 by kevclark/parameter-golf (§1.2).

Needs the optional extra: pip install 'golf[fineweb]' (huggingface_hub), imported only here and lazily.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

REMOTE_ROOT = "datasets"
MANIFEST = f"{REMOTE_ROOT}/manifest.json"


@dataclass(frozen=True)
class Variant:
    repo: str
    dataset: str  # directory under datasets/datasets/
    tokenizer: str  # file under datasets/tokenizers/ (used when the manifest names none)


VARIANTS = {
    "sp1024": Variant("willdepueoai/parameter-golf", "fineweb10B_sp1024", "fineweb_1024_bpe.model"),
    "sp4096": Variant("kevclark/parameter-golf", "fineweb10B_sp4096", "fineweb_4096_bpe.model"),
    "sp8192": Variant("kevclark/parameter-golf", "fineweb10B_sp8192", "fineweb_8192_bpe.model"),
}


def _variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ValueError(f"FineWeb variant {name!r}: use one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


def remote_files(variant: str, train_shards: int, manifest: dict) -> list[str]:
    """Repo paths to fetch, in order: every val shard, the first train_shards train shards, the tokenizer."""
    v = _variant(variant)
    if train_shards < 0:
        raise ValueError(f"train_shards={train_shards}: must be >= 0")
    entry = next((d for d in manifest.get("datasets", []) if d.get("name") == v.dataset), None)
    if entry is None:
        raise ValueError(f"the manifest of {v.repo} lists no dataset {v.dataset}; pass --repo with the repository "
                         "that publishes this variant")
    stats = entry.get("stats") or {}
    n_val, n_train = int(stats.get("files_val", 0)), int(stats.get("files_train", 0))
    if n_val <= 0:
        raise ValueError(f"the manifest of {v.repo} gives no val shards for {v.dataset}")
    if train_shards > n_train:
        raise ValueError(f"{variant} has {n_train} train shards on {v.repo}; asked for {train_shards}")
    tok = next((t for t in manifest.get("tokenizers", []) if t.get("name") == entry.get("tokenizer_name")), {})
    model = tok.get("model_path") or f"tokenizers/{v.tokenizer}"
    prefix = f"{REMOTE_ROOT}/datasets/{v.dataset}"
    return ([f"{prefix}/fineweb_val_{i:06d}.bin" for i in range(n_val)]
            + [f"{prefix}/fineweb_train_{i:06d}.bin" for i in range(train_shards)]
            + [f"{REMOTE_ROOT}/{model}"])


def _hf_download():
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ValueError("golf data fineweb needs huggingface_hub: pip install 'golf[fineweb]' "
                         "(or use the builtin corpus: golf data prepare --corpus builtin)") from None
    return hf_hub_download


def _fetch(hf_hub_download, repo: str, remote: str) -> Path:
    try:
        return Path(hf_hub_download(repo_id=repo, filename=remote, repo_type="dataset"))
    except Exception as e:  # huggingface_hub raises many types (HTTP, offline, missing entry); all mean the same here
        raise ValueError(f"could not download {remote} from the Hugging Face dataset {repo} "
                         f"({type(e).__name__}: {e}); check network access to huggingface.co (HF_HUB_OFFLINE unset), "
                         "or use the builtin corpus: golf data prepare --corpus builtin") from e


def download(variant: str, train_shards: int, out_dir, repo: str = "") -> list[Path]:
    """Fetch a variant's val shards, first train_shards train shards and tokenizer into out_dir (files that
    are already there are kept). Returns the local paths."""
    v = _variant(variant)
    repo = repo or v.repo
    hf_hub_download = _hf_download()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = json.loads(_fetch(hf_hub_download, repo, MANIFEST).read_text())
    local = []
    for remote in tqdm(remote_files(variant, train_shards, manifest), desc=f"fineweb {variant}", unit="file"):
        dest = out_dir / Path(remote).name
        if not dest.is_file():
            cached = _fetch(hf_hub_download, repo, remote).resolve()
            tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
            try:  # hard-link the hub cache's blob when possible (no second copy of 100M-token shards)
                os.link(cached, tmp)
            except OSError:
                shutil.copyfile(cached, tmp)
            os.replace(tmp, dest)
        local.append(dest)
    return local
