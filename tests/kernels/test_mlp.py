"""Fused LeakyReLU^2 MLP (golf.kernels.mlp through golf.ops.leaky_relu2_mlp) against its pure-torch reference.

CPU: the kernels under the Triton interpreter (TRITON_INTERPRET=1, set by conftest without a GPU) on small fp32
shapes with partial tiles in M, N and K, plus the dispatch rules and torch.compile(fullgraph=True).
GPU (marker cuda): bf16 at the record shapes and odd ones, forward and all three gradients.

Accuracy rule for matmul-bearing kernels (anchors-style.md §9.8): with ref_hi the reference in a higher
precision and ref_lo the reference in the kernel's precision,
    max|kernel - ref_hi| <= 2 * max|ref_lo - ref_hi| + floor,  floor = max|round(ref_hi to dtype) - ref_hi|.
"""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("triton")

import golf.ops  # noqa: E402
from golf.kernels import mlp as K  # noqa: E402
from golf.ops import _dispatch  # noqa: E402
from golf.ops.mlp import GLUON_IMPL, leaky_relu2_mlp_hidden_ref, leaky_relu2_mlp_ref  # noqa: E402

interpreted = pytest.mark.skipif(not K.INTERPRETED, reason="the CPU kernel tests need TRITON_INTERPRET=1")


def assert_within_2x(name, out, ref_hi, ref_lo, dtype):
    err = (out.double() - ref_hi.double()).abs().max().item()
    ref_err = (ref_lo.double() - ref_hi.double()).abs().max().item()
    floor = (ref_hi.to(dtype).double() - ref_hi.double()).abs().max().item()
    mean = (out.double() - ref_hi.double()).abs().mean().item()
    print(f"{name}: max err {err:.3e} (mean {mean:.3e}), reference's {ref_err:.3e}, floor {floor:.3e}")
    assert torch.isfinite(out).all(), f"{name}: non-finite values"
    assert err <= 2 * ref_err + floor, f"{name}: max err {err:.3e} > 2 x {ref_err:.3e} + {floor:.3e}"


def make_inputs(lead, D, F, dtype, device="cpu", seed=0):
    g = torch.Generator(device=device).manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, device=device) * scale).to(dtype)

    return rand(*lead, D), rand(F, D, scale=D**-0.5), rand(D, F, scale=F**-0.5), rand(*lead, D)

class MLP(torch.nn.Module):
    """The op inside a module with its own weights, as torch.compile sees it in the model."""

    def __init__(self, w_up, w_down):
        super().__init__()
        self.w_up = torch.nn.Parameter(w_up.clone())
        self.w_down = torch.nn.Parameter(w_down.clone())

    def forward(self, x):
        return golf.ops.leaky_relu2_mlp(x, self.w_up, self.w_down, 0.5)



def run_with_grads(fn, x, w_up, w_down, dy, slope, dtype=None):
    """fn's output and the gradients of x, w_up, w_down for the upstream gradient dy (all cast to dtype)."""
    leaves = [t.detach().to(dtype or t.dtype).requires_grad_() for t in (x, w_up, w_down)]
    y = fn(*leaves, slope)
    y.backward(dy.to(y.dtype))
    return [y.detach()] + [t.grad for t in leaves]


def check_against_reference(x, w_up, w_down, dy, slope, hi, lo, kernel_dtype):
    ref_hi = run_with_grads(leaky_relu2_mlp_ref, x, w_up, w_down, dy, slope, hi)
    ref_lo = run_with_grads(leaky_relu2_mlp_ref, x, w_up, w_down, dy, slope, lo)
    out = run_with_grads(golf.ops.leaky_relu2_mlp, x, w_up, w_down, dy, slope, kernel_dtype)
    assert golf.ops.implementations()["leaky_relu2_mlp"].startswith("triton")
    for name, o, rh, rl in zip(("y", "dx", "dw_up", "dw_down"), out, ref_hi, ref_lo):
        assert o.shape == rh.shape and o.dtype == kernel_dtype, (name, o.shape, o.dtype)
        assert_within_2x(name, o, rh, rl, kernel_dtype)


