"""SWA over the warmdown (techniques.md §3.9): which steps are collected, the uniform average it applies,
fp32 accumulation, checkpoints, and the error when nothing was collected."""

import pytest
import torch
from torch import nn

from golf.config import OptimConfig
from golf.optim.schedule import lr_scale
from golf.optim.swa import SWA


class Tiny(nn.Module):
    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.lin = nn.Linear(4, 3).to(dtype)
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))


def perturb(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g).to(p.dtype))
        model.steps += 1


def test_collects_at_multiples_of_every_below_the_threshold():
    swa = SWA(every=50, start_lr_scale=0.2)
    assert not swa.should_collect(0, 0.0)
    assert not swa.should_collect(49, 0.1)
    assert swa.should_collect(50, 0.19)
    assert not swa.should_collect(50, 0.2)  # strictly below, as the records' `scale < threshold`
    assert not swa.should_collect(100, 0.5)


def test_warmdown_schedule_collects_the_tail():
    # R0320's rule on a 100-step run with a 60-step linear warmdown: every 5 steps while the scale < 0.5
    iters, warmdown, every = 100, 60, 5
    swa, model, collected = SWA(every=every, start_lr_scale=0.5), Tiny(), []
    for step in range(iters):
        scale = lr_scale(step, iterations=iters, elapsed_s=0.0, max_seconds=0.0, warmdown_iters=warmdown,
                         warmdown_frac=0.0, min_lr=0.0)
        if swa.maybe_update(model, step + 1, scale):  # hook after the optimizer step: steps completed
            collected.append(step + 1)
    # the scale (100 - step)/60 is below 0.5 from step 71 on, i.e. completed steps 72..100
    assert collected == [75, 80, 85, 90, 95, 100]
    assert swa.count == len(collected)


@pytest.mark.parametrize("device", ["cpu", None])
def test_apply_loads_the_uniform_average(device):
    model = Tiny()
    swa = SWA(every=1, start_lr_scale=1.0, device=device or next(model.parameters()).device)
    snapshots = []
    for seed in range(4):
        perturb(model, seed)
        swa.maybe_update(model, seed + 1, 0.0)
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
    perturb(model, 99)  # the live weights move on; apply must not mix them in
    assert swa.apply(model) == 4
    for k in ("lin.weight", "lin.bias"):
        expected = torch.stack([s[k] for s in snapshots]).mean(0)
        torch.testing.assert_close(model.state_dict()[k], expected, rtol=0, atol=1e-6)
    assert int(model.steps) == 4  # integer buffers keep the last collected value


def test_bf16_weights_are_summed_in_fp32():
    model = Tiny(torch.bfloat16)
    swa = SWA(every=1, start_lr_scale=1.0)
    with torch.no_grad():
        model.lin.weight.fill_(1.0)
    for step in range(1, 301):  # 300 x 1.0 would stall at 256 in a bf16 sum
        swa.maybe_update(model, step, 0.0)
    assert swa.total["lin.weight"].dtype == torch.float32
    assert torch.all(swa.total["lin.weight"] == 300.0)
    swa.apply(model)
    assert model.lin.weight.dtype == torch.bfloat16 and torch.all(model.lin.weight == 1.0)


def test_state_dict_round_trip_resumes_the_average():
    a, b, model = SWA(every=1, start_lr_scale=1.0), SWA(every=1, start_lr_scale=1.0), Tiny()
    for step in range(1, 4):
        perturb(model, step)
        a.maybe_update(model, step, 0.0)
    b.load_state_dict(a.state_dict())
    perturb(model, 10)
    a.maybe_update(model, 4, 0.0)
    b.maybe_update(model, 4, 0.0)
    for k, v in a.average().items():
        assert torch.equal(v, b.average()[k])


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="swa_start_lr_scale"):
        SWA(every=10, start_lr_scale=0.2).apply(Tiny())
    with pytest.raises(ValueError, match="swa_every"):
        SWA(every=0, start_lr_scale=0.2)
    swa = SWA(every=1, start_lr_scale=1.0)
    swa.maybe_update(Tiny(), 1, 0.0)
    with pytest.raises(ValueError, match="state dict differs"):
        swa.apply(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="optim.swa_every"):
        OptimConfig(swa_every=-1).validate()
    with pytest.raises(ValueError, match="optim.swa_start_lr_scale"):
        OptimConfig(swa_start_lr_scale=0.0).validate()
