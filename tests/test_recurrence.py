"""Layer routing of golf.model: depth recurrence (techniques.md §2.15: the record's visiting order, skip
weights, the set_looping switch as a real input of the compiled graph), sigmoid skip gates (§2.6) and
parallel residuals (§2.16: GPT-J single lane, R0427 two lanes) against hand-written computations."""

import pytest
import torch
import torch.nn.functional as F

from golf.config import ModelConfig
from golf.model import GPT, Block, build_plans, looped_indices
from golf.ops._dispatch import kernels_enabled, set_kernels_enabled
from tests.test_model_features import perturbed

V = 64


@pytest.fixture(autouse=True)
def reference_ops():
    """Routing does not depend on the fused MLP kernel (tests/kernels tests it); the references keep this fast."""
    before = kernels_enabled()
    set_kernels_enabled(False)
    yield
    set_kernels_enabled(before)


def tiny(**overrides) -> ModelConfig:
    cfg = ModelConfig(vocab_size=V, num_layers=11, model_dim=16, num_heads=2, num_kv_heads=1, mlp_mult=2.0,
                      leaky_slope=0.5, rope_dims=4, attention="sdpa")
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def ids(b: int = 2, t: int = 10, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (b, t), generator=torch.Generator().manual_seed(seed))


R0409 = dict(loop_start=3, loop_end=5, num_loops=2)  # LOOP_START=3 LOOP_END=5 NUM_LOOPS=2 (R0409, R0427)


def test_record_index_lists():
    cfg = tiny(**R0409)
    plain, looped = build_plans(cfg)
    assert looped.encoder == (0, 1, 2, 3, 4, 5, 3, 4)  # techniques.md §2.15, R0409/R0427
    assert looped.decoder == (5, 3, 4, 5, 6, 7, 8, 9, 10)
    assert looped.skip_slots == tuple(range(8)) + (None,)
    assert plain.encoder == (0, 1, 2, 3, 4) and plain.skip_slots == (0, 1, 2, 3, 4, None)  # first min(5, 6)
    r0405 = build_plans(tiny(loop_start=4, loop_end=5, num_loops=2))[1]
    assert r0405.encoder == (0, 1, 2, 3, 4, 5, 4) and r0405.decoder == (5, 4, 5, 6, 7, 8, 9, 10)
    # R0403 (PR #1285): 4,5 repeated once; skip weights of the plain U-Net, the last one reused.
    r0403 = build_plans(tiny(loop_start=4, loop_end=5, num_loops=1, loop_skip_weights="physical"))[1]
    assert r0403.encoder + r0403.decoder == (0, 1, 2, 3, 4, 5, 4, 5, 6, 7, 8, 9, 10)
    assert r0403.encoder == (0, 1, 2, 3, 4, 5) and r0403.skip_slots == (0, 1, 2, 3, 4, 4, None)
    pr1331 = build_plans(tiny(loop_start=3, loop_end=5, num_loops=1, loop_skip_weights="physical"))[1]
    assert pr1331.encoder + pr1331.decoder == (0, 1, 2, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10)
    assert pr1331.skip_slots == (0, 1, 2, 3, 4, 4, 4)
    assert looped_indices(5, 0, 0, 3) == [0, 0, 0, 0, 1, 2, 3, 4]
    assert build_plans(tiny(unet_skips=False, **R0409))[1].encoder == ()


def _visits(model: GPT, x: torch.Tensor) -> list[int]:
    order: list[int] = []
    handles = [b.register_forward_pre_hook(lambda m, a: order.append(m.layer_idx)) for b in model.blocks]
    model.logits(x)
    for h in handles:
        h.remove()
    return order


def test_recurrence_visits_layers_in_the_record_order_and_toggling_changes_the_output():
    model = perturbed(GPT(tiny(**R0409)))
    x = ids()
    assert not model.looping and model.num_skips == 8 and model.skip_weights.shape == (8, 16)
    plain = model.logits(x)
    assert _visits(model, x) == list(range(11))
    model.set_looping(True)
    assert model.looping and model.encoder_layers == [0, 1, 2, 3, 4, 5, 3, 4]
    assert _visits(model, x) == [0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10]
    looped = model.logits(x)
    assert not torch.allclose(plain, looped, atol=1e-3)
    model.set_looping(False)
    torch.testing.assert_close(model.logits(x), plain, atol=0, rtol=0)
    with pytest.raises(ValueError, match="num_loops"):
        GPT(tiny()).set_looping(True)
    GPT(tiny()).set_looping(False)  # switching off what is off is fine


def test_set_looping_is_a_real_input_of_the_compiled_graph():
    """Compile once, toggle: the compiled model must follow the flag (dynamo guards on it and recompiles),
    not keep the graph it traced first."""
    torch._dynamo.reset()
    model = perturbed(GPT(tiny(num_layers=5, loop_start=1, loop_end=2, num_loops=1)))
    x = ids()
    eager_plain = model.logits(x)
    model.set_looping(True)
    eager_looped = model.logits(x)
    model.set_looping(False)
    assert not torch.allclose(eager_plain, eager_looped, atol=1e-3)
    compiled = torch.compile(model, fullgraph=True, dynamic=False, backend="eager")
    for looping, want in ((False, eager_plain), (True, eager_looped), (False, eager_plain), (True, eager_looped)):
        model.set_looping(looping)
        torch.testing.assert_close(compiled.logits(x), want, atol=1e-5, rtol=1e-5)
    torch._dynamo.reset()


