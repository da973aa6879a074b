"""Batched Newton–Schulz kernels (golf.kernels.newton_schulz through golf.ops.newton_schulz) against the reference.

CPU: each kernel under the Triton interpreter (TRITON_INTERPRET=1, set by conftest without a GPU) on small fp32
shapes spanning several 16-wide tiles (partial tiles, mirrored off-diagonal tiles, tall inputs), the full NS
against the reference, the singular-value band, the dispatch rules; and a compile of the kernels for sm_90
(Triton's own compiler and ptxas, no GPU needed) so the GPU path cannot rot unnoticed.
GPU (marker cuda): bf16 at the core11 bank shapes, their 8-way shards and odd shapes, eager and CUDA-graph.

Accuracy rule for matmul-bearing kernels (anchors-style.md §9.8), with ref64 the fp64 reference and ref_lo the
reference in the kernel's dtype:  max|kernel - ref64| <= 2 * max|ref_lo - ref64| + floor,
floor = max|round(ref64 to dtype) - ref64|.
Note: the interpreter rounds fp32 -> bf16 by truncation (the GPU rounds to nearest), one more reason the CPU
tests prove the math in fp32.
"""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("triton")

import golf.ops  # noqa: E402
from golf.kernels import newton_schulz as K  # noqa: E402
from golf.ops import _dispatch  # noqa: E402
from golf.ops.newton_schulz import (  # noqa: E402
    interpreter_kernels,
    newton_schulz,
    newton_schulz_banks,
    newton_schulz_banks_ref,
    newton_schulz_ref,
    set_cuda_graphs,
)
from tests.kernels.sm90_compile import run_compile_check  # noqa: E402

interpreted = pytest.mark.skipif(not K.INTERPRETED, reason="the CPU kernel tests need TRITON_INTERPRET=1")

# Singular values after 5 iterations from a Gaussian start, as the fp64 reference reaches them (techniques.md §3.5:
# [0.68, 1.13] for ns5, [0.86, 1.14] for Polar Express on 256x512); the kernels must land in the same band.
BANDS = {"ns5": (0.6, 1.2), "polar_express": (0.8, 1.2)}


def assert_within_2x(name, out, ref64, ref_lo, dtype):
    err = (out.double() - ref64).abs().max().item()
    ref_err = (ref_lo.double() - ref64).abs().max().item()
    floor = (ref64.to(dtype).double() - ref64).abs().max().item()
    mean = (out.double() - ref64).abs().mean().item()
    print(f"{name}: max err {err:.3e} (mean {mean:.3e}), reference's {ref_err:.3e}, floor {floor:.3e}")
    assert torch.isfinite(out).all(), f"{name}: non-finite values"
    assert err <= 2 * ref_err + floor, f"{name}: max err {err:.3e} > 2 x {ref_err:.3e} + {floor:.3e}"


def assert_band(name, out, ref64, ref_lo, coefficients):
    """The singular values after NS stay where the fp64 reference puts them, to twice the low-precision
    reference's own deviation (svdvals are sorted, so this compares the whole spectrum)."""
    sv, sv64, sv_lo = (torch.linalg.svdvals(t.double()) for t in (out, ref64, ref_lo))
    lo, hi = BANDS[coefficients]
    dev, ref_dev = (sv - sv64).abs().max().item(), (sv_lo - sv64).abs().max().item()
    print(f"{name}: singular values [{sv.min():.4f}, {sv.max():.4f}], fp64 reference [{sv64.min():.4f}, "
          f"{sv64.max():.4f}]; deviation {dev:.2e}, low-precision reference's {ref_dev:.2e}")
    if 4 * min(out.shape[-2:]) <= 3 * max(out.shape[-2:]):
        # The band itself, so a wrong reference cannot pass quietly. Only for clearly rectangular matrices:
        # a square Gaussian matrix has singular values near 0 that five iterations cannot lift (seen on the
        # H200: the fp64 reference's smallest is 0.0012 at 512x512).
        assert lo <= sv64.min() and sv64.max() <= hi
    assert dev <= 2 * ref_dev + 1e-3, f"{name}: singular values leave the reference's band"


# -- each kernel under the interpreter ----------------------------------------------------------------------


@interpreted
@pytest.mark.parametrize("shape", [(2, 33, 50), (1, 17, 29)])
def test_xxt_is_exactly_symmetric_and_matches(shape):
    X = torch.randn(shape)
    A = K.xxt(X)
    assert torch.equal(A, A.mT)
    torch.testing.assert_close(A, X @ X.mT, rtol=1e-5, atol=1e-4)
    X0, partial = K.ns_prepare(X, torch.float32)
    s = 1.0 / (X.norm(dim=(1, 2)) + 1e-3)
    torch.testing.assert_close(K.xxt(X0, partial=partial, eps=1e-3), s[:, None, None] ** 2 * (X @ X.mT),
                               rtol=1e-5, atol=1e-6)


