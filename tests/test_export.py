"""golf.quant.export: state dict <-> quantized entries, by the rules of techniques.md §4.1–§4.3, §4.7."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from golf.config import QuantConfig
from golf.quant import scheme
from golf.quant.export import QuantizedTensor, dequantize_state_dict, quantize_state_dict
from tests.test_gptq import hessian_of, realistic_activations, realistic_weight


def state_dict(dtype=torch.float32) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {
        "tok_emb.weight": (torch.randn(320, 256) * 0.05).to(dtype),
        "blocks.0.attn.c_q.weight": realistic_weight(256, 256).to(dtype),
        "blocks.0.mlp.fc.weight": realistic_weight(512, 256, seed=2).to(dtype),
        "blocks.0.attn_scale": torch.rand(256).to(dtype),
        "blocks.0.resid_mix": torch.randn(2, 256).to(dtype),
        "step": torch.tensor(7, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
    }


def cfg(**kw) -> QuantConfig:
    return QuantConfig(passthrough_numel=1024, **kw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bits,embed_bits", [(5, 8), (6, 7), (7, 6), (8, 5)])
@pytest.mark.parametrize("clip", ["absmax", "absmax_floor", "sdclip"])
def test_rtn_roundtrip_equals_scheme_fake_quant(clip, bits, embed_bits, dtype):
    sd = state_dict(dtype)
    c = cfg(bits=bits, embed_bits=embed_bits, clip=clip, gptq=False)
    out = dequantize_state_dict(quantize_state_dict(sd, None, c))
    for name in ("tok_emb.weight", "blocks.0.attn.c_q.weight", "blocks.0.mlp.fc.weight"):
        is_emb = name == "tok_emb.weight"
        b = embed_bits if is_emb else bits
        k = (c.embed_clip_k if is_emb else c.clip_k) if clip == "sdclip" else None
        assert out[name].dtype == torch.float32
        # bit for bit: the exported weight is what QAT's fake-quant computes, in fp32 and in the original dtype
        assert torch.equal(out[name], scheme.fake_quant_ref(sd[name].float(), bits=b, clip=clip, k=k)), name
        assert torch.equal(out[name].to(dtype), scheme.fake_quant_ref(sd[name], bits=b, clip=clip, k=k)), name


def test_entry_kinds_follow_the_rules():
    sd = state_dict()
    x = realistic_activations(512, 256)
    hessians = {"blocks.0.attn.c_q.weight": hessian_of(x)}
    with pytest.warns(RuntimeWarning, match=r"no Hessian for 2 matrices.*tok_emb.weight"):
        e = quantize_state_dict(sd, hessians, cfg(bits=6, embed_bits=8, clip="sdclip"))
    q = e["blocks.0.attn.c_q.weight"]
    assert isinstance(q, QuantizedTensor) and q.kind == "gptq" and q.bits == 6 and q.clip == "sdclip"
    assert q.k == 12.85 and q.shape == (256, 256) and q.dtype == "float32"
    assert q.data.dtype == torch.int8 and q.scales.dtype == torch.float16 and q.scales.shape == (256,)
    emb = e["tok_emb.weight"]
    assert emb.kind == "rtn" and emb.bits == 8 and emb.k == 20.0  # no Hessian: round-to-nearest
    assert e["blocks.0.mlp.fc.weight"].kind == "rtn"
    for name in ("blocks.0.attn_scale", "blocks.0.resid_mix"):  # small float tensors: fp16
        assert e[name].kind == "fp16" and e[name].data.dtype == torch.float16 and e[name].bits == 16
    assert torch.equal(e["step"], sd["step"]) and torch.equal(e["mask"], sd["mask"])  # non-float: as-is
    assert list(e) == list(sd)


def test_gptq_entries_match_gptq_quantize_and_beat_rtn():
    sd = state_dict()
    x = realistic_activations(512, 256)
    h = hessian_of(x)
    c = cfg(bits=6, clip="absmax")
    e = quantize_state_dict(sd, {"blocks.0.attn.c_q.weight": h, "blocks.0.mlp.fc.weight": h,
                                 "tok_emb.weight": h}, c)
    for name in ("blocks.0.attn.c_q.weight", "blocks.0.mlp.fc.weight"):
        w = sd[name]
        got = dequantize_state_dict({name: e[name]})[name]
        rtn = scheme.fake_quant_ref(w, bits=6)
        assert ((w - got) @ x.T).norm() < ((w - rtn) @ x.T).norm()
    assert e["tok_emb.weight"].bits == 8  # quant.embed_bits


def test_gptq_off_ignores_hessians():
    sd = state_dict()
    h = hessian_of(realistic_activations(512, 256))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        e = quantize_state_dict(sd, {"blocks.0.attn.c_q.weight": h}, cfg(gptq=False))
    assert e["blocks.0.attn.c_q.weight"].kind == "rtn"


def test_fp16_embedding_and_dequantized_shapes():
    sd = state_dict(torch.bfloat16)
    sd["tok_emb.weight"] = torch.randn(4, 80, 64)  # 3-D and large: fp16 with a warning
    with pytest.warns(RuntimeWarning, match="3-D float tensor"):
        e = quantize_state_dict(sd, None, cfg(embed_bits=16, gptq=False))
    assert e["tok_emb.weight"].kind == "fp16"
    e2 = quantize_state_dict({"tok_emb.weight": torch.randn(320, 256)}, None, cfg(embed_bits=16, gptq=False))
    assert e2["tok_emb.weight"].kind == "fp16" and e2["tok_emb.weight"].data.shape == (320, 256)
    out = dequantize_state_dict(e)
    for name, t in sd.items():
        assert out[name].shape == t.shape
        if t.is_floating_point():
            assert out[name].dtype == torch.float32
            assert e[name].dtype == str(t.dtype).removeprefix("torch.")
        else:
            assert out[name].dtype == t.dtype


def test_values_beyond_fp16_stay_fp32():
    sd = {"big": torch.tensor([1.0, 1e6])}
    with pytest.warns(RuntimeWarning, match="fp16's range"):
        e = quantize_state_dict(sd, None, cfg())
    assert e["big"].kind == "fp32" and torch.equal(dequantize_state_dict(e)["big"], sd["big"])


def test_bad_inputs():
    with pytest.raises(ValueError, match="quant.bits"):
        quantize_state_dict(state_dict(), None, cfg(bits=4))
    with pytest.raises(ValueError, match="not a tensor"):
        quantize_state_dict({"x": 3.0}, None, cfg())
    h_bad = torch.eye(100)
    with pytest.raises(ValueError, match=r"blocks.0.attn.c_q.weight: gptq_quantize: H must be"):
        quantize_state_dict(state_dict(), {"blocks.0.attn.c_q.weight": h_bad}, cfg())
    with pytest.raises(ValueError, match="expected QuantizedTensor or Tensor"):
        dequantize_state_dict({"x": [1, 2]})


def test_gpt_state_dict_roundtrip_loads_into_a_fresh_model():
    """The whole path on golf's model: Hessians, GPTQ export, dequantize, load_state_dict(strict=True)."""
    from golf.config import ModelConfig
    from golf.model import GPT
    from golf.quant.hessian import collect_hessians
    from tests.test_gptq import reference_model_ops

    mcfg = ModelConfig(vocab_size=256, num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2, rope_dims=16,
                       attention="sdpa")
    torch.manual_seed(0)
    model = GPT(mcfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("proj.weight"):  # zero-initialised: give them something to quantize
                p.normal_(0, 0.02)
    ids = torch.randint(0, 256, (2, 64))
    with reference_model_ops():
        hs = collect_hessians(model, [ids])
    c = dataclasses.replace(cfg(), passthrough_numel=4096)
    entries = quantize_state_dict(model.state_dict(), hs, c)
    assert {e.kind for e in entries.values() if isinstance(e, QuantizedTensor)} == {"gptq", "fp16"}
    fresh = GPT(mcfg)
    fresh.load_state_dict(dequantize_state_dict(entries), strict=True)
    with reference_model_ops(), torch.no_grad():
        ref, got = model.logits(ids), fresh.logits(ids)
    rel = ((got - ref).norm() / ref.norm()).item()
    print(f"relative logit change after int6 GPTQ: {rel:.4f}")
    assert rel < 0.1


# -- the records' percentile clip (scheme "percentile") and its per-matrix search (quant.clip) ---------------
def test_percentile_rule_is_a_floored_row_quantile():
    w = torch.cat([torch.linspace(-0.5, 0.5, 1001)[None], torch.linspace(-3, 3, 1001)[None]])  # [2, 1001]
    q = scheme.qmax(6)
    assert torch.equal(scheme.row_scales(w, bits=6, clip="percentile", k=1.0),
                       scheme.row_scales(w, bits=6, clip="absmax_floor"))
    s = scheme.row_scales(w, bits=6, clip="percentile", k=0.99).float()
    assert s[0] == torch.tensor(1 / q).half().float()  # row 0's 99th percentile |w| ~ 0.495 < 1: the floor
    expected = torch.tensor(torch.quantile(w[1].abs(), 0.99).item() / q).half().float()
    assert s[1] == expected and s[1] < 3 / q
    with pytest.raises(ValueError, match="quantile k in"):
        scheme.row_scales(w, clip="percentile", k=1.5)


def _candidate_errors(w, h=None):
    """Squared weight error of each scheme.PERCENTILES candidate (GPTQ with h, else round-to-nearest)."""
    from golf.quant.gptq import gptq_quantize

    errs = {}
    for p in scheme.PERCENTILES:
        if h is None:
            s = scheme.row_scales(w, bits=6, clip="percentile", k=p)
            codes = scheme.quantize(w, s, bits=6)
        else:
            codes, s = gptq_quantize(w, h, bits=6, clip="percentile", k=p)
        errs[p] = float((scheme.dequantize(codes, s) - w).square().sum())
    return errs


@pytest.mark.parametrize("with_hessian", [False, True])
def test_percentile_search_keeps_the_least_error_candidate(with_hessian):
    torch.manual_seed(3)
    w = torch.randn(64, 256) * 2.0  # rows far above the floor, so the candidates differ
    w[:, :2] *= 8.0  # outlier columns: clipping them can pay off
    h = hessian_of(realistic_activations(512, 256)) if with_hessian else None
    name = "blocks.0.mlp.fc.weight"
    e = quantize_state_dict({name: w}, {name: h} if with_hessian else None, cfg(clip="percentile_search"))[name]
    errs = _candidate_errors(w, h)
    assert e.kind == ("gptq" if with_hessian else "rtn") and e.clip == "percentile" and e.k in scheme.PERCENTILES
    assert errs[e.k] == min(errs.values())
    assert len(set(errs.values())) > 1  # the search had a real choice
    got = float((e.dequantize() - w).square().sum())
    assert got == pytest.approx(errs[e.k], rel=1e-6)


def test_percentile_search_keeps_the_records_fixed_int8_quantile_for_embeddings():
    from golf.quant.export import tensor_scheme

    c = cfg(clip="percentile_search")
    assert tensor_scheme("tok_emb.weight", c) == (8, "percentile", scheme.INT8_CLIP_PERCENTILE)
    assert tensor_scheme("bigram.embed.weight", c) == (8, "percentile", scheme.INT8_CLIP_PERCENTILE)
    assert tensor_scheme("blocks.3.attn.proj.weight", c) == (6, "percentile_search", None)
    e = quantize_state_dict(state_dict(), None, c)
    assert (e["tok_emb.weight"].clip, e["tok_emb.weight"].k) == ("percentile", scheme.INT8_CLIP_PERCENTILE)
    assert e["blocks.0.attn.c_q.weight"].k in scheme.PERCENTILES
