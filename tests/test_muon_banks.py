"""Muon's optimizer-level parameter banks, NorMuon, shape scaling and the builder's Muon options.

Banks must not change the math: one batched Newton–Schulz call per bank gives each matrix what a call of its
own gives (exactly, with the CPU reference), so banked Muon equals per-matrix Muon (`banks=False`) bit for bit.
"""

import math

import pytest
import torch

from golf.config import OptimConfig
from golf.ops.newton_schulz import newton_schulz
from golf.optim import build_optimizers
from golf.optim.banks import build_banks
from golf.optim.muon import Muon, normuon_rescale

# A scaled-down core11: q/o (32,32) x4, k/v (16,32) x4, up (64,32) x2, down (32,64) x2, and a 3-D parameter whose
# matrices join the q/o bank.
SHAPES = [(32, 32), (16, 32), (16, 32), (32, 32), (64, 32), (32, 64),
          (32, 32), (16, 32), (16, 32), (32, 32), (64, 32), (32, 64), (2, 32, 32)]


def make_params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g) * 0.1) for s in SHAPES]


def make_grads(steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=g) for s in SHAPES] for _ in range(steps)]


def run(grads, skip=(), **kw):
    params = make_params()
    opt = Muon(params, **kw)
    for step_grads in grads:
        for i, (p, gr) in enumerate(zip(params, step_grads)):
            p.grad = None if i in skip else gr.clone()
        opt.step()
    return [p.detach().clone() for p in params], opt


def test_banks_group_by_shape_largest_first():
    params = make_params()
    names = [f"p{i}" for i in range(len(params))]
    banks = build_banks([{"params": params, "param_names": names}])
    assert [(b.size, b.shape) for b in banks] == [(6, (32, 32)), (2, (64, 32)), (2, (32, 64)), (4, (16, 32))]
    assert [s.name for s in banks[0].slots] == ["p0", "p3", "p6", "p9", "p12[0]", "p12[1]"]
    assert banks[1].numel == banks[2].numel  # a tie keeps the order of first appearance
    per_param = build_banks([{"params": params}], enabled=False)
    assert len(per_param) == len(params) and sum(b.size for b in per_param) == 14
    two_groups = build_banks([{"params": params[:4]}, {"params": params[4:]}])
    assert [(b.group, b.size, b.shape) for b in two_groups] == [
        (1, 2, (64, 32)), (1, 2, (32, 64)), (1, 4, (32, 32)), (0, 2, (32, 32)), (0, 2, (16, 32)), (1, 2, (16, 32))]


def test_bank_shards_cover_every_matrix_once():
    bank = build_banks([{"params": [torch.nn.Parameter(torch.zeros(7, 4, 4))]}])[0]
    for world_size in (1, 2, 3, 8):
        owned = [j for r in range(world_size) for j in bank.shard(r, world_size)]
        assert owned == list(range(7))
        assert all(len(bank.shard(r, world_size)) <= bank.shard_size(world_size) for r in range(world_size))
    assert bank.shard_size(3) == 3 and list(bank.shard(2, 3)) == [6] and list(bank.shard(7, 8)) == []


@pytest.mark.parametrize("kw", [
    dict(row_normalize=True, weight_decay=0.1),
    dict(nesterov=False, coefficients="polar_express"),
    dict(normuon=True, normuon_beta2=0.9, row_normalize=True),
    dict(shape_scaling=False, weight_decay=0.2),
])
def test_banked_equals_per_matrix_muon(kw):
    grads = make_grads(3)
    banked, opt = run(grads, lr=0.05, momentum=0.9, **kw)
    plain, _ = run(grads, lr=0.05, momentum=0.9, banks=False, **kw)
    assert len(opt.banks) == 4
    for b, p in zip(banked, plain):
        assert torch.equal(b, p)
    assert not torch.equal(banked[0], make_params()[0].detach())


def test_missing_grad_inside_a_bank():
    grads = make_grads(2)
    banked, opt = run(grads, skip=(3,), lr=0.05, momentum=0.9, weight_decay=0.5)
    plain, _ = run(grads, skip=(3,), lr=0.05, momentum=0.9, weight_decay=0.5, banks=False)
    assert torch.equal(banked[3], make_params()[3].detach())
    assert opt.param_groups[0]["params"][3] not in opt.state
    for b, p in zip(banked, plain):
        assert torch.equal(b, p)


def test_one_step_matches_the_formula():
    """One banked step against §3.2 written out per matrix (momentum 0 start, Nesterov, MuonEq-R, wd)."""
    grads = make_grads(1)
    lr, mu, wd = 0.05, 0.9, 0.1
    got, _ = run(grads, lr=lr, momentum=mu, weight_decay=wd, row_normalize=True)
    for W, G, out in zip(make_params(), grads[0], got):
        U = G + mu * G  # buf = G after one step from zero
        U = U / U.norm(dim=-1, keepdim=True).clamp_min(1e-7)
        O = newton_schulz(U).float() * math.sqrt(max(1.0, W.shape[-2] / W.shape[-1]))
        torch.testing.assert_close(out, W.detach() * (1 - lr * wd) - lr * O, rtol=0, atol=lr * 2**-6)


