"""The LeakyReLU(slope)^2 MLP: proj(leaky_relu(fc(x), slope)^2) (techniques.md §2.5).

The normal path calls the fused op golf.ops.leaky_relu2_mlp (a kernel on GPU, its reference elsewhere).
While an input observer is attached (GPTQ calibration, GPT.linear_inputs) the MLP runs unfused through
golf.ops.leaky_relu2_mlp_hidden and then `proj`, so the down projection's input is visible; both paths use
the same op family, so the observed forward matches the normal one up to fp reassociation.
"""

from __future__ import annotations

from torch import Tensor, nn

from golf.config import ModelConfig
from golf.model.layers import CastedLinear
from golf.ops import leaky_relu2_mlp, leaky_relu2_mlp_hidden


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.slope = float(cfg.leaky_slope)  # 0.0 is the baseline's relu^2
        self.fc = CastedLinear(cfg.model_dim, cfg.mlp_hidden)
        self.proj = CastedLinear(cfg.mlp_hidden, cfg.model_dim)
        self.proj._zero_init = True

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, T, D], already RMS-normalized by the block -> [B, T, D]."""
        # Weights are cast to the input dtype as in CastedLinear, so the fused op sees one dtype; with QAT on,
        # effective_weight() is the fake-quantized weight, so the fused path trains on the export grid too.
        w_up, w_down = self.fc.effective_weight().to(x.dtype), self.proj.effective_weight().to(x.dtype)
        if self.fc.input_observer is None and self.proj.input_observer is None:
            return leaky_relu2_mlp(x, w_up, w_down, self.slope)
        if self.fc.input_observer is not None:
            self.fc.input_observer(x)
        hidden = leaky_relu2_mlp_hidden(x, w_up, self.slope)  # [B, T, F]
        return self.proj(hidden)
