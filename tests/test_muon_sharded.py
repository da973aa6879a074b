"""Sharded (Parallel) Muon over 2 and 3 gloo processes on CPU against single-process Muon (techniques.md §3.11).

Each rank gets its own gradients; the single-process reference gets their average. The per-rank gradients are
base ± multiples of a small dyadic delta, so their sum and average are exact in fp32 however the backend
orders or divides them, and the comparison can be bit for bit: sharding must not change the math.
Banks include sizes the world size does not divide (7 matrices over 2 and 3 ranks; a single matrix, so
other ranks hold only padding) and two groups with different settings (MuonEq-R, weight decay, NorMuon,
Polar Express, plain momentum).
Also: DDP leaves the Muon gradients alone after `exclude_from_ddp` (and still averages the rest), the
per-rank checkpoint resumes exactly, and distributed="allreduce" with NorMuon matches one process.
"""

import copy
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from golf.optim.muon import Muon, exclude_from_ddp

# group 0: a (8, 6) bank of 7 (five 2-D params and a 3-D param of 2) and a (6, 8) bank of 1;
# group 1: a (4, 4) bank of 2 and a (3, 5) bank of 1.
SHAPES = [(8, 6), (8, 6), (6, 8), (8, 6), (8, 6), (8, 6), (2, 8, 6), (4, 4), (3, 5), (4, 4)]
GROUP0 = 7
STEPS = 3


def make_params(device="cpu"):
    g = torch.Generator().manual_seed(11)
    return [torch.nn.Parameter(torch.randn(s, generator=g).to(device)) for s in SHAPES]


def make_muon(params, distributed):
    groups = [
        {"params": params[:GROUP0], "lr": 0.05, "weight_decay": 0.1, "row_normalize": True},
        {"params": params[GROUP0:], "lr": 0.02, "normuon": True, "coefficients": "polar_express", "nesterov": False},
    ]
    return Muon(groups, lr=0.01, momentum=0.9, distributed=distributed)


def dyadic(shape, g, scale):
    return torch.round(torch.randn(shape, generator=g) * scale) / 64


def rank_grads(step, rank, world_size):
    """base + (rank - (ws-1)/2)·delta: the ranks' average is exactly base."""
    g = torch.Generator().manual_seed(100 + step)
    base = [dyadic(s, g, 64) for s in SHAPES]
    delta = [dyadic(s, g, 16) for s in SHAPES]
    offset = rank - (world_size - 1) / 2
    return [b + offset * d for b, d in zip(base, delta)], base


def run_single(steps, device="cpu"):
    params = make_params(device)
    opt = make_muon(params, "allreduce")
    for step in range(steps):
        _, base = rank_grads(step, 0, 1)
        for p, b in zip(params, base):
            p.grad = b.to(device)
        opt.step()
    return [p.detach().cpu() for p in params]


def _run_sharded(rank, world_size, device):
    params = make_params(device)
    opt = make_muon(params, "sharded")
    for step in range(STEPS):
        grads, _ = rank_grads(step, rank, world_size)
        for p, gr in zip(params, grads):
            p.grad = gr.to(device)
        opt.step()
    return [p.detach().cpu() for p in params]


