"""The warp-specialized Gluon MLP kernels (golf.kernels.mlp_ws), forward and backward, against golf.kernels.mlp's
Triton kernels.

CPU: the launcher's argument and config checks, and a compile for sm_90 in a subprocess with this triton (or the
triton 3.6 install named by GOLF_TRITON36_PATH, the GPU machine's version): cubin, shared memory, warps, wgmma
and TMA instructions.
GPU (marker cuda, an H200): first a smoke run in a subprocess with a timeout, so that a kernel that hangs
(an mbarrier phase or count gone wrong) fails one test instead of stalling the suite; then bit-equality with
golf.kernels.mlp.leaky_relu2_mlp_fwd / _bwd at the record shapes and odd ones, and the 2x rule against an fp64 reference
(anchors-style.md §9.8, as tests/kernels/test_mlp.py).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")

from golf.kernels import mlp as K  # noqa: E402
from golf.kernels import mlp_ws as W  # noqa: E402
from golf.ops.mlp import leaky_relu2_ref  # noqa: E402
from tests.kernels.sm90_compile import run_compile_check  # noqa: E402

needs_gluon = pytest.mark.skipif(not W.AVAILABLE, reason=f"Gluon unavailable: {W.UNAVAILABLE_REASON}")


def assert_within_2x(name, out, ref_hi, ref_lo, dtype):
    err = (out.double() - ref_hi.double()).abs().max().item()
    ref_err = (ref_lo.double() - ref_hi.double()).abs().max().item()
    floor = (ref_hi.to(dtype).double() - ref_hi.double()).abs().max().item()
    print(f"{name}: max err {err:.3e}, reference's {ref_err:.3e}, floor {floor:.3e}")
    assert torch.isfinite(out).all(), f"{name}: non-finite values"
    assert err <= 2 * ref_err + floor, f"{name}: max err {err:.3e} > 2 x {ref_err:.3e} + {floor:.3e}"


# ------------------------------------------------------------------------------------------------ CPU


def test_module_flags_and_candidate_configs():
    assert isinstance(W.AVAILABLE, bool)
    assert W.AVAILABLE or W.UNAVAILABLE_REASON
    for name, cfg in W.CANDIDATE_CONFIGS.items():
        bm, bn, bk, stages = W.check_config(cfg)
        assert bm * bn == 64 * 256 and bk == 64, name  # 128 accumulator registers per consumer thread
        assert W.smem_bytes(cfg) <= W.SMEM_LIMIT, name
    for direction in W.DIRECTIONS:
        for F in (1536, 2048, 1000):
            W.check_config(W.launch_config(512, F, direction))
    with pytest.raises(ValueError, match="direction"):
        W.launch_config(512, 1536, "up")


@pytest.mark.parametrize("bad", [
    dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, num_stages=2),  # 256 accumulator registers per thread
    dict(BLOCK_M=64, BLOCK_N=256, BLOCK_K=64, num_stages=5),  # 264 KB of shared memory
    dict(BLOCK_M=64, BLOCK_N=256, BLOCK_K=64, num_stages=1),
    dict(BLOCK_M=32, BLOCK_N=256, BLOCK_K=64, num_stages=4),  # not a wgmma warpgroup's rows
    dict(BLOCK_M=64, BLOCK_N=256, BLOCK_K=128, num_stages=2),
    dict(BLOCK_M=64, BLOCK_N=256, num_stages=4),
    dict(BLOCK_M=64, BLOCK_N=256, BLOCK_K=64, num_stages=4, num_warps=8),
])
def test_bad_configs_raise(bad):
    with pytest.raises(ValueError, match="config"):
        W.check_config(bad)


@pytest.mark.parametrize("case", ["fp32", "3d", "w_shape", "h_shape", "out_dtype", "stride"])
def test_bad_operands_raise(case):
    bf = torch.bfloat16
    dy, w, h = torch.zeros(8, 16, dtype=bf), torch.zeros(16, 24, dtype=bf), torch.zeros(8, 24, dtype=bf)
    kwargs = {}
    if case == "fp32":
        dy = dy.float()
    elif case == "3d":
        dy = dy[None]
    elif case == "w_shape":
        w = torch.zeros(24, 16, dtype=bf)
    elif case == "h_shape":
        h = torch.zeros(8, 16, dtype=bf)
    elif case == "out_dtype":
        kwargs["out"] = torch.zeros(8, 24)
    elif case == "stride":
        h = torch.zeros(24, 8, dtype=bf).t()
    with pytest.raises(ValueError):
        W.leaky_relu2_mlp_bwd_ws(dy, w, h, 0.5, **kwargs)


@pytest.mark.parametrize("case", ["fp32", "3d", "w_shape", "out_shape", "stride"])
def test_bad_forward_operands_raise(case):
    bf = torch.bfloat16
    x, w_up = torch.zeros(8, 16, dtype=bf), torch.zeros(24, 16, dtype=bf)
    kwargs = {}
    if case == "fp32":
        x = x.float()
    elif case == "3d":
        x = x[None]
    elif case == "w_shape":
        w_up = torch.zeros(16, 24, dtype=bf)
    elif case == "out_shape":
        kwargs["out"] = torch.zeros(8, 16, dtype=bf)
    elif case == "stride":
        w_up = torch.zeros(16, 24, dtype=bf).t()
    with pytest.raises(ValueError):
        W.leaky_relu2_mlp_fwd_ws(x, w_up, 0.5, **kwargs)


@pytest.mark.parametrize("bad", [0, -3, 2.0, True, "8"])
def test_bad_num_programs_raise(bad):
    bf = torch.bfloat16
    dy, w, h = torch.zeros(8, 16, dtype=bf), torch.zeros(16, 24, dtype=bf), torch.zeros(8, 24, dtype=bf)
    with pytest.raises(ValueError, match="num_programs"):
        W.leaky_relu2_mlp_bwd_ws(dy, w, h, 0.5, num_programs=bad)


def test_cpu_operands_are_refused():
    bf = torch.bfloat16
    dy, w, h = torch.zeros(8, 16, dtype=bf), torch.zeros(16, 24, dtype=bf), torch.zeros(8, 24, dtype=bf)
    with pytest.raises((ValueError, RuntimeError), match="Hopper|unavailable|TRITON_INTERPRET"):
        W.leaky_relu2_mlp_bwd_ws(dy, w, h, 0.5)
    assert W.leaky_relu2_mlp_bwd_ws(dy[:0], w, h[:0], 0.5).shape == (0, 24)  # M = 0 launches nothing
    with pytest.raises((ValueError, RuntimeError), match="Hopper|unavailable|TRITON_INTERPRET"):
        W.leaky_relu2_mlp_fwd_ws(dy, w.t().contiguous(), 0.5)
    assert not W.runs_on(dy)  # golf.ops.mlp keeps the Triton kernels here


_COMPILE_CHECK = r"""
import itertools, sys, torch, triton
from golf.kernels import mlp_ws as W
if not W.AVAILABLE:
    print("SKIP triton", triton.__version__, W.UNAVAILABLE_REASON)
    sys.exit(0)
