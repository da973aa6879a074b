"""Which weights a run evaluates and quantizes: one rule (golf.train.job.evaluated_weights) for the end of
training (final_weights) and for a checkpoint reloaded later (trained_model, behind `golf eval`)."""

from __future__ import annotations

import torch

from golf.model import GPT
from golf.optim.swa import SWA
from golf.presets import get_preset
from golf.train import checkpoint
from golf.train.job import evaluated_weights, trained_model


def test_swa_wins_over_ema_which_wins_over_the_last_step():
    assert evaluated_weights(3, True) == "swa"
    assert evaluated_weights(3, False) == "swa"
    assert evaluated_weights(0, True) == "ema"
    assert evaluated_weights(0, False) == "last"


def _filled(model: GPT, value: float) -> dict[str, torch.Tensor]:
    return {k: torch.full_like(v, value) if v.is_floating_point() else v.clone() for k, v in model.state_dict().items()}


def _checkpoint(tmp_path, cfg, *, ema: bool, swa_snapshots: int):
    """A checkpoint whose last-step weights are all 1, EMA weights all 2, SWA snapshots all 3."""
    model = GPT(cfg.model)
    swa = SWA(cfg.optim.swa_every, cfg.optim.swa_start_lr_scale)
    model.load_state_dict(_filled(model, 3.0))
    for step in range(swa_snapshots):
        assert swa.maybe_update(model, cfg.optim.swa_every * (step + 1), 0.0)
    state = {"model": _filled(model, 1.0), "ema": _filled(model, 2.0) if ema else None, "swa": swa.state_dict()}
    path = tmp_path / "checkpoint.pt"
    checkpoint.save(path, state, {}, rank=0)
    return path


def test_trained_model_loads_the_weights_the_rule_names(tmp_path):
    cfg = get_preset("demo")
    cfg.optim.swa_every = 10
    for ema, snapshots, value in ((True, 2, 3.0), (False, 2, 3.0), (True, 0, 2.0), (False, 0, 1.0)):
        model = trained_model(_checkpoint(tmp_path, cfg, ema=ema, swa_snapshots=snapshots), cfg, torch.device("cpu"))
        floats = [v for v in model.state_dict().values() if v.is_floating_point()]
        assert all(torch.all(v == value) for v in floats), (ema, snapshots, value)
