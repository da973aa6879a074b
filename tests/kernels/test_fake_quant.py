"""Fake quantization (golf.kernels.fake_quant through golf.ops.fake_quant.fake_quant) against golf.quant.scheme.

CPU: the kernel under the Triton interpreter (TRITON_INTERPRET=1, set by conftest without a GPU) on small fp32
shapes, odd ones included (one row, 7 columns, a 3-D bank, strided rows), bit for bit against the scheme's
quantize/dequantize; straight-through gradients; torch.compile(fullgraph=True); dispatch and argument errors.
GPU (marker cuda): the core11 bank shapes in fp32 and bf16.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

import golf.ops  # noqa: E402
from golf.kernels import fake_quant as K  # noqa: E402
from golf.ops import _dispatch  # noqa: E402
from golf.ops.fake_quant import fake_quant, fake_quant_ref  # noqa: E402
from golf.quant import scheme  # noqa: E402

interpreted = pytest.mark.skipif(not K.INTERPRETED, reason="the CPU kernel tests need TRITON_INTERPRET=1")
SCHEMES = [("absmax", None), ("absmax_floor", None), ("sdclip", 2.5), ("sdclip", 12.85)]


def _weights(shape, dtype=torch.float32, device="cpu", scale=0.05, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    return (torch.randn(*shape, generator=g, device=device) * scale).to(dtype)


def assert_matches_scheme(w, bits, clip, k):
    """The op's output equals scheme's codes * scales in w's dtype, bit for bit, and ran the kernel."""
    _dispatch.reset()
    out = fake_quant(w, bits=bits, clip=clip, k=k)
    assert golf.ops.implementations()["fake_quant"].startswith("triton")
    scales = scheme.row_scales(w, bits=bits, clip=clip, k=k)
    expected = scheme.dequantize(scheme.quantize(w, scales, bits=bits), scales, w.dtype)
    assert out.dtype == w.dtype and out.shape == w.shape
    assert torch.equal(out, expected), f"max diff {(out.float() - expected.float()).abs().max().item():.3e}"


@interpreted
@pytest.mark.parametrize("shape", [(1, 7), (5, 7), (3, 4, 33), (2, 1, 16), (40, 130)])
@pytest.mark.parametrize("clip,k", SCHEMES)
@pytest.mark.parametrize("bits", [5, 6, 8])
def test_kernel_equals_scheme(shape, clip, k, bits):
    assert_matches_scheme(_weights(shape), bits, clip, k)


@interpreted
def test_kernel_scales_equal_scheme_scales():
    w = _weights((3, 6, 24))
    for clip, k in SCHEMES:
        _, scales = torch.ops.golf.fake_quant(w, 6, clip, k or 0.0, "identity")
        assert torch.equal(scales, scheme.row_scales(w, bits=6, clip=clip, k=k)), clip


@interpreted
def test_kernel_floor_and_zero_rows():
    # absmax_floor's 1/q step for small rows, a zero row (MIN_SCALE) and large rows that sdclip clips.
    w = torch.cat([_weights((2, 20), scale=0.01), torch.zeros(1, 20), _weights((2, 20), scale=3.0)])
    w[3, 5] = 40.0
    for clip, k in SCHEMES:
        assert_matches_scheme(w, 6, clip, k)


@interpreted
def test_kernel_strided_rows():
    base = _weights((6, 40))
    w = base[:, 3:31]  # rows with stride 40, unit last stride: the kernel reads them in place
    assert not w.is_contiguous()
    assert_matches_scheme(w, 6, "absmax", None)
    assert_matches_scheme(base.t(), 6, "sdclip", 3.0)  # transposed: copied to contiguous first


@interpreted
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_kernel_low_precision_weights(dtype):
    assert_matches_scheme(_weights((2, 8, 48), dtype=dtype), 6, "absmax", None)


@interpreted
@pytest.mark.parametrize("ste", ["identity", "clipped"])
def test_gradients_match_reference(ste):
    w = _weights((2, 5, 24), scale=1.0)
    w[0, 1, 3] = 30.0  # far outside sdclip's range: clipped in the forward
    dy = _weights((2, 5, 24), seed=1)
    grads = []
    for fn in (fake_quant, fake_quant_ref):
        leaf = w.clone().requires_grad_()
        out = fn(leaf, bits=5, clip="sdclip", k=2.0, ste=ste)
        out.backward(dy)
        grads.append(leaf.grad)
    assert torch.equal(grads[0], grads[1])
    if ste == "identity":
        assert torch.equal(grads[0], dy)
    else:
        scales = scheme.row_scales(w, bits=5, clip="sdclip", k=2.0)
        kept = (w / scales.float().unsqueeze(-1)).abs() <= 15
        assert not bool(kept.all()) and bool(kept.any())
        assert torch.equal(grads[0], torch.where(kept, dy, torch.zeros_like(dy)))


