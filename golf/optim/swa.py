"""Stochastic weight averaging over the warmdown (techniques.md §3.9; R0320, "tight SWA" R0322/R0323).

After an optimizer step, when `step` completed steps is a multiple of `every` and the LR scale that step
used is below `start_lr_scale`, the weights are added to an fp32 running sum (on the CPU by default, as in
the records). `apply(model)` replaces the weights with the uniform average of the collected snapshots.

R0320 collects every 50 steps while the scale < 0.5 (R0320-int5: 0.4), R0322/R0323 every 50 while it is
< 0.2. ⚠ R0322 and R0323 collect the sum but never apply it; only their EMA reaches evaluation (§3.9, §8
item 7). golf applies it: turning SWA on (OptimConfig.swa_every > 0) means the average is what gets
quantized and evaluated. Preset pr549 therefore leaves SWA off and reproduces the record's EMA-only weights.

With EMA also on, SWA wins: the trainer loads the SWA average (of the raw weights) and skips the EMA copy;
the records never apply both.

Like EMA, the buffer is keyed by the model's own state-dict names, so `state_dict()` checkpoints it and
non-float entries (integer buffers) keep their latest value instead of being averaged.
"""

from __future__ import annotations

import torch
from torch import nn


class SWA:
    def __init__(self, every: int, start_lr_scale: float, device: str | torch.device = "cpu"):
        if every <= 0:
            raise ValueError(f"SWA: every={every} must be positive (optim.swa_every; 0 means no SWA object at all)")
        if not 0 < start_lr_scale <= 1:
            raise ValueError(f"SWA: start_lr_scale={start_lr_scale} must be in (0, 1] (optim.swa_start_lr_scale)")
        self.every = int(every)
        self.start_lr_scale = float(start_lr_scale)
        self.device = torch.device(device)
        self.count = 0
        self.total: dict[str, torch.Tensor] = {}

    def should_collect(self, step: int, lr_scale: float) -> bool:
        """step: optimizer steps completed (>= 1); lr_scale: the scale the last step used."""
        return step > 0 and step % self.every == 0 and lr_scale < self.start_lr_scale

    @torch.no_grad()
    def maybe_update(self, model: nn.Module, step: int, lr_scale: float) -> bool:
        """Add the model's weights to the sum when `should_collect`; returns whether it did."""
        if not self.should_collect(step, lr_scale):
            return False
        sd = model.state_dict()
        if not self.total:
            self.total = {k: torch.zeros(v.shape, dtype=torch.float32 if v.is_floating_point() else v.dtype,
                                         device=self.device) for k, v in sd.items()}
        self._check_keys(sd.keys(), "the model")
        for k, v in sd.items():
            if v.is_floating_point():
                self.total[k].add_(v.detach().to(self.device, torch.float32))
            else:
                self.total[k].copy_(v.detach())
        self.count += 1
        return True

    @torch.no_grad()
    def average(self) -> dict[str, torch.Tensor]:
        """The uniform average under the model's keys (fp32; non-float entries as last seen)."""
        if self.count == 0:
            raise ValueError(
                f"SWA collected no snapshot: the LR scale never fell below optim.swa_start_lr_scale="
                f"{self.start_lr_scale} at a multiple of optim.swa_every={self.every} steps; raise the threshold, "
                "lower swa_every or lengthen the warmdown"
            )
        return {k: v / self.count if v.is_floating_point() else v.clone() for k, v in self.total.items()}

    @torch.no_grad()
    def apply(self, model: nn.Module) -> int:
        """Overwrite the model's weights with the average (cast to each tensor's dtype and device); returns the
        number of snapshots averaged."""
        avg = self.average()
        sd = model.state_dict()
        self._check_keys(sd.keys(), "the model")
        for k, v in avg.items():
            sd[k].copy_(v)
        return self.count

    def state_dict(self) -> dict:
        return {"count": self.count, "total": dict(self.total)}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"count", "total"} or state["count"] < 0:
            raise ValueError("SWA.load_state_dict: expected {'count', 'total'} as written by SWA.state_dict()")
        self.count = int(state["count"])
        self.total = {k: v.to(self.device) for k, v in state["total"].items()}

    def _check_keys(self, keys, what: str) -> None:
        if set(keys) != set(self.total):
            raise ValueError(
                f"SWA: {what}'s state dict differs from the collected one (missing {sorted(set(self.total) - set(keys))}, "
                f"unexpected {sorted(set(keys) - set(self.total))}); use the same (unwrapped) model throughout"
            )
