"""benchmarks/harness.py's pieces that need no GPU."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from harness import summarize_clocks  # noqa: E402


def test_clock_summary_counts_busy_samples_only():
    lines = ["1980, 130.5, 0x0000000000000001",  # idle
             "1515, 690.2, 0x0000000000000004", "1410, 701.0, 0x0000000000000004", "1980, 450.0, 0x0000000000000000",
             "[N/A], [N/A], [N/A]", "1980, 6"]  # unreadable and torn lines are skipped
    summary = summarize_clocks(lines)
    assert summary.startswith("3 busy samples: SM 1515 MHz median, 1410 min; 690 W median, 701 max")
    assert "('0x0000000000000004', 2)" in summary


def test_clock_summary_without_busy_samples():
    assert summarize_clocks(["1980, 120.0, 0x1"]) == "no sample above 300 W"


def test_clock_sampler_without_nvidia_smi_says_why(monkeypatch, tmp_path):
    from harness import ClockSampler

    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi here
    with ClockSampler() as sampler:
        pass
    assert sampler.summary().startswith("nvidia-smi not usable")


def test_bench_step_rows_use_the_results_csv_schema(tmp_path):
    """bench_step's rows go through harness.append_csv: the same columns as every other benchmark's (they once
    had their own order), the commit as given, appended after existing rows."""
    import csv

    from bench_step import record_csv
    from harness import CSV_FIELDS

    path = tmp_path / "results.csv"
    result = dict(preset="core11", kernels=True, qat=False, step_tokens=786432, step_ms=693.02,
                  tokens_per_s=1134792.4)
    record_csv([result], "abc1234", path)
    record_csv([dict(result, kernels=False, step_ms=713.71)], "abc1234", path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_FIELDS
    assert [(r["name"], r["median_ms"], r["rate"], r["commit"]) for r in rows] == [
        ("step_core11_kernels=True_qat=False_786432tok", "693.02", "1134792 tok/s", "abc1234"),
        ("step_core11_kernels=False_qat=False_786432tok", "713.71", "1134792 tok/s", "abc1234"),
    ]
