"""GPTQ depth (techniques.md §4.7–§4.9, §4.12): per-group SDClip factors, int7/int8 GPTQ of the tied embedding
with its final-norm Hessian, round-to-nearest int8 lookup tables (bigram / value embeddings), mixed int5/int6
by Hessian sensitivity under a byte target, selective +-1 pruning and self-generated calibration text."""

from __future__ import annotations

import warnings

import pytest
import torch

from golf.config import ModelConfig, QuantConfig
from golf.model import GPT
from golf.quant import scheme
from golf.quant.export import QuantizedTensor, dequantize_state_dict, quantize_state_dict
from golf.quant.hessian import collect_hessians
from golf.quant.mixed import (
    artifact_bytes,
    generate_calibration,
    mixed_candidates,
    plan_bits,
    prune_to_budget,
    quantize_to_budget,
    sensitivities,
)
from tests.test_gptq import reference_model_ops

MCFG = ModelConfig(vocab_size=256, num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2, rope_dims=16,
                   attention="sdpa", bigram_vocab=64, bigram_dim=32, ve_layers="1", ve_dim=32)


def qcfg(**kw) -> QuantConfig:
    return QuantConfig(passthrough_numel=1024, **kw)


@pytest.fixture(scope="module")
def model_and_hessians():
    torch.manual_seed(0)
    model = GPT(MCFG)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() == 2 and not p.any():  # zero-initialised matrices: give them something to quantize
                p.normal_(0, 0.05)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, MCFG.vocab_size, (2, 64), generator=g) for _ in range(2)]
    with reference_model_ops():
        hs = collect_hessians(model, batches)
    return model, hs


def test_group_clip_factors_reach_the_entries(model_and_hessians):
    model, hs = model_and_hessians
    c = qcfg(clip="sdclip", clip_k=12.0, clip_k_attn=13.0, clip_k_mlp=11.5, embed_clip_k=14.0, embed_bits=7)
    entries = quantize_state_dict(model.state_dict(), hs, c)
    expected = {
        "blocks.0.attn.c_q.weight": 13.0, "blocks.1.attn.proj.weight": 13.0,
        "blocks.0.mlp.fc.weight": 11.5, "blocks.1.mlp.proj.weight": 11.5,
        "tok_emb.weight": 14.0, "bigram.embed.weight": 14.0, "ve_shared.embed.weight": 14.0,
        "bigram.proj.weight": 12.0,
    }
    for name, k in expected.items():
        assert entries[name].k == k, name
    assert entries["tok_emb.weight"].bits == 7 and entries["blocks.0.mlp.fc.weight"].bits == 6


@pytest.mark.parametrize("embed_bits", [7, 8])
def test_tied_embedding_gptq_uses_the_final_norm_hessian(model_and_hessians, embed_bits):
    """tok_emb is GPTQ'd on its head Hessian, and beats round-to-nearest in the Hessian-weighted error."""
    model, hs = model_and_hessians
    w = model.state_dict()["tok_emb.weight"]
    h = hs["tok_emb.weight"]
    assert h.shape == (MCFG.model_dim, MCFG.model_dim)
    c = qcfg(clip="sdclip", embed_bits=embed_bits, embed_clip_k=14.0)
    e = quantize_state_dict({"tok_emb.weight": w}, {"tok_emb.weight": h}, c)["tok_emb.weight"]
    assert e.kind == "gptq" and e.bits == embed_bits and int(e.data.abs().max()) <= scheme.qmax(embed_bits)
    rtn = scheme.fake_quant_ref(w, bits=embed_bits, clip="sdclip", k=14.0)

    def h_err(wq):
        d = (wq - w).double()
        return torch.einsum("ri,ij,rj->", d, h.double(), d).item()

    gptq_err, rtn_err = h_err(e.dequantize()), h_err(rtn)
    print(f"int{embed_bits} tok_emb: GPTQ {gptq_err:.4e} vs RTN {rtn_err:.4e}")
    assert gptq_err < rtn_err