def _worker_nccl(rank, world_size, init_file, out_dir):
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.save(_run_sharded(rank, world_size, f"cuda:{rank}"), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _worker(rank, world_size, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        out = {}
        params = make_params()
        opt = make_muon(params, "sharded")
        for step in range(STEPS):
            grads, _ = rank_grads(step, rank, world_size)
            for p, gr in zip(params, grads):
                p.grad = gr
            if step == 0:
                opt.launch_reduce_scatters()  # as Optimizers.step does; step() must not launch them twice
            opt.step()
            if step == STEPS - 2:
                saved = copy.deepcopy(opt.state_dict())  # state_dict holds live tensors; a checkpoint is a copy
                at_save = [p.detach().clone() for p in params]
        out["sharded"] = [p.detach().clone() for p in params]
        out["momentum_shapes"] = [tuple(opt._shards[i]["momentum"].shape) for i in range(len(opt.banks))]
        # resume from the per-rank checkpoint into a fresh optimizer and redo the last step
        resumed_params = [torch.nn.Parameter(t.clone()) for t in at_save]
        resumed = make_muon(resumed_params, "sharded")
        resumed.load_state_dict(saved)
        grads, _ = rank_grads(STEPS - 1, rank, world_size)
        for p, gr in zip(resumed_params, grads):
            p.grad = gr
        resumed.step()
        out["resumed"] = [p.detach().clone() for p in resumed_params]
        # distributed="allreduce" gets gradients already averaged (DDP's job)
        params = make_params()
        opt = make_muon(params, "allreduce")
        for step in range(STEPS):
            _, base = rank_grads(step, rank, world_size)
            for p, b in zip(params, base):
                p.grad = b.clone()
            opt.step()
        out["allreduce"] = [p.detach().clone() for p in params]
        out["ddp"] = _ddp_check(rank, world_size)
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.fc = torch.nn.Linear(6, 4)  # weight -> Muon, bias -> averaged by DDP

    def forward(self, x):
        return self.fc(x).square().sum()


def _net_input(rank):
    return torch.arange(18, dtype=torch.float32).view(3, 6) * (rank + 1) / 10


def _ddp_check(rank, world_size):
    """Gradients after a DDP backward: the excluded Muon weight keeps its local gradient, the bias is averaged."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    net = _Net()
    muon = Muon([net.fc.weight], lr=0.1, momentum=0.9, distributed="sharded")
    names = exclude_from_ddp(net, muon)  # before wrapping: DDP reads the list when it is built
    ddp = DDP(net)  # kept alive until backward has run: its reducer does the averaging
    ddp(_net_input(rank)).backward()
    return {"names": names, "weight_grad": net.fc.weight.grad.clone(), "bias_grad": net.fc.bias.grad.clone()}


@pytest.fixture(scope="module")
def single():
    assert not (dist.is_available() and dist.is_initialized())
    return {"sharded": run_single(STEPS)}


@pytest.mark.parametrize("world_size", [2, 3])
def test_sharded_matches_single_process(world_size, single, tmp_path):
    # fork: the children inherit the imported torch instead of importing it again on the shared 2-core machine
    mp.start_processes(_worker, args=(world_size, str(tmp_path / "init"), str(tmp_path)), nprocs=world_size,
                       join=True, start_method="fork")
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world_size)]
    start = [p.detach() for p in make_params()]
    for r, res in enumerate(results):
        for i in range(len(SHAPES)):
            assert torch.equal(res["sharded"][i], single["sharded"][i]), (world_size, r, i)
            assert torch.equal(res["resumed"][i], single["sharded"][i]), (world_size, r, i)
            assert torch.equal(res["allreduce"][i], single["sharded"][i]), (world_size, r, i)
            assert not torch.equal(res["sharded"][i], start[i])
        # momentum lives in ceil(n / ws)-matrix shards: banks (8,6)x7, (6,8)x1, (4,4)x2, (3,5)x1, largest first
        s = [-(-n // world_size) for n in (7, 1, 2, 1)]
        assert res["momentum_shapes"] == [(s[0], 8, 6), (s[1], 6, 8), (s[2], 4, 4), (s[3], 3, 5)]
    # DDP after exclude_from_ddp: the Muon weight keeps each rank's own gradient, the bias gets the average
    local = []
    for r in range(world_size):
        net = _Net()
        net(_net_input(r)).backward()
        local.append((net.fc.weight.grad, net.fc.bias.grad))
    mean_bias = sum(b for _, b in local) / world_size
    for r, res in enumerate(results):
        assert res["ddp"]["names"] == ["fc.weight"]
        assert torch.equal(res["ddp"]["weight_grad"], local[r][0])
        torch.testing.assert_close(res["ddp"]["bias_grad"], mean_bias)
    assert not torch.equal(local[0][0], local[1][0])


def test_exclude_from_ddp_names_follow_the_wrapped_module():
    """DDP gets the torch.compile wrapper in the trainer: the names must be the wrapper's (`_orig_mod.` ...)."""
    net = _Net()
    muon = Muon([net.fc.weight], lr=0.1, momentum=0.9)
    wrapped = torch.compile(net)  # compiles lazily: nothing is compiled here
    assert exclude_from_ddp(wrapped, muon) == ["_orig_mod.fc.weight"]
    assert getattr(net.fc.weight, "_ddp_ignored", False) and not getattr(net.fc.bias, "_ddp_ignored", False)
    with pytest.raises(ValueError, match="exclude_from_ddp"):
        exclude_from_ddp(torch.nn.Linear(2, 2), muon)


def test_sharded_state_refuses_another_world(tmp_path):
    """A per-rank shard saved by one rank layout cannot be loaded into another."""
    params = make_params()
    opt = make_muon(params, "sharded")
    state = opt.state_dict()
    assert "muon_shards" not in state  # one process: plain Muon, nothing sharded
    state["muon_shards"] = {"rank": 1, "world_size": 2, "banks": [[7, 8, 6], [1, 6, 8], [2, 4, 4], [1, 3, 5]],
                            "state": [{}, {}, {}, {}]}
    with pytest.raises(ValueError, match="same number of processes"):
        opt.load_state_dict(state)


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_gpu_nccl_sharded_matches_single_gpu(tmp_path):
    """NCCL's real reduce_scatter / all_gather and the NS kernels: 2 GPUs against one."""
    world_size = 2
    mp.start_processes(_worker_nccl, args=(world_size, str(tmp_path / "init"), str(tmp_path)), nprocs=world_size,
                       join=True, start_method="spawn")  # spawn: this process has already initialized CUDA
    single = run_single(STEPS, "cuda:0")
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world_size)]
    for i in range(len(SHAPES)):
        assert torch.equal(results[1][i], results[0][i]), i  # all-gathered updates: identical on every rank
        # batched kernels may round a matrix differently in a shard than in the whole bank
        torch.testing.assert_close(results[0][i], single[i], rtol=0, atol=STEPS * 0.05 * 2**-6)