from triton.experimental.gluon._runtime import GluonASTSource
from tests.kernels.sm90_compile import compile_sm90 as compile_for

def compile_sm90(cfg, M, D, F, forward):
    bm, bn, bk, stages = W.check_config(cfg)
    bf = torch.bfloat16
    a, h = torch.empty(M, D, dtype=bf), torch.empty(M, F, dtype=bf)
    w, w_block = (torch.empty(F, D, dtype=bf), [bn, bk]) if forward else (torch.empty(D, F, dtype=bf), [bk, bn])
    args = [W._descriptor(a, [bm, bk]), W._descriptor(w, w_block), W._descriptor(h, [bm, bn]),
            W._descriptor(h, [bm, bn]), M, F, D, 0.5, 132]
    constexprs = dict(STAGES=stages, CONSUMER_NREG=W.CONSUMER_REGS, PRODUCER_NREG=W.PRODUCER_REGS,
                      FORWARD=forward)
    return compile_for(W._leaky_relu2_mlp_ws_kernel, args, constexprs, dict(num_warps=W.NUM_WARPS),
                       source=GluonASTSource)

for (name, cfg), forward in itertools.product(W.CANDIDATE_CONFIGS.items(), (False, True)):
    k = compile_sm90(cfg, 98304, 512, 1536, forward)
    ptx = k.asm["ptx"]
    shape = "m64n%dk16" % cfg["BLOCK_N"]
    print(name + ("/fwd" if forward else "/bwd"), len(k.asm.get("cubin", b"")), k.metadata.shared, k.metadata.num_warps,
          ptx.count("wgmma.mma_async.sync.aligned." + shape), ptx.count("cp.async.bulk.tensor"),
          ptx.count("setmaxnreg"), ptx.count("sqrt.approx.ftz.f32"), ptx.count("mbarrier.try_wait"))