def test_normuon_follows_the_paper_and_keeps_muons_norm():
    torch.manual_seed(3)
    O = newton_schulz(torch.randn(3, 16, 24))  # [n, rows, cols] bf16
    v = torch.rand(3, 16)
    beta2 = 0.95
    v_expect = beta2 * v + (1 - beta2) * O.float().square().mean(-1)
    hat = O.float() / (v_expect + 1e-8).sqrt()[..., None]
    expect = hat * (O.float().norm(dim=(1, 2)) / hat.norm(dim=(1, 2)))[:, None, None]
    out = normuon_rescale(O, v, beta2)
    torch.testing.assert_close(v, v_expect, rtol=1e-6, atol=0)
    torch.testing.assert_close(out.float(), expect, rtol=2**-7, atol=0)
    torch.testing.assert_close(out.float().norm(dim=(1, 2)), O.float().norm(dim=(1, 2)), rtol=1e-2, atol=0)
    assert (out.float() - O.float()).abs().max() > 0.05  # it does change the update
    zero = normuon_rescale(torch.zeros(2, 4, 4, dtype=torch.bfloat16), torch.zeros(2, 4), beta2)
    assert torch.equal(zero, torch.zeros_like(zero))  # padding matrices of sharded banks stay zero, no NaN


def test_normuon_state_checkpoint_round_trip():
    grads = make_grads(3)
    kw = dict(lr=0.05, momentum=0.9, normuon=True, row_normalize=True)
    straight, _ = run(grads, **kw)
    params = make_params()
    opt = Muon(params, **kw)
    for step_grads in grads[:2]:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()
    assert opt.state[params[0]]["normuon_v"].shape == (32,)
    assert opt.state[params[12]]["normuon_v"].shape == (2, 32)
    saved = opt.state_dict()
    resumed = Muon(params, **kw)
    resumed.load_state_dict(saved)
    for p, g in zip(params, grads[2]):
        p.grad = g.clone()
    resumed.step()
    for p, s in zip(params, straight):
        assert torch.equal(p.detach(), s)


def test_shape_scaling_switch():
    W = torch.nn.Parameter(torch.zeros(64, 16))
    G = torch.randn(64, 16)
    for scaling, factor in ((True, 2.0), (False, 1.0)):
        W.data.zero_()
        W.grad = G.clone()
        Muon([W], lr=1.0, momentum=0.0, shape_scaling=scaling).step()
        torch.testing.assert_close(W.detach(), -factor * newton_schulz(G).float(), rtol=0, atol=0)


def test_rejects_bad_options():
    p = torch.nn.Parameter(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="distributed"):
        Muon([p], lr=0.1, momentum=0.9, distributed="ring")
    with pytest.raises(ValueError, match="normuon_beta2"):
        Muon([p], lr=0.1, momentum=0.9, normuon_beta2=1.0)


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 8, bias=False)
        self.attn_scale = torch.nn.Parameter(torch.ones(8))


class _TinyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList(_Block() for _ in range(3))


def test_builder_passes_the_muon_options_of_the_config():
    cfg = OptimConfig(muon_normuon=True, muon_normuon_beta2=0.9, muon_shape_scaling=False, muon_banks=False,
                      muon_distributed="sharded")
    built = build_optimizers(_TinyModel(), cfg)
    g = built.muon.param_groups[0]
    assert (g["normuon"], g["normuon_beta2"], g["shape_scaling"]) == (True, 0.9, False)
    assert built.muon.distributed == "sharded" and built.muon.use_banks is False
    summary = built.summary()["muon"]
    assert summary["distributed"] == "sharded" and summary["banks"] == ["1 x 8x8"] * 3
    assert build_optimizers(_TinyModel(), OptimConfig()).summary()["muon"]["banks"] == ["3 x 8x8"]


def test_optimizers_step_launches_reduce_scatters_before_adam():
    model = _TinyModel()
    built = build_optimizers(model, OptimConfig())
    calls = []
    built.muon.launch_reduce_scatters = lambda: calls.append("launch")
    built.muon.step = lambda: calls.append("muon")
    for name, adam in built.adams.items():
        adam.step = lambda name=name: calls.append(name)
    built.step()
    assert calls[0] == "launch" and calls[-1] == "muon" and len(calls) == 2 + len(built.adams)


@pytest.mark.cuda
def test_gpu_banked_equals_per_matrix_muon_to_bf16_rounding():
    """On the GPU the batched kernels may round a matrix differently from a call of its own."""
    grads = [[g.cuda() for g in step] for step in make_grads(2)]
    kw = dict(lr=0.05, momentum=0.9, row_normalize=True, weight_decay=0.1)
    results = []
    for banks in (True, False):
        params = [torch.nn.Parameter(p.detach().cuda()) for p in make_params()]
        opt = Muon(params, banks=banks, **kw)
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                p.grad = g.clone()
            opt.step()
        results.append([p.detach() for p in params])
    for b, p in zip(*results):
        torch.testing.assert_close(b, p, rtol=0, atol=0.05 * 2**-6)
