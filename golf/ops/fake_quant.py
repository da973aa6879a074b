"""Per-row int-k fake quantization with a straight-through backward (techniques.md §4.4, performance.md §A.7).

Forward: golf.quant.scheme.fake_quant_ref (the exporter's own grid, fp16 scales, round half to even, clamp
+-qmax), so a weight fake-quantized in training equals its exported round-to-nearest dequantization.
Backward (the straight-through estimator), chosen by `ste`:
    "identity"  dL/dw = dL/dout
    "clipped"   dL/dw = dL/dout where |w / s_r| <= qmax, 0 where the forward clamp cut w (outside the clip range)

w: [R, C] or a bank [B, R, C], any float dtype; scales are per row of each matrix.
`fake_quant` runs the Triton kernel of golf.kernels.fake_quant (CUDA, or the CPU interpreter under
TRITON_INTERPRET=1) through the torch.library op golf::fake_quant, so it works inside
torch.compile(fullgraph=True) graphs; elsewhere it runs `fake_quant_ref`.
"""

from __future__ import annotations

import torch

from golf.ops._dispatch import fallback, kernel_can_run, kernel_runs
from golf.quant import scheme

try:
    from golf.kernels import fake_quant as _kernels

    _KERNEL_IMPORT_ERROR = ""
except ImportError as exc:  # triton is optional: the op keeps its reference
    _kernels = None
    _KERNEL_IMPORT_ERROR = f"triton is not importable ({exc})"

OP = "fake_quant"
STE_MODES = ("identity", "clipped")


def _check_args(w: torch.Tensor, bits: int, clip: str, k: float | None, ste: str) -> None:
    if w.dim() not in (2, 3) or not w.is_floating_point():
        raise ValueError(
            f"fake_quant: w must be a float [rows, cols] weight or [banks, rows, cols] bank, "
            f"got {w.dtype} {list(w.shape)}"
        )
    scheme.qmax(bits)
    scheme.check_clip(clip, k)
    if ste not in STE_MODES:
        raise ValueError(f"fake_quant: ste={ste!r} is not one of {STE_MODES}")


def _clip_mask(w: torch.Tensor, scales: torch.Tensor, bits: int) -> torch.Tensor:
    """True where the forward did not clamp: |w / s| <= qmax (the same fp32 division as scheme.quantize)."""
    return (w.float() / scales.float().unsqueeze(-1)).abs() <= scheme.qmax(bits)


def fake_quant_ref(
    w: torch.Tensor, *, bits: int = 6, clip: str = "absmax", k: float | None = None, ste: str = "identity"
) -> torch.Tensor:
    """scheme.fake_quant_ref in the forward, the straight-through estimator in the backward (pure torch)."""
    _check_args(w, bits, clip, k, ste)
    wd = w.detach()  # the quantizer itself is not differentiated: all gradient goes through the STE term
    scales = scheme.row_scales(wd, bits=bits, clip=clip, k=k)
    wq = scheme.dequantize(scheme.quantize(wd, scales, bits=bits), scales, w.dtype)
    # (w - w.detach()) is exactly 0 in the forward and the identity in the backward; wq + 0 == wq bit for bit.
    through = w - wd
    if ste == "clipped":
        through = through * _clip_mask(wd, scales, bits).to(w.dtype)
    return wq + through


# ---------------------------------------------------------------------------------------------------------
# torch.library op around the kernel. Its input is 2-D or 3-D with unit last stride (the dispatcher sees to it).


@torch.library.custom_op("golf::fake_quant", mutates_args=())
def _fake_quant_op(w: torch.Tensor, bits: int, clip: str, k: float, ste: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (out like w, scales fp16 [..., rows]); scales are returned so backward can rebuild the clip mask."""
    q = scheme.qmax(bits)
    floor = max(1.0 / q, scheme.MIN_SCALE) if clip == "absmax_floor" else scheme.MIN_SCALE
    return _kernels.fake_quant_fwd(w, q, clip, k, floor)


@_fake_quant_op.register_fake
def _(w, bits, clip, k, ste):
    return w.new_empty(w.shape), w.new_empty(w.shape[:-1], dtype=scheme.SCALE_DTYPE)  # contiguous, as the kernel's


def _setup_context(ctx, inputs, output):
    w, bits, _, _, ste = inputs
    _, scales = output
    ctx.mark_non_differentiable(scales)
    ctx.set_materialize_grads(False)
    ctx.bits, ctx.ste = bits, ste
    if ste == "clipped":
        ctx.save_for_backward(w, scales)


def _backward(ctx, grad_out, _grad_scales):
    if grad_out is None:
        return None, None, None, None, None
    if ctx.ste == "clipped":
        w, scales = ctx.saved_tensors
        grad_out = grad_out * _clip_mask(w, scales, ctx.bits).to(grad_out.dtype)
    return grad_out, None, None, None, None


_fake_quant_op.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------------------
# Dispatch.


def _use_kernel(w: torch.Tensor, clip: str) -> bool:
    """Whether the Triton kernel runs; records the implementation either way (and warns on a real fallback)."""
    if not kernel_can_run(OP, w.device, _kernels, _KERNEL_IMPORT_ERROR,
                          cpu_kernels=_kernels is not None and _kernels.INTERPRETED):
        return False
    if clip not in _kernels.CLIP_CODES:
        fallback(OP, f"clip rule {clip!r} has no kernel (rules: {tuple(_kernels.CLIP_CODES)})")
        return False
    if w.shape[-1] > _kernels.MAX_COLS:
        fallback(OP, f"rows of {w.shape[-1]} columns exceed the kernel's {_kernels.MAX_COLS}")
        return False
    if w.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        fallback(OP, f"dtype {w.dtype} is not fp32, bf16 or fp16")
        return False
    return kernel_runs(OP, _kernels)


def fake_quant(
    w: torch.Tensor, *, bits: int = 6, clip: str = "absmax", k: float | None = None, ste: str = "identity"
) -> torch.Tensor:
    """Quantize-dequantize w [R, C] or [B, R, C] per row on scheme's int-`bits` grid; STE backward (`ste`).

    bits/clip/k are gptq_quantize's scheme arguments (clip "absmax" | "absmax_floor" | "sdclip" | "percentile";
    k is the SDClip factor or the row quantile; "percentile" has no kernel and runs the reference). Returns a
    tensor of w's shape and dtype, equal to scheme.fake_quant_ref(w) (bit for bit except, for "sdclip" on the
    kernel path, a row whose fp32 std sits on an fp16 rounding boundary).
    """
    _check_args(w, bits, clip, k, ste)
    if not _use_kernel(w, clip):
        return fake_quant_ref(w, bits=bits, clip=clip, k=k, ste=ste)
    if w.stride(-1) != 1 or (w.dim() == 3 and not w.is_contiguous()):
        w = w.contiguous()
    out, _ = torch.ops.golf.fake_quant(w, int(bits), clip, float(k) if k is not None else 0.0, ste)
    return out
