"""torchrun with 2 CPU processes (gloo) trains exactly like one process with gradient accumulation 2, with
Muon's gradients averaged by DDP (allreduce) or by Muon's own reduce-scatter (sharded), gradient clipping
active in both: a clip computed from one rank's local gradients would give each rank its own coefficient."""

import json
import subprocess
import sys

import pytest
import torch

from tests.test_main_job import tiny_args, tiny_data  # noqa: F401  (module-scoped data fixture)


@pytest.mark.slow
@pytest.mark.parametrize("muon_distributed", ["allreduce", "sharded"])
def test_two_ranks_match_one_rank_with_accumulation(tiny_data, tmp_path, muon_distributed):  # noqa: F811
    common = ("--train.val_every=0", "--train.iterations=4", "--quant.calib_batches=1", "--eval.stride=0",
              "--optim.grad_clip=0.05", f"--optim.muon_distributed={muon_distributed}")
    one, two = tmp_path / "one", tmp_path / "two"
    single = [sys.executable, "-m", "golf.cli", "train", *tiny_args(tiny_data, one, *common),
              "--train.max_micro_batch_tokens=512"]
    multi = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "golf.cli",
             "train", *tiny_args(tiny_data, two, *common)]
    for cmd in (single, multi):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    a = torch.load(one / "checkpoint.pt", weights_only=True)
    b = torch.load(two / "checkpoint.pt", weights_only=True)
    losses_a = [loss for _, loss in a["history"]]
    losses_b = [loss for _, loss in b["history"]]
    assert len(losses_a) == len(losses_b) == 4
    for la, lb in zip(losses_a, losses_b):
        assert abs(la - lb) <= 1e-5, (losses_a, losses_b)
    # both ranks calibrate GPTQ on their share of the same calibration tokens: the same artifact quality
    run_a, run_b = (json.loads((d / "run.json").read_text()) for d in (one, two))
    assert run_b["post_quant"]["plain"]["val_bpb"] == pytest.approx(run_a["post_quant"]["plain"]["val_bpb"], abs=1e-4)
