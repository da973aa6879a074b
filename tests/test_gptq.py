"""GPTQ (golf.quant.gptq) and Hessian collection (golf.quant.hessian).

Quality is judged by the layer-output error ||(W - W_hat) X^T||_F against round-to-nearest with the same
scales. Activations are (a) synthetic: correlated, heavy-tailed (a Gaussian scale mixture) with a few
outlier channels, and (b) real: a tiny golf.model.GPT trained for a few steps on English text (byte tokens
of the standard library's docstrings), with Hessians from collect_hessians.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings

import pytest
import torch

import golf.ops
from golf.quant import scheme
from golf.quant.gptq import gptq_quantize, inverse_cholesky_upper
from golf.quant.hessian import collect_hessians

SHAPES = [(512, 512), (256, 512), (1536, 512), (512, 1536), (1024, 512)]


def realistic_activations(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """[n, d] fp32: correlated channels, heavy tails, per-channel scales spanning ~10x, 1% outlier channels."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g) * torch.exp(0.5 * torch.randn(n, 1, generator=g))  # heavy-tailed tokens
    mix = torch.eye(d) + torch.randn(d, d, generator=g) / d**0.5  # correlates the channels
    chan = torch.exp(0.6 * torch.randn(d, generator=g))
    chan[torch.randperm(d, generator=g)[: max(1, d // 100)]] *= 8.0
    return (z @ mix) * chan


def realistic_weight(rows: int, cols: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * torch.exp(0.3 * torch.randn(rows, 1, generator=g))
    return 0.02 * w * (1 + (torch.rand(rows, cols, generator=g) < 0.002) * 5.0)  # sparse large weights


def hessian_of(x: torch.Tensor) -> torch.Tensor:
    return x.T @ x / x.shape[0]


def output_error(w: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, x: torch.Tensor) -> float:
    return float(((w - scheme.dequantize(codes, scales)) @ x.T).norm())


def assert_beats_rtn(w, x, codes, scales, bits, margin=0.98):
    rtn = scheme.quantize(w, scales, bits=bits)
    e_gptq, e_rtn = output_error(w, codes, scales, x), output_error(w, rtn, scales, x)
    print(f"output error GPTQ/RTN = {e_gptq / e_rtn:.3f}")
    assert e_gptq < margin * e_rtn, (e_gptq, e_rtn)


@pytest.mark.parametrize("rows,cols", SHAPES)
def test_gptq_beats_rtn_on_record_shapes(rows, cols):
    x = realistic_activations(2 * cols, cols)
    w = realistic_weight(rows, cols)
    codes, scales = gptq_quantize(w, hessian_of(x), bits=6)
    assert codes.dtype == torch.int8 and codes.shape == (rows, cols)
    assert scales.dtype == torch.float16 and scales.shape == (rows,)
    assert torch.equal(scales, scheme.row_scales(w, bits=6))
    assert int(codes.abs().max()) <= scheme.qmax(6)
    assert_beats_rtn(w, x, codes, scales, 6, margin=0.7)


@pytest.mark.parametrize("bits", [5, 6, 7, 8])
@pytest.mark.parametrize("clip,k", [("absmax", None), ("absmax_floor", None), ("sdclip", 12.85)])
def test_gptq_every_clip_rule_and_bit_width(bits, clip, k):
    x = realistic_activations(512, 128, seed=bits)
    # absmax_floor's floor 1/qmax bites on rows with max|w| < 1: scale the weights so some rows sit on the
    # floor and the others do not (at 0.02 std every row would round to a handful of codes).
    w = realistic_weight(96, 128) * (10.0 if clip == "absmax_floor" else 1.0)
    codes, scales = gptq_quantize(w, hessian_of(x), bits=bits, clip=clip, k=k)
    assert torch.equal(scales, scheme.row_scales(w, bits=bits, clip=clip, k=k))
    if clip == "absmax_floor":
        floored = scales == torch.tensor(1.0 / scheme.qmax(bits)).half()
        assert 0 < int(floored.sum()) < len(scales)
    assert int(codes.abs().max()) <= scheme.qmax(bits)
    assert_beats_rtn(w, x, codes, scales, bits)


@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_act_order_off_and_on(act_order):
    x = realistic_activations(768, 256, seed=3)
    w = realistic_weight(128, 256)
    codes, scales = gptq_quantize(w, hessian_of(x), act_order=act_order, block_size=64)
    assert_beats_rtn(w, x, codes, scales, 6, margin=0.8)


def test_act_order_does_not_lose_to_natural_order():
    x = realistic_activations(768, 256, seed=4)
    w, h = realistic_weight(256, 256), hessian_of(x)
    errs = {a: output_error(w, *gptq_quantize(w, h, act_order=a), x) for a in (False, True)}
    print("output error natural / act-order:", errs)
    assert errs[True] < 1.02 * errs[False]


def test_blocking_matches_one_block():
    """The lazy-batch trailing update W[:, i2:] -= Err @ Hinv[i1:i2, i2:] is exact algebra: blocks of 32 and one
    block of all columns give the same codes up to fp rounding (a flipped code cascades a little)."""
    x = realistic_activations(768, 256, seed=5)
    w, h = realistic_weight(128, 256), hessian_of(x)
    c_blocked, _ = gptq_quantize(w, h, block_size=32)
    c_whole, _ = gptq_quantize(w, h, block_size=256, impl="reference")
    frac = (c_blocked != c_whole).float().mean().item()
    print(f"codes differing between block 32 and block 256: {frac:.5f}")
    assert frac < 0.01


def test_dead_columns_get_zero_codes_and_no_nans():
    x = realistic_activations(768, 256, seed=6)
    dead = torch.tensor([0, 7, 100, 255])
    x[:, dead] = 0.0
    w = realistic_weight(128, 256)
    codes, scales = gptq_quantize(w, hessian_of(x))
    assert torch.isfinite(scales.float()).all()
    assert (codes[:, dead] == 0).all()
    w_live = w.clone()
    w_live[:, dead] = 0.0
    assert torch.equal(scales, scheme.row_scales(w_live, bits=6))  # dead inputs do not widen the grid
    assert_beats_rtn(w, x, codes, scales, 6, margin=0.8)


def test_indefinite_hessian_is_retried_with_more_damping():
    x = realistic_activations(512, 128, seed=7)
    h = hessian_of(x)
    # Shift the spectrum so the smallest eigenvalue is -5% of mean(diag): 1% damping cannot fix it, 10% can.
    lam_min = torch.linalg.eigvalsh(h.double()).min().item()
    h.diagonal().sub_(lam_min + 0.05 * h.diagonal().mean().item())
    w = realistic_weight(64, 128)
    with pytest.warns(RuntimeWarning, match="retrying with 0.1"):
        codes, scales = gptq_quantize(w, h, damp=0.01)
    assert int(codes.abs().max()) <= scheme.qmax(6)
    with pytest.warns(RuntimeWarning, match="Cholesky"):
        assert inverse_cholesky_upper(h, 0.01)[1] == pytest.approx(0.1)


def test_inverse_cholesky_upper_reports_the_damping_used():
    x = realistic_activations(512, 64, seed=8)
    h = hessian_of(x)
    u, d = inverse_cholesky_upper(h, 0.01)
    assert d == 0.01
    hd = h.double() + 0.01 * h.diagonal().mean().double() * torch.eye(64, dtype=torch.float64)
    want = torch.linalg.inv(hd)
    torch.testing.assert_close(u.double().T @ u.double(), want, rtol=1e-3, atol=1e-3 * want.abs().max().item())
    assert torch.equal(u, torch.triu(u))


def test_hopeless_hessian_raises_a_clear_error():
    h = -torch.eye(16)  # negative diagonal: damping proportional to mean(diag) only makes it worse
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(ValueError, match="not positive definite"):
            gptq_quantize(torch.randn(8, 16), h)


def test_bad_inputs_raise_value_errors():
    w = torch.randn(8, 16)
    with pytest.raises(ValueError, match=r"H must be \[cols, cols\]"):
        gptq_quantize(w, torch.eye(8))
    with pytest.raises(ValueError, match="NaN"):
        gptq_quantize(w, torch.full((16, 16), float("nan")))
    with pytest.raises(ValueError, match="bits=4"):
        gptq_quantize(w, torch.eye(16), bits=4)
    with pytest.raises(ValueError, match="block_size"):
        gptq_quantize(w, torch.eye(16), block_size=0)
    with pytest.raises(ValueError, match="sdclip"):
        gptq_quantize(w, torch.eye(16), clip="sdclip")


def test_identity_hessian_reduces_to_round_to_nearest():
    """With H = I (uncorrelated unit inputs) GPTQ has nothing to compensate: its codes are RTN's."""
    w = realistic_weight(64, 96)
    codes, scales = gptq_quantize(w, torch.eye(96), act_order=False)
    assert torch.equal(codes, scheme.quantize(w, scales))


# ---- real activations: a tiny GPT on English text ---------------------------------------------------


@contextlib.contextmanager
def reference_model_ops():
    """The model's own ops (MLP) as pure torch: under TRITON_INTERPRET=1 their kernels would run in the slow
    CPU interpreter, which these tests do not need."""
    prev = golf.ops.kernels_enabled()
    golf.ops.set_kernels_enabled(False)
    try:
        yield
    finally:
        golf.ops.set_kernels_enabled(prev)


def record_into(store: dict[str, list[torch.Tensor]]):
    """A linear_inputs callback that keeps every input as [tokens, in_features]."""
    return lambda name, x: store.setdefault(name, []).append(x.reshape(-1, x.shape[-1]))


def _english_bytes() -> torch.Tensor:
    import argparse, collections, difflib, json, logging, textwrap, unittest  # noqa: E401

    docs = []
    for mod in (argparse, collections, difflib, json, logging, textwrap, unittest):
        docs += [inspect.getdoc(getattr(mod, n)) or "" for n in sorted(dir(mod)) if not n.startswith("_")]
    return torch.tensor(list("\n".join(docs).encode("utf-8")), dtype=torch.long)


@pytest.fixture(scope="module")
def tiny_gpt():
    from golf.config import ModelConfig
    from golf.model import GPT

    torch.manual_seed(0)
    data = _english_bytes()
    cfg = ModelConfig(vocab_size=256, num_layers=2, model_dim=128, num_heads=4, num_kv_heads=2, rope_dims=16,
                      mlp_mult=2.0, attention="sdpa")
    model = GPT(cfg)
    g = torch.Generator().manual_seed(0)

    def batch(bs=4, t=96):
        starts = torch.randint(0, len(data) - t - 1, (bs,), generator=g)
        return torch.stack([data[s : s + t] for s in starts]), torch.stack([data[s + 1 : s + t + 1] for s in starts])

    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with reference_model_ops():
        for _ in range(10):  # enough to move the zero-initialised projections off zero
            loss = model(*batch())
            opt.zero_grad()
            loss.backward()
            opt.step()
    calib = [batch()[0] for _ in range(3)]
    return model, calib


def test_collect_hessians_from_gpt(tiny_gpt):
    model, calib = tiny_gpt
    model.train()
    with reference_model_ops():
        hs = collect_hessians(model, calib)
    assert model.training  # mode restored
    names = {n for n, p in model.named_parameters() if n.endswith(".weight") and p.dim() == 2}
    assert set(hs) == names  # every matrix, tok_emb included (the tied head's input)
    for name, h in hs.items():
        cols = dict(model.named_parameters())[name].shape[1]
        assert h.shape == (cols, cols) and h.dtype == torch.float32
        torch.testing.assert_close(h, h.T)
        eig = torch.linalg.eigvalsh(h.double())
        assert eig.min() > -1e-5 * eig.max(), (name, eig.min().item(), eig.max().item())  # PSD up to fp32 rounding
    # c_q, c_k, c_v share one input
    assert torch.equal(hs["blocks.0.attn.c_q.weight"], hs["blocks.0.attn.c_v.weight"])
    # the average over batches: one batch alone differs, the mean of per-batch Hessians is the same
    with reference_model_ops():
        per_batch = [collect_hessians(model, [b]) for b in calib]
    mean = sum(p["blocks.1.mlp.proj.weight"] for p in per_batch) / len(per_batch)
    torch.testing.assert_close(hs["blocks.1.mlp.proj.weight"], mean, rtol=1e-5, atol=1e-5)


def test_collect_hessians_matches_the_observed_inputs(tiny_gpt):
    model, calib = tiny_gpt
    seen: dict[str, list[torch.Tensor]] = {}
    with reference_model_ops():
        with torch.no_grad(), model.linear_inputs(record_into(seen)):
            for b in calib:
                model.logits(b)
        hs = collect_hessians(model, calib)
    for name in ("blocks.0.mlp.fc.weight", "tok_emb.weight"):
        want = sum(x.T.double() @ x.double() for x in seen[name]) / len(calib)
        torch.testing.assert_close(hs[name].double(), want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


def test_collect_hessians_under_bf16_autocast_is_fp32(tiny_gpt):
    model, calib = tiny_gpt
    with reference_model_ops():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hs = collect_hessians(model, calib[:1])
        ref = collect_hessians(model, calib[:1])
    for name, h in hs.items():
        assert h.dtype == torch.float32
        # bf16 activations (8 mantissa bits), but accumulated in fp32: close to the fp32 run, not equal
        rel = ((h - ref[name]).norm() / ref[name].norm()).item()
        assert rel < 0.05, (name, rel)


def test_collect_hessians_needs_batches(tiny_gpt):
    with pytest.raises(ValueError, match="no calibration batches"):
        collect_hessians(tiny_gpt[0], [])


def test_gptq_beats_rtn_on_gpt_activations(tiny_gpt):
    """Every matrix of a GPT trained on text, with its Hessian from real activations."""
    model, calib = tiny_gpt
    inputs: dict[str, list[torch.Tensor]] = {}
    with reference_model_ops():
        hs = collect_hessians(model, calib)
        with torch.no_grad(), model.linear_inputs(record_into(inputs)):
            model.logits(calib[0])
    params = dict(model.named_parameters())
    for name, h in hs.items():
        w = params[name].detach()
        x = torch.cat(inputs[name])
        codes, scales = gptq_quantize(w, h, bits=6, clip="sdclip", k=12.85)
        rtn = scheme.quantize(w, scales, bits=6)
        e_g, e_r = output_error(w, codes, scales, x), output_error(w, rtn, scales, x)
        print(f"{name}: GPTQ/RTN output error {e_g / e_r:.3f}")
        assert e_g < e_r, name


@pytest.mark.cuda
@pytest.mark.parametrize("rows,cols", SHAPES)
def test_gptq_on_cuda_matches_cpu(rows, cols):
    x = realistic_activations(2 * cols, cols)
    w, h = realistic_weight(rows, cols), hessian_of(x)
    c_cpu, s_cpu = gptq_quantize(w, h)
    c_gpu, s_gpu = gptq_quantize(w.cuda(), h.cuda())
    assert c_gpu.is_cuda and torch.equal(s_gpu.cpu(), s_cpu)
    frac = (c_gpu.cpu() != c_cpu).float().mean().item()
    print(f"{rows}x{cols}: codes differing CUDA vs CPU (matmul rounding, then cascades): {frac:.5f}")
    assert frac < 0.02
    assert_beats_rtn(w, x, c_gpu.cpu(), s_cpu, 6, margin=0.7)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_xtx_on_cuda_is_accurate_enough_for_gptq(dtype):
    """The tensor-core X^T X is not the fp32 product's equal: on the H200 its error against fp64 was 7-20x the
    fp32 SIMT path's (the tensor cores' fp32 accumulation is not IEEE round-to-nearest), about 2e-5 of
    max |H|. What GPTQ needs is far coarser (it adds 1 % of mean(diag H) as damping): the error stays under
    1e-4 of max |H|, and GPTQ from either Hessian gives the same codes but for rounding cascades."""
    from golf.quant.gptq import fp32_matmuls
    from golf.quant.hessian import xtx_fp32

    x = realistic_activations(16_384, 512).cuda().to(dtype)  # activations as a bf16 / fp16 model feeds them
    fast = xtx_fp32(x)
    exact = x.double().T @ x.double()
    with fp32_matmuls():
        x32 = x.float()
        slow = x32.T @ x32
    assert fast.dtype == torch.float32
    rel = ((fast.double() - exact).abs().max() / exact.abs().max()).item()
    rel_slow = ((slow.double() - exact).abs().max() / exact.abs().max()).item()
    print(f"{dtype}: X^T X relative error, tensor cores {rel:.2e}, fp32 path {rel_slow:.2e}")
    assert rel <= 1e-4
    w = realistic_weight(512, 512).cuda()
    n = x.shape[0]
    c_fast, s_fast = gptq_quantize(w, fast / n)
    c_slow, s_slow = gptq_quantize(w, slow / n)
    assert torch.equal(s_fast, s_slow)
    frac = (c_fast != c_slow).float().mean().item()
    xf = x.float()
    e_fast, e_slow = output_error(w, c_fast, s_fast, xf), output_error(w, c_slow, s_slow, xf)
    print(f"{dtype}: codes differing {frac:.5f}; output error {e_fast:.4f} vs {e_slow:.4f}")
    assert frac < 0.02
    assert e_fast <= 1.01 * e_slow


def test_xtx_on_the_cpu_is_the_fp32_product():
    from golf.quant.hessian import xtx_fp32

    x = torch.randn(300, 24).bfloat16()
    assert torch.equal(xtx_fp32(x), x.float().T @ x.float())
