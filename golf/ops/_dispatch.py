"""Bookkeeping shared by every golf.ops dispatcher: the kernels switch, which implementation each op
used, and fallback warnings that are issued once per op.

Dispatchers run inside torch.compile(fullgraph=True) graphs, where dynamo replays their bookkeeping after
the graph. It is kept in attributes of one record per op, not in dict entries: dynamo guards a dict it
writes on the dict's contents, so a graph compiled before another graph recorded a new op failed its guard
and recompiled (seen on the H200: with late QAT, the first timed step after compile priming spent 7-10 s
recompiling the QAT-off graph). An attribute write is replayed without a guard on the old value.
`warnings.warn` would break the graph: there a fallback's message waits until `flush_warnings()` (called by
the trainer after each step).
"""

from __future__ import annotations

import warnings

import torch

_STATE = {"kernels": True}
OPS = ("attention", "fake_quant", "gptq_block_update", "leaky_relu2_mlp", "leaky_relu2_mlp_hidden", "newton_schulz")


class _OpRecord:
    """What one op last ran with, and its fallback warning (issued once)."""

    def __init__(self) -> None:
        self.impl: str | None = None
        self.warned = False
        self.pending: str | None = None


_RECORDS = {op: _OpRecord() for op in OPS}


def set_kernels_enabled(enabled: bool) -> None:
    """False forces every op to its pure-torch reference (config `train.kernels=false`)."""
    _STATE["kernels"] = bool(enabled)


def kernels_enabled() -> bool:
    return _STATE["kernels"]


def note_impl(op: str, impl: str) -> None:
    """Record that `op` (one of OPS) ran with implementation `impl` (e.g. "triton", "reference", "cuda")."""
    _RECORDS[op].impl = impl


def fallback(op: str, reason: str) -> None:
    """Record a fallback to the reference and warn once per op."""
    record = _RECORDS[op]
    record.impl = f"reference ({reason})"
    if record.warned:
        return
    record.warned = True
    msg = f"golf.ops.{op}: falling back to the pure-torch reference: {reason}"
    if torch.compiler.is_compiling():
        record.pending = msg
    else:
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def flush_warnings() -> None:
    for record in _RECORDS.values():
        if record.pending is not None:
            msg, record.pending = record.pending, None
            warnings.warn(msg, RuntimeWarning, stacklevel=2)


@torch.compiler.assume_constant_result
def _cuda_capability_major(index: int) -> int:
    # Folded to a constant under torch.compile, so the check costs nothing per call and breaks no graph.
    return torch.cuda.get_device_capability(index)[0]


def kernel_can_run(op: str, device: torch.device, kernels, import_error: str, *, cpu_kernels: bool,
                   min_capability: int = 0, capability_reason: str = "") -> bool:
    """The checks every Triton-backed op makes first, in order: kernels switched off; the CPU (the reference
    by design, unless `cpu_kernels`: the kernel tests run them there under the interpreter); triton missing
    (`kernels` is None, `import_error` says why); CUDA under the interpreter; another device; a GPU below
    compute capability `min_capability`. At the first that fails the reference is recorded (with one
    warning for a real fallback) and False returned; True: the op makes its own checks, then `kernel_runs`."""
    if not kernels_enabled():
        note_impl(op, "reference (kernels disabled)")
        return False
    if device.type == "cpu" and not cpu_kernels:
        note_impl(op, "reference (cpu)")
        return False
    if kernels is None:
        fallback(op, import_error)
        return False
    if device.type == "cuda" and kernels.INTERPRETED:
        fallback(op, "TRITON_INTERPRET=1 runs kernels on the CPU only; unset it to use the GPU kernels")
        return False
    if device.type not in ("cpu", "cuda"):
        fallback(op, f"no kernel for device {device.type}")
        return False
    if device.type == "cuda" and _cuda_capability_major(device.index or 0) < min_capability:
        fallback(op, capability_reason)
        return False
    return True


def kernel_runs(op: str, kernels) -> bool:
    """Record that `op` runs its Triton kernel (through the interpreter on the CPU); returns True."""
    note_impl(op, "triton (interpreter)" if kernels.INTERPRETED else "triton")
    return True


def implementations() -> dict[str, str]:
    """Which implementation each op used since the last reset, e.g. {'leaky_relu2_mlp': 'triton'}."""
    return {op: r.impl for op, r in _RECORDS.items() if r.impl is not None}


def reset() -> None:
    for record in _RECORDS.values():
        record.impl, record.warned, record.pending = None, False, None
