"""Newton–Schulz orthogonalization of Muon updates (techniques.md §3.2, §3.5).

G: [rows, cols] or a bank [batch, rows, cols]. Each matrix is normalized by its own Frobenius norm,
X = G / (||G||_F + eps), tall matrices are processed as their transpose, and each iteration computes
    A = X X^T;  B = b A + c A A;  X = a X + B X
in `dtype` (bf16, as every record) with the coefficient tuple (a, b, c) of that iteration. Returns G's shape
in `dtype`.

Coefficient sets: "ns5" repeats (3.4445, -4.7750, 2.0315); "polar_express" uses its own tuple per iteration
(at most 5). Normalization choice for Polar Express: these tuples are modded-nanogpt's set computed with a 2%
safety factor, and modded-nanogpt divides by ||X||_F * 1.02 + 1e-6; golf keeps the parameter-golf port's
plain ||X||_F + eps for both sets (performance.md §A.5), so switching the set changes nothing else. The
Frobenius norm bounds the spectral norm, so every singular value starts in (0, 1] either way.

`newton_schulz` dispatches to the batched Triton kernels of golf.kernels.newton_schulz on CUDA (bf16; the whole
launch sequence replayed as a CUDA graph for input buffers seen before), and runs `newton_schulz_ref` on a plain
CPU. Under TRITON_INTERPRET=1 the kernels run on the CPU only inside `interpreter_kernels()`: Muon calls NS for
every bank on every step, and the interpreter takes tens of seconds per 64x64 bank, which would make every CPU
training test minutes long; the kernel tests opt in explicitly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from golf.ops._dispatch import fallback, kernel_can_run, kernel_runs

try:
    from golf.kernels import newton_schulz as _kernels

    _KERNEL_IMPORT_ERROR = ""
except ImportError as exc:  # triton is optional: the op keeps its reference
    _kernels = None
    _KERNEL_IMPORT_ERROR = f"triton is not importable ({exc})"

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

_SETTINGS = {"cuda_graphs": True, "interpreter": False}


def coefficient_schedule(coefficients: str, steps: int) -> list[tuple[float, float, float]]:
    """The (a, b, c) tuple of each of `steps` iterations."""
    if coefficients == "ns5":
        return [NS5] * steps
    if coefficients == "polar_express":
        if steps > len(POLAR_EXPRESS):
            raise ValueError(f"polar_express defines {len(POLAR_EXPRESS)} iterations; got steps={steps}")
        return list(POLAR_EXPRESS[:steps])
    raise ValueError(f"coefficients={coefficients!r}: use one of {COEFFICIENT_SETS}")


def _check_input(G: torch.Tensor, steps: int) -> None:
    if G.ndim not in (2, 3):
        raise ValueError(f"newton_schulz expects a matrix or a bank [batch, rows, cols], got shape {tuple(G.shape)}")
    if not G.is_floating_point():
        raise ValueError(f"newton_schulz: G has dtype {G.dtype}; pass a floating-point tensor")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"newton_schulz: steps={steps!r} must be an integer >= 0")


def newton_schulz_ref(
    G: torch.Tensor,
    *,
    steps: int = 5,
    coefficients: str = "ns5",
    eps: float = 1e-7,
    dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """The spec: every implementation is tested against this (in bf16, and in fp64 as the accuracy yardstick)."""
    _check_input(G, steps)
    schedule = coefficient_schedule(coefficients, steps)
    X = G.to(dtype)
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + eps)
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.mT
    for a, b, c in schedule:
        A = X @ X.mT
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    return X.mT if tall else X


def set_cuda_graphs(enabled: bool) -> None:
    """False launches the NS kernels one by one instead of replaying captured CUDA graphs (for debugging and A/B)."""
    _SETTINGS["cuda_graphs"] = bool(enabled)


@contextlib.contextmanager
def interpreter_kernels():
    """Run the Triton kernels under TRITON_INTERPRET=1 on CPU tensors inside this block (tests only)."""
    prev = _SETTINGS["interpreter"]
    _SETTINGS["interpreter"] = True
    try:
        yield
    finally:
        _SETTINGS["interpreter"] = prev


def _use_kernel(G: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether the Triton kernels run; records the implementation either way (and warns on a real fallback)."""
    op = "newton_schulz"
    cpu_kernels = _kernels is not None and _kernels.INTERPRETED and _SETTINGS["interpreter"]
    if not kernel_can_run(op, G.device, _kernels, _KERNEL_IMPORT_ERROR, cpu_kernels=cpu_kernels, min_capability=8,
                          capability_reason="the kernels need bf16 tensor cores (compute capability 8.0+)"):
        return False
    if torch.compiler.is_compiling():
        fallback(op, "called inside torch.compile; the kernels launch eagerly, call newton_schulz outside the graph")
        return False
    allowed = (torch.bfloat16, torch.float32) if G.device.type == "cpu" else (torch.bfloat16,)
    if dtype not in allowed:
        fallback(op, f"dtype {dtype} is not one of {allowed}")
        return False
    return kernel_runs(op, _kernels)