"""


def test_compiles_for_sm90(tmp_path):
    """Both candidate configs, forward and backward, compile for sm_90 with this triton (3.6, the GPU machine's,
    and 3.8, CI's, both checked): wgmma, TMA, setmaxnreg, <= 227 KB, 12 warps."""
    # GOLF_TRITON36_PATH: a triton 3.6 install (the GPU machine's version) put first on the subprocess's path;
    # without it the subprocess's own triton is used. Skipped only where Gluon lacks warp_specialize.
    out = run_compile_check(_COMPILE_CHECK, tmp_path, os.environ.get("GOLF_TRITON36_PATH", ""))
    if out.startswith("SKIP"):
        pytest.skip(f"no Gluon warp_specialize in this triton: {out.strip()}")
    rows = {line.split()[0]: [int(x) for x in line.split()[1:]] for line in out.splitlines()}
    print(rows)
    assert set(rows) == {f"{name}/{d}" for name in W.CANDIDATE_CONFIGS for d in ("fwd", "bwd")}, out
    for label, (cubin, shared, warps, wgmma, tma, setmaxnreg, sqrt, waits) in rows.items():
        name, direction = label.split("/")
        cfg = W.CANDIDATE_CONFIGS[name]
        assert cubin > 0 and 0 < shared <= W.SMEM_LIMIT and shared >= W.smem_bytes(cfg) - 64, (name, rows[name])
        assert warps == W.TOTAL_WARPS, (name, warps)  # 4 + 4 + 1, padded to whole warpgroups
        # Two consumers, each BLOCK_K / 16 wgmma of the consumer's instruction shape per K-step.
        assert wgmma == 2 * cfg["BLOCK_K"] // 16 * (cfg["BLOCK_M"] // 64), (name, wgmma)
        assert tma >= 3 and setmaxnreg >= 3, (label, rows[label])
        # Backward: producer: empty (in both of its K-tile loops: before and after the h load), h_free; each
        # consumer: ready, h_ready and the other consumer's mma_done (the order barrier without which a parity wait
        # mistook fill n - 2 of a stage for fill n). Forward: no h.
        if direction == "bwd":
            assert sqrt > 0 and waits >= 9, (label, sqrt, waits)
        else:
            assert sqrt == 0 and waits >= 6, (label, sqrt, waits)


# ------------------------------------------------------------------------------------------------ GPU

_SMOKE = r"""
import torch
from golf.kernels import mlp as K, mlp_ws as W
g = torch.Generator(device="cuda").manual_seed(1)
# One CTA first: both consumers and the ring's wrap-around on a few tiles (2 to 6 tiles of 8 K-steps),
# the smallest runs where the two consumers' ring parities could be confused. Then partial row and column
# tiles; one row; one K-tile (fewer than the stages); K and N that leave a partial K-tile and whole TMA boxes
# out of bounds.
for M, D, F, programs in ((128, 512, 256, 1), (128, 512, 384, 1), (320, 512, 256, 1), (12345, 512, 1000, None),
                          (1, 512, 1536, None), (300, 64, 256, None), (777, 200, 264, None)):
    x = torch.randn(M, D, device="cuda", generator=g).bfloat16()
    w_up = (torch.randn(F, D, device="cuda", generator=g) * D**-0.5).bfloat16()
    w_down = (torch.randn(D, F, device="cuda", generator=g) * F**-0.5).bfloat16()
    dy = torch.randn(M, D, device="cuda", generator=g).bfloat16()
    h = K.leaky_relu2_mlp_fwd(x, w_up, 0.5)
    for name, cfg in W.CANDIDATE_CONFIGS.items():
        h_ws = W.leaky_relu2_mlp_fwd_ws(x, w_up, 0.5, config=cfg, num_programs=programs)
        torch.cuda.synchronize()
        print(M, D, F, programs, name, "fwd", torch.equal(h_ws, h))
        out = W.leaky_relu2_mlp_bwd_ws(dy, w_down, h, 0.5, config=cfg, num_programs=programs)
        torch.cuda.synchronize()
        print(M, D, F, programs, name, "bwd", torch.equal(out, K.leaky_relu2_mlp_bwd(dy, w_down, h, 0.5)))
"""


@pytest.fixture(scope="module")
def kernel_terminates():
    """The kernel runs to completion (no hang, no fault) in a subprocess that is killed after a timeout."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    try:
        proc = subprocess.run([sys.executable, "-c", _SMOKE], env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("the Gluon kernel did not finish within 300 s: an mbarrier wait never completes (see mlp_ws.py)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout)
    return proc.stdout


def make_inputs(M, D, F, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, device="cuda") * scale).bfloat16()

    return rand(M, D), rand(F, D, scale=D**-0.5), rand(D, F, scale=F**-0.5), rand(M, D)


@pytest.mark.cuda
@needs_gluon
def test_cuda_smoke_run_terminates(kernel_terminates):
    assert "False" not in kernel_terminates, kernel_terminates


@pytest.mark.cuda
@needs_gluon
@pytest.mark.parametrize("config", sorted(W.CANDIDATE_CONFIGS))
@pytest.mark.parametrize("M, F, slope", [(98304, 1536, 0.5), (98304, 2048, 0.5), (12345, 1536, 0.5),
                                         (1, 1536, 0.5), (12345, 1000, 0.5), (12345, 2048, 0.0)])
def test_cuda_bit_equal_to_triton_kernel(kernel_terminates, config, M, F, slope):
    D = 512
    x, w_up, w_down, dy = make_inputs(M, D, F)
    h = K.leaky_relu2_mlp_fwd(x, w_up, slope)
    expect = K.leaky_relu2_mlp_bwd(dy, w_down, h, slope)
    out = W.leaky_relu2_mlp_bwd_ws(dy, w_down, h, slope, config=W.CANDIDATE_CONFIGS[config])
    assert out.shape == (M, F) and out.dtype == torch.bfloat16
    diff = (out.float() - expect.float()).abs().max().item()
    assert torch.equal(out, expect), f"{config} M={M} F={F} slope={slope}: max |diff| {diff:.3e}"


@pytest.mark.cuda
@needs_gluon
@pytest.mark.parametrize("config", sorted(W.CANDIDATE_CONFIGS))
@pytest.mark.parametrize("programs", [1, 7, 66])
def test_cuda_bit_equal_with_few_programs(kernel_terminates, config, programs):
    """Many tiles per CTA (both consumers, many ring laps, odd tile counts per CTA) at a mid-sized shape."""
    M, D, F = 2048, 512, 1536
    x, w_up, w_down, dy = make_inputs(M, D, F, seed=2)
    h = K.leaky_relu2_mlp_fwd(x, w_up, 0.5)
    expect = K.leaky_relu2_mlp_bwd(dy, w_down, h, 0.5)
    out = W.leaky_relu2_mlp_bwd_ws(dy, w_down, h, 0.5, config=W.CANDIDATE_CONFIGS[config], num_programs=programs)
    assert torch.equal(out, expect), f"{config} programs={programs}: max |diff| {(out - expect).abs().max():.3e}"


@pytest.mark.cuda
@needs_gluon
def test_cuda_default_config_and_out(kernel_terminates):
    x, w_up, w_down, dy = make_inputs(12345, 512, 1536, seed=3)
    h = K.leaky_relu2_mlp_fwd(x, w_up, 0.5)
    out = torch.full_like(h, float("nan"))
    assert W.leaky_relu2_mlp_bwd_ws(dy, w_down, h, 0.5, out=out) is out
    assert torch.equal(out, K.leaky_relu2_mlp_bwd(dy, w_down, h, 0.5))
    assert torch.equal(W.leaky_relu2_mlp_bwd_ws(dy, w_down, h, -0.5), K.leaky_relu2_mlp_bwd(dy, w_down, h, -0.5))


@pytest.mark.cuda
@needs_gluon
@pytest.mark.parametrize("config", sorted(W.CANDIDATE_CONFIGS))
@pytest.mark.parametrize("M, F, slope, programs", [(98304, 1536, 0.5, None), (98304, 2048, 0.5, None),
                                                   (12345, 1000, 0.5, None), (1, 1536, 0.5, None),
                                                   (12345, 2048, 0.0, None), (2048, 1536, -0.5, 7)])
def test_cuda_forward_bit_equal_to_triton_kernel(kernel_terminates, config, M, F, slope, programs):
    x, w_up, _, _ = make_inputs(M, 512, F, seed=4)
    expect = K.leaky_relu2_mlp_fwd(x, w_up, slope)
    out = W.leaky_relu2_mlp_fwd_ws(x, w_up, slope, config=W.CANDIDATE_CONFIGS[config], num_programs=programs)
    assert out.shape == (M, F) and out.dtype == torch.bfloat16
    diff = (out.float() - expect.float()).abs().max().item()
    assert torch.equal(out, expect), f"{config} M={M} F={F}: max |diff| {diff:.3e}"


@pytest.mark.cuda
@needs_gluon
def test_cuda_forward_default_config_and_out(kernel_terminates):
    x, w_up, _, _ = make_inputs(12345, 512, 1536, seed=5)
    out = torch.full((12345, 1536), float("nan"), device="cuda", dtype=torch.bfloat16)
    assert W.leaky_relu2_mlp_fwd_ws(x, w_up, 0.5, out=out) is out
    assert torch.equal(out, K.leaky_relu2_mlp_fwd(x, w_up, 0.5))


def _dpre_ref(x, w_up, w_down, dy, slope, dtype):
    """dpre = d(leaky_relu(u)^2 @ w_down^T)/du . dy by autograd through the pure-torch reference, in `dtype`."""
    u = (x.to(dtype) @ w_up.to(dtype).t()).detach().requires_grad_()
    y = leaky_relu2_ref(u, slope) @ w_down.to(dtype).t()
    y.backward(dy.to(dtype))
    return u.grad


@pytest.mark.cuda
@needs_gluon
@pytest.mark.parametrize("M, F, slope", [(98304, 1536, 0.5), (98304, 2048, 0.5), (12345, 1000, 0.0)])
def test_cuda_within_2x_of_fp64_reference(kernel_terminates, M, F, slope):
    x, w_up, w_down, dy = make_inputs(M, 512, F, seed=1)
    h = K.leaky_relu2_mlp_fwd(x, w_up, slope)
    out = W.leaky_relu2_mlp_bwd_ws(dy, w_down, h, slope)
    ref_hi = _dpre_ref(x, w_up, w_down, dy, slope, torch.float64)
    ref_lo = _dpre_ref(x, w_up, w_down, dy, slope, torch.bfloat16)
    assert_within_2x(f"dpre M={M} F={F} slope={slope}", out, ref_hi, ref_lo, torch.bfloat16)
