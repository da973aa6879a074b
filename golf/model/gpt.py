"""The records' core GPT (techniques.md §2.1–§2.8, §2.14): blocks with resid_mix and per-channel scales,
U-Net skips, tied embedding head with a logit softcap.

Shape letters: B batch, T sequence, D model_dim, V vocab_size, F mlp_hidden.

Every forward path (training, eval, sliding window, calibration, TTT) goes through `embed` -> `hidden` ->
`head`, so a feature added to one of them is seen by all. State-dict names are the records' reference
layout (`tok_emb.weight`, `blocks.{i}.attn.c_q.weight`, ..., `skip_weights`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from golf.config import ModelConfig
from golf.model.attention import CausalSelfAttention, resolve_backend
from golf.model.layers import CastedLinear, rms_norm
from golf.model.mlp import MLP

REDUCTIONS = ("mean", "sum", "none")
INIT_SCHEMES = ("ortho", "default")


class Block(nn.Module):
    """Sequential residual block (§2.2):

    x_in = resid_mix[0]*x + resid_mix[1]*x0
    h    = x_in + attn_scale * Attn(rms_norm(x_in))
    out  = h    + mlp_scale  * MLP(rms_norm(h))
    """

    def __init__(self, cfg: ModelConfig, backend: str):
        super().__init__()
        d = cfg.model_dim
        self.attn = CausalSelfAttention(cfg, backend)
        self.mlp = MLP(cfg)
        self.attn_scale = nn.Parameter(torch.ones(d, dtype=torch.float32))
        self.mlp_scale = nn.Parameter(torch.ones(d, dtype=torch.float32))
        # Row 0 weights the running stream, row 1 the embedding stream x0; [1, 0] starts as plain residual.
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(d), torch.zeros(d))).float())

    def forward(self, x: Tensor, x0: Tensor) -> Tensor:
        """x, x0: [B, T, D] -> [B, T, D]. Control vectors are cast to the stream's dtype (fp32 under autocast)."""
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(rms_norm(x))
        return x + self.mlp_scale.to(x.dtype) * self.mlp(rms_norm(x))


class GPT(nn.Module):
    """Decoder-only GPT built from a ModelConfig.

    `encoder_layers` / `decoder_layers` are lists of block indices: encoder outputs are pushed on a stack,
    and decoder layer j < num_skips first merges `x + skip_weights[j] * stack.pop()` (LIFO). Depth
    recurrence can later repeat indices in these lists without changing the forward.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = dataclasses.replace(cfg)  # a private copy: later edits to the caller's config do not leak in
        self.attention_backend: str = resolve_backend(cfg.attention)
        self.logit_softcap = float(cfg.logit_softcap)
        num_layers, d = cfg.num_layers, cfg.model_dim

        self.tok_emb = nn.Embedding(cfg.vocab_size, d)
        num_encoder = num_layers // 2 if cfg.unet_skips else 0
        self.encoder_layers: list[int] = list(range(num_encoder))
        self.decoder_layers: list[int] = list(range(num_encoder, num_layers))
        self.num_skips = min(len(self.encoder_layers), len(self.decoder_layers))
        self.skip_weights = nn.Parameter(torch.ones(self.num_skips, d, dtype=torch.float32)) if self.num_skips else None
        self.blocks = nn.ModuleList(Block(cfg, self.attention_backend) for _ in range(num_layers))
        self._head_observer: Callable[[Tensor], None] | None = None
        # ModelConfig.init ("ortho" | "default") selects the records' OrthoInit or the baseline's torch
        # default; configs without the field get OrthoInit, the init of every record from R0320 on.
        self._init_weights(cfg.init)

    @torch.no_grad()
    def _init_weights(self, scheme: str) -> None:
        """§2.14: tok_emb ~ N(0, std^2); attn.proj and mlp.proj zero; other matrices with both dims >= 64
        orthogonal (gain 1) under "ortho", torch's nn.Linear default (kaiming-uniform, the baseline's) under
        "default". Matrices smaller than 64 keep the torch default in both, as in the records."""
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

    def embed(self, input_ids: Tensor) -> Tensor:
        """input_ids [B, T] -> x0 [B, T, D]: token embedding, then parameter-free RMSNorm."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}; expected [batch, seq_len]")
        return rms_norm(self.tok_emb(input_ids))

    def hidden(self, input_ids: Tensor) -> Tensor:
        """input_ids [B, T] -> final-normed hidden states [B, T, D] (the tied head's input)."""
        x = x0 = self.embed(input_ids)
        skips: list[Tensor] = []
        for i in self.encoder_layers:
            x = self.blocks[i](x, x0)
            skips.append(x)
        for j, i in enumerate(self.decoder_layers):
            if j < self.num_skips:
                x = x + self.skip_weights[j].to(x.dtype) * skips.pop()
            x = self.blocks[i](x, x0)
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
        the normalized MLP input, mlp.proj the activation leaky_relu(fc(x))^2, tok_emb.weight the final-norm
        output. A block reached twice in one forward (depth recurrence) reports twice."""
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