# ------------------------------------------------------------------------------------------------ CPU (interpreter)


@interpreted
@pytest.mark.parametrize("lead,D,F", [((2, 37), 40, 72), ((1,), 16, 24), ((5,), 48, 1000)])
@pytest.mark.parametrize("slope", [0.5, 0.0])
def test_interpreter_matches_reference(lead, D, F, slope):
    # D=40, F=72 leave partial tiles in K and N (32x32x16 tiles); M=74 a partial tile in M; one row; F=1000.
    x, w_up, w_down, dy = make_inputs(lead, D, F, torch.float32)
    check_against_reference(x, w_up, w_down, dy, slope, torch.float64, torch.float32, torch.float32)


@interpreted
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("slope", [0.5, 0.0])
def test_hidden_carries_sign_of_preactivation(dtype, slope):
    x, w_up, _, _ = make_inputs((53,), 32, 48, dtype)
    h = golf.ops.leaky_relu2_mlp_hidden(x, w_up, slope)
    assert golf.ops.implementations()["leaky_relu2_mlp_hidden"] == "triton (interpreter)"
    u = x.double() @ w_up.double().T
    exact = leaky_relu2_mlp_hidden_ref(x.double(), w_up.double(), slope)
    sign_bit = h.view(torch.int16 if dtype == torch.bfloat16 else torch.int32) & 1
    assert torch.equal(sign_bit == 1, u > 0)
    # Rounded to the nearest value with the right last bit: within one ulp (2^-7 / 2^-23 relative) of exact.
    ulp = 2.0**-7 if dtype == torch.bfloat16 else 2.0**-23
    tiny = torch.finfo(dtype).tiny  # slope 0 leaves the smallest subnormal where u <= 0
    assert ((h.double() - exact).abs() <= ulp * exact + tiny + 1e-6 * exact.max()).all()


@interpreted
def test_empty_batch():
    x, w_up, w_down, dy = make_inputs((0,), 16, 24, torch.float32)
    x.requires_grad_()
    y = golf.ops.leaky_relu2_mlp(x, w_up, w_down, 0.5)
    y.backward(dy)
    assert y.shape == (0, 16) and x.grad.shape == (0, 16)
    assert golf.ops.leaky_relu2_mlp_hidden(x.detach(), w_up, 0.5).shape == (0, 24)


@interpreted
def test_hidden_is_what_the_fused_forward_projects():
    x, w_up, w_down, _ = make_inputs((19,), 24, 40, torch.float32)
    h = golf.ops.leaky_relu2_mlp_hidden(x, w_up, 0.5)
    y = golf.ops.leaky_relu2_mlp(x, w_up, w_down, 0.5)
    torch.testing.assert_close(y, h @ w_down.T, rtol=0, atol=1e-5)


@interpreted
def test_decoded_activation_grad_matches_phi_prime():
    # Isolates the backward epilogue: dy @ w_down is the identity's columns, so dpre is phi'(u) itself.
    D = F = 32
    x, w_up, _, _ = make_inputs((40,), D, F, torch.float32, seed=3)
    for slope in (0.5, 0.0, -0.25):
        h = K.leaky_relu2_mlp_fwd(x, w_up, slope)
        phi = K.leaky_relu2_mlp_bwd(torch.ones(40, D), torch.eye(D, F), h, slope)  # dpost = 1
        u = x.double() @ w_up.double().T
        expect = torch.where(u > 0, 2 * u, 2 * slope * slope * u)
        torch.testing.assert_close(phi.double(), expect, rtol=1e-5, atol=1e-6)