class _Recorder(torch.nn.Module):
    """Stands in for a block: the c-th call overall emits c+1 everywhere if it is an encoder call, else it
    records the stream it receives and emits zeros (so a decoder input is prev + merged skip)."""

    def __init__(self, layer_idx, state):
        super().__init__()
        self.layer_idx, self.state = layer_idx, state

    def forward(self, x, x0):
        c = self.state["calls"]
        self.state["calls"] += 1
        if c < self.state["num_encoder"]:
            return torch.full_like(x, float(c + 1))
        self.state["log"].append(x[0, 0, 0].item())
        return torch.zeros_like(x)


@pytest.mark.parametrize("policy", ["looped", "physical"])
@pytest.mark.parametrize("gates", [False, True])
def test_skip_merges_follow_the_plan(policy, gates):
    model = GPT(tiny(loop_start=4, loop_end=5, num_loops=1, loop_skip_weights=policy, skip_gates=gates))
    model.set_looping(True)
    enc, slots = model.encoder_layers, model._looped_plan.skip_slots
    assert model.num_skips == (5 if policy == "physical" else 6)
    with torch.no_grad():
        model.skip_weights.copy_(0.1 * torch.arange(1, model.num_skips + 1, dtype=torch.float32)[:, None])
    if gates:
        assert torch.equal(model.skip_gates, torch.zeros(model.num_skips, 16))  # sigmoid(0) = 0.5 at init
    state = {"calls": 0, "num_encoder": len(enc), "log": []}
    for i in range(11):
        model.blocks[i] = _Recorder(i, state)
    model.logits(torch.zeros(1, 3, dtype=torch.long))
    want = []
    for j, slot in enumerate(slots):
        prev = float(len(enc)) if j == 0 else 0.0  # the last encoder call emitted len(enc)
        if slot is None:
            want.append(prev)
            continue
        skip = float(len(enc) - j)  # LIFO: decoder j pops encoder call len(enc)-1-j, which emitted len(enc)-j
        w = 0.1 * (slot + 1)
        want.append(0.5 * prev + 0.5 * w * skip if gates else prev + w * skip)  # lerp(w*skip, x, 0.5)
    assert state["log"] == pytest.approx(want)
    if policy == "physical":
        assert slots == (0, 1, 2, 3, 4, 4, None)


def test_gptj_block_formula():
    cfg = tiny(parallel_residual="gptj", parallel_start_layer=7, ln_scale=True)
    model = GPT(cfg)
    assert [b.parallel for b in model.blocks] == [i >= 7 for i in range(11)]
    block = perturbed(Block(cfg, "sdpa", 8))
    x, x0 = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    x_in = block.resid_mix[0] * x + block.resid_mix[1] * x0
    s = 1 / 3  # 1/sqrt(8 + 1)
    n = F.rms_norm(x_in, (16,)) * s
    want = x_in + block.attn_scale * block.attn(n) + block.mlp_scale * block.mlp(n)
    torch.testing.assert_close(block(x, x0), want)


def _two_lane_by_hand(model: GPT, x_ids: torch.Tensor, start: int) -> torch.Tensor:
    """R0427's two-lane decoder written out from techniques.md §2.16 (c), without golf's helpers."""
    x = x0 = model.embed(x_ids)
    enc, dec, slots = model.encoder_layers, model.decoder_layers, model._plan().skip_slots
    skips = []
    for i in enc:
        x = model.blocks[i](x, x0)
        skips.append(x)
    lane0 = lane1 = None
    for i, slot in zip(dec, slots):
        b = model.blocks[i]
        if i < start:
            if slot is not None:
                x = x + model.skip_weights[slot] * skips.pop()
            x = b(x, x0)
            continue
        if lane0 is None:
            lane0 = lane1 = x
        if slot is not None:
            lane0 = lane0 + model.skip_weights[slot] * skips.pop()  # skips join lane 0 only
        a = b.attn_scale * b.attn(F.rms_norm(b.resid_mix[0] * lane0 + b.resid_mix[1] * x0, (16,)))
        m = b.mlp_scale * b.mlp(F.rms_norm(lane1, (16,)))  # no resid_mix; pre-update lanes
        r, p = model.parallel_resid_lambdas[i], model.parallel_post_lambdas[i]
        lane0, lane1 = r[0] * lane0 + p[0, 0] * a + p[1, 0] * m, r[1] * lane1 + p[0, 1] * a + p[1, 1] * m
    return F.rms_norm((lane0 + lane1) / 2, (16,))


@pytest.mark.parametrize("looping", [False, True])
def test_two_lane_parallel_residuals_match_a_hand_written_computation(looping):
    cfg = tiny(parallel_residual="two_lane", parallel_start_layer=8, **R0409)
    fresh = GPT(cfg)
    assert torch.equal(fresh.parallel_resid_lambdas, torch.full((11, 2), 1.1))
    assert torch.equal(fresh.parallel_post_lambdas, torch.ones(11, 2, 2))
    model = perturbed(fresh, std=0.2)
    model.set_looping(looping)
    x = ids()
    torch.testing.assert_close(model.hidden(x), _two_lane_by_hand(model, x, 8), atol=1e-5, rtol=1e-5)
    # Non-vacuous: the same weights run sequentially (one lane) give a different result.
    one_lane = GPT(tiny(**R0409))
    one_lane.load_state_dict({k: v for k, v in model.state_dict().items() if "parallel_" not in k})
    one_lane.set_looping(looping)
    assert not torch.allclose(model.hidden(x), one_lane.hidden(x), atol=1e-3)


def test_two_lane_start_inside_the_loop_is_rejected():
    with pytest.raises(ValueError, match="parallel_start_layer"):
        GPT(tiny(parallel_residual="two_lane", parallel_start_layer=4, **R0409))  # decoder 5,3,4,...: 3 after 5
    GPT(tiny(parallel_residual="two_lane", parallel_start_layer=6, **R0409))
