"""The main job end to end on a tiny model: train -> quantize -> artifact -> score the artifact -> report;
`golf eval` reproduces the score exactly; corrupt artifacts are rejected; NaN stops keep the last good
checkpoint; `golf quantize` re-packs a checkpoint."""

import json
import random

import pytest
import torch

from golf.cli import main
from golf.data.prepare import prepare

WORDS = ("the a of and to in is was he she it that for on with as his her at by from they we be this "
         "which or had not but all were when there can an your their said one what so up out if about "
         "who get them me would make like time just him know take people into year good some could").split()


def synthetic_documents(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        sentences = []
        for _ in range(rng.randint(3, 8)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(5, 14))]
            sentences.append(" ".join(words).capitalize() + rng.choice([".", ".", "!", "?"]))
        docs.append(" ".join(sentences))
    return docs


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_data")
    prepare(synthetic_documents(400), out, vocab_size=320, val_docs=20)
    return out


def tiny_args(data_dir, out, *extra):
    return [
        "--preset", "demo", "--data.dir", str(data_dir), "--out", str(out),
        "--model.vocab_size=320", "--model.num_layers=2", "--model.model_dim=64", "--model.num_heads=2",
        "--model.num_kv_heads=1", "--model.rope_dims=16", "--train.seq_len=64", "--train.batch_tokens=1024",
        "--train.iterations=6", "--train.val_every=3", "--train.val_tokens=2048", "--train.log_every=2",
        "--quant.calib_batches=2", "--quant.passthrough_numel=1024", "--eval.max_tokens=4096", "--eval.stride=32", "--eval.batch_seqs=8",
        "--train.device=cpu", "--train.kernels=false", "--train.warmup_steps=0", *extra,  # kernels run under the slow Triton interpreter here
    ]


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", *tiny_args(tiny_data, out)]) == 0
    return out


def test_run_directory_holds_the_report(tiny_run):
    summary = json.loads((tiny_run / "run.json").read_text())
    for key in ("config", "environment", "steps", "ms_per_step", "tokens_per_second", "pre_quant", "post_quant",
                "artifact", "ops"):
        assert key in summary
    assert summary["steps"] == 6
    art = summary["artifact"]
    assert art["total_bytes"] == art["model_bytes"] + art["code_bytes"] <= 16_000_000
    assert art["model_bytes"] == (tiny_run / "artifact.golf").stat().st_size
    assert {"plain", "sliding"} <= set(summary["post_quant"])
    assert summary["ops"]["leaky_relu2_mlp"].startswith("reference")
    for name in ("train.log", "loss.png", "checkpoint.pt", "artifact.golf"):
        assert (tiny_run / name).is_file()
    assert "post-quant sliding" in (tiny_run / "train.log").read_text()


def test_eval_reproduces_the_run_exactly(tiny_run, capsys):
    summary = json.loads((tiny_run / "run.json").read_text())
    capsys.readouterr()
    assert main(["eval", str(tiny_run / "artifact.golf")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["val_bpb"] == summary["post_quant"]["plain"]["val_bpb"]
    assert out["sliding_val_bpb"] == summary["post_quant"]["sliding"]["val_bpb"]


def test_flipped_byte_is_rejected(tiny_run, tmp_path, capsys):
    data = bytearray((tiny_run / "artifact.golf").read_bytes())
    data[len(data) // 2] ^= 0x01
    bad = tmp_path / "bad.golf"
    bad.write_bytes(bytes(data))
    assert main(["eval", str(bad)]) == 2
    assert "checksum" in capsys.readouterr().err


def test_quantize_repacks_a_checkpoint(tiny_run, tmp_path, capsys):
    capsys.readouterr()
    assert main(["quantize", str(tiny_run / "checkpoint.pt"), "--quant.bits=5", "--out", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (tmp_path / "artifact.golf").stat().st_size == out["model_bytes"]
    assert out["model_bytes"] < (tiny_run / "artifact.golf").stat().st_size  # int5 packs smaller than int6


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path, monkeypatch, capsys):
    from golf.train.trainer import Trainer

    real_step = Trainer.step
    calls = {"n": 0}

    def step(self, lr, momentum):
        calls["n"] += 1
        loss = real_step(self, lr, momentum)
        return loss * float("nan") if calls["n"] == 5 else loss

    monkeypatch.setattr(Trainer, "step", step)
    code = main(["train", *tiny_args(tiny_data, tmp_path, "--train.checkpoint_every=2", "--train.val_every=0")])
    assert code == 2
    err = capsys.readouterr().err
    assert "nan at step 5" in err and "checkpoint" in err
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["step"] == 4


def test_resume_continues_to_the_same_result(tiny_data, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    common = ("--train.val_every=0", "--optim.ema_decay=0", "--optim.warmdown_iters=0")  # schedule independent of iterations
    assert main(["train", *tiny_args(tiny_data, full, *common)]) == 0
    assert main(["train", *tiny_args(tiny_data, part, *common, "--train.iterations=3")]) == 0
    assert main(["train", *tiny_args(tiny_data, part, *common), "--resume", str(part / "checkpoint.pt")]) == 0
    a = torch.load(full / "checkpoint.pt", weights_only=True)
    b = torch.load(part / "checkpoint.pt", weights_only=True)
    assert b["step"] == 6
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-5, atol=1e-6)


def test_cuda_requested_without_gpu_is_a_clear_error(tiny_data, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["train", *tiny_args(tiny_data, tmp_path, "--train.device=cuda")]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
