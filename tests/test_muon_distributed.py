"""Distributed non-bank Muon (techniques.md §3.2): 2 and 3 gloo processes on CPU against one process.

Every rank gets the same gradients, as after DDP's averaging. Each rank orthogonalizes only its own
parameters (i % world_size) and the all-reduced update buffer must leave every rank with the weights and the
momentum buffers of single-process Muon.
"""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from golf.optim.muon import Muon

# Five parameters so that with 2 and 3 ranks some own several and ownership wraps around: matrices of each
# aspect, a 3-D bank, and one parameter that never gets a gradient.
SHAPES = [(8, 4), (4, 8), (6, 6), (3, 8, 4), (5, 3)]
NO_GRAD = 4
STEPS = 3


def make_problem():
    g = torch.Generator().manual_seed(7)
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in SHAPES]
    grads = [[torch.randn(s, generator=g) for s in SHAPES] for _ in range(STEPS)]
    groups = [  # two groups with their own settings, as the builder may create
        {"params": params[:2], "lr": 0.05, "weight_decay": 0.1, "row_normalize": True},
        {"params": params[2:], "lr": 0.02, "weight_decay": 0.0, "coefficients": "polar_express"},
    ]
    return params, grads, Muon(groups, lr=0.01, momentum=0.9)


def run_steps(params, grads, opt):
    for step_grads in grads:
        for i, (p, g) in enumerate(zip(params, step_grads)):
            p.grad = None if i == NO_GRAD else g.clone()
        opt.step()
    return {
        "params": [p.detach().clone() for p in params],
        "buffers": [opt.state[p]["momentum_buffer"].clone() if p in opt.state else None for p in params],
    }


def _worker(rank, world_size, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        result = run_steps(*make_problem())
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def single():
    assert not (dist.is_available() and dist.is_initialized())
    return run_steps(*make_problem())


@pytest.mark.parametrize("world_size", [2, 3])
def test_distributed_matches_single_process(world_size, single, tmp_path):
    # fork, not spawn: the children inherit the imported torch instead of paying seconds each to import it
    # again on the shared 2-core machine; they run single-threaded, so no OpenMP pool crosses the fork.
    mp.start_processes(_worker, args=(world_size, str(tmp_path / "init"), str(tmp_path)), nprocs=world_size,
                       join=True, start_method="fork")
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world_size)]
    for r, res in enumerate(results):
        for i in range(len(SHAPES)):
            # identical on every rank, bit for bit
            assert torch.equal(res["params"][i], results[0]["params"][i]), (r, i)
            # same arithmetic as one process; the sum with zeros in the bf16 buffer adds no rounding
            torch.testing.assert_close(res["params"][i], single["params"][i], rtol=0, atol=1e-6)
            if i == NO_GRAD:
                assert res["buffers"][i] is None
                assert torch.equal(res["params"][i], make_problem()[0][i].detach())
            else:
                # every rank keeps every momentum buffer, so any rank's state_dict is a full checkpoint
                torch.testing.assert_close(res["buffers"][i], single["buffers"][i], rtol=0, atol=0)
