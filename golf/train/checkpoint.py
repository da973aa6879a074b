"""Checkpoints: plain dicts of tensors and JSON-able values, loaded with weights_only=True (no pickled code),
written to a temporary file and renamed so an interrupted write never destroys the previous checkpoint.

Layout of a run directory's checkpoint: `checkpoint.pt` (model, EMA, loader, step, history, config) plus
one `checkpoint.optim.rank{R}.pt` per rank (distributed Muon keeps state only for the matrices a rank owns).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

FORMAT = "golf-checkpoint-v1"


def atomic_save(obj: Any, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def optim_path(path: Path, rank: int) -> Path:
    path = Path(path)
    return path.with_name(f"{path.stem}.optim.rank{rank}{path.suffix}")


def save(path: Path, state: dict[str, Any], optim_state: dict[str, Any], rank: int) -> None:
    """Every rank writes its optimizer shard; rank 0 also writes the main file (after its shard, so a
    main file on disk always has its shards)."""
    atomic_save(optim_state, optim_path(path, rank))
    if rank == 0:
        atomic_save({"format": FORMAT, **state}, Path(path))


def load(path: Path, rank: int = 0, *, with_optim: bool = True) -> tuple[dict[str, Any], dict[str, Any] | None]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist; pass a checkpoint.pt written by `golf train`")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which file and why
        raise ValueError(f"checkpoint {path} cannot be read ({e}); it is not a complete golf checkpoint") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a golf checkpoint (expected format {FORMAT})")
    if not with_optim:
        return state, None
    opath = optim_path(path, rank)
    if not opath.is_file():
        raise ValueError(
            f"{opath} is missing: resume with the same number of processes as the run that wrote {path.name}"
        )
    return state, torch.load(opath, map_location="cpu", weights_only=True)