def newton_schulz(
    G: torch.Tensor,
    *,
    steps: int = 5,
    coefficients: str = "ns5",
    eps: float = 1e-7,
    dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """Orthogonalize each matrix of G ([rows, cols] or [batch, rows, cols], any float dtype and strides).

    Same signature and result as `newton_schulz_ref` (to the kernels' bf16 rounding); returns G's shape in `dtype`.
    An optimizer op: the kernel path records no autograd graph.
    """
    _check_input(G, steps)
    schedule = coefficient_schedule(coefficients, steps)
    if not _use_kernel(G, dtype):
        return newton_schulz_ref(G, steps=steps, coefficients=coefficients, eps=eps, dtype=dtype)
    bank = G if G.ndim == 3 else G.unsqueeze(0)  # [batch, rows, cols]
    out = _kernels.newton_schulz_triton(bank, schedule, eps=eps, dtype=dtype, cuda_graph=_SETTINGS["cuda_graphs"])
    return out if G.ndim == 3 else out.squeeze(0)


def newton_schulz_banks_ref(
    Gs: Sequence[torch.Tensor],
    *,
    steps: int = 5,
    coefficients: str = "ns5",
    eps: float = 1e-7,
    dtype: torch.dtype = torch.bfloat16,
) -> list[torch.Tensor]:
    """`newton_schulz_ref` of each bank (or matrix) in Gs, in order."""
    return [newton_schulz_ref(G, steps=steps, coefficients=coefficients, eps=eps, dtype=dtype) for G in Gs]


def newton_schulz_banks(
    Gs: Sequence[torch.Tensor],
    *,
    steps: int = 5,
    coefficients: str = "ns5",
    eps: float = 1e-7,
    dtype: torch.dtype = torch.bfloat16,
) -> list[torch.Tensor]:
    """`newton_schulz` of several banks of any shapes at once: what Muon's step calls with all its banks.

    On the kernel path the banks replay as one CUDA graph with one stream per bank, so their kernels run at
    the same time (each bank alone leaves most of an H200 idle); results equal `newton_schulz` of each bank.
    """
    Gs = list(Gs)
    for G in Gs:
        _check_input(G, steps)
    if len(Gs) < 2 or len({G.device for G in Gs}) > 1:
        return [newton_schulz(G, steps=steps, coefficients=coefficients, eps=eps, dtype=dtype) for G in Gs]
    schedule = coefficient_schedule(coefficients, steps)
    if not _use_kernel(Gs[0], dtype):
        return newton_schulz_banks_ref(Gs, steps=steps, coefficients=coefficients, eps=eps, dtype=dtype)
    banks = [G if G.ndim == 3 else G.unsqueeze(0) for G in Gs]  # [batch, rows, cols] each
    outs = _kernels.newton_schulz_triton_banks(banks, schedule, eps=eps, dtype=dtype,
                                               cuda_graph=_SETTINGS["cuda_graphs"])
    return [out if G.ndim == 3 else out.squeeze(0) for G, out in zip(Gs, outs)]
