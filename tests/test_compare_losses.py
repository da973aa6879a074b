"""benchmarks/compare_losses.py: the loss-curve comparison used for kernel-vs-reference training runs."""

import importlib.util
from pathlib import Path

import pytest

from golf.train import checkpoint

spec = importlib.util.spec_from_file_location("compare_losses", Path(__file__).parents[1] / "benchmarks/compare_losses.py")
compare_losses = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_losses)


def write_run(root: Path, history: list[tuple[int, float]]) -> Path:
    checkpoint.save(root / "checkpoint.pt", {"history": [list(h) for h in history]}, {}, rank=0)
    return root


def test_exit_code_follows_the_tolerance(tmp_path, capsys):
    a = write_run(tmp_path / "a", [(1, 5.0), (2, 4.0), (3, 3.5)])
    b = write_run(tmp_path / "b", [(1, 5.01), (2, 4.03), (3, 3.49), (4, 3.3)])
    assert compare_losses.main([str(a), str(b), "--tolerance", "0.05"]) == 0
    assert "3 common steps: max |diff| 0.0300" in capsys.readouterr().out
    assert compare_losses.main([str(a), str(b), "--tolerance", "0.02"]) == 1


def test_runs_without_common_steps_are_an_error(tmp_path):
    a = write_run(tmp_path / "a", [(1, 5.0)])
    b = write_run(tmp_path / "b", [(2, 4.0)])
    with pytest.raises(ValueError, match="share no steps"):
        compare_losses.main([str(a), str(b)])


def test_train_logs_compare_like_run_dirs(tmp_path, capsys):
    log = tmp_path / "train.log"
    log.write_text("golf 0.1.0 ...\nstep:1/3 train_loss:5.0100 train_time:10ms step_avg:10.0ms\n"
                   "noise\nstep:2/3 train_loss:4.0300 train_time:20ms\nstep:3/3 train_loss:3.4900 train_time:30ms\n")
    a = write_run(tmp_path / "a", [(1, 5.0), (2, 4.0), (3, 3.5)])
    assert compare_losses.main([str(a), str(log), "--tolerance", "0.05"]) == 0
    assert "3 common steps: max |diff| 0.0300" in capsys.readouterr().out
    (tmp_path / "empty.log").write_text("no steps here\n")
    with pytest.raises(ValueError, match="train_loss"):
        compare_losses.losses(tmp_path / "empty.log")


def test_a_noise_pair_sets_the_tolerance(tmp_path, capsys):
    a = write_run(tmp_path / "a", [(1, 5.0), (2, 4.0)])
    b = write_run(tmp_path / "b", [(1, 5.03), (2, 4.0)])  # |diff| 0.03
    c = write_run(tmp_path / "c", [(1, 5.0), (2, 4.0)])
    d = write_run(tmp_path / "d", [(1, 5.0), (2, 4.025)])  # noise 0.025 -> tolerance 0.0375
    assert compare_losses.main([str(a), str(b), "--noise", str(c), str(d)]) == 0
    assert "tolerance 1.5 x 0.0250 = 0.0375" in capsys.readouterr().out
    assert compare_losses.main([str(a), str(b), "--noise", str(c), str(d), "--noise-factor", "1.0"]) == 1