def test_reference_forward_is_scheme_bit_for_bit():
    w = _weights((4, 33), scale=1.0).requires_grad_()
    for ste in ("identity", "clipped"):
        out = fake_quant_ref(w, bits=6, clip="sdclip", k=3.0, ste=ste)
        assert torch.equal(out.detach(), scheme.fake_quant_ref(w.detach(), bits=6, clip="sdclip", k=3.0))


@interpreted
def test_op_in_compiled_graph():
    w = _weights((3, 16, 32)).requires_grad_()

    def f(t):
        return (fake_quant(t * 2.0, bits=6, clip="sdclip", k=4.0) ** 2).sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    loss = compiled(w)
    loss.backward()
    ref_w = w.detach().clone().requires_grad_()
    ref_loss = f(ref_w)
    ref_loss.backward()
    assert torch.equal(loss, ref_loss)
    assert torch.equal(w.grad, ref_w.grad)


def test_dispatch_reference_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.setattr(K, "INTERPRETED", False)
    _dispatch.reset()
    w = _weights((4, 16))
    assert torch.equal(fake_quant(w), scheme.fake_quant_ref(w))
    assert golf.ops.implementations()["fake_quant"] == "reference (cpu)"


@interpreted
def test_percentile_rule_runs_the_reference():
    """The records' row-quantile clip has no kernel: the op says so once and returns the reference."""
    _dispatch.reset()
    w = _weights((4, 40))
    with pytest.warns(RuntimeWarning, match="percentile"):
        out = fake_quant(w, clip="percentile", k=0.99)
    assert torch.equal(out, scheme.fake_quant_ref(w, clip="percentile", k=0.99))
    assert golf.ops.implementations()["fake_quant"].startswith("reference")


def test_dispatch_kernels_disabled():
    _dispatch.reset()
    _dispatch.set_kernels_enabled(False)
    try:
        fake_quant(_weights((4, 16)))
        assert golf.ops.implementations()["fake_quant"] == "reference (kernels disabled)"
    finally:
        _dispatch.set_kernels_enabled(True)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(bits=4), "bits=4"),
        (dict(clip="minmax"), "minmax"),
        (dict(clip="sdclip"), "k=None"),
        (dict(ste="soft"), "ste='soft'"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fake_quant(_weights((4, 16)), **kwargs)


def test_bad_shape():
    with pytest.raises(ValueError, match=r"\[16\]"):
        fake_quant(_weights((16,)))


@interpreted
def test_kernel_sdclip_rows_far_from_zero():
    # Rows whose mean is 1000x their spread: a one-pass variance (E[w^2] - mean^2) loses it to cancellation;
    # the kernel must keep the scheme's scales to an fp16 ulp.
    w = 1.0 + _weights((6, 300), scale=1e-3)
    _, scales = K.fake_quant_fwd(w, scheme.qmax(6), "sdclip", 12.85, scheme.MIN_SCALE)
    ref = scheme.row_scales(w, bits=6, clip="sdclip", k=12.85)
    assert ((scales.float() - ref.float()).abs() / ref.float()).max().item() <= 2.0**-10


# ---------------------------------------------------------------------------------------------------------
# GPU: the core11 banks (11 layers: q/o and k/v banks, MLP up and down), fp32 masters and bf16.

CORE11_BANKS = [(22, 512, 512), (22, 256, 512), (11, 1536, 512), (11, 512, 1536)]


@pytest.mark.cuda
@pytest.mark.parametrize("shape", CORE11_BANKS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("clip,k", [("absmax", None), ("absmax_floor", None)])
def test_cuda_core11_banks_exact(shape, dtype, clip, k):
    assert_matches_scheme(_weights(shape, dtype=dtype, device="cuda"), 6, clip, k)


@pytest.mark.cuda
@pytest.mark.parametrize("shape", CORE11_BANKS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_core11_banks_sdclip(shape, dtype):
    """SDClip's fp32 std is summed in another order than torch's: scales may differ only where the fp32 value
    sits on an fp16 rounding boundary (rare), and rows with equal scales are exact."""
    w = _weights(shape, dtype=dtype, device="cuda")
    out, scales = torch.ops.golf.fake_quant(w, 6, "sdclip", 12.85, "identity")
    ref_scales = scheme.row_scales(w, bits=6, clip="sdclip", k=12.85)
    same = scales == ref_scales  # [B, R]
    assert same.float().mean().item() >= 0.999
    ulps = (scales.float() - ref_scales.float()).abs() / ref_scales.float()
    assert ulps.max().item() <= 2.0**-10  # one fp16 ulp at most
    expected = scheme.dequantize(scheme.quantize(w, ref_scales, bits=6), ref_scales, w.dtype)
    assert torch.equal(out[same], expected[same])
