"""Shared benchmark helpers: timing (triton do_bench medians with p20/p80), physical rates, run identity (GPU
name, git commit) and rows appended to benchmarks/results.csv.

Every bench_<op>.py times in one process and reports the reference in the same run (performance.md §E.5:
always A/B on the same node). Timing never uses zeros (callers draw random inputs).
"""

from __future__ import annotations

import csv
import datetime
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

RESULTS_CSV = Path(__file__).resolve().parent / "results.csv"
CSV_FIELDS = ("date", "gpu", "commit", "command", "name", "median_ms", "rate")


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float

    def __str__(self) -> str:
        return f"{self.median_ms:.3f} ms [{self.p20_ms:.3f}, {self.p80_ms:.3f}]"


def bench(fn, *, warmup_ms: int = 25, rep_ms: int = 100, grad_to_none=None) -> Timing:
    """Median / p20 / p80 of `fn` in ms, timed with CUDA events by triton.testing.do_bench (L2 flushed per call)."""
    import triton.testing

    q = triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, grad_to_none=grad_to_none, quantiles=[0.5, 0.2, 0.8])
    return Timing(*q)


L2_FLUSH_BYTES = 256 * 2**20  # larger than the H200's 50 MB L2, as triton's do_bench uses


def bench_device(fn, *, calls: int = 20, replays: int = 11) -> Timing:
    """Device time of `fn` alone, with a cold L2: median / p20 / p80 over `replays` in ms per call.

    `fn` is captured `calls` times in one CUDA graph, each call after a write of L2_FLUSH_BYTES, and the same
    graph without `fn` is timed too; their difference per call is fn's GPU time without host overhead. For
    kernels of a few microseconds, where bench() measures the host's launch path instead. `fn` must be
    capturable (no host sync) and is warmed up (compiled) first.
    """
    flush = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.int32, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture, as torch.cuda.graphs recommends
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graphs = []
    for with_fn in (True, False):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                flush.zero_()
                if with_fn:
                    fn()
        graphs.append(graph)
    times: list[float] = []
    for _ in range(replays):
        pair = []
        for graph in graphs:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            torch.cuda.synchronize()
            pair.append(start.elapsed_time(end))
        times.append((pair[0] - pair[1]) / calls)
    q = torch.tensor(times).quantile(torch.tensor([0.5, 0.2, 0.8])).tolist()
    return Timing(*q)


def tflops(flops: float, ms: float) -> float:
    """TFLOP/s of `flops` floating-point operations done in `ms` milliseconds."""
    return flops / (ms * 1e-3) / 1e12


def gbps(nbytes: float, ms: float) -> float:
    """GB/s (decimal) of `nbytes` moved in `ms` milliseconds."""
    return nbytes / (ms * 1e-3) / 1e9


def gpu_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def git_commit(repo: Path | None = None) -> str:
    """Short commit of the repository, with "+dirty" when the tree differs from it; "unknown" without git."""
    cwd = str(repo or Path(__file__).resolve().parent.parent)
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True,
                               check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def command_line() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


def append_csv(rows: list[dict], *, commit: str | None = None, path: Path = RESULTS_CSV) -> None:
    """Append rows {name, median_ms, rate} with date, gpu, commit and command; written to a temporary file and
    renamed, so a crash never leaves a half-written CSV."""
    fixed = {
        "date": datetime.date.today().isoformat(),
        "gpu": gpu_name(),
        "commit": commit or git_commit(),
        "command": command_line(),
    }
    old = path.read_text() if path.exists() else ""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    if not old:
        writer.writeheader()
    for row in rows:
        unknown = set(row) - {"name", "median_ms", "rate"}
        if unknown:
            raise ValueError(f"append_csv: unknown fields {sorted(unknown)}; rows take name, median_ms, rate")
        writer.writerow({**fixed, **row})
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(old + buf.getvalue())
    os.replace(tmp, path)


def format_table(header: list[str], rows: list[list]) -> str:
    """A plain fixed-width text table."""
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
