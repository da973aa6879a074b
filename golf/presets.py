"""Presets: functions returning a GolfConfig. Derive by calling another preset and changing fields."""

from __future__ import annotations

import difflib
from typing import Callable

from golf.config import GolfConfig


def baseline() -> GolfConfig:
    """The challenge's naive baseline (2026-03-17 NaiveBaseline, FineWeb val_bpb 1.2244).

    9 layers, 512 dim, 8 query / 4 KV heads, relu^2 MLP 2x, vocab 1024, seq 1024, 524,288 tokens/step,
    Muon 0.04 / Adam 0.04 scalars / 0.05 tied embedding, momentum 0.85 -> 0.95 over 500 steps,
    warmdown 1200 iterations, 600 s wall-clock cap, int8 per-row export.
    """
    cfg = GolfConfig(preset="baseline")
    cfg.model.num_layers = 9
    cfg.model.mlp_mult = 2.0
    cfg.model.leaky_slope = 0.0
    cfg.model.init = "default"
    cfg.train.batch_tokens = 524288
    cfg.train.seq_len = 1024
    cfg.train.max_wallclock_seconds = 600.0
    cfg.quant.bits = 8
    cfg.quant.embed_bits = 8
    cfg.quant.gptq = False
    return cfg


def core11() -> GolfConfig:
    """The 11-layer core of the 2026-03-23 record (PR #549, FineWeb val_bpb 1.1194) without its extras.

    11 layers, 512 dim, 8/4 heads, LeakyReLU(0.5)^2 MLP 3x, partial RoPE 16/64 (with the record's NTK
    base scaling from a 1024 reference length, which is active at seq 2048), seq 2048, 786,432 tokens/step;
    the record's optimizer: Muon LR 0.025 (momentum 0.92 -> 0.99 over 1500 steps, WD 0.04), Adam 0.025
    scalars / 0.035 tied embedding (WD 0.04), clip 0.3, warmdown 3500, EMA 0.997; int6 GPTQ.
    """
    cfg = GolfConfig(preset="core11")
    m = cfg.model
    m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads = 11, 512, 8, 4
    m.mlp_mult, m.leaky_slope = 3.0, 0.5
    m.rope_dims, m.rope_ntk_seq_len = 16, 1024
    o = cfg.optim
    o.matrix_lr, o.scalar_lr, o.embed_lr = 0.025, 0.025, 0.035
    o.muon_momentum_start, o.muon_momentum, o.muon_momentum_warmup_steps = 0.92, 0.99, 1500
    o.muon_wd = o.embed_wd = o.scalar_wd = 0.04
    o.grad_clip = 0.3
    o.warmdown_iters = 3500
    o.ema_decay = 0.997
    t = cfg.train
    t.seq_len, t.batch_tokens = 2048, 786432
    t.max_wallclock_seconds = 600.0
    cfg.quant.bits, cfg.quant.embed_bits = 6, 8
    return cfg


def demo() -> GolfConfig:
    """The default of `golf train`: the whole main job on the builtin corpus in minutes, even on a CPU.

    A 4-layer, 128-dim core11-style model at vocab 1024 and seq 256. Absolute val_bpb on the builtin
    corpus is not comparable with FineWeb numbers.
    """
    cfg = core11()
    cfg.preset = "demo"
    m = cfg.model
    m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads = 4, 128, 4, 2
    m.rope_dims, m.rope_ntk_seq_len = 16, 0
    o = cfg.optim
    o.matrix_lr, o.scalar_lr, o.embed_lr = 0.04, 0.04, 0.05
    o.muon_momentum_start, o.muon_momentum_warmup_steps = 0.85, 50
    o.muon_momentum = 0.95
    o.warmdown_iters = 60
    o.ema_decay = 0.99
    t = cfg.train
    t.seq_len, t.batch_tokens, t.iterations = 256, 8192, 200
    t.max_wallclock_seconds = 0.0
    t.warmup_steps = 0
    t.log_every = 10
    t.val_every = 50
    t.val_tokens = 32768
    cfg.quant.calib_batches = 4
    cfg.eval.max_tokens = 131072
    cfg.eval.batch_seqs = 16
    return cfg


PRESETS: dict[str, Callable[[], GolfConfig]] = {"demo": demo, "baseline": baseline, "core11": core11}


def get_preset(name: str) -> GolfConfig:
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown preset {name!r} (known: {', '.join(PRESETS)}){hint}")
    return PRESETS[name]().validate()