@interpreted
def test_sym_update_matches():
    Y = torch.randn(2, 40, 24)
    A = Y @ Y.mT / 24
    b, c = -4.775, 2.0315
    B = K.sym_update(A, b, c)
    assert torch.equal(B, B.mT)
    torch.testing.assert_close(B, b * A + c * (A @ A), rtol=1e-5, atol=1e-4)


@interpreted
def test_ns_step_matches_and_writes_any_orientation():
    X = torch.randn(2, 20, 50)
    Y = torch.randn(2, 20, 20)
    B = Y + Y.mT
    a = 3.4445
    torch.testing.assert_close(K.ns_step(X, B, a), a * X + B @ X, rtol=1e-5, atol=1e-4)
    out = torch.full((2, 50, 20), float("nan"))
    K.ns_step(X, B, a, out=out.mT)  # the last iteration writes a tall result this way
    torch.testing.assert_close(out, (a * X + B @ X).mT, rtol=1e-5, atol=1e-4)
    X0, partial = K.ns_prepare(X, torch.float32)
    s = 1.0 / (X.norm(dim=(1, 2)) + 1e-7)
    torch.testing.assert_close(K.ns_step(X0, B, a, partial=partial), s[:, None, None] * (a * X + B @ X),
                               rtol=1e-5, atol=1e-5)


@interpreted
def test_prepare_transposes_tall_inputs_and_sums_squares():
    G = torch.randn(3, 40, 16)
    X0, partial = K.ns_prepare(G, torch.float32)
    assert X0.shape == (3, 16, 40) and torch.equal(X0, G.mT)
    torch.testing.assert_close(partial.sum(1), G.square().sum((1, 2)), rtol=1e-6, atol=0)
    Gb = G.bfloat16()
    Xb, partial_b = K.ns_prepare(Gb)  # bf16 in, bf16 out: no rounding involved
    assert torch.equal(Xb, Gb.mT)
    torch.testing.assert_close(partial_b.sum(1), Gb.float().square().sum((1, 2)), rtol=1e-6, atol=0)


# -- the whole iteration ------------------------------------------------------------------------------------


@interpreted
@pytest.mark.parametrize("coefficients", ["ns5", "polar_express"])
@pytest.mark.parametrize("shape", [(2, 32, 48), (1, 17, 29), (3, 40, 16)])
def test_newton_schulz_fp32_matches_reference(shape, coefficients):
    G = torch.randn(shape)
    ref64 = newton_schulz_ref(G, coefficients=coefficients, dtype=torch.float64)
    ref32 = newton_schulz_ref(G, coefficients=coefficients, dtype=torch.float32)
    with interpreter_kernels():
        out = newton_schulz(G, coefficients=coefficients, dtype=torch.float32)
    assert golf.ops.implementations()["newton_schulz"] == "triton (interpreter)"
    assert out.shape == G.shape and out.dtype == torch.float32
    name = f"{shape} {coefficients}"
    assert_within_2x(name, out, ref64, ref32, torch.float32)
    assert_band(name, out, ref64, ref32, coefficients)


@interpreted
def test_newton_schulz_bf16_within_2x_of_reference():
    G = torch.randn(1, 17, 29)
    with interpreter_kernels():
        out = newton_schulz(G)
    assert out.dtype == torch.bfloat16
    assert_within_2x("bf16 (1, 17, 29)", out, newton_schulz_ref(G, dtype=torch.float64), newton_schulz_ref(G),
                     torch.bfloat16)


@interpreted
def test_dispatch_matrix_steps_and_fallbacks():
    G = torch.randn(12, 20)
    with interpreter_kernels():
        out = newton_schulz(G, steps=2, dtype=torch.float32)  # a 2-D matrix, not a bank
        torch.testing.assert_close(out, newton_schulz_ref(G, steps=2, dtype=torch.float32), rtol=0, atol=1e-5)
        zero = newton_schulz(G, steps=0, dtype=torch.float32)  # the normalized input
        torch.testing.assert_close(zero, G / (G.norm() + 1e-7), rtol=1e-6, atol=1e-7)
        empty = newton_schulz(torch.randn(0, 4, 6), dtype=torch.float32)
        assert empty.shape == (0, 4, 6)
        _dispatch.reset()
        with pytest.warns(RuntimeWarning, match="float64"):
            newton_schulz(G, dtype=torch.float64)
        assert golf.ops.implementations()["newton_schulz"].startswith("reference (dtype")


