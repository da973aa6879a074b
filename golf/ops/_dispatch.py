"""Bookkeeping shared by every golf.ops dispatcher: the kernels switch, which implementation each op
used, and fallback warnings that are issued once per op.

Dispatchers run inside torch.compile(fullgraph=True) graphs, where `warnings.warn` would break the graph:
there a fallback reason is queued and `flush_warnings()` (called by the trainer after a step) issues it.
Mutating the module-level dicts is fine under dynamo: the side effect is replayed on every call.
"""

from __future__ import annotations

import warnings

import torch

_STATE = {"kernels": True}
_USED: dict[str, str] = {}
_WARNED: set[str] = set()
_PENDING: list[str] = []


def set_kernels_enabled(enabled: bool) -> None:
    """False forces every op to its pure-torch reference (config `train.kernels=false`)."""
    _STATE["kernels"] = bool(enabled)


def kernels_enabled() -> bool:
    return _STATE["kernels"]


def note_impl(op: str, impl: str) -> None:
    """Record that `op` ran with implementation `impl` (e.g. "triton", "reference", "cuda")."""
    _USED[op] = impl


def fallback(op: str, reason: str) -> None:
    """Record a fallback to the reference and warn once per op."""
    _USED[op] = f"reference ({reason})"
    if op in _WARNED:
        return
    _WARNED.add(op)
    msg = f"golf.ops.{op}: falling back to the pure-torch reference: {reason}"
    if torch.compiler.is_compiling():
        _PENDING.append(msg)
    else:
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def flush_warnings() -> None:
    while _PENDING:
        warnings.warn(_PENDING.pop(0), RuntimeWarning, stacklevel=2)


def implementations() -> dict[str, str]:
    """Which implementation each op used since the last reset, e.g. {'leaky_relu2_mlp': 'triton'}."""
    return dict(sorted(_USED.items()))


def reset() -> None:
    _USED.clear()
    _WARNED.clear()
    _PENDING.clear()
