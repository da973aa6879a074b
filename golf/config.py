"""GolfConfig: the one typed configuration tree of a golf run.

Sections are dataclasses; presets (golf.presets) are functions returning a GolfConfig; the CLI applies
`--section.key=value` overrides through `apply_overrides`, which type-checks values and rejects unknown
keys with the closest valid key. Nothing here reads the environment.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

BUDGET_BYTES = 16_000_000  # the challenge's artifact cap, decimal bytes (code + compressed model)


def _fail(path: str, value: Any, why: str) -> None:
    raise ValueError(f"config {path}={value!r}: {why}")


@dataclass(kw_only=True)
class ModelConfig:
    """The records' core GPT (techniques.md §2.1–§2.7)."""

    vocab_size: int = 1024
    num_layers: int = 9
    model_dim: int = 512
    num_heads: int = 8
    num_kv_heads: int = 4
    mlp_mult: float = 2.0  # hidden = round(mlp_mult * model_dim)
    leaky_slope: float = 0.0  # MLP activation leaky_relu(slope)^2; 0.0 is the baseline's relu^2
    rope_dims: int = 64  # rotary dims per head (partial RoPE rotates only the first rope_dims)
    rope_base: float = 10000.0
    rope_ntk_seq_len: int = 0  # >0: NTK-scale the base when seq_len exceeds this (records' ⚠ quirk)
    qk_gain_init: float = 1.5
    logit_softcap: float = 30.0
    tied_embed_init_std: float = 0.005
    unet_skips: bool = True
    init: Literal["ortho", "default"] = "ortho"  # ortho: the records' OrthoInit (R0320+); default: the baseline's
    attention: Literal["auto", "sdpa", "fa3"] = "auto"

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(round(self.mlp_mult * self.model_dim))

    def validate(self) -> None:
        for name in ("vocab_size", "num_layers", "model_dim", "num_heads", "num_kv_heads"):
            if getattr(self, name) <= 0:
                _fail(f"model.{name}", getattr(self, name), "must be positive")
        if self.vocab_size > 65536:
            _fail("model.vocab_size", self.vocab_size, "shards store uint16 tokens; use at most 65536")
        if self.model_dim % self.num_heads:
            _fail("model.model_dim", self.model_dim, f"must be divisible by num_heads={self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            _fail("model.num_kv_heads", self.num_kv_heads, f"must divide num_heads={self.num_heads}")
        if self.head_dim % 2:
            _fail("model.model_dim", self.model_dim, "head_dim (model_dim/num_heads) must be even for RoPE")
        if not (0 <= self.rope_dims <= self.head_dim) or self.rope_dims % 2:
            _fail("model.rope_dims", self.rope_dims, f"must be even and in [0, head_dim={self.head_dim}]")
        if self.rope_ntk_seq_len > 0 and self.rope_dims < 4:
            _fail("model.rope_ntk_seq_len", self.rope_ntk_seq_len, "NTK scaling needs rope_dims >= 4 (it divides by rope_dims-2)")
        if self.mlp_mult <= 0:
            _fail("model.mlp_mult", self.mlp_mult, "must be positive")
        if self.leaky_slope < 0:
            _fail("model.leaky_slope", self.leaky_slope, "must be >= 0 (0 gives relu^2)")
        if self.logit_softcap < 0:
            _fail("model.logit_softcap", self.logit_softcap, "must be >= 0 (0 disables the softcap)")


@dataclass(kw_only=True)
class DataConfig:
    """Where tokens come from. An empty `dir` means the builtin corpus (built on first use)."""

    dir: str = ""
    tokenizer: str = ""  # default: DIR/tokenizer.model, or the only *.model file in DIR
    vocab_size: int = 0  # 0: take model.vocab_size; used when `golf train` builds the builtin corpus
    val_docs: int = 500  # builtin corpus: documents held out for validation
    cache_dir: str = ""  # default: $XDG_CACHE_HOME/golf (the CLI resolves it; never read at import)

    def validate(self) -> None:
        if self.vocab_size < 0:
            _fail("data.vocab_size", self.vocab_size, "must be >= 0")
        if self.val_docs <= 0:
            _fail("data.val_docs", self.val_docs, "must be positive")


@dataclass(kw_only=True)
class OptimConfig:
    """Muon for block matrices, Adam for embeddings and scalars (techniques.md §3)."""

    matrix_lr: float = 0.04
    scalar_lr: float = 0.04
    embed_lr: float = 0.05
    muon_momentum: float = 0.95
    muon_momentum_start: float = 0.85
    muon_momentum_warmup_steps: int = 500
    muon_ns_steps: int = 5
    muon_nesterov: bool = True
    muon_coefficients: Literal["ns5", "polar_express"] = "ns5"  # Newton–Schulz coefficient set (§3.2, §3.5)
    muon_row_normalize: bool = False  # MuonEq-R: row-normalize the update before NS (§3.3)
    muon_wd: float = 0.0
    embed_wd: float = 0.0
    scalar_wd: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    grad_clip: float = 0.0  # global L2 norm; 0 disables
    warmdown_iters: int = 1200  # linear warmdown over the last N iterations (wallclock-aware with a cap)
    warmdown_frac: float = 0.0  # >0: warmdown by fraction of the (wallclock or iteration) budget instead
    min_lr: float = 0.0  # floor of the LR scale during warmdown
    ema_decay: float = 0.0  # 0 disables EMA; the records use 0.997 / 0.9965

    def validate(self) -> None:
        for name in ("matrix_lr", "scalar_lr", "embed_lr", "adam_eps"):
            if getattr(self, name) <= 0:
                _fail(f"optim.{name}", getattr(self, name), "must be positive")
        for name in ("muon_momentum", "muon_momentum_start", "adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                _fail(f"optim.{name}", getattr(self, name), "must be in [0, 1)")
        if not 0 <= self.ema_decay < 1:
            _fail("optim.ema_decay", self.ema_decay, "must be in [0, 1); 0 disables EMA")
        if not 0 <= self.warmdown_frac <= 1:
            _fail("optim.warmdown_frac", self.warmdown_frac, "must be in [0, 1]")
        if not 0 <= self.min_lr <= 1:
            _fail("optim.min_lr", self.min_lr, "is a fraction of the peak LR; must be in [0, 1]")
        for name in ("muon_ns_steps", "warmdown_iters", "muon_momentum_warmup_steps"):
            if getattr(self, name) < 0:
                _fail(f"optim.{name}", getattr(self, name), "must be >= 0")
        for name in ("muon_wd", "embed_wd", "scalar_wd", "grad_clip"):
            if getattr(self, name) < 0:
                _fail(f"optim.{name}", getattr(self, name), "must be >= 0")


@dataclass(kw_only=True)
class QuantConfig:
    """Post-training quantization and the artifact (techniques.md §4)."""

    bits: int = 6  # block matrices
    embed_bits: int = 8  # tied embedding
    clip: Literal["absmax", "absmax_floor", "sdclip"] = "absmax"  # golf.quant.scheme
    clip_k: float = 12.85  # SDClip factor for matrices
    embed_clip_k: float = 20.0  # SDClip factor for the embedding
    gptq: bool = True  # False: round-to-nearest with the same scales
    block_size: int = 128
    damp: float = 0.01
    act_order: bool = True
    calib_batches: int = 64
    calib_batch_tokens: int = 0  # 0: train.batch_tokens
    passthrough_numel: int = 65536  # float tensors this small are stored as fp16
    compressor: Literal["brotli", "zstd", "lzma"] = "brotli"
    budget_bytes: int = BUDGET_BYTES
    allow_over_budget: bool = False

    def validate(self) -> None:
        if self.bits not in (5, 6, 7, 8):
            _fail("quant.bits", self.bits, "must be one of 5, 6, 7, 8")
        if self.embed_bits not in (5, 6, 7, 8, 16):
            _fail("quant.embed_bits", self.embed_bits, "must be one of 5, 6, 7, 8 or 16 (fp16 passthrough)")
        if self.clip_k <= 0 or self.embed_clip_k <= 0:
            _fail("quant.clip_k", self.clip_k, "SDClip factors must be positive")
        if self.block_size <= 0:
            _fail("quant.block_size", self.block_size, "must be positive")
        if not 0 <= self.damp < 1:
            _fail("quant.damp", self.damp, "must be in [0, 1)")
        if self.calib_batches < 0:
            _fail("quant.calib_batches", self.calib_batches, "must be >= 0")
        if self.budget_bytes <= 0:
            _fail("quant.budget_bytes", self.budget_bytes, "must be positive")


@dataclass(kw_only=True)
class TrainConfig:
    iterations: int = 20000
    batch_tokens: int = 524288  # tokens per optimizer step, summed over ranks and micro-batches
    seq_len: int = 1024
    max_micro_batch_tokens: int = 98304  # per-rank micro-batch cap; sets gradient accumulation
    max_wallclock_seconds: float = 0.0  # 0: no cap
    quant_reserve_seconds: float = 0.0  # carved out of the cap for calibration/quantization
    warmup_steps: int = 20  # compile-priming steps, then model/optimizer state is restored
    log_every: int = 50
    val_every: int = 0  # 0: validate only at the end
    val_tokens: int = 0  # periodic validation on the first N val tokens; 0: the whole split
    checkpoint_every: int = 0  # 0: checkpoint only at the end
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: Literal["auto", "on", "off"] = "auto"  # auto: on for CUDA, off on CPU
    kernels: bool = True  # False forces every golf.ops op to its pure-torch reference

    def validate(self) -> None:
        for name in ("iterations", "batch_tokens", "seq_len", "max_micro_batch_tokens"):
            if getattr(self, name) <= 0:
                _fail(f"train.{name}", getattr(self, name), "must be positive")
        if self.batch_tokens % self.seq_len:
            _fail("train.batch_tokens", self.batch_tokens, f"must be a multiple of train.seq_len={self.seq_len}")
        for name in ("max_wallclock_seconds", "quant_reserve_seconds"):
            if getattr(self, name) < 0:
                _fail(f"train.{name}", getattr(self, name), "must be >= 0")
        for name in ("warmup_steps", "log_every", "val_every", "val_tokens", "checkpoint_every"):
            if getattr(self, name) < 0:
                _fail(f"train.{name}", getattr(self, name), "must be >= 0")


@dataclass(kw_only=True)
class EvalConfig:
    seq_len: int = 0  # 0: train.seq_len
    stride: int = 64  # sliding-window stride; 0 disables the sliding-window score
    batch_seqs: int = 32  # windows per forward
    max_tokens: int = 0  # score only the first N val tokens; 0: the whole split

    def validate(self) -> None:
        for name in ("seq_len", "stride", "max_tokens"):
            if getattr(self, name) < 0:
                _fail(f"eval.{name}", getattr(self, name), "must be >= 0")
        if self.batch_seqs <= 0:
            _fail("eval.batch_seqs", self.batch_seqs, "must be positive")


@dataclass(kw_only=True)
class GolfConfig:
    preset: str = "custom"
    out: str = ""  # run directory; default runs/<preset>-<timestamp>
    seed: int = 1337
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> "GolfConfig":
        for section in SECTIONS:
            getattr(self, section).validate()
        if self.eval.stride and self.eval.stride > (self.eval.seq_len or self.train.seq_len):
            _fail("eval.stride", self.eval.stride, "must not exceed the eval sequence length")
        if self.data.vocab_size and self.data.vocab_size != self.model.vocab_size:
            _fail("data.vocab_size", self.data.vocab_size, f"differs from model.vocab_size={self.model.vocab_size}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GolfConfig":
        """Rebuild from to_dict() output (run.json, checkpoints); unknown keys are errors."""
        cfg = cls()
        apply_overrides(cfg, {k: v for k, v in _flatten(d).items()}, from_strings=False)
        return cfg


SECTIONS = ("model", "data", "optim", "quant", "train", "eval")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def valid_keys(cfg: GolfConfig | None = None) -> list[str]:
    """Every overridable key, dotted: 'seed', 'out', 'train.iterations', ..."""
    cfg = cfg or GolfConfig()
    keys = []
    for f in dataclasses.fields(cfg):
        if f.name in SECTIONS:
            keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(getattr(cfg, f.name))]
        else:
            keys.append(f.name)
    return keys


def _field_type(obj: Any, name: str) -> Any:
    return typing.get_type_hints(type(obj))[name]


def _coerce(key: str, raw: Any, typ: Any, from_strings: bool) -> Any:
    """Convert `raw` to the field type, or raise ValueError naming the key and what it accepts."""
    if typing.get_origin(typ) is Literal:
        choices = typing.get_args(typ)
        if raw not in choices:
            raise ValueError(f"--{key}={raw!r}: must be one of {', '.join(map(str, choices))}")
        return raw
    if typ is bool:
        if isinstance(raw, bool):
            return raw
        if from_strings and isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return raw.lower() in ("1", "true", "yes", "on")
        raise ValueError(f"--{key}={raw!r}: expected a boolean (true/false)")
    if typ is int:
        if isinstance(raw, bool):
            raise ValueError(f"--{key}={raw!r}: expected an integer")
        if isinstance(raw, int):
            return raw
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        if from_strings and isinstance(raw, str):
            try:
                return int(raw.replace("_", ""))
            except ValueError:
                pass
        raise ValueError(f"--{key}={raw!r}: expected an integer")
    if typ is float:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
        if from_strings and isinstance(raw, str):
            try:
                return float(raw)
            except ValueError:
                pass
        raise ValueError(f"--{key}={raw!r}: expected a number")
    if typ is str:
        if isinstance(raw, str):
            return raw
        raise ValueError(f"--{key}={raw!r}: expected a string")
    raise TypeError(f"config field {key} has unsupported type {typ}")


def apply_overrides(cfg: GolfConfig, overrides: dict[str, Any], *, from_strings: bool = True) -> GolfConfig:
    """Set dotted keys on cfg in place. Unknown keys raise ValueError with the closest valid key."""
    keys = valid_keys(cfg)
    for key, raw in overrides.items():
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
            hint = f"; did you mean --{close[0]}?" if close else "; `golf info` lists the valid keys"
            raise ValueError(f"unknown config key --{key}{hint}")
        *section, name = key.split(".")
        target = getattr(cfg, section[0]) if section else cfg
        setattr(target, name, _coerce(key, raw, _field_type(target, name), from_strings))
    return cfg


def parse_override_args(args: list[str]) -> dict[str, str]:
    """['--train.iterations=5', '--seed', '3'] -> {'train.iterations': '5', 'seed': '3'}."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise ValueError(f"unexpected argument {arg!r}: config overrides look like --section.key=value")
        body = arg[2:]
        if "=" in body:
            key, value = body.split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            key, value = body, args[i + 1]
            i += 1
        else:
            raise ValueError(f"--{body} needs a value: --{body}=VALUE")
        out[key] = value
        i += 1
    return out
