"""The records' GPT (techniques.md §2.1–§2.16): blocks with resid_mix and per-channel scales, U-Net skips,
tied embedding head with a logit softcap, and the record features ModelConfig switches on (BigramHash,
SmearGate v1/v2, value embeddings, XSA, attention gates, value residual, LN scale, skip gates, depth
recurrence, GPT-J or two-lane parallel residuals). Feature pieces live in features.py, embeddings.py and
recurrence.py.

Shape letters: B batch, T sequence, D model_dim, V vocab_size, F mlp_hidden.

Every forward path (training, eval, sliding window, calibration, TTT) goes through `embed` -> `hidden` ->
`head`, so a feature added to one of them is seen by all. State-dict names are the records' reference
layout (`tok_emb.weight`, `blocks.{i}.attn.c_q.weight`, ..., `skip_weights`, `bigram.embed.weight`,
`ve_shared.proj.weight`, `smear_lambda`, `blocks.{i}.attn.attn_gate_w`, `parallel_post_lambdas`, ...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from golf.config import ModelConfig
from golf.model.attention import CausalSelfAttention, resolve_backend
from golf.model.embeddings import BigramHash, ValueEmbedding
from golf.model.features import SmearGate, smear_v2
from golf.model.layers import CastedLinear, rms_norm
from golf.model.mlp import MLP
from golf.model.recurrence import LayerPlan, build_plans, num_skip_weights

REDUCTIONS = ("mean", "sum", "none")
INIT_SCHEMES = ("ortho", "default")


class Block(nn.Module):
    """Sequential residual block (§2.2), or GPT-J parallel (§2.16 b) from `parallel_start_layer` on:

    x_in = resid_mix[0]*x + resid_mix[1]*x0;  s = 1/sqrt(layer_idx+1) with ln_scale, else 1
    a    = attn_scale * Attn(rms_norm(x_in) * s)
    sequential:  h = x_in + a;  out = h + mlp_scale * MLP(rms_norm(h) * s)
    GPT-J:       out = x_in + a + mlp_scale * MLP(rms_norm(x_in) * s)

    layer_idx is the *physical* index: under depth recurrence every pass of a block uses the same LN
    factor, XSA flag and scalars (the choice of R0403/R0405+/R0409/R0427; R0331's per-virtual-layer
    blocks are not reproduced). `forward_lanes` is the R0427 two-lane form, driven by GPT.
    """

    def __init__(self, cfg: ModelConfig, backend: str, layer_idx: int = 0):
        super().__init__()
        d = cfg.model_dim
        self.layer_idx = layer_idx
        self.attn = CausalSelfAttention(cfg, backend, layer_idx)
        self.mlp = MLP(cfg)
        self.attn_scale = nn.Parameter(torch.ones(d, dtype=torch.float32))
        self.mlp_scale = nn.Parameter(torch.ones(d, dtype=torch.float32))
        # Row 0 weights the running stream, row 1 the embedding stream x0; [1, 0] starts as plain residual.
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(d), torch.zeros(d))).float())
        self.ln_scale = 1.0 / math.sqrt(layer_idx + 1) if cfg.ln_scale else 1.0
        self.parallel = cfg.parallel_residual == "gptj" and layer_idx >= cfg.parallel_start_layer

    def _norm(self, x: Tensor) -> Tensor:
        return rms_norm(x) * self.ln_scale if self.ln_scale != 1.0 else rms_norm(x)

    def _attend(self, x_in: Tensor, v_embed: Tensor | None, v0: Tensor | None, return_v: bool):
        """attn_scale * Attn(norm(x_in) * s), and this layer's raw values when return_v (else None)."""
        out = self.attn(self._norm(x_in), v_embed, v0, return_v)
        out, raw_v = out if return_v else (out, None)
        return self.attn_scale.to(x_in.dtype) * out, raw_v

    def _mlp(self, x: Tensor) -> Tensor:
        return self.mlp_scale.to(x.dtype) * self.mlp(self._norm(x))

    def forward(self, x: Tensor, x0: Tensor, v_embed: Tensor | None = None, v0: Tensor | None = None,
                return_v: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """x, x0: [B, T, D] -> [B, T, D] (and the raw values [B, T, Hkv, Dh] when return_v). Control
        vectors are cast to the stream's dtype (fp32 under autocast). v_embed, v0: see CausalSelfAttention."""
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        a, raw_v = self._attend(x, v_embed, v0, return_v)
        if self.parallel:
            out = x + a + self._mlp(x)
        else:
            h = x + a
            out = h + self._mlp(h)
        return (out, raw_v) if return_v else out

    def forward_lanes(self, lane0: Tensor, lane1: Tensor, x0: Tensor, resid: Tensor, post: Tensor,
                      v_embed: Tensor | None = None, v0: Tensor | None = None):
        """R0427's two-lane parallel block (§2.16 c), both sublayers reading the pre-update lanes:

        a = attn_scale * Attn(norm(mix0*lane0 + mix1*x0) * s);  m = mlp_scale * MLP(norm(lane1) * s)
        lane0' = resid[0]*lane0 + post[0,0]*a + post[1,0]*m
        lane1' = resid[1]*lane1 + post[0,1]*a + post[1,1]*m
        resid: [2] (init 1.1), post: [2, 2] (init 1), this layer's rows of the GPT's lambdas.
        """
        mix = self.resid_mix.to(lane0.dtype)
        a, _ = self._attend(mix[0] * lane0 + mix[1] * x0, v_embed, v0, False)
        m = self._mlp(lane1)
        r, p = resid.to(lane0.dtype), post.to(lane0.dtype)
        return r[0] * lane0 + p[0, 0] * a + p[1, 0] * m, r[1] * lane1 + p[0, 1] * a + p[1, 1] * m


class GPT(nn.Module):
    """Decoder-only GPT built from a ModelConfig, with the record features its config switches on.

    `encoder_layers` / `decoder_layers` are the physical block indices run at each position of the
    active plan (golf.model.recurrence): encoder outputs are pushed on a stack and decoder positions with
    a skip slot first merge `x + skip_weights[slot] * stack.pop()` (LIFO; gated by `skip_gates` when on).
    With depth recurrence configured, `set_looping(True)` switches to the looped plan.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = dataclasses.replace(cfg)  # a private copy: later edits to the caller's config do not leak in
        self.attention_backend: str = resolve_backend(cfg.attention)
        self.logit_softcap = float(cfg.logit_softcap)
        num_layers, d = cfg.num_layers, cfg.model_dim

        self.tok_emb = nn.Embedding(cfg.vocab_size, d)
        self.bigram = BigramHash(cfg.bigram_vocab, cfg.bigram_dim, d) if cfg.bigram_vocab else None
        self.smear = SmearGate(d) if cfg.smear_gate == "v1" else None
        self.smear_gate = CastedLinear(cfg.gate_window, 1) if cfg.smear_gate == "v2" else None
        self.smear_lambda = nn.Parameter(torch.zeros(1, dtype=torch.float32)) if cfg.smear_gate == "v2" else None
        if self.smear_gate is not None:
            self.smear_gate._zero_init = True  # with smear_lambda = 0: identity at init

        self._plain_plan, self._looped_plan = build_plans(cfg)
        self._looping = False  # a Python bool: torch.compile guards on it, so set_looping recompiles
        self.num_skips = num_skip_weights(cfg)
        n = self.num_skips
        self.skip_weights = nn.Parameter(torch.ones(n, d, dtype=torch.float32)) if n else None
        self.skip_gates = nn.Parameter(torch.zeros(n, d, dtype=torch.float32)) if n and cfg.skip_gates else None
        self.blocks = nn.ModuleList(Block(cfg, self.attention_backend, i) for i in range(num_layers))

        ve_layers = cfg.ve_layer_list()
        self._ve_slot = tuple(ve_layers.index(i) if i in ve_layers else -1 for i in range(num_layers))
        kv_dim = cfg.num_kv_heads * cfg.head_dim
        self.ve_shared = ValueEmbedding(cfg.vocab_size, cfg.ve_dim, kv_dim) if ve_layers else None
        self.ve_layer_scales = nn.ParameterList(nn.Parameter(torch.ones(1, dtype=torch.float32)) for _ in ve_layers)

        two_lane = cfg.parallel_residual == "two_lane"
        self._lanes_from = cfg.parallel_start_layer if two_lane else None
        # R0427's lane lambdas, one row per physical layer (rows below the start stay unused, as in the record).
        f32 = torch.float32
        self.parallel_post_lambdas = nn.Parameter(torch.ones(num_layers, 2, 2, dtype=f32)) if two_lane else None
        self.parallel_resid_lambdas = nn.Parameter(torch.full((num_layers, 2), 1.1, dtype=f32)) if two_lane else None
        self._head_observer: Callable[[Tensor], None] | None = None
        # ModelConfig.init ("ortho" | "default") selects the records' OrthoInit or the baseline's torch
        # default; configs without the field get OrthoInit, the init of every record from R0320 on.
        self._init_weights(cfg.init)

    @torch.no_grad()
    def _init_weights(self, scheme: str) -> None:
        """§2.14: tok_emb ~ N(0, std^2); `_zero_init` linears (attn.proj, mlp.proj, smear_gate) zero; other
        matrices with both dims >= 64 orthogonal (gain 1) under "ortho", torch's nn.Linear default
        (kaiming-uniform, the baseline's) under "default". Matrices smaller than 64 keep the torch default
        in both, as in the records. This runs last, so bigram.proj and ve_shared.proj end up orthogonal."""
        if scheme not in INIT_SCHEMES:
            raise ValueError(f"model.init={scheme!r}: must be one of {', '.join(INIT_SCHEMES)}")
        nn.init.normal_(self.tok_emb.weight, mean=0.0, std=self.cfg.tied_embed_init_std)
        for module in self.modules():
            if not isinstance(module, CastedLinear):
                continue
            if module._zero_init:
                nn.init.zeros_(module.weight)
            elif scheme == "ortho" and min(module.weight.shape) >= 64:
                nn.init.orthogonal_(module.weight, gain=1.0)
            else:
                module.reset_parameters()  # torch's default, so re-initialising is idempotent

    def num_params(self) -> int:
        """Trainable parameter count; the tied embedding counts once."""
        return sum(p.numel() for p in self.parameters())

    def features(self) -> list[str]:
        """The enabled record features in words, for the run log (what actually runs, from the model)."""
        c, out = self.cfg, []
        if c.init == "ortho":
            out.append("OrthoInit")
        xsa_layers = [b.layer_idx for b in self.blocks if b.attn.use_xsa]
        if xsa_layers:
            out.append(f"XSA on layers {xsa_layers[0]}-{xsa_layers[-1]}")
        if self.smear is not None:
            out.append("SmearGate v1 (after the embedding norm)")
        if self.smear_gate is not None:
            out.append(f"SmearGate v2 (window {c.gate_window}, BOS id {c.bos_id} masked)")
        if self.bigram is not None:
            out.append(f"BigramHash {c.bigram_vocab}x{c.bigram_dim}")
        if self.ve_shared is not None:
            out.append(f"value embeddings dim {c.ve_dim} on layers {c.ve_layer_list()}")
        if c.ln_scale:
            out.append("LN scale 1/sqrt(layer+1)")
        if self.skip_gates is not None:
            out.append("sigmoid skip gates")
        if self._looped_plan is not None:
            p = self._looped_plan
            out.append(
                f"depth recurrence: layers {c.loop_start}-{c.loop_end} x{c.num_loops} extra "
                f"(encoder {list(p.encoder)}, decoder {list(p.decoder)}, {c.loop_skip_weights} skip weights, "
                f"on at {c.loop_enable_at:g} of training; now {'on' if self._looping else 'off'})"
            )
        if c.parallel_residual != "off":
            kind = "GPT-J single lane" if c.parallel_residual == "gptj" else "two lanes (mean)"
            out.append(f"parallel residuals, {kind}, from layer {c.parallel_start_layer}")
        if c.attn_gate != "off":
            extra = f", scale {c.attn_gate_scale:g}" if c.attn_gate == "sparse" else ""
            out.append(f"attention gate {c.attn_gate}{extra}")
        if c.value_residual:
            out.append("value residual")
        return out

    # ---- depth recurrence -------------------------------------------------------------------------------
    @property
    def looping(self) -> bool:
        """Whether the looped plan is active (see set_looping)."""
        return self._looping

    def set_looping(self, active: bool) -> None:
        """Switch depth recurrence on or off. A compiled model guards on this flag: the first forward after
        a toggle compiles (or reuses) the other graph. Not part of the state dict: set it after loading."""
        if active and self._looped_plan is None:
            raise ValueError("set_looping(True) on a model without depth recurrence: set model.num_loops > 0")
        self._looping = bool(active)

    def _plan(self) -> LayerPlan:
        return self._looped_plan if self._looping else self._plain_plan

    @property
    def encoder_layers(self) -> list[int]:
        return list(self._plan().encoder)

    @property
    def decoder_layers(self) -> list[int]:
        return list(self._plan().decoder)

    # ---- forward --------------------------------------------------------------------------------------
    def embed(self, input_ids: Tensor) -> Tensor:
        """input_ids [B, T] -> x0 [B, T, D]: token embedding [+ BigramHash] [-> SmearGate v2] -> RMSNorm
        [-> SmearGate v1] (§2.1)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}; expected [batch, seq_len]")
        x = self.tok_emb(input_ids)
        if self.bigram is not None:
            x = x + self.bigram(input_ids)
        if self.smear_gate is not None:
            x = smear_v2(x, input_ids, self.smear_gate, self.smear_lambda, self.cfg.gate_window, self.cfg.bos_id)
        x = rms_norm(x)
        return self.smear(x) if self.smear is not None else x

    def _value_embed(self, i: int, ve: Tensor | None) -> Tensor | None:
        slot = self._ve_slot[i]
        return None if ve is None or slot < 0 else ve * self.ve_layer_scales[slot].to(ve.dtype)

    def _run_block(self, i: int, x: Tensor, x0: Tensor, ve: Tensor | None, v0: Tensor | None):
        """blocks[i] on the single stream; returns (x, v0), v0 set by the first block under value residual."""
        block, v_embed = self.blocks[i], self._value_embed(i, ve)
        if self.cfg.value_residual and v0 is None:
            return block(x, x0, v_embed=v_embed, return_v=True)
        if self.cfg.value_residual:
            return block(x, x0, v_embed=v_embed, v0=v0), v0
        # Blocks without extra inputs are called as block(x, x0), the Block API.
        return (block(x, x0) if v_embed is None else block(x, x0, v_embed=v_embed)), v0

    def _merge_skip(self, x: Tensor, skip: Tensor, slot: int) -> Tensor:
        """x + w*skip, or with skip gates lerp(w*skip, x, sigmoid(gate)) = g*x + (1-g)*w*skip (§2.6)."""
        scaled = self.skip_weights[slot].to(x.dtype) * skip
        if self.skip_gates is None:
            return x + scaled
        return torch.lerp(scaled, x, torch.sigmoid(self.skip_gates[slot].to(x.dtype)))

    def hidden(self, input_ids: Tensor) -> Tensor:
        """input_ids [B, T] -> final-normed hidden states [B, T, D] (the tied head's input)."""
        x = x0 = self.embed(input_ids)
        plan = self._plan()
        ve = self.ve_shared(input_ids) if self.ve_shared is not None else None  # shared by the VE layers
        v0: Tensor | None = None
        skips: list[Tensor] = []
        for i in plan.encoder:
            x, v0 = self._run_block(i, x, x0, ve, v0)
            skips.append(x)
        lane1: Tensor | None = None  # x is lane0 once the two lanes are open
        for i, slot in zip(plan.decoder, plan.skip_slots):
            two_lane = self._lanes_from is not None and i >= self._lanes_from
            if two_lane and lane1 is None:
                lane1 = x  # both lanes start from the stream before this layer's skip, which joins lane0 only
            if slot is not None:
                x = self._merge_skip(x, skips.pop(), slot)
            if two_lane:
                x, lane1 = self.blocks[i].forward_lanes(
                    x, lane1, x0, self.parallel_resid_lambdas[i], self.parallel_post_lambdas[i],
                    v_embed=self._value_embed(i, ve), v0=v0,
                )
            else:
                x, v0 = self._run_block(i, x, x0, ve, v0)
        if lane1 is not None:
            x = 0.5 * (x + lane1)  # PARALLEL_FINAL_LANE=mean
        return rms_norm(x)

    def head(self, x: Tensor) -> Tensor:
        """Tied head: x [B, T, D] -> softcapped logits [B, T, V] in fp32 (softcap * tanh(z / softcap))."""
        if self._head_observer is not None:
            self._head_observer(x)
        z = F.linear(x, self.tok_emb.weight.to(x.dtype)).float()
        if self.logit_softcap > 0:
            z = self.logit_softcap * torch.tanh(z / self.logit_softcap)
        return z

    def logits(self, input_ids: Tensor) -> Tensor:
        """input_ids [B, T] -> fp32 softcapped logits [B, T, V]."""
        return self.head(self.hidden(input_ids))

    def forward(self, input_ids: Tensor, target_ids: Tensor, reduction: str = "mean") -> Tensor:
        """fp32 cross-entropy over the full vocab: "mean" -> scalar, "sum" -> scalar, "none" -> [B, T] NLL."""
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction={reduction!r}: must be one of {', '.join(REDUCTIONS)}")
        if target_ids.shape != input_ids.shape:
            raise ValueError(
                f"target_ids shape {tuple(target_ids.shape)} differs from input_ids shape {tuple(input_ids.shape)}"
            )
        logits = self.logits(input_ids)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), target_ids.reshape(-1), reduction=reduction)
        return loss.view(target_ids.shape) if reduction == "none" else loss

    @contextlib.contextmanager
    def linear_inputs(self, callback: Callable[[str, Tensor], None]) -> Iterator["GPT"]:
        """While active, every forward calls callback(weight_name, x) with the input [..., in_features] that
        multiplies each quantizable matrix, keyed by its state-dict name (GPTQ Hessians are built from it):
        c_q/c_k/c_v get the same normalized attention input, attn.proj the per-head attention output, mlp.fc
        the normalized MLP input, mlp.proj the activation leaky_relu(fc(x))^2 (gated, XSA'd per-head output
        for attn.proj when those features are on), tok_emb.weight the final-norm output; with the record
        features also bigram.proj (table rows), ve_shared.proj (value-embedding rows, once per forward) and
        smear_gate [B, T-1, gate_window]. The embedding tables (bigram.embed, ve_shared.embed) are lookups and
        report nothing. A block reached twice in one forward (depth recurrence) reports twice."""
        linears = [(f"{name}.weight", m) for name, m in self.named_modules() if isinstance(m, CastedLinear)]
        if self._head_observer is not None or any(m.input_observer is not None for _, m in linears):
            raise RuntimeError("linear_inputs is already active on this model; nesting is not supported")
        try:
            for weight_name, module in linears:
                module.input_observer = functools.partial(callback, weight_name)
            self._head_observer = functools.partial(callback, "tok_emb.weight")
            yield self
        finally:
            for _, module in linears:
                module.input_observer = None
            self._head_observer = None
