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
