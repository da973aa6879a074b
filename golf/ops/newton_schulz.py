"""Newton–Schulz orthogonalization of Muon updates (techniques.md §3.2, §3.5).

G: [rows, cols] or a bank [batch, rows, cols]. Each matrix is normalized by its own Frobenius norm,
tall matrices are processed as their transpose, and each iteration computes
    A = X X^T;  B = b A + c A A;  X = a X + B X
in bf16 with the coefficient tuple (a, b, c) of that iteration. Returns bf16 of G's shape.
"""

from __future__ import annotations

import torch

from golf.ops._dispatch import note_impl

NS5 = (3.4445, -4.7750, 2.0315)
# Polar Express (PR #1344 via #1787): one tuple per iteration; at most 5 iterations.
POLAR_EXPRESS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
COEFFICIENT_SETS = ("ns5", "polar_express")


def coefficient_schedule(coefficients: str, steps: int) -> list[tuple[float, float, float]]:
    """The (a, b, c) tuple of each of `steps` iterations."""
    if coefficients == "ns5":
        return [NS5] * steps
    if coefficients == "polar_express":
        if steps > len(POLAR_EXPRESS):
            raise ValueError(f"polar_express defines {len(POLAR_EXPRESS)} iterations; got steps={steps}")
        return list(POLAR_EXPRESS[:steps])
    raise ValueError(f"coefficients={coefficients!r}: use one of {COEFFICIENT_SETS}")


def newton_schulz_ref(G: torch.Tensor, *, steps: int = 5, coefficients: str = "ns5", eps: float = 1e-7) -> torch.Tensor:
    if G.ndim not in (2, 3):
        raise ValueError(f"newton_schulz expects a matrix or a bank [batch, rows, cols], got shape {tuple(G.shape)}")
    schedule = coefficient_schedule(coefficients, steps)
    X = G.bfloat16()
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + eps)
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.mT
    for a, b, c in schedule:
        A = X @ X.mT
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    return X.mT if tall else X


def newton_schulz(G: torch.Tensor, *, steps: int = 5, coefficients: str = "ns5", eps: float = 1e-7) -> torch.Tensor:
    """Dispatcher with the reference's signature (the batched Triton kernels plug in here)."""
    note_impl("newton_schulz", "reference")
    return newton_schulz_ref(G, steps=steps, coefficients=coefficients, eps=eps)
