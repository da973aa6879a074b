"""The LeakyReLU(slope)^2 MLP: y = leaky_relu(x @ w_up^T, slope)^2 @ w_down^T (techniques.md §2.5).

x: [..., D]; w_up: [F, D]; w_down: [D, F]; slope 0.0 gives the baseline's relu^2.
d/du leaky_relu(u, s)^2 = 2u for u > 0 and 2 s^2 u for u <= 0.

`leaky_relu2_mlp` / `leaky_relu2_mlp_hidden` dispatch to the Triton kernels of golf.kernels.mlp (CUDA, sm_90+,
bf16; or the CPU interpreter under TRITON_INTERPRET=1) through torch.library custom ops, so they run inside
torch.compile(fullgraph=True) graphs; everywhere else they run the references below. On a Hopper GPU (sm_90)
the two fused GEMMs run golf.kernels.mlp_ws's warp-specialized Gluon kernels instead, bit-equal to the
Triton ones and faster (benchmarks/RESULTS.md).

Kernel path, forward:  h = golf::leaky_relu2_mlp's fused up GEMM + activation;  y = h @ w_down^T (cuBLAS).
Kernel path, backward: dW_down = dy^T h (cuBLAS); dpre = (dy @ w_down) * phi' fused (Gluon / Triton);
                       dW_up = dpre^T x, dx = dpre @ w_up (cuBLAS). Saved for backward: h [M, F] only.
The kernel's h carries the sign of u in its last significand bit (see golf.kernels.mlp), so h may differ from
the reference's by one bf16 ulp; `leaky_relu2_mlp_hidden` returns exactly the h the fused MLP feeds its down
projection, which is what GPTQ calibration must see.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from golf.ops._dispatch import fallback, kernel_can_run, kernel_runs, note_impl

try:
    from triton.errors import TritonError  # compile errors, ptxas failures, too little shared memory

    from golf.kernels import mlp as _kernels
    from golf.kernels import mlp_ws as _ws_kernels

    _KERNEL_IMPORT_ERROR = ""
except ImportError as exc:  # triton is optional: every op keeps its reference
    _kernels = _ws_kernels = None
    _KERNEL_IMPORT_ERROR = f"triton is not importable ({exc})"


def leaky_relu2_ref(h: torch.Tensor, slope: float = 0.5) -> torch.Tensor:
    """The activation alone: leaky_relu(h, slope)^2."""
    return F.leaky_relu(h, slope).square()


def leaky_relu2_mlp_hidden_ref(x: torch.Tensor, w_up: torch.Tensor, slope: float = 0.5) -> torch.Tensor:
    """The down projection's input leaky_relu(x @ w_up^T)^2 [..., F] (GPTQ calibration needs it)."""
    return leaky_relu2_ref(F.linear(x, w_up), slope)


def leaky_relu2_mlp_ref(x: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor, slope: float = 0.5) -> torch.Tensor:
    """Pure-torch reference of the fused MLP; the spec every implementation is tested against."""
    return F.linear(leaky_relu2_mlp_hidden_ref(x, w_up, slope), w_down)


# ---------------------------------------------------------------------------------------------------------
# torch.library ops around the kernels. Their inputs are 2-D and share one dtype (the dispatchers see to it).


def _tma_ready(t: torch.Tensor) -> torch.Tensor:
    """A copy only when TMA cannot read `t` in place (a non-contiguous or misaligned view: rare)."""
    if t.stride(-1) != 1 or (t.stride(0) * t.element_size()) % 16 or t.data_ptr() % 16:
        return t.contiguous() if not t.is_contiguous() else t.clone()
    return t


GLUON_IMPL = "triton (gluon, warp-specialized)"  # implementations()'s record where golf.kernels.mlp_ws ran


