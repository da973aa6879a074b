"""golf.quant.qat: late STE QAT on golf's model, visible to torch.compile and equal to the exporter's grid."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from golf.config import ModelConfig, QuantConfig
from golf.model import GPT
from golf.model.layers import CastedLinear
from golf.ops import _dispatch
from golf.ops.fake_quant import fake_quant
from golf.ops.mlp import leaky_relu2_mlp_ref
from golf.quant import scheme
from golf.quant.export import dequantize_state_dict, quantize_state_dict, tensor_scheme
from golf.quant.qat import qat_enabled, qat_modules, qat_should_enable, set_qat

MCFG = ModelConfig(vocab_size=128, num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2, rope_dims=16,
                   attention="sdpa")
QUANTIZED = {f"blocks.{i}.{m}.weight" for i in range(2)
             for m in ("attn.c_q", "attn.c_k", "attn.c_v", "attn.proj", "mlp.fc", "mlp.proj")}


def qcfg(**kw) -> QuantConfig:
    return QuantConfig(passthrough_numel=1024, qat=True, **kw)


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(MCFG)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("proj.weight"):  # zero-initialised: give them something to quantize
                p.normal_(0, 0.05)
    return model


def ids_pair(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, MCFG.vocab_size, (2, 16), generator=g)
    return ids, torch.roll(ids, -1, dims=1)


def test_qat_modules_are_the_exported_matrices():
    model = tiny_model()
    names = set(set_qat(model, True, qcfg()))
    assert names == QUANTIZED and qat_enabled(model)
    assert {n for n, _ in qat_modules(model, qcfg())} == QUANTIZED
    set_qat(model, False, qcfg())
    assert not qat_enabled(model)
    # the switch is per instance, never on the class (the records' constant-folded class attribute, §4.4)
    assert "qat" not in vars(CastedLinear) and CastedLinear(8, 8).qat is False


@pytest.mark.parametrize(
    "kw",
    [
        dict(clip="absmax", bits=6),
        dict(clip="absmax_floor", bits=5),
        dict(clip="sdclip", bits=6, clip_k=3.0, clip_k_attn=2.5, clip_k_mlp=3.5),
    ],
)
@pytest.mark.parametrize("kernels", [True, False])
def test_training_fake_quant_equals_exported_dequant(kw, kernels):
    """Every quantized weight, as the QAT forward uses it, equals the artifact's RTN dequantization."""
    model = tiny_model()
    c = qcfg(gptq=False, **kw)
    set_qat(model, True, c)
    exported = dequantize_state_dict(quantize_state_dict(model.state_dict(), None, c))
    _dispatch.set_kernels_enabled(kernels)
    try:
        for name, module in qat_modules(model, c):
            with torch.no_grad():
                trained = module.effective_weight()
            assert torch.equal(trained, exported[name]), name
    finally:
        _dispatch.set_kernels_enabled(True)
    if kw["clip"] == "sdclip":  # the group factors reached the modules
        assert {m.qat_k for n, m in qat_modules(model, c) if ".attn." in n} == {2.5}
        assert {m.qat_k for n, m in qat_modules(model, c) if ".mlp." in n} == {3.5}


def test_tensor_scheme_groups():
    c = QuantConfig(clip="sdclip", clip_k=12.85, clip_k_attn=13.0, clip_k_mlp=11.5, embed_clip_k=14.0, embed_bits=7)
    assert tensor_scheme("blocks.3.attn.c_k.weight", c) == (6, "sdclip", 13.0)
    assert tensor_scheme("blocks.3.mlp.proj.weight", c) == (6, "sdclip", 11.5)
    assert tensor_scheme("tok_emb.weight", c) == (7, "sdclip", 14.0)
    assert tensor_scheme("bigram.proj.weight", c) == (6, "sdclip", 12.85)
    assert tensor_scheme("blocks.0.mlp.fc.weight", QuantConfig(clip="sdclip")) == (6, "sdclip", 12.85)
    assert tensor_scheme("blocks.0.mlp.fc.weight", QuantConfig(clip="absmax")) == (6, "absmax", None)


def test_mlp_fused_path_sees_fake_quantized_weights(monkeypatch):
    """The MLP calls the fused op with fc/proj weights directly: with QAT on those must be fake-quantized."""
    model = tiny_model()
    c = qcfg(clip="sdclip", clip_k=3.0)
    set_qat(model, True, c)
    mlp = model.blocks[0].mlp
    seen = {}

    def spy(x, w_up, w_down, slope):
        seen["w_up"], seen["w_down"] = w_up.detach(), w_down.detach()
        return leaky_relu2_mlp_ref(x, w_up, w_down, slope)

    monkeypatch.setattr("golf.model.mlp.leaky_relu2_mlp", spy)
    x = torch.randn(2, 5, MCFG.model_dim)
    y = mlp(x)
    fc_q = scheme.fake_quant_ref(mlp.fc.weight.detach(), bits=6, clip="sdclip", k=3.0)
    proj_q = scheme.fake_quant_ref(mlp.proj.weight.detach(), bits=6, clip="sdclip", k=3.0)
    assert torch.equal(seen["w_up"], fc_q) and torch.equal(seen["w_down"], proj_q)
    assert not torch.equal(fc_q, mlp.fc.weight.detach())
    assert torch.equal(y, leaky_relu2_mlp_ref(x, fc_q, proj_q, mlp.slope))


