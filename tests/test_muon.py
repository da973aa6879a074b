"""Muon against a hand-written reference step (techniques.md §3.2, §3.3, §3.5)."""

import math

import pytest
import torch

from golf.ops.newton_schulz import newton_schulz
from golf.optim.muon import Muon, normalize_rows, shape_scale


def reference_step(W, G, buf, *, lr, momentum, wd, nesterov, row_normalize, coefficients="ns5"):
    """§3.2 written out, in fp32 except for the bf16 NS call (the same one Muon makes)."""
    buf = momentum * buf + G
    U = G + momentum * buf if nesterov else buf
    if row_normalize:
        U = U / U.norm(dim=-1, keepdim=True).clamp_min(1e-7)
    O = newton_schulz(U, steps=5, coefficients=coefficients).float() * math.sqrt(max(1.0, W.shape[-2] / W.shape[-1]))
    W = W * (1 - lr * wd)
    return W - lr * O, buf


def run_muon(shapes, grads, **kw):
    torch.manual_seed(1)
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    opt = Muon(params, **kw)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()
    return [p.detach() for p in params], opt


SHAPES = [(6, 4), (4, 6), (5, 5)]  # tall (scale √1.5), wide, square


def tol(lr):
    """Muon rounds the scaled update to bf16 and its NS input may differ from the reference's in the last
    fp32 bit, which can flip a bf16 rounding inside NS: allow a few bf16 ulps (2^-8) of an O(1) update, times lr."""
    return lr * 2**-6


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("row_normalize", [False, True])
def test_step_matches_reference(nesterov, row_normalize):
    lr, momentum, wd = 0.5, 0.9, 0.8  # lr·wd large so the WD-before-update order is visible
    grads = [[torch.randn(s) for s in SHAPES] for _ in range(3)]
    got, _ = run_muon(SHAPES, grads, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=wd,
                      row_normalize=row_normalize)
    torch.manual_seed(1)
    Ws = [torch.randn(s) for s in SHAPES]
    bufs = [torch.zeros(s) for s in SHAPES]
    for step_grads in grads:
        for i, G in enumerate(step_grads):
            Ws[i], bufs[i] = reference_step(Ws[i], G, bufs[i], lr=lr, momentum=momentum, wd=wd, nesterov=nesterov,
                                            row_normalize=row_normalize)
    for g, w in zip(got, Ws):
        torch.testing.assert_close(g, w, rtol=0, atol=tol(lr))


def test_reference_distinguishes_the_variants():
    """The tolerance above is far tighter than the effect of each rule, so a wrong order or flag fails."""
    torch.manual_seed(2)
    W, G, buf = torch.randn(6, 4), torch.randn(6, 4), torch.randn(6, 4)
    kw = dict(lr=0.5, momentum=0.9, wd=0.8, row_normalize=False)
    base, _ = reference_step(W, G, buf, nesterov=True, **kw)
    plain, _ = reference_step(W, G, buf, nesterov=False, **kw)
    buf2 = 0.9 * buf + G
    O = newton_schulz(G + 0.9 * buf2).float() * math.sqrt(1.5)
    wd_after = (W - 0.5 * O) * (1 - 0.5 * 0.8)
    unscaled = W * (1 - 0.4) - 0.5 * O / math.sqrt(1.5)
    for other in (plain, wd_after, unscaled):
        assert (base - other).abs().max() > 5 * tol(0.5)


def test_bank_equals_per_matrix_params():
    torch.manual_seed(3)
    bank0 = torch.randn(3, 8, 4)
    grads = [torch.randn(3, 8, 4) for _ in range(2)]
    bank = torch.nn.Parameter(bank0.clone())
    singles = [torch.nn.Parameter(bank0[i].clone()) for i in range(3)]
    kw = dict(lr=0.1, momentum=0.95, weight_decay=0.1, row_normalize=True)
    opt_bank, opt_single = Muon([bank], **kw), Muon(singles, **kw)
    for G in grads:
        bank.grad = G.clone()
        for i, p in enumerate(singles):
            p.grad = G[i].clone()
        opt_bank.step()
        opt_single.step()
    # batched and per-matrix bf16 matmuls may round differently
    torch.testing.assert_close(bank.detach(), torch.stack([p.detach() for p in singles]), rtol=0, atol=tol(0.1))
    assert not torch.equal(bank.detach(), bank0)


