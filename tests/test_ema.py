"""EMA of the weights (techniques.md §3.9): the exact recurrence, fp32 copies, copy_to and checkpoints."""

import io

import pytest
import torch
from torch import nn

from golf.optim.ema import EMA


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.emb = nn.Embedding(4, 2).to(torch.bfloat16)  # the records keep the embedding in bf16 (§2.8)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))


def set_weights(net, value):
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(value)


def test_copy_is_fp32_and_detached():
    net = Net()
    ema = EMA(net, 0.9)
    assert all(v.dtype == torch.float32 for k, v in ema.shadow.items() if k != "steps")
    assert ema.shadow["steps"].dtype == torch.long
    torch.testing.assert_close(ema.shadow["emb.weight"], net.emb.weight.float())
    set_weights(net, 7.0)
    assert not torch.equal(ema.shadow["lin.weight"], net.lin.weight.detach())


def test_recurrence_exact_on_dyadic_values():
    # d = 0.75 and dyadic weights keep every intermediate exactly representable, so the result must be exact
    net = Net()
    set_weights(net, 0.0)
    ema = EMA(net, 0.75)
    expected = 0.0
    for theta in (1.0, 2.0, -4.0, 0.5):
        set_weights(net, theta)
        ema.update(net)
        expected = 0.75 * expected + 0.25 * theta
        for k in ("lin.weight", "lin.bias", "emb.weight"):
            assert torch.equal(ema.shadow[k], torch.full_like(ema.shadow[k], expected)), k


def test_recurrence_matches_plain_torch_on_random_weights():
    torch.manual_seed(0)
    net = Net()
    ema = EMA(net, 0.997)
    ref = {k: v.detach().float().clone() for k, v in net.state_dict().items() if v.is_floating_point()}
    for _ in range(5):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        ema.update(net)
        for k, v in net.state_dict().items():
            if v.is_floating_point():
                ref[k] = 0.997 * ref[k] + (1 - 0.997) * v.float()
    for k in ref:
        torch.testing.assert_close(ema.shadow[k], ref[k], rtol=1e-6, atol=1e-7)


def test_non_float_buffers_track_the_latest_value():
    net = Net()
    ema = EMA(net, 0.9)
    net.steps.fill_(12)
    ema.update(net)
    assert ema.shadow["steps"].item() == 12


def test_state_dict_loads_into_the_model_directly():
    net = Net()
    set_weights(net, 0.0)
    ema = EMA(net, 0.5)
    set_weights(net, 2.0)
    ema.update(net)
    fresh = Net()
    fresh.load_state_dict(ema.state_dict())
    assert torch.equal(fresh.lin.bias.detach(), torch.full((2,), 1.0))


def test_copy_to_loads_the_average():
    net = Net()
    set_weights(net, 0.0)
    ema = EMA(net, 0.5)
    set_weights(net, 4.0)
    ema.update(net)  # 0.5·0 + 0.5·4 = 2
    ema.copy_to(net)
    assert torch.equal(net.lin.weight.detach(), torch.full((2, 3), 2.0))
    assert net.emb.weight.dtype == torch.bfloat16 and torch.equal(net.emb.weight.float(), torch.full((4, 2), 2.0))


def test_state_dict_round_trip_and_mismatch():
    net = Net()
    ema = EMA(net, 0.9)
    set_weights(net, 3.0)
    ema.update(net)
    buf = io.BytesIO()
    torch.save(ema.state_dict(), buf)
    other = EMA(Net(), 0.5)
    other.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    assert other.decay == 0.5  # the decay comes from the config, not the checkpoint
    for k in ema.shadow:
        assert torch.equal(other.shadow[k], ema.shadow[k])
    wider = nn.Linear(3, 5)
    with pytest.raises(ValueError, match="keys differ"):
        other.load_state_dict(EMA(wider, 0.9).state_dict())
    bad = ema.state_dict() | {"lin.bias": torch.zeros(7)}
    with pytest.raises(ValueError, match=r"lin.bias has shape \(7,\), expected \(2,\)"):
        other.load_state_dict(bad)
    with pytest.raises(ValueError, match="differs from the one the EMA was built from"):
        ema.update(wider)


@pytest.mark.parametrize("decay", [1.0, -0.1])
def test_rejects_bad_decay(decay):
    with pytest.raises(ValueError, match="decay="):
        EMA(Net(), decay)