@interpreted
def test_banks_equal_one_call_per_bank():
    """Several banks of different shapes (a matrix, a tall bank, a wide one) in one call: each result is that
    bank's own newton_schulz, bit for bit."""
    Gs = [torch.randn(12, 20), torch.randn(2, 40, 16), torch.randn(3, 17, 29)]
    with interpreter_kernels():
        outs = newton_schulz_banks(Gs, steps=2, dtype=torch.float32)
        for G, out in zip(Gs, outs):
            assert torch.equal(out, newton_schulz(G, steps=2, dtype=torch.float32))
    assert golf.ops.implementations()["newton_schulz"] == "triton (interpreter)"


def test_banks_reference_on_the_cpu_and_bad_input():
    Gs = [torch.randn(2, 8, 6), torch.randn(4, 4)]
    outs = newton_schulz_banks(Gs, coefficients="polar_express")
    for out, ref in zip(outs, newton_schulz_banks_ref(Gs, coefficients="polar_express")):
        assert torch.equal(out, ref)
    assert newton_schulz_banks([]) == []
    with pytest.raises(ValueError, match="newton_schulz"):
        newton_schulz_banks([torch.randn(2, 3), torch.zeros(3)])


def test_cpu_runs_the_reference_without_a_warning():
    G = torch.randn(2, 8, 6)
    _dispatch.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = newton_schulz(G)
    assert golf.ops.implementations()["newton_schulz"] == "reference (cpu)"
    assert torch.equal(out, newton_schulz_ref(G))
    _dispatch.set_kernels_enabled(False)
    try:
        newton_schulz(G)
        assert golf.ops.implementations()["newton_schulz"] == "reference (kernels disabled)"
    finally:
        _dispatch.set_kernels_enabled(True)


@pytest.mark.parametrize("bad", [torch.zeros(3), torch.zeros(2, 2, 2, 2), torch.zeros(3, 3, dtype=torch.int64)])
def test_rejects_bad_inputs(bad):
    with pytest.raises(ValueError, match="newton_schulz"):
        newton_schulz(bad)
    with pytest.raises(ValueError):
        newton_schulz(torch.zeros(3, 3), coefficients="ns7")


@interpreted
def test_launchers_validate_shapes_and_dtypes():
    X = torch.randn(2, 8, 12)
    with pytest.raises(ValueError, match="bank"):
        K.xxt(X[0])
    with pytest.raises(ValueError, match="float16"):
        K.xxt(X.half())
    with pytest.raises(ValueError, match="xxt out"):
        K.xxt(X, out=torch.empty(2, 8, 12))
    with pytest.raises(ValueError, match="square"):
        K.sym_update(X, 1.0, 1.0)
    with pytest.raises(ValueError, match="ns_step B"):
        K.ns_step(X, torch.empty(2, 12, 12), 1.0)
    with pytest.raises(ValueError, match="kind"):
        K.launch_config("gemm", 1, 8, 8)


# -- the GPU code path compiles for sm_90 (no GPU needed) ----------------------------------------------------

_COMPILE_CHECK = r"""
import torch
from golf.kernels import newton_schulz as K
from tests.kernels.sm90_compile import compile_sm90 as compile_for
assert not K.INTERPRETED

def compile_sm90(fn, args, constexprs, cfg):
    return compile_for(fn, args, constexprs, dict(num_warps=cfg["num_warps"], num_stages=cfg["num_stages"]))

def blocks(cfg):
    return {k: v for k, v in cfg.items() if k not in ("num_warps", "num_stages")}

bf, P = torch.bfloat16, torch.empty(11, 96)
X, A = torch.empty(11, 512, 1536, dtype=bf), torch.empty(11, 512, 512, dtype=bf)
O = torch.empty(11, 1536, 512, dtype=bf).mT  # the last iteration writes a tall bank through its transpose
kernels = []
cfg = K.default_config("sym", 11, 512, 1536, 132)
kernels.append(compile_sm90(K._ns_sym_kernel, [X, A, P, 512, 1536, 96, 1.0, 0.0, 1e-7, *X.stride(), *A.stride()],
               dict(ADD_Y=False, NORMALIZE=True, UPCAST=False, PBLOCK=128, **blocks(cfg)), cfg))
cfg = K.default_config("update", 11, 512, 1536, 132)
args = [A, X, O, P, 512, 1536, 96, 3.4, 1e-7, *A.stride(), *X.stride(), *O.stride()]
kernels.append(compile_sm90(K._ns_update_kernel, args, dict(NORMALIZE=True, UPCAST=False, PBLOCK=128, **blocks(cfg)),
               cfg))
for k in kernels:
    g = k.asm["ttgir"]
    print(k.name, k.metadata.shared, g.count("warp_group_dot "), g.count("async_copy_global_to_local"))
"""


