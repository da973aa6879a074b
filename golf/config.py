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
    """The records' GPT (techniques.md §2.1–§2.16): the core plus the record features, each off by default."""

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
    # The record features (techniques.md §2.2–§2.16), all off by default.
    xsa_last_n: int = 0  # XSA on physical layers [L-N, L); 0 off, N >= num_layers all (§2.4)
    smear_gate: Literal["off", "v1", "v2"] = "off"  # v1 after the embedding norm (R0320); v2 before it (R0427) (§2.9)
    gate_window: int = 12  # input width of SmearGate v2 and of the output/sparse attention gates
    bos_id: int = 1  # SmearGate v2 never smears into a position holding this token (document boundary)
    bigram_vocab: int = 0  # BigramHash table rows Vb; 0 off (§2.10)
    bigram_dim: int = 128  # BigramHash table width db
    ve_layers: str = ""  # value embeddings on these physical layers, e.g. "9,10"; "" off (§2.11)
    ve_dim: int = 128
    ln_scale: bool = False  # scale each sublayer's normalized input by 1/sqrt(physical layer + 1) (§2.2)
    skip_gates: bool = False  # sigmoid-gated U-Net skips: x = lerp(w*skip, x, sigmoid(gate)) (§2.6)
    # Depth recurrence (§2.15 variant C; variant B is num_loops=1): layers loop_start..loop_end run
    # num_loops extra times while GPT.set_looping(True) is on.
    loop_start: int = 0
    loop_end: int = 0
    num_loops: int = 0  # 0 off
    # "looped": skip weights sized for the looped index lists (R0409, R0427); "physical": sized for the
    # plain U-Net, extra looped decoder layers reuse the last weight while skips remain (R0403, PR #1331).
    loop_skip_weights: Literal["looped", "physical"] = "looped"
    loop_enable_at: float = 0.0  # read by the trainer: training fraction at which looping switches on
    parallel_residual: Literal["off", "gptj", "two_lane"] = "off"  # §2.16 (b) GPT-J, (c) R0427 two lanes
    parallel_start_layer: int = 0  # first physical layer of the parallel form
    attn_gate: Literal["off", "dense", "output", "sparse"] = "off"  # per-head attention output gates (§2.13)
    attn_gate_scale: float = 1.0  # sparse gate logit scale (R0423 1.0, R0427 0.5)
    attn_gate_init_std: float = 0.01  # dense gate W_g ~ N(0, std^2)
    value_residual: bool = False  # v_l = lambda0 * v_0 + lambda1 * v_l (§2.12; off in every record)

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
        self._validate_features()

    def ve_layer_list(self) -> list[int]:
        """ve_layers parsed: "9,10" -> [9, 10]; "" -> []. Raises ValueError on anything else."""
        layers: list[int] = []
        for part in self.ve_layers.split(","):
            if not part.strip():
                continue
            try:
                layer = int(part)
            except ValueError:
                _fail("model.ve_layers", self.ve_layers, "must be comma-separated layer indices, e.g. '9,10'")
            if not 0 <= layer < self.num_layers or layer in layers:
                _fail("model.ve_layers", self.ve_layers, f"needs distinct layers in [0, num_layers={self.num_layers})")
            layers.append(layer)
        return layers

    def _validate_features(self) -> None:
        choices = {"smear_gate": ("off", "v1", "v2"), "loop_skip_weights": ("looped", "physical"),
                   "parallel_residual": ("off", "gptj", "two_lane"), "attn_gate": ("off", "dense", "output", "sparse")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                _fail(f"model.{name}", getattr(self, name), f"must be one of {', '.join(allowed)}")
        for name in ("xsa_last_n", "num_loops", "loop_start", "loop_end", "parallel_start_layer", "bigram_vocab"):
            if getattr(self, name) < 0:
                _fail(f"model.{name}", getattr(self, name), "must be >= 0")
        windowed = self.smear_gate == "v2" or self.attn_gate in ("output", "sparse")
        if windowed and not 0 < self.gate_window <= self.model_dim:
            _fail("model.gate_window", self.gate_window, f"must be in [1, model_dim={self.model_dim}]")
        if self.smear_gate == "v2" and not 0 <= self.bos_id < self.vocab_size:
            _fail("model.bos_id", self.bos_id, f"must be a token id in [0, vocab_size={self.vocab_size})")
        if self.bigram_vocab:
            if self.bigram_vocab < 2:
                _fail("model.bigram_vocab", self.bigram_vocab, "hashes modulo bigram_vocab-1; use >= 2 (0 disables)")
            if self.bigram_dim <= 0:
                _fail("model.bigram_dim", self.bigram_dim, "must be positive when model.bigram_vocab > 0")
            # The hash multiplies token ids by 36313 in int32; larger ids would wrap around.
            if 36313 * (self.vocab_size - 1) >= 2**31:
                _fail("model.bigram_vocab", self.bigram_vocab,
                      f"BigramHash's int32 hash needs vocab_size <= 59139 (got {self.vocab_size}); set 0 to disable")
        if self.ve_layer_list() and self.ve_dim <= 0:
            _fail("model.ve_dim", self.ve_dim, "must be positive when model.ve_layers is set")
        if self.num_loops:
            if not self.loop_start <= self.loop_end < self.num_layers:
                _fail("model.loop_end", self.loop_end,
                      f"needs loop_start={self.loop_start} <= loop_end < num_layers={self.num_layers}")
        if not 0 <= self.loop_enable_at <= 1:
            _fail("model.loop_enable_at", self.loop_enable_at, "is a training fraction; must be in [0, 1]")
        if self.parallel_residual != "off" and self.parallel_start_layer >= self.num_layers:
            _fail("model.parallel_start_layer", self.parallel_start_layer, f"must be < num_layers={self.num_layers}")
        if self.value_residual and self.parallel_residual == "two_lane" and not self.unet_skips \
                and self.parallel_start_layer == 0:
            _fail("model.value_residual", self.value_residual,
                  "needs a single-lane first block (its values are v_0); raise model.parallel_start_layer")
        if self.attn_gate == "sparse" and self.attn_gate_scale <= 0:
            _fail("model.attn_gate_scale", self.attn_gate_scale, "must be positive")
        if self.attn_gate_init_std < 0:
            _fail("model.attn_gate_init_std", self.attn_gate_init_std, "must be >= 0")


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
    muon_normuon: bool = False  # NorMuon as the paper defines it (§3.4; untested on this task)
    muon_normuon_beta2: float = 0.95
    muon_shape_scaling: bool = True  # update *= sqrt(max(1, rows/cols))
    muon_banks: bool = True  # one batched NS call per group of same-shape matrices
    muon_distributed: Literal["allreduce", "sharded"] = "allreduce"  # torchrun: DDP + all-reduce, or RS/AG banks
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
    # SWA (§3.9): every swa_every steps while the LR scale < swa_start_lr_scale, add the weights to a uniform
    # average that replaces them at the end (golf applies it; R0322/R0323 collected it and never did). 0 disables.
    swa_every: int = 0
    swa_start_lr_scale: float = 0.2  # R0320: 0.5, R0320-int5: 0.4, R0322/R0323: 0.2
    # bigram.proj / ve_shared.proj: Muon like the other matrices (R0320/R0321), or the scalar Adam group
    # (the bank scripts, R0323 = pr549) (§3.1).
    aux_proj_optimizer: Literal["muon", "adam"] = "muon"

    def validate(self) -> None:
        for name in ("matrix_lr", "scalar_lr", "embed_lr", "adam_eps"):
            if getattr(self, name) <= 0:
                _fail(f"optim.{name}", getattr(self, name), "must be positive")
        for name in ("muon_momentum", "muon_momentum_start", "adam_beta1", "adam_beta2", "muon_normuon_beta2"):
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
        if self.swa_every < 0:
            _fail("optim.swa_every", self.swa_every, "must be >= 0 (0 disables SWA)")
        if not 0 < self.swa_start_lr_scale <= 1:
            _fail("optim.swa_start_lr_scale", self.swa_start_lr_scale,
                  "is an LR-scale threshold; must be in (0, 1] (SWA collects while the scale is below it)")
        if self.aux_proj_optimizer not in ("muon", "adam"):
            _fail("optim.aux_proj_optimizer", self.aux_proj_optimizer, "must be 'muon' or 'adam'")


@dataclass(kw_only=True)
class QuantConfig:
    """Post-training quantization and the artifact (techniques.md §4)."""

    bits: int = 6  # block matrices
    embed_bits: int = 8  # tied embedding
    # golf.quant.scheme's rules; "percentile_search": per matrix the scheme.PERCENTILES row clip with the least
    # reconstruction error (one GPTQ per candidate when quant.gptq; the records' GPTQ-lite without it)
    clip: Literal["absmax", "absmax_floor", "sdclip", "percentile_search"] = "absmax"
    clip_k: float = 12.85  # SDClip factor for matrices
    clip_k_attn: float = 0.0  # SDClip factor for attention matrices (c_q, c_k, c_v, attn.proj); 0: clip_k
    clip_k_mlp: float = 0.0  # SDClip factor for MLP matrices (mlp.fc, mlp.proj); 0: clip_k
    embed_clip_k: float = 20.0  # SDClip factor for the embedding and the lookup tables
    table_bits: int = 8  # bigram / value-embedding lookup tables (round-to-nearest: no Hessian); 16: fp16
    qat: bool = False  # STE fake-quant of every quantized CastedLinear in training, on the export's grid (§4.4)
    qat_start_lr_scale: float = 0.15  # QAT switches on once the LR scale falls below this; >= 1.0: from step 0
    qat_ste: Literal["identity", "clipped"] = "identity"  # clipped: no gradient where the forward clamp cut w
    gptq: bool = True  # False: round-to-nearest with the same scales
    block_size: int = 128
    damp: float = 0.01
    act_order: bool = True
    calib_batches: int = 64
    calib_source: Literal["train", "generated"] = "train"  # generated: the model's own samples (§4.7)
    mixed_low_bits: int = 0  # > 0: least Hessian-sensitive matrices drop to these bits to fit the budget (§4.9)
    prune_to_budget: bool = False  # zero the cheapest +-1 codes until the artifact fits (§4.12)
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
        if self.table_bits not in (5, 6, 7, 8, 16):
            _fail("quant.table_bits", self.table_bits, "must be one of 5, 6, 7, 8 or 16 (fp16 passthrough)")
        if self.clip_k <= 0 or self.embed_clip_k <= 0:
            _fail("quant.clip_k", self.clip_k, "SDClip factors must be positive")
        for name in ("clip_k_attn", "clip_k_mlp"):
            if getattr(self, name) < 0:
                _fail(f"quant.{name}", getattr(self, name), "must be positive, or 0 to use quant.clip_k")
        if self.qat_start_lr_scale <= 0:
            _fail("quant.qat_start_lr_scale", self.qat_start_lr_scale, "must be positive (1.0: QAT from the start)")
        if self.qat_ste not in ("identity", "clipped"):
            _fail("quant.qat_ste", self.qat_ste, "must be 'identity' or 'clipped'")
        if self.block_size <= 0:
            _fail("quant.block_size", self.block_size, "must be positive")
        if not 0 <= self.damp < 1:
            _fail("quant.damp", self.damp, "must be in [0, 1)")
        if self.calib_source not in ("train", "generated"):
            _fail("quant.calib_source", self.calib_source, "must be 'train' or 'generated'")
        if self.mixed_low_bits and not 5 <= self.mixed_low_bits < self.bits:
            _fail("quant.mixed_low_bits", self.mixed_low_bits, f"must be 0 (off) or in [5, quant.bits={self.bits})")
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
    # Legal score-first TTT (§5.4, golf.eval.ttt) on the artifact's model; defaults are R0323's (PR #549).
    ttt: bool = False
    ttt_chunk_tokens: int = 32768  # a multiple of the stride and >= the eval sequence length
    ttt_epochs: int = 3
    ttt_lr: float = 0.002  # cosine over the chunks (R0406/R0409: 0.005)
    ttt_momentum: float = 0.9
    ttt_freeze_blocks: int = 0  # the first N blocks stay fixed
    ttt_grad_clip: float = 1.0  # global L2 norm; 0 disables

    def validate(self) -> None:
        for name in ("seq_len", "stride", "max_tokens"):
            if getattr(self, name) < 0:
                _fail(f"eval.{name}", getattr(self, name), "must be >= 0")
        if self.batch_seqs <= 0:
            _fail("eval.batch_seqs", self.batch_seqs, "must be positive")
        for name in ("ttt_epochs", "ttt_freeze_blocks", "ttt_lr", "ttt_grad_clip"):
            if getattr(self, name) < 0:
                _fail(f"eval.{name}", getattr(self, name), "must be >= 0")
        if not 0 <= self.ttt_momentum < 1:
            _fail("eval.ttt_momentum", self.ttt_momentum, "must be in [0, 1)")
        if self.ttt_chunk_tokens <= 0:
            _fail("eval.ttt_chunk_tokens", self.ttt_chunk_tokens, "must be positive")
        if self.ttt and not self.stride:
            _fail("eval.ttt", self.ttt, "scores with sliding windows; set eval.stride > 0 (the records use 64)")
        if self.ttt and self.ttt_chunk_tokens % self.stride:
            _fail("eval.ttt_chunk_tokens", self.ttt_chunk_tokens,
                  f"must be a multiple of eval.stride={self.stride} so no window's scored targets straddle chunks")
        if self.ttt and self.seq_len and (self.seq_len % self.stride or self.ttt_chunk_tokens < self.seq_len):
            _fail("eval.ttt_chunk_tokens", self.ttt_chunk_tokens,
                  f"TTT needs eval.seq_len={self.seq_len} to be a multiple of eval.stride={self.stride} and "
                  "eval.ttt_chunk_tokens >= eval.seq_len (golf.eval.ttt.check_ttt_shape)")


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