# -- gradient clipping with sharded Muon (Optimizers.clip_grad_norm) ---------------------------------------
CLIP = 0.5  # well below the gradients' norm, so the coefficient matters


def _clip_step(rank, world_size, distributed):
    """One clipped step of Muon (every SHAPES matrix) + AdamW (one vector) on rank-local Muon gradients and an
    already averaged Adam gradient (as DDP leaves them); returns the parameters and the pre-clip norm."""
    from golf.optim.builder import Optimizers

    params = make_params()
    vec = torch.nn.Parameter(torch.linspace(-1, 1, 5))
    opts = Optimizers(None, make_muon(params, distributed), {"adam": torch.optim.AdamW([vec], lr=0.01)})
    grads, base = rank_grads(0, rank, world_size)
    for p, g in zip(params, grads if distributed == "sharded" else base):
        p.grad = g
    vec.grad = torch.linspace(3, -2, 5)
    norm = opts.clip_grad_norm(CLIP)
    opts.step()
    return [p.detach().clone() for p in [*params, vec]], float(norm)


def _clip_worker(rank, world_size, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.save(_clip_step(rank, world_size, "sharded"), os.path.join(out_dir, f"clip{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world_size", [2, 3])
def test_clipping_with_sharded_muon_matches_one_process(world_size, tmp_path):
    """Every rank clips with the norm of the *averaged* gradients, so all ranks (Adam parameters included)
    end equal to one process clipping the averaged gradients; local norms would differ per rank."""
    expected, expected_norm = _clip_step(0, 1, "allreduce")
    _, base = rank_grads(0, 0, 1)
    assert expected_norm > CLIP
    mp.start_processes(_clip_worker, args=(world_size, str(tmp_path / "init"), str(tmp_path)), nprocs=world_size,
                       join=True, start_method="fork")
    for r in range(world_size):
        got, norm = torch.load(tmp_path / f"clip{r}.pt", weights_only=True)
        assert norm == pytest.approx(expected_norm, rel=1e-6)
        for i, (g, e) in enumerate(zip(got, expected)):
            torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-6,
                                       msg=lambda m, r=r, i=i: f"rank {r} parameter {i}: {m}")