def test_kernels_compile_for_sm90(tmp_path):
    """The sym and update kernels must compile to pipelined wgmma (cp.async prefetch) within sm_90's 227 KB."""
    out = run_compile_check(_COMPILE_CHECK, tmp_path)
    rows = {line.split()[0]: [int(x) for x in line.split()[1:]] for line in out.splitlines()}
    print(rows)
    for name in ("_ns_sym_kernel", "_ns_update_kernel"):
        shared, wgmma, prefetch = rows[name]
        assert 0 < shared <= 227 * 1024 and wgmma >= 1 and prefetch >= 2, (name, rows[name])


# -- GPU ----------------------------------------------------------------------------------------------------

BANK_SHAPES = [(22, 512, 512), (22, 256, 512), (11, 1536, 512), (11, 512, 1536),
               (3, 512, 512), (3, 256, 512), (2, 1536, 512), (2, 512, 1536)]
ODD_SHAPES = [(3, 100, 300), (1, 1, 7), (5, 700, 64), (2, 257, 129)]


@pytest.mark.cuda
@pytest.mark.parametrize("coefficients", ["ns5", "polar_express"])
@pytest.mark.parametrize("shape", BANK_SHAPES + ODD_SHAPES)
def test_gpu_bf16_within_2x_of_reference(shape, coefficients):
    g = torch.Generator(device="cuda").manual_seed(0)
    G = torch.randn(shape, device="cuda", generator=g)
    ref64 = newton_schulz_ref(G, coefficients=coefficients, dtype=torch.float64)
    ref16 = newton_schulz_ref(G, coefficients=coefficients)
    set_cuda_graphs(False)
    try:
        eager = newton_schulz(G, coefficients=coefficients)
    finally:
        set_cuda_graphs(True)
    assert golf.ops.implementations()["newton_schulz"] == "triton"
    graphed = [newton_schulz(G, coefficients=coefficients) for _ in range(3)]  # eager, capture, replay
    for out in graphed:
        assert torch.equal(out, eager), "the CUDA graph must replay exactly the eager launches"
    for name, inp in (("fp32 input", G), ("bf16 input", G.bfloat16())):
        out = newton_schulz(inp, coefficients=coefficients)
        assert out.shape == G.shape and out.dtype == torch.bfloat16
        assert_within_2x(f"{shape} {coefficients} {name}", out, ref64, ref16, torch.bfloat16)
    if min(shape[1:]) > 1:
        assert_band(f"{shape} {coefficients}", eager, ref64, ref16, coefficients)


@pytest.mark.cuda
def test_gpu_graph_follows_new_inputs_and_strides():
    """A replayed graph must read the current call's input, whatever its address and strides."""
    G1, G2 = torch.randn(3, 64, 96, device="cuda"), torch.randn(3, 64, 96, device="cuda")
    for _ in range(2):
        newton_schulz(G1)
    out2 = newton_schulz(G2)
    set_cuda_graphs(False)
    try:
        assert torch.equal(out2, newton_schulz(G2))
        strided = torch.randn(3, 96, 64, device="cuda").mT  # same shape, transposed strides
        expect = newton_schulz(strided)
    finally:
        set_cuda_graphs(True)
    assert torch.equal(newton_schulz(strided), expect)


@pytest.mark.cuda
def test_gpu_batch_composition_does_not_change_a_matrix():
    """Muon's banks and shards batch matrices differently; each matrix's result must not depend on it much."""
    G = torch.randn(22, 512, 512, device="cuda")
    full = newton_schulz(G)
    part = newton_schulz(G[3:6])
    assert (full[3:6].float() - part.float()).abs().max().item() <= 2 ** -7


@pytest.mark.cuda
def test_gpu_banks_replay_concurrently_and_exactly():
    """The four core11 banks in one call: eager, then captured with one stream per bank, then replayed on new
    inputs; every result equals that bank's own eager newton_schulz bit for bit (same kernels, same inputs)."""
    shapes = [(22, 512, 512), (22, 256, 512), (11, 1536, 512), (11, 512, 1536)]
    for seed in range(2):
        g = torch.Generator(device="cuda").manual_seed(seed)
        Gs = [torch.randn(shape, device="cuda", generator=g) for shape in shapes]
        set_cuda_graphs(False)
        try:
            expect = [newton_schulz(G) for G in Gs]
        finally:
            set_cuda_graphs(True)
        for _ in range(3 - seed):  # seed 0: eager, capture, replay; seed 1: replays on other inputs
            outs = newton_schulz_banks(Gs)
            for shape, out, ref in zip(shapes, outs, expect):
                assert torch.equal(out, ref), f"bank {shape} differs from its own call"