def test_lookup_tables_are_int8_rtn_without_a_missing_hessian_warning(model_and_hessians):
    model, hs = model_and_hessians
    sd = model.state_dict()
    c = qcfg(clip="sdclip", embed_clip_k=20.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the tables used to trigger "no Hessian for ... matrices"
        entries = quantize_state_dict(sd, hs, c)
    assert "bigram.embed.weight" not in hs and "ve_shared.embed.weight" not in hs
    out = dequantize_state_dict(entries)
    for name in ("bigram.embed.weight", "ve_shared.embed.weight"):
        e = entries[name]
        assert isinstance(e, QuantizedTensor) and e.kind == "rtn" and e.bits == 8 and e.k == 20.0, name
        assert torch.equal(out[name], scheme.fake_quant_ref(sd[name], bits=8, clip="sdclip", k=20.0)), name
    for name in ("bigram.proj.weight", "blocks.0.attn.c_q.weight", "tok_emb.weight"):
        assert entries[name].kind == "gptq", name
    fp16 = quantize_state_dict(sd, hs, qcfg(table_bits=16))
    assert fp16["bigram.embed.weight"].kind == "fp16"


def test_bad_table_bits():
    with pytest.raises(ValueError, match="table_bits"):
        QuantConfig(table_bits=4).validate()


# ---------------------------------------------------------------------------------------------------------
# Mixed precision by sensitivity, selective +-1 pruning, self-generated calibration (golf.quant.mixed).

META = {"model": "tiny"}


def mixed_cfg(**kw) -> QuantConfig:
    # zstd: the searches compress many candidates, and brotli-11 made this file several times slower
    return qcfg(clip="sdclip", mixed_low_bits=5, compressor="zstd", **kw)


def plan_size(sd, hs, c, plan) -> int:
    return artifact_bytes(quantize_state_dict(sd, hs, c, bits_plan=plan), META, c)


def test_candidates_ranked_by_hessian_trace(model_and_hessians):
    model, hs = model_and_hessians
    sd = model.state_dict()
    ranked = mixed_candidates(sd, hs, mixed_cfg())
    sens = sensitivities(hs)
    assert sens["blocks.0.mlp.fc.weight"] == pytest.approx(float(hs["blocks.0.mlp.fc.weight"].diagonal().sum()))
    assert [sens[n] for n in ranked] == sorted((sens[n] for n in ranked), reverse=True)
    assert "tok_emb.weight" not in ranked and "bigram.embed.weight" not in ranked
    assert "blocks.1.attn.c_v.weight" in ranked and "bigram.proj.weight" in ranked


def test_plan_bits_is_the_largest_fitting_prefix(model_and_hessians):
    model, hs = model_and_hessians
    sd = model.state_dict()
    c = mixed_cfg()
    ranked = mixed_candidates(sd, hs, c)
    all_low = plan_size(sd, hs, c, {n: 5 for n in ranked})
    all_high = plan_size(sd, hs, c, {})
    assert all_low < all_high
    target = (all_low + all_high) // 2
    plan, entries, size = plan_bits(sd, hs, c, target_bytes=target, meta=META)
    n = sum(b == 6 for b in plan.values())
    assert 0 < n < len(ranked)
    assert plan == {name: (6 if i < n else 5) for i, name in enumerate(ranked)}  # the most sensitive stay int6
    assert size <= target and size == artifact_bytes(entries, META, c)
    one_more = {name: (6 if i <= n else 5) for i, name in enumerate(ranked)}
    assert plan_size(sd, hs, c, one_more) > target
    # assembled from per-width runs, yet identical to quantizing with the plan directly
    direct = quantize_state_dict(sd, hs, c, bits_plan=plan)
    for name, e in direct.items():
        if isinstance(e, QuantizedTensor):
            assert torch.equal(e.data, entries[name].data) and e.bits == entries[name].bits, name
    assert plan_bits(sd, hs, c, target_bytes=all_high, meta=META)[0] == {n: 6 for n in ranked}
    assert plan_bits(sd, hs, c, target_bytes=all_low - 1, meta=META)[0] == {n: 5 for n in ranked}


def test_prune_to_budget_zeroes_the_fewest_cheapest_unit_codes(model_and_hessians):
    model, hs = model_and_hessians
    c = qcfg(clip="sdclip", compressor="zstd")
    entries = quantize_state_dict(model.state_dict(), hs, c)
    full = artifact_bytes(entries, META, c)
    assert prune_to_budget(entries, c, target_bytes=full, meta=META) == (entries, 0, full)
    target = full - 300
    pruned, n, size = prune_to_budget(entries, c, target_bytes=target, meta=META)
    assert n > 0 and size <= target and size == artifact_bytes(pruned, META, c)
    changed, max_cost, min_kept = 0, 0.0, float("inf")
    for name, e in entries.items():
        if isinstance(e, QuantizedTensor) and e.kind in ("gptq", "rtn"):
            diff = pruned[name].data != e.data
            assert bool((e.data[diff].abs() == 1).all()) and bool((pruned[name].data[diff] == 0).all()), name
            changed += int(diff.sum())
            cost = e.scales.float().square()[:, None].expand_as(e.data)
            if diff.any():
                max_cost = max(max_cost, cost[diff].max().item())
            kept = (pruned[name].data.abs() == 1)
            if kept.any():
                min_kept = min(min_kept, cost[kept].min().item())
    assert changed == n
    assert max_cost <= min_kept  # the cheapest went first
    fewer, _, _ = prune_to_budget(entries, c, target_bytes=10**9, meta=META)
    assert fewer is entries


def test_prune_that_cannot_fit_raises(model_and_hessians):
    model, hs = model_and_hessians
    c = qcfg(compressor="zstd")
    entries = quantize_state_dict(model.state_dict(), hs, c)
    with pytest.raises(ValueError, match="cannot reach 1,000 bytes"):
        prune_to_budget(entries, c, target_bytes=1000, meta=META)


def test_quantize_to_budget_mixes_then_prunes(model_and_hessians):
    model, hs = model_and_hessians
    sd = model.state_dict()
    c = mixed_cfg(prune_to_budget=True)
    ranked = mixed_candidates(sd, hs, c)
    all_low = plan_size(sd, hs, c, {n: 5 for n in ranked})
    code_bytes = 1234
    budget = all_low + code_bytes - 200  # below even the all-int5 plan: pruning must finish the job
    entries, report = quantize_to_budget(sd, hs, mixed_cfg(prune_to_budget=True, budget_bytes=budget),
                                         code_bytes=code_bytes, meta=META)
    assert report.target_bytes == budget - code_bytes
    assert set(report.bits_plan.values()) == {5} and report.pruned > 0
    assert report.model_bytes <= report.target_bytes
    assert report.model_bytes == artifact_bytes(entries, META, c)


def test_generated_calibration_is_seeded_and_feeds_hessians(model_and_hessians):
    model, _ = model_and_hessians
    model.train()
    with reference_model_ops():  # the interpreted MLP kernel would dominate the time here
        a = generate_calibration(model, 3, 6, vocab_size=MCFG.vocab_size, seed=7, batch=2)
        b = generate_calibration(model, 3, 6, vocab_size=MCFG.vocab_size, seed=7, batch=2)
        other = generate_calibration(model, 3, 6, vocab_size=MCFG.vocab_size, seed=8, batch=2)
    assert model.training  # mode restored
    assert [t.shape for t in a] == [(2, 6), (1, 6)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, other))
    assert all(int(t.min()) >= 0 and int(t.max()) < MCFG.vocab_size for t in a)
    with reference_model_ops():
        hs = collect_hessians(model, a)
    assert "tok_emb.weight" in hs and "blocks.0.mlp.proj.weight" in hs
    with pytest.raises(ValueError, match="temperature=0"):
        generate_calibration(model, 1, 4, vocab_size=MCFG.vocab_size, temperature=0)