@interpreted
@pytest.mark.parametrize("block_n,programs", [(64, 1), (32, 2)])
def test_launch_configs_agree(block_n, programs):
    # Another tile width, or more programs per SM, changes how tiles are walked, not the values (up to the
    # interpreter's fp32 dot rounding, which depends on the block shape).
    x, w_up, w_down, dy = make_inputs((45,), 40, 72, torch.float32, seed=5)
    h_ref = K.leaky_relu2_mlp_fwd(x, w_up, 0.5)
    g_ref = K.leaky_relu2_mlp_bwd(dy, w_down, h_ref, 0.5)
    cfg = dict(K._INTERPRETER_CONFIG, BLOCK_N=block_n, programs_per_sm=programs)
    torch.testing.assert_close(K.leaky_relu2_mlp_fwd(x, w_up, 0.5, config=cfg), h_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(K.leaky_relu2_mlp_bwd(dy, w_down, h_ref, 0.5, config=cfg), g_ref, rtol=1e-5, atol=1e-5)


@interpreted
@pytest.mark.parametrize("which", ["x_only", "weights_only"])
def test_partial_gradients(which):
    x, w_up, w_down, dy = make_inputs((33,), 16, 40, torch.float32)
    x.requires_grad_(which == "x_only")
    w_up.requires_grad_(which == "weights_only")
    w_down.requires_grad_(which == "weights_only")
    golf.ops.leaky_relu2_mlp(x, w_up, w_down, 0.5).backward(dy)
    xr, ur, dr = (t.detach().double().requires_grad_(t.requires_grad) for t in (x, w_up, w_down))
    leaky_relu2_mlp_ref(xr, ur, dr, 0.5).backward(dy.double())
    for t, r in ((x, xr), (w_up, ur), (w_down, dr)):
        assert (t.grad is None) == (r.grad is None)
        if t.grad is not None:
            torch.testing.assert_close(t.grad.double(), r.grad, rtol=1e-4, atol=1e-5)


@interpreted
def test_non_contiguous_input_and_gradient():
    x, w_up, w_down, dy = make_inputs((24,), 32, 40, torch.float32)
    x_t = x.T.contiguous().T.requires_grad_()  # same values, column-major storage
    y = golf.ops.leaky_relu2_mlp(x_t, w_up, w_down, 0.5)
    y.backward(dy.T.contiguous().T)
    xr = x.detach().double().requires_grad_()
    yr = leaky_relu2_mlp_ref(xr, w_up.double(), w_down.double(), 0.5)
    yr.backward(dy.double())
    torch.testing.assert_close(y.double(), yr, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x_t.grad.double(), xr.grad, rtol=1e-4, atol=1e-5)


@interpreted
def test_autocast_bf16_with_fp32_weights():
    x, w_up, w_down, dy = make_inputs((2, 20), 32, 48, torch.float32)
    outs = []
    for fn in (golf.ops.leaky_relu2_mlp, leaky_relu2_mlp_ref):
        leaves = [t.clone().requires_grad_() for t in (x, w_up, w_down)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = fn(*leaves, 0.5)
        y.backward(dy.to(y.dtype))
        assert y.dtype == torch.bfloat16 and all(t.grad.dtype == torch.float32 for t in leaves)
        outs.append([y] + [t.grad for t in leaves])
    ref_hi = run_with_grads(leaky_relu2_mlp_ref, x, w_up, w_down, dy, 0.5, torch.float64)
    for name, o, rl, rh in zip(("y", "dx", "dw_up", "dw_down"), outs[0], outs[1], ref_hi):
        assert_within_2x(name, o, rh, rl, torch.bfloat16)


@interpreted
def test_compile_fullgraph_cpu():
    x, w_up, w_down, dy = make_inputs((3, 11), 24, 40, torch.float32)

    results = []
    for compiled in (False, True):
        torch.compiler.reset()
        m = MLP(w_up, w_down)
        f = torch.compile(m, fullgraph=True, backend="aot_eager") if compiled else m
        xx = x.clone().requires_grad_()
        y = f(xx)
        y.backward(dy)
        results.append([y, xx.grad, m.w_up.grad, m.w_down.grad])
    assert golf.ops.implementations()["leaky_relu2_mlp"] == "triton (interpreter)"
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------ dispatch rules


def test_cpu_without_interpreter_uses_reference_silently(monkeypatch):
    monkeypatch.setattr(K, "INTERPRETED", False)
    _dispatch.reset()
    x, w_up, w_down, _ = make_inputs((7,), 16, 24, torch.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = golf.ops.leaky_relu2_mlp(x, w_up, w_down, 0.5)
        golf.ops.leaky_relu2_mlp_hidden(x, w_up, 0.5)
    assert not [w for w in caught if "golf.ops" in str(w.message)]
    assert golf.ops.implementations()["leaky_relu2_mlp"] == "reference (cpu)"
    assert golf.ops.implementations()["leaky_relu2_mlp_hidden"] == "reference (cpu)"
    torch.testing.assert_close(y, leaky_relu2_mlp_ref(x, w_up, w_down, 0.5), rtol=0, atol=0)


def test_kernels_disabled_uses_reference():
    x, w_up, w_down, _ = make_inputs((7,), 16, 24, torch.float32)
    golf.ops.set_kernels_enabled(False)
    try:
        y = golf.ops.leaky_relu2_mlp(x, w_up, w_down, 0.5)
    finally:
        golf.ops.set_kernels_enabled(True)
    assert golf.ops.implementations()["leaky_relu2_mlp"] == "reference (kernels disabled)"
    torch.testing.assert_close(y, leaky_relu2_mlp_ref(x, w_up, w_down, 0.5), rtol=0, atol=0)


@interpreted
def test_unsupported_shape_falls_back_with_one_warning():
    _dispatch.reset()
    x, w_up, w_down, _ = make_inputs((7,), 12, 24, torch.float32)  # D = 12: rows not 16-byte aligned
    with pytest.warns(RuntimeWarning, match="multiples of 8") as caught:
        y1 = golf.ops.leaky_relu2_mlp(x, w_up, w_down, 0.5)
        y2 = golf.ops.leaky_relu2_mlp(x, w_up, w_down, 0.5)
    assert len([w for w in caught if "leaky_relu2_mlp" in str(w.message)]) == 1
    assert golf.ops.implementations()["leaky_relu2_mlp"].startswith("reference (dims")
    torch.testing.assert_close(y1, leaky_relu2_mlp_ref(x, w_up, w_down, 0.5), rtol=0, atol=0)
    torch.testing.assert_close(y2, y1, rtol=0, atol=0)


@interpreted
def test_gluon_build_failure_falls_back_to_triton_with_one_warning(monkeypatch):
    # Where the Gluon kernels would run (sm_90) but this triton cannot build them, the op warns once, keeps to the
    # Triton kernels from then on, and its values are the Triton kernels' (forward and every gradient).
    from triton.compiler.errors import CompilationError

    from golf.kernels import mlp_ws

    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise CompilationError("mlp_ws.py", None, "warp_specialize() got an unexpected keyword argument")

    monkeypatch.setattr(mlp_ws, "ENABLED", True)
    monkeypatch.setattr(mlp_ws, "DISABLED_REASON", "")  # restored after the test, as ENABLED is
    monkeypatch.setattr(mlp_ws, "runs_on", lambda t: mlp_ws.ENABLED)  # as on an H100 / H200
    monkeypatch.setattr(mlp_ws, "leaky_relu2_mlp_fwd_ws", broken)
    monkeypatch.setattr(mlp_ws, "leaky_relu2_mlp_bwd_ws", broken)
    x, w_up, w_down, dy = make_inputs((21,), 16, 40, torch.float32, seed=3)
    leaves = [t.clone().requires_grad_() for t in (x, w_up, w_down)]
    with pytest.warns(RuntimeWarning, match="failed to build") as caught:
        y = golf.ops.leaky_relu2_mlp(*leaves, 0.5)
        y.backward(dy)
        golf.ops.leaky_relu2_mlp(x, w_up, w_down, 0.5)
    assert len([w for w in caught if "Gluon" in str(w.message)]) == 1 and calls == [1] and not mlp_ws.ENABLED
    assert "warp_specialize" in mlp_ws.DISABLED_REASON
    assert golf.ops.implementations()["leaky_relu2_mlp"] == "triton (interpreter)"  # not the Gluon kernel's
    monkeypatch.setattr(mlp_ws, "ENABLED", False)
    expect = [t.clone().requires_grad_() for t in (x, w_up, w_down)]
    y_ref = golf.ops.leaky_relu2_mlp(*expect, 0.5)
    y_ref.backward(dy)
    assert torch.equal(y, y_ref)
    for got, want in zip(leaves, expect):
        assert torch.equal(got.grad, want.grad)


@interpreted
def test_implementations_name_the_gluon_kernels_where_they_ran(monkeypatch):
    # On sm_90 the custom ops run golf.kernels.mlp_ws's kernels; implementations() must say so, for the fused MLP
    # (forward and backward) and for the hidden op. Simulated here with the bit-equal Triton kernels standing in.
    from golf.kernels import mlp_ws

    monkeypatch.setattr(mlp_ws, "runs_on", lambda t: True)
    monkeypatch.setattr(mlp_ws, "leaky_relu2_mlp_fwd_ws", K.leaky_relu2_mlp_fwd)
    monkeypatch.setattr(mlp_ws, "leaky_relu2_mlp_bwd_ws", K.leaky_relu2_mlp_bwd)
    _dispatch.reset()
    x, w_up, w_down, dy = make_inputs((9,), 16, 40, torch.float32, seed=4)
    golf.ops.leaky_relu2_mlp_hidden(x, w_up, 0.5)
    assert golf.ops.implementations()["leaky_relu2_mlp_hidden"] == GLUON_IMPL
    y = golf.ops.leaky_relu2_mlp(x, w_up.requires_grad_(), w_down, 0.5)
    assert golf.ops.implementations()["leaky_relu2_mlp"] == GLUON_IMPL
    _dispatch.reset()
    y.backward(dy)  # dpre, from the backward's own kernel
    assert golf.ops.implementations() == {"leaky_relu2_mlp": GLUON_IMPL}


def test_hidden_with_autograd_uses_reference():
    x, w_up, _, _ = make_inputs((5,), 16, 24, torch.float32)
    w_up.requires_grad_()
    h = golf.ops.leaky_relu2_mlp_hidden(x, w_up, 0.5)
    h.sum().backward()
    assert golf.ops.implementations()["leaky_relu2_mlp_hidden"] == "reference (autograd)"
    assert w_up.grad is not None


def test_mismatched_shapes_raise():
    x, w_up, w_down, _ = make_inputs((5,), 16, 24, torch.float32)
    with pytest.raises(ValueError, match="w_up"):
        golf.ops.leaky_relu2_mlp(x[:, :8], w_up, w_down)
    with pytest.raises(ValueError, match="w_down"):
        golf.ops.leaky_relu2_mlp(x, w_up, w_down[:, :8])


@interpreted
def test_launcher_rejects_operands_tma_cannot_read():
    x, w_up, w_down, dy = make_inputs((8,), 16, 24, torch.float32)
    with pytest.raises(ValueError, match="16-byte"):
        K.leaky_relu2_mlp_fwd(x.T.contiguous().T, w_up, 0.5)
    with pytest.raises(ValueError, match="dtype"):
        K.leaky_relu2_mlp_fwd(x, w_up.double(), 0.5)
    with pytest.raises(ValueError, match="shape"):
        K.leaky_relu2_mlp_bwd(dy, w_down, torch.zeros(8, 16), 0.5)


# ------------------------------------------------------------------------------------------------ GPU


@interpreted
def test_backward_prefetch_option_changes_no_value():
    # prefetch_h is GPU-only PTX and is ignored here: the option must still be accepted and change nothing.
    x, w_up, w_down, dy = make_inputs((45,), 40, 72, torch.float32, seed=6)
    h = K.leaky_relu2_mlp_fwd(x, w_up, 0.5)
    g_ref = K.leaky_relu2_mlp_bwd(dy, w_down, h, 0.5)
    config = {**K._INTERPRETER_CONFIG, "prefetch_h": True}
    assert torch.equal(K.leaky_relu2_mlp_bwd(dy, w_down, h, 0.5, config=config), g_ref)


@pytest.fixture
def no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.cuda
@pytest.mark.parametrize(
    "M,D,F,slope",
    [
        (98_304, 512, 1536, 0.5),
        (98_304, 512, 2048, 0.5),
        (12_345, 512, 1536, 0.5),  # M not a multiple of any tile
        (4_099, 512, 1000, 0.5),  # hidden size not a multiple of the tile
        (1, 512, 1536, 0.5),  # a single row
        (4_096, 512, 1536, 0.0),  # relu^2
    ],
)
def test_cuda_matches_fp32_reference(M, D, F, slope, no_tf32):
    x, w_up, w_down, dy = make_inputs((M,), D, F, torch.bfloat16, device="cuda")
    check_against_reference(x, w_up, w_down, dy, slope, torch.float32, torch.bfloat16, torch.bfloat16)


# What implementations() records for bf16 on this GPU: the Gluon kernels on sm_90 (H100 / H200), else Triton's.
_GPU_IMPL = GLUON_IMPL if torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0) else "triton"


@pytest.mark.cuda
def test_cuda_hidden_is_what_the_fused_forward_projects(no_tf32):
    x, w_up, w_down, _ = make_inputs((8_192,), 512, 1536, torch.bfloat16, device="cuda")
    h = golf.ops.leaky_relu2_mlp_hidden(x, w_up, 0.5)
    assert golf.ops.implementations()["leaky_relu2_mlp_hidden"] == _GPU_IMPL
    y = golf.ops.leaky_relu2_mlp(x, w_up, w_down, 0.5)
    torch.testing.assert_close(y, torch.mm(h, w_down.T), rtol=0, atol=0)
    ref_hi = leaky_relu2_mlp_hidden_ref(x.float(), w_up.float(), 0.5)
    assert_within_2x("h", h, ref_hi, leaky_relu2_mlp_hidden_ref(x, w_up, 0.5), torch.bfloat16)


@pytest.mark.cuda
@pytest.mark.parametrize("F", [1536, 1000])
def test_cuda_backward_prefetch_option_is_exact(F):
    """prefetch_h (L2 prefetch through inline PTX, addresses clamped into h) changes when h arrives, never a
    value: bit-equal dpre, also with partial tiles (M = 12,345, F = 1000)."""
    x, w_up, w_down, dy = make_inputs((12_345,), 512, F, torch.bfloat16, device="cuda")
    h = K.leaky_relu2_mlp_fwd(x, w_up, 0.5)
    base = {**K.launch_config(512, F, "bwd"), "prefetch_h": False}
    g_ref = K.leaky_relu2_mlp_bwd(dy, w_down, h, 0.5, config=base)
    assert torch.equal(K.leaky_relu2_mlp_bwd(dy, w_down, h, 0.5, config={**base, "prefetch_h": True}), g_ref)


@pytest.mark.cuda
def test_cuda_saves_only_h_for_backward():
    M, D, F = 16_384, 512, 1536
    x, w_up, w_down, _ = make_inputs((M,), D, F, torch.bfloat16, device="cuda")
    leaves = [t.requires_grad_() for t in (x, w_up, w_down)]
    golf.ops.leaky_relu2_mlp(*leaves, 0.5)  # warm-up: first launch
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    y = golf.ops.leaky_relu2_mlp(*leaves, 0.5)
    torch.cuda.synchronize()
    kept = torch.cuda.memory_allocated() - base - y.numel() * y.element_size()
    assert kept == M * F * 2, f"kept {kept} bytes for backward, expected h alone ({M * F * 2})"


@pytest.mark.cuda
def test_cuda_compile_fullgraph_autocast_fp32_weights():
    x, w_up, w_down, dy = make_inputs((4, 1024), 512, 1536, torch.float32, device="cuda")

    results = []
    for compiled in (False, True):
        torch.compiler.reset()
        m = MLP(w_up, w_down)
        f = torch.compile(m, fullgraph=True) if compiled else m
        xx = x.clone().requires_grad_()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = f(xx)
        y.backward(dy.bfloat16())
        results.append([y.float(), xx.grad, m.w_up.grad, m.w_down.grad])
    assert golf.ops.implementations()["leaky_relu2_mlp"] == _GPU_IMPL  # recorded inside the compiled graph too
    for name, a, b in zip(("y", "dx", "dw_up", "dw_down"), *results):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-2, msg=name)
