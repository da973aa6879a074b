"""The implementations of golf's commands (the argument parsing lives in golf.cli)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from golf.config import GolfConfig, apply_overrides


def train(cfg: GolfConfig, args: argparse.Namespace, overrides: dict[str, str]) -> int:
    from golf.train import job

    job.run(cfg, resume=args.resume)
    return 0


def _config_from(saved: dict, overrides: dict[str, str]) -> GolfConfig:
    """A run's stored config with the command line's explicit overrides on top (not a preset's defaults)."""
    cfg = GolfConfig.from_dict(saved)
    apply_overrides(cfg, overrides)
    return cfg.validate()


def eval(cfg: GolfConfig, args: argparse.Namespace, overrides: dict[str, str]) -> int:  # noqa: A001
    """Score an artifact with the eval settings of the run that wrote it, unless overridden."""
    from golf.eval.artifact_eval import load_artifact_model
    from golf.train import dist, job, report

    info = dist.init(cfg.train.device)
    try:
        model, saved, meta = load_artifact_model(args.artifact, info.device)
        cfg = _config_from(saved.to_dict(), overrides)
        if "data.dir" not in overrides and meta.get("data_dir"):
            cfg.data.dir = meta["data_dir"]
        log = report.RunLog(None, enabled=info.is_main, stream=sys.stderr)
        dataset = job.resolve_dataset(cfg, info, log)
        results = job.score_artifact(model, cfg, dataset, info, log)
    finally:
        dist.shutdown()
    if info.is_main:
        out = {"artifact": str(args.artifact), "data_dir": str(dataset.dir)}
        for name, r in results.items():
            out[name] = r.to_dict()
        out["val_loss"], out["val_bpb"] = results["plain"].val_loss, results["plain"].val_bpb
        if "sliding" in results:
            out["sliding_val_bpb"] = results["sliding"].val_bpb
        if "ttt" in results:
            out["ttt_val_bpb"] = results["ttt"].val_bpb
        print(json.dumps(out, indent=2))
    return 0


def quantize(cfg: GolfConfig, args: argparse.Namespace, overrides: dict[str, str]) -> int:
    """Checkpoint (EMA weights when the run kept them) -> artifact, with quant.* overrides applied."""
    from golf.train import checkpoint, dist, job, report

    state, _ = checkpoint.load(Path(args.checkpoint), with_optim=False)
    cfg = _config_from(json.loads(state["config"]), overrides)
    info = dist.init(cfg.train.device)
    if info.distributed:
        raise ValueError("golf quantize runs in one process; launch it without torchrun")
    out = Path(cfg.out) if "out" in overrides else Path(args.checkpoint).parent
    log = report.RunLog(out / "quantize.log", stream=sys.stderr)
    model = job.trained_model(Path(args.checkpoint), cfg, info.device)
    dataset = job.resolve_dataset(cfg, info, log)
    sizes = job.quantize_to_artifact(model, cfg, dataset, info.device, out / "artifact.golf", log)
    print(json.dumps({"artifact": str(out / "artifact.golf"), **sizes}, indent=2))
    return 0


def info(cfg: GolfConfig, args: argparse.Namespace, overrides: dict[str, str]) -> int:
    """The resolved config and the parameter count, as JSON (the model is built on the meta device)."""
    from golf.model import GPT

    with torch.device("meta"):
        model = GPT(cfg.model)
    out = {"preset": cfg.preset, "params": model.num_params(), "features": model.features(), "config": cfg.to_dict()}
    print(json.dumps(out, indent=2))
    return 0