def _gluon_or_triton(op: str, gluon, triton_kernel, *args):
    """The warp-specialized Gluon kernel where it runs (sm_90, bf16), else the Triton one; the two are bit-equal
    (tests/kernels/test_mlp_ws.py), so the choice never changes a value, and implementations() says which ran
    (this runs inside the custom op, at every call, also under torch.compile). Gluon is Triton's experimental
    layer: if this triton cannot build the Gluon kernel, warn once and keep to the Triton kernels from then on."""
    if _ws_kernels.runs_on(args[0]):
        try:
            out = gluon(*args)
        except TritonError as exc:
            # A compile error's message ends with the cause (its first lines quote the source).
            reason = f"{type(exc).__name__}: ...{' '.join(str(exc).split())[-200:]}"
            _ws_kernels.disable(reason)
            warnings.warn(f"golf.ops.leaky_relu2_mlp: the warp-specialized Gluon kernel failed to build with this "
                          f"triton ({reason}); using the Triton kernels from now on (same values, slower)",
                          RuntimeWarning, stacklevel=3)
        else:
            note_impl(op, GLUON_IMPL)
            return out
    return triton_kernel(*args)


def _up_kernel(op: str, x: torch.Tensor, w_up: torch.Tensor, slope: float) -> torch.Tensor:
    """h from the fused up GEMM (Gluon or Triton, as _gluon_or_triton chooses) for `op`."""
    x, w_up = _tma_ready(x), _tma_ready(w_up)
    return _gluon_or_triton(op, _ws_kernels.leaky_relu2_mlp_fwd_ws, _kernels.leaky_relu2_mlp_fwd, x, w_up, slope)


def _dpre_kernel(dy: torch.Tensor, w_down: torch.Tensor, h: torch.Tensor, slope: float) -> torch.Tensor:
    """dpre from the fused backward GEMM (Gluon or Triton, as _gluon_or_triton chooses)."""
    dy, w_down, h = _tma_ready(dy), _tma_ready(w_down), _tma_ready(h)
    return _gluon_or_triton("leaky_relu2_mlp", _ws_kernels.leaky_relu2_mlp_bwd_ws, _kernels.leaky_relu2_mlp_bwd,
                            dy, w_down, h, slope)