def test_momentum_set_per_step_through_param_groups():
    torch.manual_seed(4)
    p = torch.nn.Parameter(torch.randn(4, 4))
    opt = Muon([p], lr=0.01, momentum=0.85)
    G1, G2 = torch.randn(4, 4), torch.randn(4, 4)
    p.grad = G1
    opt.step()
    torch.testing.assert_close(opt.state[p]["momentum_buffer"], G1)
    opt.param_groups[0]["momentum"] = 0.5
    p.grad = G2
    opt.step()
    torch.testing.assert_close(opt.state[p]["momentum_buffer"], 0.5 * G1 + G2)


def test_param_without_grad_is_untouched():
    p, q = torch.nn.Parameter(torch.randn(4, 4)), torch.nn.Parameter(torch.randn(4, 4))
    before = q.detach().clone()
    opt = Muon([p, q], lr=0.1, momentum=0.9, weight_decay=0.5)
    p.grad = torch.randn(4, 4)
    opt.step()
    assert torch.equal(q.detach(), before)
    assert q not in opt.state


@pytest.mark.parametrize("shape", [(5,), (), (2, 3, 4, 5)])
def test_rejects_non_matrix_params(shape):
    with pytest.raises(ValueError, match=r"shape \(.*\).*Adam group"):
        Muon([torch.nn.Parameter(torch.zeros(shape))], lr=0.01, momentum=0.9)


def test_rejection_names_the_parameter_when_named():
    group = {"params": [torch.nn.Parameter(torch.zeros(4, 4)), torch.nn.Parameter(torch.zeros(4))],
             "param_names": ["blocks.0.attn.c_q.weight", "blocks.0.attn.q_gain"]}
    with pytest.raises(ValueError, match="blocks.0.attn.q_gain"):
        Muon([group], lr=0.01, momentum=0.9)


@pytest.mark.parametrize("kw", [dict(coefficients="ns7"), dict(momentum=1.0), dict(lr=-1.0), dict(ns_steps=-1),
                                dict(coefficients="polar_express", ns_steps=6)])
def test_rejects_bad_settings(kw):
    args = dict(lr=0.01, momentum=0.9) | kw
    with pytest.raises(ValueError):
        Muon([torch.nn.Parameter(torch.zeros(4, 4))], **args)


def test_polar_express_matches_reference():
    torch.manual_seed(5)
    grads = [[torch.randn(s) for s in SHAPES]]
    got, _ = run_muon(SHAPES, grads, lr=0.2, momentum=0.9, coefficients="polar_express")
    torch.manual_seed(1)
    for i, s in enumerate(SHAPES):
        W = torch.randn(s)
        ref, _ = reference_step(W, grads[0][i], torch.zeros(s), lr=0.2, momentum=0.9, wd=0.0, nesterov=True,
                                row_normalize=False, coefficients="polar_express")
        torch.testing.assert_close(got[i], ref, rtol=0, atol=tol(0.2))


def test_shape_scale_values():
    assert shape_scale((512, 512)) == 1.0
    assert shape_scale((256, 512)) == 1.0
    assert shape_scale((512, 1536)) == 1.0
    assert shape_scale((2048, 512)) == 2.0
    assert shape_scale((1536, 512)) == pytest.approx(math.sqrt(3))
    assert shape_scale((11, 2048, 512)) == 2.0


def test_normalize_rows():
    U = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1e-9, 0.0]]).to(torch.bfloat16)
    out = normalize_rows(U)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), torch.tensor([[0.6, 0.8], [0.0, 0.0], [1e-2, 0.0]]), rtol=1e-2, atol=1e-3)
