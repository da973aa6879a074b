"""GPTQ calibration spread over ranks (issue 6): each of 2 or 3 gloo processes collects X^T X on its own
batches, and every rank ends with the Hessians one process gets from all the batches."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import golf.ops
from golf.config import ModelConfig
from golf.model import GPT
from golf.quant.hessian import collect_hessians, collect_hessians_over_ranks

NUM_BATCHES = 6


@pytest.fixture(autouse=True)
def reference_ops():
    """The pure-torch MLP: these tests need no kernel, and the Triton interpreter is slow."""
    prev = golf.ops.kernels_enabled()
    golf.ops.set_kernels_enabled(False)
    yield
    golf.ops.set_kernels_enabled(prev)


def model_and_batches():
    torch.manual_seed(3)
    cfg = ModelConfig(vocab_size=64, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1, rope_dims=16,
                      mlp_mult=2.0, attention="sdpa")
    model = GPT(cfg)
    with torch.no_grad():  # move the zero-initialized projections off zero so every Hessian is informative
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    g = torch.Generator().manual_seed(4)
    return model, [torch.randint(0, 64, (2, 24), generator=g) for _ in range(NUM_BATCHES)]


def _worker(rank, world_size, init_file, out_dir):
    torch.set_num_threads(1)
    golf.ops.set_kernels_enabled(False)  # as the fixture set it in the parent; explicit for any start method
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        model, batches = model_and_batches()
        mine = batches[rank::world_size]  # 6 batches over 2 ranks: 3 each; over 3 ranks: 2 each
        torch.save(collect_hessians_over_ranks(model, mine), os.path.join(out_dir, f"h{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_share_the_calibration_and_agree(world_size, tmp_path):
    model, batches = model_and_batches()
    expected = collect_hessians(model, batches)
    mp.start_processes(_worker, args=(world_size, str(tmp_path / "init"), str(tmp_path)), nprocs=world_size,
                       join=True, start_method="fork")
    results = [torch.load(tmp_path / f"h{r}.pt", weights_only=True) for r in range(world_size)]
    for r, hs in enumerate(results):
        assert hs.keys() == expected.keys()
        for name, h in hs.items():
            torch.testing.assert_close(h, expected[name], rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
            assert torch.equal(h, results[0][name]), (r, name)  # one all-reduce result on every rank


def test_without_a_process_group_it_is_collect_hessians():
    model, batches = model_and_batches()
    a, b = collect_hessians_over_ranks(model, batches[:2]), collect_hessians(model, batches[:2])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