@torch.library.custom_op("golf::leaky_relu2_mlp", mutates_args=())
def _fused_mlp(
    x: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor, slope: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (y [M, D_out], h [M, F]); h is returned so that autograd can save it (it is not differentiable)."""
    h = _up_kernel("leaky_relu2_mlp", x, w_up, slope)
    return torch.mm(h, w_down.t()), h


@_fused_mlp.register_fake
def _(x, w_up, w_down, slope):
    return x.new_empty(x.shape[0], w_down.shape[0]), x.new_empty(x.shape[0], w_up.shape[0])


@torch.library.custom_op("golf::leaky_relu2_mlp_dpre", mutates_args=())
def _fused_dpre(dy: torch.Tensor, w_down: torch.Tensor, h: torch.Tensor, slope: float) -> torch.Tensor:
    """dpre [M, F] = (dy @ w_down) * phi'(u), phi' decoded from h."""
    return _dpre_kernel(dy, w_down, h, slope)


@_fused_dpre.register_fake
def _(dy, w_down, h, slope):
    return h.new_empty(h.shape)


def _fused_mlp_setup_context(ctx, inputs, output):
    x, w_up, w_down, slope = inputs
    _, h = output
    ctx.save_for_backward(x, w_up, w_down, h)
    ctx.slope = slope
    ctx.mark_non_differentiable(h)
    # Without this, autograd would hand backward an [M, F] tensor of zeros as h's gradient.
    ctx.set_materialize_grads(False)


def _fused_mlp_backward(ctx, dy, _dh):
    x, w_up, w_down, h = ctx.saved_tensors
    need_x, need_up, need_down = ctx.needs_input_grad[:3]
    if dy is None:
        return None, None, None, None
    dx = dw_up = dw_down = None
    if need_down:
        dw_down = torch.mm(dy.t(), h)  # [D, F]
    if need_x or need_up:
        dpre = torch.ops.golf.leaky_relu2_mlp_dpre(dy, w_down, h, ctx.slope)  # [M, F]
        if need_x:
            dx = torch.mm(dpre, w_up)  # [M, D]
        if need_up:
            dw_up = torch.mm(dpre.t(), x)  # [F, D]
    return dx, dw_up, dw_down, None


_fused_mlp.register_autograd(_fused_mlp_backward, setup_context=_fused_mlp_setup_context)


@torch.library.custom_op("golf::leaky_relu2_mlp_hidden", mutates_args=())
def _fused_hidden(x: torch.Tensor, w_up: torch.Tensor, slope: float) -> torch.Tensor:
    return _up_kernel("leaky_relu2_mlp_hidden", x, w_up, slope)


@_fused_hidden.register_fake
def _(x, w_up, slope):
    return x.new_empty(x.shape[0], w_up.shape[0])


# ---------------------------------------------------------------------------------------------------------
# Dispatch.


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the MLP computes in: autocast's where it is on for x's device, else x's own."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def _check_shapes(x: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor | None) -> None:
    if w_up.dim() != 2 or x.dim() < 1 or x.shape[-1] != w_up.shape[1]:
        raise ValueError(
            f"leaky_relu2_mlp: x {tuple(x.shape)} and w_up {tuple(w_up.shape)} do not match; "
            "w_up must be [F, D] with D = x.shape[-1]"
        )
    if w_down is not None and (w_down.dim() != 2 or w_down.shape[1] != w_up.shape[0]):
        raise ValueError(
            f"leaky_relu2_mlp: w_down {tuple(w_down.shape)} does not match w_up {tuple(w_up.shape)}; "
            "w_down must be [D_out, F]"
        )


def _use_kernel(op: str, x: torch.Tensor, dtype: torch.dtype, dims: tuple[int, ...]) -> bool:
    """Whether the Triton kernel runs; records the implementation either way (and warns on a real fallback)."""
    if not kernel_can_run(op, x.device, _kernels, _KERNEL_IMPORT_ERROR,
                          cpu_kernels=_kernels is not None and _kernels.INTERPRETED, min_capability=9,
                          capability_reason="the kernels use TMA and need compute capability 9.0+ (H100/H200)"):
        return False
    allowed = (torch.bfloat16, torch.float32) if x.device.type == "cpu" else (torch.bfloat16,)
    if dtype not in allowed:
        fallback(op, f"compute dtype {dtype} is not one of {allowed}; run under bf16 autocast or cast to bf16")
        return False
    if any(d % 8 for d in dims):
        fallback(op, f"dims {dims} must be multiples of 8 (16-byte TMA rows); pad the model/hidden sizes")
        return False
    return kernel_runs(op, _kernels)


def leaky_relu2_mlp(x: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor, slope: float = 0.5) -> torch.Tensor:
    """y = leaky_relu(x @ w_up^T, slope)^2 @ w_down^T, fused where the kernel can run.

    x: [..., D] (under autocast or in its own dtype); w_up: [F, D]; w_down: [D_out, F], any float dtype (cast to
    the compute dtype here, so gradients reach fp32 master weights through the cast); slope: a Python float.
    Returns [..., D_out] in the compute dtype.
    """
    _check_shapes(x, w_up, w_down)
    dtype = _compute_dtype(x)
    x, w_up, w_down = x.to(dtype), w_up.to(dtype), w_down.to(dtype)
    if not _use_kernel("leaky_relu2_mlp", x, dtype, (w_up.shape[1], w_up.shape[0], w_down.shape[0])):
        return leaky_relu2_mlp_ref(x, w_up, w_down, slope)
    x2d = x.reshape(-1, x.shape[-1])  # [M, D]
    y, _ = torch.ops.golf.leaky_relu2_mlp(x2d, w_up, w_down, float(slope))
    return y.reshape(*x.shape[:-1], w_down.shape[0])


def leaky_relu2_mlp_hidden(x: torch.Tensor, w_up: torch.Tensor, slope: float = 0.5) -> torch.Tensor:
    """The down projection's input leaky_relu(x @ w_up^T)^2 [..., F], exactly as leaky_relu2_mlp computes it.

    For GPTQ calibration (no gradient); with autograd on it runs the reference, which has a backward.
    """
    _check_shapes(x, w_up, None)
    dtype = _compute_dtype(x)
    x, w_up = x.to(dtype), w_up.to(dtype)
    if torch.is_grad_enabled() and (x.requires_grad or w_up.requires_grad):
        note_impl("leaky_relu2_mlp_hidden", "reference (autograd)")
        return leaky_relu2_mlp_hidden_ref(x, w_up, slope)
    if not _use_kernel("leaky_relu2_mlp_hidden", x, dtype, tuple(w_up.shape)):
        return leaky_relu2_mlp_hidden_ref(x, w_up, slope)
    h = torch.ops.golf.leaky_relu2_mlp_hidden(x.reshape(-1, x.shape[-1]), w_up, float(slope))  # [M, F]
    return h.reshape(*x.shape[:-1], w_up.shape[0])
