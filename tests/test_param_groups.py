"""Parameter-group rules (techniques.md §3.1, §2.8) and build_optimizers on a model with the real state-dict names."""

import io
import re

import pytest
import torch
from torch import nn

from golf.config import OptimConfig
from golf.optim import GroupSpec, Rule, assign_param_groups, build_optimizers, clip_grad_norm, default_rules, describe

D, L, V = 16, 4, 32


class Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_q, self.c_k, self.c_v = nn.Linear(D, D, bias=False), nn.Linear(D, D // 2, bias=False), nn.Linear(
            D, D // 2, bias=False)
        self.proj = nn.Linear(D, D, bias=False)
        self.q_gain = nn.Parameter(torch.full((2,), 1.5))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.proj = nn.Linear(D, 2 * D, bias=False), nn.Linear(2 * D, D, bias=False)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn, self.mlp = Attn(), MLP()
        self.attn_scale = nn.Parameter(torch.ones(D))
        self.mlp_scale = nn.Parameter(torch.ones(D))
        self.resid_mix = nn.Parameter(torch.stack([torch.ones(D), torch.zeros(D)]))  # (2, D): 2-D control


class TinyGPT(nn.Module):
    """The parameter names of golf's GPT (and the records'), at toy sizes."""

    def __init__(self):
        super().__init__()
        self.tok_emb = nn.Embedding(V, D)
        self.blocks = nn.ModuleList(Block() for _ in range(L))
        self.skip_weights = nn.Parameter(torch.ones(L // 2, D))  # 2-D control

    def forward(self, idx):
        x = self.tok_emb(idx)
        for b in self.blocks:
            mix = b.resid_mix[0] * x + b.resid_mix[1]
            h = b.attn.proj(b.attn.c_q(mix) * b.attn.q_gain.repeat_interleave(D // 2))
            h = h + torch.cat([b.attn.c_k(mix), b.attn.c_v(mix)], -1)
            x = x + b.attn_scale * h
            x = x + b.mlp_scale * b.mlp.proj(torch.relu(b.mlp.fc(x)) ** 2)
        x = x * self.skip_weights.sum(0)
        return x @ self.tok_emb.weight.T


MATRIX_NAMES = {f"blocks.{i}.{m}.weight" for i in range(L)
                for m in ("attn.c_q", "attn.c_k", "attn.c_v", "attn.proj", "mlp.fc", "mlp.proj")}
SCALAR_NAMES = {f"blocks.{i}.{s}" for i in range(L) for s in ("attn.q_gain", "attn_scale", "mlp_scale", "resid_mix")}
SCALAR_NAMES |= {"skip_weights"}


def cfg(**kw):
    c = OptimConfig(matrix_lr=0.02, scalar_lr=0.03, embed_lr=0.05, muon_wd=0.04, embed_wd=0.01, scalar_wd=0.02)
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def test_default_rules_group_every_record_name():
    groups = assign_param_groups(TinyGPT().named_parameters(), default_rules(cfg()))
    assert set(groups.names("muon")) == MATRIX_NAMES
    assert set(groups.names("adam_scalar")) == SCALAR_NAMES
    assert groups.names("adam_embed") == ["tok_emb.weight"]
    s = groups.summary()
    assert s["muon"] == {"kind": "muon", "params": 6 * L, "numel": L * (D * D * 2 + D * D + 4 * D * D), "lr": 0.02,
                         "wd": 0.04}
    assert (s["adam_scalar"]["params"], s["adam_scalar"]["lr"], s["adam_scalar"]["wd"]) == (4 * L + 1, 0.03, 0.02)
    assert (s["adam_embed"]["params"], s["adam_embed"]["numel"], s["adam_embed"]["lr"]) == (1, V * D, 0.05)


@pytest.mark.parametrize("prefix", ["_orig_mod.", "module."])
def test_rules_work_on_wrapped_names(prefix):
    named = [(prefix + n, p) for n, p in TinyGPT().named_parameters()]
    groups = assign_param_groups(named, default_rules(cfg()))
    assert set(groups.names("muon")) == {prefix + n for n in MATRIX_NAMES}


@pytest.mark.parametrize("name, shape, group", [
    ("qo_bank", (4, 16, 16), "muon"),
    ("bigram.embed.weight", (64, 16), "adam_embed"),
    ("bigram.scale", (), "adam_scalar"),
    ("bigram.proj.weight", (16, 8), "muon"),
    ("ve_layer_scales", (2,), "adam_scalar"),
    ("ve_shared.embed.weight", (64, 8), "adam_embed"),
    ("blocks.3.attn.attn_gate_w", (8, 16), "adam_scalar"),
    ("smear.gate", (16,), "adam_scalar"),
    ("skip_gates", (2, 16), "adam_scalar"),
    ("parallel_post_lambdas", (3, 2), "adam_scalar"),
    ("blocks.0.norm.weight", (16,), "adam_scalar"),
])
def test_default_rules_for_record_extras(name, shape, group):
    p = nn.Parameter(torch.zeros(shape))
    assert assign_param_groups([(name, p)], default_rules(cfg())).names(group) == [name]


def test_unclaimed_parameters_are_named():
    named = list(TinyGPT().named_parameters()) + [("lm_head.weight", nn.Parameter(torch.zeros(V, D))),
                                                  ("mystery", nn.Parameter(torch.zeros(3, 3, 3, 3)))]
    with pytest.raises(ValueError, match=r"lm_head\.weight \(32, 16\), mystery \(3, 3, 3, 3\)") as e:
        assign_param_groups(named, default_rules(cfg()))
    assert "blocks" not in str(e.value)


def test_first_match_wins_and_frozen_params_are_skipped():
    head = GroupSpec("head", "adam", 0.008)
    rules = [Rule(head, pattern=r"^lm_head\.")] + default_rules(cfg())
    frozen = nn.Parameter(torch.zeros(2, 2), requires_grad=False)
    named = [("lm_head.weight", nn.Parameter(torch.zeros(V, D))), ("blocks.0.attn.c_q.weight", nn.Parameter(
        torch.zeros(D, D))), ("frozen_thing", frozen)]
    groups = assign_param_groups(named, rules)
    assert groups.names("head") == ["lm_head.weight"] and groups.names("muon") == ["blocks.0.attn.c_q.weight"]
    assert groups.of_kind("adam") == ["head"]  # empty Adam groups are not built
    assert describe(rules)[0].startswith("0: name ~ /^lm_head\\./ -> head (adam")


def test_bad_rules_are_rejected():
    with pytest.raises(ValueError, match="pattern, a predicate"):
        Rule(GroupSpec("x", "adam", 0.1))
    with pytest.raises(ValueError, match="bad regex"):
        Rule(GroupSpec("x", "adam", 0.1), pattern="(")
    with pytest.raises(ValueError, match="kind='sgd'"):
        GroupSpec("x", "sgd", 0.1)
    with pytest.raises(ValueError, match="disagree on group 'x'"):
        assign_param_groups([], [Rule(GroupSpec("x", "adam", 0.1), pattern="a"),
                                 Rule(GroupSpec("x", "adam", 0.2), pattern="b")])


def _train(opts, model, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, V, (2, 8), generator=g)
        loss = nn.functional.cross_entropy(model(idx).reshape(-1, V), idx.reshape(-1))
        loss.backward()
        opts.step()
        opts.zero_grad(set_to_none=True)


def test_build_optimizers_groups_lrs_and_summary():
    model = TinyGPT()
    opts = build_optimizers(model, cfg(adam_beta2=0.99))
    assert {id(p) for g in opts.muon.param_groups for p in g["params"]} == {
        id(p) for n, p in model.named_parameters() if n in MATRIX_NAMES}
    assert set(opts.adams) == {"adam_embed", "adam_scalar"}
    ae = opts.adams["adam_embed"].param_groups[0]
    assert (ae["lr"], ae["weight_decay"], ae["betas"], ae["eps"], ae["fused"]) == (0.05, 0.01, (0.9, 0.99), 1e-8, False)
    opts.set_lr_scale(0.5)
    assert opts.muon.param_groups[0]["lr"] == 0.01 and opts.adams["adam_scalar"].param_groups[0]["lr"] == 0.015
    assert ae["lr"] == 0.025 and ae["base_lr"] == 0.05
    opts.set_muon_momentum(0.9)
    assert opts.muon.param_groups[0]["momentum"] == 0.9
    s = opts.summary()
    assert s["groups"]["muon"]["params"] == 6 * L and s["muon"]["momentum"] == 0.9 and s["adam"]["fused"] is False


def test_adamw_weight_decay_uses_the_scheduled_lr():
    model = TinyGPT()
    opts = build_optimizers(model, cfg(embed_wd=0.5))
    opts.set_lr_scale(0.2)
    w0 = model.tok_emb.weight.detach().clone()
    model.tok_emb.weight.grad = torch.zeros_like(w0)  # zero grad: AdamW's step is the decoupled decay alone
    opts.adams["adam_embed"].step()
    torch.testing.assert_close(model.tok_emb.weight.detach(), w0 * (1 - 0.05 * 0.2 * 0.5))


def test_state_dict_round_trip_resumes_identically():
    torch.manual_seed(0)
    a = TinyGPT()
    b = TinyGPT()
    b.load_state_dict(a.state_dict())
    oa, ob = build_optimizers(a, cfg()), build_optimizers(b, cfg())
    _train(oa, a, 2)
    b.load_state_dict(a.state_dict())
    # through bytes, as a checkpoint would: weights_only loading must accept the state
    buf = io.BytesIO()
    torch.save(oa.state_dict(), buf)
    ob.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    _train(oa, a, 2, seed=1)
    _train(ob, b, 2, seed=1)
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), n
    with pytest.raises(ValueError, match="other parameter groups"):
        ob.load_state_dict({"muon": oa.state_dict()["muon"]})


def test_muon_settings_reach_the_optimizer():
    opts = build_optimizers(TinyGPT(), cfg(muon_ns_steps=3, muon_nesterov=False, muon_momentum=0.97))
    g = opts.muon.param_groups[0]
    assert (g["ns_steps"], g["nesterov"], g["momentum"], g["lr"], g["weight_decay"]) == (3, False, 0.97, 0.02, 0.04)


def test_muon_variant_fields_reach_the_optimizer():
    c = cfg()
    c.muon_coefficients, c.muon_row_normalize = "polar_express", True  # read when OptimConfig defines them
    g = build_optimizers(TinyGPT(), c).muon.param_groups[0]
    assert (g["coefficients"], g["row_normalize"]) == ("polar_express", True)


def test_clip_grad_norm():
    p = nn.Parameter(torch.zeros(4))
    q = nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([3.0, 0.0, 0.0, 0.0])
    q.grad = torch.tensor([0.0, 4.0])
    assert clip_grad_norm([p, q], 0.0) is None and p.grad[0] == 3.0
    norm = clip_grad_norm([p, q, nn.Parameter(torch.zeros(1))], 1.0)
    assert norm.item() == pytest.approx(5.0)
    torch.testing.assert_close(torch.cat([p.grad, q.grad]), torch.tensor([0.6, 0, 0, 0, 0, 0.8]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=re.escape("max_norm=-1")):
        clip_grad_norm([p], -1)
