"""Attention pieces of golf.model: RoPE (partial, half-split, NTK base), GQA attention, backend choice."""

import math

import pytest
import torch

from golf.config import ModelConfig
from golf.model import CausalSelfAttention, Rotary, apply_rotary, causal_attention, ntk_rope_base, resolve_backend
from golf.model.layers import CastedLinear


def _explicit_gqa_attention(q, k, v):
    """Independent reference: repeat KV heads (query head h reads KV head h // group), masked softmax."""
    bsz, seq_len, num_heads, head_dim = q.shape
    group = num_heads // k.size(2)
    k = k.repeat_interleave(group, dim=2)
    v = v.repeat_interleave(group, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q.double(), k.double()) / math.sqrt(head_dim)
    future = torch.triu(torch.ones(seq_len, seq_len, dtype=torch.bool), diagonal=1)
    probs = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
    return torch.einsum("bhts,bshd->bthd", probs, v.double()).to(q.dtype)


@pytest.mark.parametrize("num_heads,num_kv_heads", [(8, 4), (6, 2), (4, 4), (4, 1)])
def test_gqa_matches_explicit_repeat_interleave(num_heads, num_kv_heads):
    q = torch.randn(2, 13, num_heads, 16)
    k = torch.randn(2, 13, num_kv_heads, 16)
    v = torch.randn(2, 13, num_kv_heads, 16)
    got = causal_attention(q, k, v, "sdpa")
    assert got.shape == q.shape
    torch.testing.assert_close(got, _explicit_gqa_attention(q, k, v), atol=1e-5, rtol=1e-5)


def test_gqa_kv_head_only_feeds_its_query_group():
    q, k, v = torch.randn(1, 9, 8, 16), torch.randn(1, 9, 4, 16), torch.randn(1, 9, 4, 16)
    base = causal_attention(q, k, v)
    v2 = v.clone()
    v2[:, :, 1] += 1.0  # KV head 1 serves query heads 2 and 3 (h // 2 == 1)
    changed = (causal_attention(q, k, v2) - base).abs().amax(dim=(0, 1, 3)) > 1e-6
    assert changed.tolist() == [False, False, True, True, False, False, False, False]


def _rope(rope_dims, head_dim=16, seq_len=11, base=10000.0, ntk=0):
    cos, sin = Rotary(rope_dims, base, ntk)(seq_len, torch.device("cpu"), torch.float64)
    return cos, sin


@pytest.mark.parametrize("rope_dims", [0, 2, 8, 16])
def test_partial_rope_passes_upper_dims_and_preserves_norms(rope_dims):
    x = torch.randn(2, 11, 3, 16, dtype=torch.float64)
    cos, sin = _rope(rope_dims)
    y = apply_rotary(x, cos, sin)
    assert torch.equal(y[..., rope_dims:], x[..., rope_dims:])
    # A rotation of each (i, i + rd/2) pair: pairwise norms, and so the total norm, are preserved.
    half = rope_dims // 2
    pair_x = x[..., :half] ** 2 + x[..., half:rope_dims] ** 2
    pair_y = y[..., :half] ** 2 + y[..., half:rope_dims] ** 2
    torch.testing.assert_close(pair_y, pair_x)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    if rope_dims:
        assert not torch.allclose(y[:, 1:, :, :rope_dims], x[:, 1:, :, :rope_dims])
    torch.testing.assert_close(y[:, 0], x[:, 0])  # position 0 is the identity rotation


def test_rope_half_split_convention():
    # One frequency (rd=2): out = [x1 cos + x2 sin, -x1 sin + x2 cos] with angle = position * 1.
    x = torch.zeros(1, 3, 1, 4, dtype=torch.float64)
    x[..., 0], x[..., 1], x[..., 2], x[..., 3] = 1.0, 2.0, 5.0, 7.0
    cos, sin = _rope(2, head_dim=4, seq_len=3)
    y = apply_rotary(x, cos, sin)
    for t in range(3):
        c, s = math.cos(t), math.sin(t)
        assert y[0, t, 0].tolist() == pytest.approx([1 * c + 2 * s, -1 * s + 2 * c, 5.0, 7.0])


