"""Score an artifact: rebuild the model from the artifact alone (never the live model), then val_bpb.

This module is also the entry point of the code-size count: the golf sources it imports are the code
that evaluating an artifact needs (golf.quant.codesize counts their compressed bytes).
"""

from __future__ import annotations

from pathlib import Path

import torch

from golf.config import GolfConfig
from golf.data.dataset import Dataset
from golf.eval.bpb import build_byte_luts
from golf.eval.evaluate import EvalResult, evaluate
from golf.model import GPT
from golf.quant.artifact import read_artifact
from golf.quant.export import dequantize_state_dict


def load_artifact_model(path: str | Path, device: torch.device) -> tuple[GPT, GolfConfig, dict]:
    """The dequantized model (fp32 weights) and the config stored in the artifact."""
    entries, meta = read_artifact(Path(path))
    if "config" not in meta:
        raise ValueError(f"artifact {path} has no model config in its header; it was not written by golf train/quantize")
    cfg = GolfConfig.from_dict(meta["config"])
    model = GPT(cfg.model)
    state = dequantize_state_dict(entries)
    missing = set(model.state_dict()) - set(state)
    if missing:
        raise ValueError(f"artifact {path} lacks tensors {sorted(missing)[:5]}...; it does not match golf's model")
    model.load_state_dict(state, strict=True)
    if cfg.model.num_loops:
        model.set_looping(True)  # the records evaluate (and calibrate) with depth recurrence on
    return model.to(device).eval(), cfg, meta


def score(model, cfg: GolfConfig, dataset: Dataset, device: torch.device, rank: int = 0, world_size: int = 1,
          forward=None) -> dict[str, EvalResult]:
    """Plain and sliding-window val scores with the eval section of cfg (forward: e.g. a compiled model)."""
    e = cfg.eval
    seq_len = e.seq_len or cfg.train.seq_len
    tokens = dataset.val_tokens(e.max_tokens)
    lut = build_byte_luts(dataset.processor(), cfg.model.vocab_size)
    return evaluate(model if forward is None else forward, tokens, lut, seq_len=seq_len, stride=e.stride, batch_seqs=e.batch_seqs,
                    device=device, rank=rank, world_size=world_size)