def test_switching_qat_on_changes_a_compiled_model():
    model = tiny_model()
    ids, targets = ids_pair()
    compiled = torch.compile(model, fullgraph=True, dynamic=False, backend="aot_eager")
    with torch.no_grad():
        eager_off = model(ids, targets)
        compiled_off = compiled(ids, targets)
        set_qat(model, True, qcfg(bits=5, clip="sdclip", clip_k=2.0))  # coarse grid: a clearly visible change
        eager_on = model(ids, targets)
        compiled_on = compiled(ids, targets)
        set_qat(model, False, qcfg())
        compiled_off_again = compiled(ids, targets)
    assert torch.allclose(compiled_off, eager_off, rtol=1e-5, atol=1e-6)
    # the loss of a random-init model sits near ln(vocab); the change is small but far above fp noise (1e-6)
    assert (eager_on - eager_off).abs().item() > 1e-4
    assert (compiled_on - compiled_off).abs().item() > 1e-4, "QAT did not reach the compiled graph"
    assert torch.allclose(compiled_on, eager_on, rtol=1e-6, atol=1e-6)
    assert torch.allclose(compiled_off_again, eager_off, rtol=1e-5, atol=1e-6)


def test_qat_gradients_are_straight_through():
    """With identity STE the weight gradient of a QAT step is the gradient at the fake-quantized weights."""
    model, shadow = tiny_model(), tiny_model()
    c = qcfg(clip="sdclip", clip_k=3.0)
    set_qat(model, True, c)
    with torch.no_grad():  # shadow holds the fake-quantized weights themselves, without QAT
        for (name, m), (_, ms) in zip(qat_modules(model, c), qat_modules(shadow, c)):
            ms.weight.copy_(m.effective_weight())
    ids, targets = ids_pair()
    model(ids, targets).backward()
    shadow(ids, targets).backward()
    for (name, m), (_, ms) in zip(qat_modules(model, c), qat_modules(shadow, c)):
        assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0, name
        torch.testing.assert_close(m.weight.grad, ms.weight.grad, rtol=1e-4, atol=1e-7, msg=name)


def test_schedule_point():
    assert not qat_should_enable(0.05, QuantConfig(qat=False))
    c = QuantConfig(qat=True, qat_start_lr_scale=0.15)
    assert not qat_should_enable(1.0, c) and not qat_should_enable(0.15, c) and qat_should_enable(0.149, c)
    assert qat_should_enable(1.0, dataclasses.replace(c, qat_start_lr_scale=1.0))


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(qat_start_lr_scale=0.0), "qat_start_lr_scale"),
        (dict(qat_ste="soft"), "qat_ste"),
        (dict(clip_k_mlp=-1.0), "clip_k_mlp"),
    ],
)
def test_bad_config(kw, match):
    with pytest.raises(ValueError, match=match):
        QuantConfig(**kw).validate()


def test_nothing_to_quantize_raises():
    with pytest.raises(ValueError, match="passthrough_numel"):
        set_qat(tiny_model(), True, QuantConfig(qat=True, passthrough_numel=10**9))


def test_clipped_ste_reaches_modules():
    model = tiny_model()
    set_qat(model, True, qcfg(clip="sdclip", clip_k=1.0, qat_ste="clipped"))
    m = model.blocks[0].mlp.fc
    assert m.qat_ste == "clipped"
    w = m.weight
    out = fake_quant(w, bits=6, clip="sdclip", k=1.0, ste="clipped")
    out.sum().backward()
    assert 0 < int((w.grad == 0).sum()) < w.numel()  # k = 1: many weights clipped, most not


def test_switching_qat_on_changes_an_inductor_compiled_linear():
    """The default backend as well: the instance attribute is guarded, so the switch recompiles, not folds."""
    torch._dynamo.reset()
    lin = CastedLinear(64, 48)
    x = torch.randn(3, 64)
    c = qcfg(bits=5, clip="sdclip", clip_k=2.0)
    compiled = torch.compile(lin, fullgraph=True, dynamic=False)
    with torch.no_grad():
        off = compiled(x)
        set_qat(lin, True, c)
        on = compiled(x)
        expected = torch.nn.functional.linear(x, scheme.fake_quant_ref(lin.weight, bits=5, clip="sdclip", k=2.0))
    torch.testing.assert_close(off, torch.nn.functional.linear(x, lin.weight), rtol=1e-5, atol=1e-5)
    assert (on - off).abs().max().item() > 1e-3
    torch.testing.assert_close(on, expected, rtol=1e-5, atol=1e-5)


def test_percentile_search_trains_on_the_absmax_floor_grid():
    """The export picks a row quantile per matrix; QAT cannot know it in advance and uses the k = 1 grid."""
    model = tiny_model()
    set_qat(model, True, qcfg(clip="percentile_search"))
    for _, module in qat_modules(model, qcfg()):
        assert module.qat and module.qat_clip == "absmax_floor" and module.qat_k is None
