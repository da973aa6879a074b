"""The record features of golf.model, each against its defining formula or property (techniques.md §2):
XSA, SmearGate v1/v2 (BOS mask), BigramHash, value embeddings, LN scale, attention gates, value residual,
and that every feature is seen by the calibration path (linear_inputs) and traces under torch.compile."""

import math

import pytest
import torch
import torch.nn.functional as F

from golf.config import ModelConfig, OptimConfig
from golf.model import GPT, CastedLinear, CausalSelfAttention, attention_gate, bigram_hash, xsa
from golf.ops._dispatch import kernels_enabled, set_kernels_enabled
from golf.optim.param_groups import assign_param_groups, default_rules

V = 64


@pytest.fixture(autouse=True)
def reference_ops():
    """The features do not depend on the fused MLP kernel (tests/kernels tests it); without a GPU it would run
    in the Triton interpreter, so these tests use the pure-torch references and stay fast."""
    before = kernels_enabled()
    set_kernels_enabled(False)
    yield
    set_kernels_enabled(before)


def tiny(**overrides) -> ModelConfig:
    cfg = ModelConfig(
        vocab_size=V, num_layers=5, model_dim=32, num_heads=4, num_kv_heads=2, mlp_mult=2.0, leaky_slope=0.5,
        rope_dims=4, attention="sdpa", gate_window=6, bigram_dim=16, ve_dim=8,
    )
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def perturbed(model, std: float = 0.1):
    """Move every parameter off its init (zero tables, zero gates, unit scales) so all paths carry signal."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * std)
    return model


def ids(b: int = 2, t: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(2, V, (b, t), generator=torch.Generator().manual_seed(seed))


# A configuration with every feature on (two-lane parallel residuals and the sparse gate), and one with
# the other variants (SmearGate v1, GPT-J, dense gate), so that each module is exercised by some test.
ALL_ON = dict(xsa_last_n=3, smear_gate="v2", bigram_vocab=31, ve_layers="1,4", ln_scale=True, skip_gates=True,
              loop_start=1, loop_end=2, num_loops=1, parallel_residual="two_lane", parallel_start_layer=3,
              attn_gate="sparse", attn_gate_scale=0.5, value_residual=True)
OTHER_VARIANTS = dict(xsa_last_n=9, smear_gate="v1", bigram_vocab=17, ve_layers="0", parallel_residual="gptj",
                      parallel_start_layer=2, attn_gate="dense", num_loops=2, loop_start=2, loop_end=2,
                      loop_skip_weights="physical")


# ---- XSA --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_heads,num_kv", [(4, 2), (6, 3), (4, 4), (4, 1)])
def test_xsa_output_is_orthogonal_to_own_value_per_kv_group(num_heads, num_kv):
    y, v = torch.randn(2, 7, num_heads, 8, dtype=torch.float64), torch.randn(2, 7, num_kv, 8, dtype=torch.float64)
    out = xsa(y, v)
    vn = F.normalize(v, dim=-1).repeat_interleave(num_heads // num_kv, dim=2)  # head h reads KV head h // g
    assert (out * vn).sum(-1).abs().max() < 1e-12
    removed = y - out  # exactly the component along the own value direction
    torch.testing.assert_close(removed, (y * vn).sum(-1, keepdim=True) * vn)


def test_xsa_on_the_last_n_physical_layers_inside_attention():
    for n, want in [(0, []), (2, [3, 4]), (5, [0, 1, 2, 3, 4]), (9, [0, 1, 2, 3, 4])]:
        model = GPT(tiny(xsa_last_n=n))
        assert [b.layer_idx for b in model.blocks if b.attn.use_xsa] == want
    model = perturbed(GPT(tiny(xsa_last_n=1)))
    seen = {}
    for i in (3, 4):
        model.blocks[i].attn.c_v.register_forward_hook(lambda m, a, out, i=i: seen.update({f"v{i}": out}))
    with model.linear_inputs(lambda name, t: seen.update({name: t})):
        model.logits(ids())
    for i, xsa_on in ((4, True), (3, False)):
        y = seen[f"blocks.{i}.attn.proj.weight"].view(2, 12, 4, 8)  # the per-head output the projection multiplies
        vn = F.normalize(seen[f"v{i}"].view(2, 12, 2, 8), dim=-1).repeat_interleave(2, dim=2)
        along = (y * vn).sum(-1).abs().max()
        assert (along < 1e-5) if xsa_on else (along > 1e-2)


# ---- SmearGate --------------------------------------------------------------------------------------------
def test_smeargate_v1_blend_after_the_norm():
    model = perturbed(GPT(tiny(smear_gate="v1")))
    g = torch.sigmoid(model.smear.gate)
    x = ids()
    normed = F.rms_norm(model.tok_emb(x), (32,))
    prev = torch.cat((torch.zeros_like(normed[:, :1]), normed[:, :-1]), dim=1)
    torch.testing.assert_close(model.embed(x), (1 - g) * normed + g * prev)
    assert torch.equal(GPT(tiny(smear_gate="v1")).smear.gate, torch.zeros(32))  # init 0: a 50/50 blend


def test_smeargate_v2_formula_and_identity_at_init():
    x = ids()
    fresh = GPT(tiny(smear_gate="v2"))
    torch.testing.assert_close(fresh.embed(x), F.rms_norm(fresh.tok_emb(x), (32,)))  # W = 0, lambda = 0
    model = perturbed(GPT(tiny(smear_gate="v2")), std=0.5)
    x[0, 5] = 1  # a BOS inside the first row
    e = model.tok_emb(x)
    want = e.clone()
    for b in range(2):
        for t in range(1, 12):
            g = model.smear_lambda[0] * torch.sigmoid(e[b, t, :6] @ model.smear_gate.weight[0])
            want[b, t] = e[b, t] + g * e[b, t - 1] * float(x[b, t] != 1)
    torch.testing.assert_close(model.embed(x), F.rms_norm(want, (32,)))


@pytest.mark.parametrize("bos_id,protected", [(1, True), (0, False)])
def test_smeargate_v2_bos_is_unaffected_by_the_previous_document(bos_id, protected):
    """Two packed streams differing only in document N: from document N+1's BOS on, x0 is identical.
    With the mask aimed at another token id (bos_id=0), the leak is visible, so the check can fail."""
    model = perturbed(GPT(tiny(smear_gate="v2", bos_id=bos_id)), std=0.5)
    a = ids(1, 16, seed=3)
    a[0, 0] = a[0, 7] = 1  # documents [0, 7) and [7, 16)
    b = a.clone()
    b[0, 1:7] = (a[0, 1:7] - 1) % (V - 2) + 2  # every token of document N changes, none becomes BOS
    ea, eb = model.embed(a), model.embed(b)
    same = torch.allclose(ea[0, 7:], eb[0, 7:], atol=0, rtol=0)
    assert same == protected
    assert not torch.allclose(ea[0, 6], eb[0, 6])  # the change itself is real


# ---- BigramHash -------------------------------------------------------------------------------------------
def test_bigram_hash_hand_computed():
    tokens = [[5, 7, 1000, 59000, 0], [1, 1, 2, 3, 4]]
    vb = 1536
    want = []
    for row in tokens:
        h = [vb - 1]
        for prev, cur in zip(row, row[1:]):
            h.append(((36313 * cur) ^ (27191 * prev)) % (vb - 1))  # Python ints: exact, no wrap-around
        want.append(h)
    got = bigram_hash(torch.tensor(tokens), vb)
    assert got.dtype == torch.int64 and got.tolist() == want
    assert got.tolist()[0][:3] == [1535, (254191 ^ 135955) % 1535, (36313000 ^ 190337) % 1535]


def test_bigram_zero_table_nonzero_projection_and_gradient():
    cfg = tiny(bigram_vocab=100, model_dim=128, num_heads=2, num_kv_heads=1, bigram_dim=64)
    model = GPT(cfg)
    big = model.bigram
    assert big.embed.weight.abs().max() == 0 and big.scale.item() == pytest.approx(0.05) and big.scale.dim() == 0
    w = big.proj.weight  # (128, 64): OrthoInit, columns orthonormal
    torch.testing.assert_close(w.T @ w, torch.eye(64), atol=1e-5, rtol=0)
    x = ids()
    torch.testing.assert_close(model.embed(x), F.rms_norm(model.tok_emb(x), (128,)))  # zero table adds 0
    model(x, x).backward()
    assert big.embed.weight.grad.abs().max() > 0  # a non-zero projection lets the table learn
    default = GPT(tiny(bigram_vocab=100, init="default"))
    assert default.bigram.proj.weight.abs().max() > 0
    perturbed(model)
    h = bigram_hash(x, 100)
    want = model.tok_emb(x) + big.scale * (big.embed.weight[h] @ big.proj.weight.T)
    torch.testing.assert_close(model.embed(x), F.rms_norm(want, (128,)))


# ---- value embeddings -------------------------------------------------------------------------------------
def test_value_embeddings_only_on_chosen_layers():
    model = perturbed(GPT(tiny(ve_layers="1,3")))
    assert model.ve_shared.embed.weight.shape == (V, 8) and model.ve_shared.proj.weight.shape == (16, 8)
    seen: dict[int, torch.Tensor | None] = {}
    for i, block in enumerate(model.blocks):
        block.attn.register_forward_pre_hook(
            lambda m, args, kwargs, i=i: seen.update({i: args[1] if len(args) > 1 else kwargs.get("v_embed")}),
            with_kwargs=True,
        )
    x = ids()
    model.logits(x)
    base = model.ve_shared.scale * (model.ve_shared.embed.weight[x] @ model.ve_shared.proj.weight.T)
    assert [i for i, v in seen.items() if v is not None] == [1, 3]
    torch.testing.assert_close(seen[1], model.ve_layer_scales[0] * base)
    torch.testing.assert_close(seen[3], model.ve_layer_scales[1] * base)
    fresh = GPT(tiny(ve_layers="1,3"))
    assert fresh.ve_shared.scale.item() == pytest.approx(0.1) and fresh.ve_layer_scales[1].item() == 1.0
    assert fresh.ve_shared.embed.weight.std().item() == pytest.approx(0.01, rel=0.2)


def test_value_embedding_is_added_to_the_values():
    cfg = tiny(ve_layers="0")
    attn = perturbed(CausalSelfAttention(cfg, "sdpa", 0))
    x, ve = torch.randn(2, 9, 32), torch.randn(2, 9, 16)
    _, raw_v = attn(x, ve, None, True)
    torch.testing.assert_close(raw_v, (attn.c_v(x) + ve).view(2, 9, 2, 8))


# ---- LN scale ---------------------------------------------------------------------------------------------
def test_ln_scale_factors_scale_the_normalized_sublayer_inputs():
    model = perturbed(GPT(tiny(ln_scale=True)))
    assert [b.ln_scale for b in model.blocks] == [1 / math.sqrt(i + 1) for i in range(5)]
    assert all(b.ln_scale == 1.0 for b in GPT(tiny()).blocks)
    rms: dict[str, float] = {}
    for i, block in enumerate(model.blocks):
        for part in ("attn", "mlp"):
            getattr(block, part).register_forward_hook(
                lambda m, a, out, key=f"{i}.{part}": rms.update({key: a[0].pow(2).mean(-1).sqrt().mean().item()})
            )
    model.logits(ids())
    for i in range(5):  # rms_norm output has RMS 1; the factor multiplies it
        assert rms[f"{i}.attn"] == pytest.approx(1 / math.sqrt(i + 1), rel=1e-4)
        assert rms[f"{i}.mlp"] == pytest.approx(1 / math.sqrt(i + 1), rel=1e-4)


# ---- attention gates --------------------------------------------------------------------------------------
def _gated_vs_plain(kind: str, **extra):
    cfg = tiny(attn_gate=kind, **extra)
    gated = perturbed(CausalSelfAttention(cfg, "sdpa", 0))
    with torch.no_grad():
        if kind != "dense":
            gated.attn_gate_w.zero_()  # back to the gate's init
    plain = CausalSelfAttention(tiny(), "sdpa", 0)
    plain.load_state_dict({k: v for k, v in gated.state_dict().items() if "attn_gate" not in k})
    return gated, plain, cfg


def test_attention_gates_at_init():
    x = torch.randn(2, 9, 32)
    gated, plain, _ = _gated_vs_plain("output")
    torch.testing.assert_close(gated(x), plain(x))  # 2 * sigmoid(0) = 1
    gated, plain, _ = _gated_vs_plain("sparse", attn_gate_scale=0.5)
    torch.testing.assert_close(gated(x), 0.5 * plain(x))  # sigmoid(0) = 0.5, the projection is linear
    assert gated.attn_gate_w.shape == (4, 6)
    gated, plain, cfg = _gated_vs_plain("dense", attn_gate_init_std=0.01)
    w = GPT(cfg).blocks[0].attn.attn_gate_w
    assert w.shape == (4, 32) and w.std().item() == pytest.approx(0.01, rel=0.5)
    g = attention_gate("dense", gated.attn_gate_w, x)
    torch.testing.assert_close(g, torch.sigmoid(x @ gated.attn_gate_w.T).unsqueeze(-1))
    fresh_g = attention_gate("dense", w, F.rms_norm(x, (32,)))
    assert (fresh_g - 0.5).abs().max() < 0.05  # small init: about one half, input-dependent
    y = {}
    plain.proj.input_observer = lambda t: y.update(y=t)
    plain(x)
    torch.testing.assert_close(gated(x), F.linear((y["y"].view(2, 9, 4, 8) * g).reshape(2, 9, 32), plain.proj.weight))


def test_sparse_gate_reads_only_the_window_and_scales_the_logit():
    w = torch.randn(4, 6)
    x = torch.randn(2, 5, 32)
    x2 = x.clone()
    x2[..., 6:] += 1.0
    g = attention_gate("sparse", w, x, scale=0.5)
    torch.testing.assert_close(g, attention_gate("sparse", w, x2, scale=0.5))
    torch.testing.assert_close(g, torch.sigmoid(0.5 * (x[..., :6] @ w.T)).unsqueeze(-1))
    torch.testing.assert_close(attention_gate("output", w, x), 2 * torch.sigmoid(x[..., :6] @ w.T).unsqueeze(-1))


# ---- value residual ---------------------------------------------------------------------------------------
def test_value_residual_mixes_the_first_layers_values():
    model = perturbed(GPT(tiny(value_residual=True)))
    assert model.blocks[0].attn.vr_lambdas is None
    assert torch.equal(GPT(tiny(value_residual=True)).blocks[2].attn.vr_lambdas, torch.tensor([0.5, 0.5]))
    plain = GPT(tiny())
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if "vr_lambdas" not in k})
    x = ids()
    with torch.no_grad():
        for b in model.blocks[1:]:
            b.attn.vr_lambdas.copy_(torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(model.logits(x), plain.logits(x))  # lambda = (0, 1): no mixing
    raw, xin, out = {}, {}, {}
    model.blocks[0].attn.c_v.register_forward_hook(lambda m, a, o: raw.update(v0=o))
    attn = model.blocks[3].attn
    attn.c_v.register_forward_hook(lambda m, a, o: raw.update(v3=o))
    attn.register_forward_pre_hook(lambda m, a: xin.update(x=a[0]))
    attn.register_forward_hook(lambda m, a, o: out.update(y=o))
    with torch.no_grad():
        attn.vr_lambdas.copy_(torch.tensor([0.3, 0.7]))
    model.logits(x)
    # Layer 3 by hand: the same attention without value residual, its values replaced by 0.3*v_0 + 0.7*v_3.
    by_hand = CausalSelfAttention(tiny(), "sdpa", 3)
    by_hand.load_state_dict({k: v for k, v in attn.state_dict().items() if "vr_lambdas" not in k})
    by_hand.c_v.register_forward_hook(lambda m, a, o: 0.3 * raw["v0"] + 0.7 * raw["v3"])
    torch.testing.assert_close(out["y"], by_hand(xin["x"]))


# ---- every forward path -----------------------------------------------------------------------------------
@pytest.mark.parametrize("features", [ALL_ON, OTHER_VARIANTS], ids=["all_on", "other_variants"])
@pytest.mark.parametrize("looping", [False, True])
def test_calibration_path_sees_every_feature_with_the_same_loss(features, looping):
    model = perturbed(GPT(tiny(**features)))
    model.set_looping(looping)
    x, y = ids(), ids(seed=2)
    plain = model(x, y)
    seen: list[str] = []
    with model.linear_inputs(lambda name, t: seen.append(name)):
        observed = model(x, y)
    torch.testing.assert_close(observed, plain, atol=1e-6, rtol=1e-6)
    linears = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, CastedLinear)}
    assert set(seen) == linears | {"tok_emb.weight"}
    feature_linears = {"bigram.proj.weight", "ve_shared.proj.weight"} | (
        {"smear_gate.weight"} if features["smear_gate"] == "v2" else set())
    assert feature_linears <= set(seen)
    # A looped block reports once per pass (GPTQ Hessians accumulate every pass).
    passes = model.encoder_layers + model.decoder_layers
    assert seen.count("blocks.2.attn.c_q.weight") == passes.count(2)


@pytest.mark.parametrize("features", [ALL_ON, OTHER_VARIANTS], ids=["all_on", "other_variants"])
def test_every_feature_traces_fullgraph_and_matches_eager(features):
    torch._dynamo.reset()
    model = perturbed(GPT(tiny(**features)))
    x, y = ids(), ids(seed=2)
    compiled = torch.compile(model, fullgraph=True, dynamic=False, backend="eager")
    for looping in (False, True, False):
        model.set_looping(looping)
        loss = compiled(x, y)
        torch.testing.assert_close(loss, model(x, y), atol=1e-5, rtol=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    torch._dynamo.reset()


def test_meta_device_construction_and_param_groups():
    with torch.device("meta"):
        model = GPT(tiny(**ALL_ON))
    assert model.num_params() == GPT(tiny(**ALL_ON)).num_params()
    groups = assign_param_groups(model.named_parameters(), default_rules(OptimConfig()))  # every param claimed
    scalar, embed = set(groups.names("adam_scalar")), set(groups.names("adam_embed"))
    assert {"bigram.embed.weight", "ve_shared.embed.weight", "tok_emb.weight"} == embed
    control = {"smear_gate.weight", "smear_lambda", "skip_gates", "skip_weights", "bigram.scale", "ve_shared.scale",
               "ve_layer_scales.0", "ve_layer_scales.1", "parallel_post_lambdas", "parallel_resid_lambdas",
               "blocks.0.attn.attn_gate_w", "blocks.1.attn.vr_lambdas"}
    assert control <= scalar


def test_features_list_and_defaults_off():
    assert GPT(tiny()).features() == ["OrthoInit"]
    assert GPT(tiny(init="default")).features() == []
    words = " | ".join(GPT(tiny(**ALL_ON)).features())
    for phrase in ("XSA on layers 2-4", "SmearGate v2", "BigramHash 31x16", "value embeddings", "LN scale",
                   "skip gates", "depth recurrence: layers 1-2 x1", "two lanes", "attention gate sparse, scale 0.5",
                   "value residual"):
        assert phrase in words, phrase
    words = " | ".join(GPT(tiny(**OTHER_VARIANTS)).features())
    for phrase in ("SmearGate v1", "GPT-J", "attention gate dense", "physical skip weights"):
        assert phrase in words, phrase


@pytest.mark.parametrize("override,key", [
    (dict(smear_gate="v3"), "model.smear_gate"),
    (dict(smear_gate="v2", gate_window=0), "model.gate_window"),
    (dict(smear_gate="v2", bos_id=V), "model.bos_id"),
    (dict(bigram_vocab=1), "model.bigram_vocab"),
    (dict(bigram_vocab=8, vocab_size=60000), "model.bigram_vocab"),
    (dict(bigram_vocab=8, bigram_dim=0), "model.bigram_dim"),
    (dict(ve_layers="9"), "model.ve_layers"),
    (dict(ve_layers="1,x"), "model.ve_layers"),
    (dict(ve_layers="1,1"), "model.ve_layers"),
    (dict(num_loops=1, loop_start=3, loop_end=2), "model.loop_end"),
    (dict(num_loops=1, loop_start=3, loop_end=5), "model.loop_end"),
    (dict(loop_enable_at=1.5), "model.loop_enable_at"),
    (dict(parallel_residual="gptj", parallel_start_layer=5), "model.parallel_start_layer"),
    (dict(attn_gate="sparse", attn_gate_scale=0.0), "model.attn_gate_scale"),
    (dict(xsa_last_n=-1), "model.xsa_last_n"),
    (dict(value_residual=True, parallel_residual="two_lane", unet_skips=False), "model.value_residual"),
])
def test_bad_feature_config_is_a_value_error(override, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        GPT(tiny(**override))