def test_rope_scores_depend_only_on_relative_position():
    cos, sin = _rope(8, seq_len=12)
    q, k = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    qs = apply_rotary(q.expand(1, 12, 1, 8).clone(), cos, sin)[0, :, 0]
    ks = apply_rotary(k.expand(1, 12, 1, 8).clone(), cos, sin)[0, :, 0]
    assert (qs[5] @ ks[2]).item() == pytest.approx((qs[9] @ ks[6]).item(), abs=1e-6)  # fp32 tables
    assert (qs[5] @ ks[2]).item() != pytest.approx((qs[5] @ ks[3]).item(), abs=1e-3)


def test_ntk_base_scaling_numbers():
    # §2.3 ⚠: rd=16 built for 1024 while running at 2048 -> 10000 * 2**(16/14) ≈ 22,082.
    scaled = ntk_rope_base(10000.0, 16, 2048, 1024)
    assert scaled == pytest.approx(10000.0 * 2 ** (16 / 14))
    assert abs(scaled - 22082) < 1
    assert ntk_rope_base(10000.0, 16, 1024, 1024) == 10000.0  # not above the reference length
    assert ntk_rope_base(10000.0, 16, 4096, 0) == 10000.0  # 0 disables
    assert ntk_rope_base(10000.0, 64, 4096, 1024) == pytest.approx(10000.0 * 4 ** (64 / 62))
    rot = Rotary(16, 10000.0, 1024)
    expected = 1.0 / torch.tensor(scaled, dtype=torch.float64) ** (torch.arange(0, 16, 2, dtype=torch.float64) / 16)
    torch.testing.assert_close(rot.inv_freq(2048).double(), expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(rot.inv_freq(1024), Rotary(16, 10000.0, 0).inv_freq(1024))
    with pytest.raises(ValueError, match="rope_dims"):
        ntk_rope_base(10000.0, 2, 2048, 1024)


def test_attention_module_ops_order():
    """QK RMS-norm, then RoPE, then q_gain, then causal GQA attention, then proj, checked by hand."""
    cfg = ModelConfig(model_dim=32, num_heads=4, num_kv_heads=2, rope_dims=4, qk_gain_init=1.7)
    attn = CausalSelfAttention(cfg, "sdpa")
    for lin in (attn.c_q, attn.c_k, attn.c_v, attn.proj):
        torch.nn.init.normal_(lin.weight, std=0.2)
    with torch.no_grad():
        attn.q_gain.copy_(torch.tensor([0.5, 1.0, 2.0, 3.0]))
    x = torch.randn(2, 7, 32)
    q = torch.nn.functional.rms_norm((x @ attn.c_q.weight.T).view(2, 7, 4, 8), (8,))
    k = torch.nn.functional.rms_norm((x @ attn.c_k.weight.T).view(2, 7, 2, 8), (8,))
    v = (x @ attn.c_v.weight.T).view(2, 7, 2, 8)
    cos, sin = attn.rotary(7, x.device, torch.float32)
    q = apply_rotary(q, cos, sin) * attn.q_gain[None, None, :, None]
    k = apply_rotary(k, cos, sin)
    want = _explicit_gqa_attention(q, k, v).reshape(2, 7, 32) @ attn.proj.weight.T
    torch.testing.assert_close(attn(x), want, atol=1e-5, rtol=1e-5)


def test_casted_linear_casts_weight_to_input_dtype():
    lin = CastedLinear(8, 4)
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    y = lin(x)
    assert y.dtype == torch.bfloat16 and lin.weight.dtype == torch.float32
    torch.testing.assert_close(y, (x.float() @ lin.weight.bfloat16().float().T).bfloat16(), atol=1e-2, rtol=1e-2)
    assert lin.bias is None


def test_backend_resolution():
    assert resolve_backend("sdpa") == "sdpa"
    assert resolve_backend("auto", cuda_available=False) == "sdpa"
    with pytest.raises(ValueError, match="model.attention='fa3'.*sdpa"):
        resolve_backend("fa3", cuda_available=False)
    with pytest.raises(ValueError, match="must be one of"):
        resolve_backend("flash")
