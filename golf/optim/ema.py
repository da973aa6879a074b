"""Exponential moving average of the weights (techniques.md §3.9, dtype policy §2.8).

An fp32 copy of the full state dict (parameters and buffers), initialised from the model, updated after every
optimizer step with

    ema ← d·ema + (1 − d)·θ

and no bias correction: the initial weights' share decays as d^step (0.997^5000 ≈ 3e-7). After training,
`copy_to(model)` loads the average; evaluation, quantization and TTT then use it. `state_dict()` is a plain
model state dict (the model's keys, fp32), so a checkpoint's EMA loads straight into a model. Non-float
entries of the state dict (integer buffers, if a model has any) cannot be averaged: the copy tracks their
latest value.
"""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        if not 0 <= decay < 1:
            raise ValueError(f"EMA: decay={decay} must be in [0, 1) (the records use 0.997 or 0.9965)")
        self.decay = float(decay)
        with torch.no_grad():
            self.shadow: dict[str, torch.Tensor] = {
                k: (v.detach().float() if v.is_floating_point() else v.detach()).clone()
                for k, v in model.state_dict().items()
            }

    def _matched(self, model: nn.Module) -> dict[str, torch.Tensor]:
        sd = model.state_dict()
        if sd.keys() != self.shadow.keys():
            missing = sorted(self.shadow.keys() - sd.keys())
            extra = sorted(sd.keys() - self.shadow.keys())
            raise ValueError(
                f"EMA: the model's state dict differs from the one the EMA was built from (missing {missing}, "
                f"unexpected {extra}); build the EMA from the same (unwrapped) model"
            )
        return sd

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        sd = self._matched(model)
        keys = [k for k, v in self.shadow.items() if v.is_floating_point()]
        ema = [self.shadow[k] for k in keys]
        # .float() is a no-op for fp32 tensors and a temporary copy for bf16 ones (e.g. the embedding).
        theta = [sd[k].float() for k in keys]
        torch._foreach_mul_(ema, self.decay)
        torch._foreach_add_(ema, theta, alpha=1.0 - self.decay)
        for k, v in self.shadow.items():
            if not v.is_floating_point():
                v.copy_(sd[k])

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's parameters and buffers with the average (cast to each tensor's dtype)."""
        sd = self._matched(model)
        for k, v in self.shadow.items():
            sd[k].copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights under the model's own keys (fp32): loadable into the model as they are."""
        return dict(self.shadow)

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state.keys() != self.shadow.keys():
            raise ValueError(
                f"EMA.load_state_dict: keys differ (missing {sorted(self.shadow.keys() - state.keys())}, "
                f"unexpected {sorted(state.keys() - self.shadow.keys())}); the checkpoint is from another model"
            )
        for k, v in state.items():
            if v.shape != self.shadow[k].shape:
                raise ValueError(
                    f"EMA.load_state_dict: {k} has shape {tuple(v.shape)}, expected {tuple(self.shadow[k].shape)}"
                )
        for k, v in state.items():
            self.shadow[k].copy_(v)