@pytest.mark.parametrize("kw,match", [(dict(mixed_low_bits=6), "mixed_low_bits"),
                                      (dict(calib_source="val"), "calib_source")])
def test_bad_mixed_config(kw, match):
    with pytest.raises(ValueError, match=match):
        QuantConfig(**kw).validate()


# -- the proxy-steered search (golf.quant.mixed._closest_fit) ------------------------------------------------
class _FakeSizes:
    """Real bytes 1000 + 10 m with m = n (sizes grow with n) or m = 5000 - n (pruning's direction); the proxy
    is off by a factor that drifts with m (a misleading size model)."""

    def __init__(self, proxy_drift: float, grows: bool):
        self.drift, self.grows, self.probes = proxy_drift, grows, []

    def _m(self, n):
        return n if self.grows else 5000 - n

    def real(self, n):
        if n not in self.probes:
            self.probes.append(n)
        return 1000 + 10 * self._m(n)

    def proxy(self, n):
        return (1000 + 10 * self._m(n)) * (1 + self.drift * (self._m(n) / 5000) ** 2)


@pytest.mark.parametrize("drift", [0.0, 0.3, -0.5])
@pytest.mark.parametrize("grows", [True, False])
def test_closest_fit_finds_the_exact_boundary_in_few_real_probes(drift, grows):
    from golf.quant.mixed import _closest_fit

    target = 1000 + 10 * 2345 + 5  # m <= 2345 fits
    sizes = _FakeSizes(drift, grows)
    fit, fail = (0, 5000) if grows else (5000, 0)
    sizes.real(fit), sizes.real(fail)
    assert _closest_fit(sizes, fit, fail, target) == (2345 if grows else 5000 - 2345)
    # an exact proxy needs two more real probes; a misleading one at most about three per halving
    bound = 4 if drift == 0.0 else 2 + 3 * 13  # 13 = ceil(log2(5000))
    assert len(sizes.probes) <= bound, sizes.probes
    if drift:
        assert len(sizes.probes) < 2 + 13, sizes.probes  # and still fewer than a plain binary search here


def test_prune_search_uses_the_proxy_not_a_binary_search(model_and_hessians, monkeypatch):
    import golf.quant.mixed as mixed

    model, hs = model_and_hessians
    c = qcfg(clip="sdclip", compressor="brotli")
    entries = quantize_state_dict(model.state_dict(), hs, c)
    full = artifact_bytes(entries, META, c)
    calls = []
    real = mixed.artifact_bytes
    monkeypatch.setattr(mixed, "artifact_bytes", lambda *a, **k: calls.append(1) or real(*a, **k))
    pruned, n, size = prune_to_budget(entries, c, target_bytes=full - 2000, meta=META)
    assert n > 0 and size <= full - 2000
    total = sum(int((e.data.abs() == 1).sum()) for e in entries.values()
                if isinstance(e, QuantizedTensor) and e.kind in ("gptq", "rtn"))
    assert len(calls) < 2 + total.bit_length(), (len(calls), total)  # fewer than a plain binary search
