"""The LeakyReLU(slope)^2 MLP: y = leaky_relu(x @ w_up^T, slope)^2 @ w_down^T (techniques.md §2.5).

x: [..., D]; w_up: [F, D]; w_down: [D, F]; slope 0.0 gives the baseline's relu^2.
d/du leaky_relu(u, s)^2 = 2u for u > 0 and 2 s^2 u for u <= 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from golf.ops._dispatch import note_impl


def leaky_relu2_ref(h: torch.Tensor, slope: float = 0.5) -> torch.Tensor:
    """The activation alone: leaky_relu(h, slope)^2."""
    return F.leaky_relu(h, slope).square()


def leaky_relu2_mlp_hidden_ref(x: torch.Tensor, w_up: torch.Tensor, slope: float = 0.5) -> torch.Tensor:
    """The down projection's input leaky_relu(x @ w_up^T)^2 [..., F] (GPTQ calibration needs it)."""
    return leaky_relu2_ref(F.linear(x, w_up), slope)


def leaky_relu2_mlp_ref(x: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor, slope: float = 0.5) -> torch.Tensor:
    """Pure-torch reference of the fused MLP; the spec every implementation is tested against."""
    return F.linear(leaky_relu2_mlp_hidden_ref(x, w_up, slope), w_down)


def leaky_relu2_mlp(x: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor, slope: float = 0.5) -> torch.Tensor:
    """Dispatcher with the reference's signature (the Triton kernel plugs in here)."""
    note_impl("leaky_relu2_mlp", "reference")
    return leaky_relu2_mlp_ref(x, w_up, w_down, slope)


def leaky_relu2_mlp_hidden(x: torch.Tensor, w_up: torch.Tensor, slope: float = 0.5) -> torch.Tensor:
    note_impl("leaky_relu2_mlp_hidden", "reference")
    return leaky_relu2_mlp_hidden_ref(x, w_up, slope)
