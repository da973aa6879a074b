"""Shared benchmark helpers: timing (triton do_bench medians with p20/p80), physical rates, run identity (GPU
name, git commit) and rows appended to benchmarks/results.csv.

Every bench_<op>.py times in one process and reports the reference in the same run (performance.md §E.5:
always A/B on the same node). Timing never uses zeros (callers draw random inputs).
"""

from __future__ import annotations

import collections
import csv
import datetime
import io
import os
import statistics
import subprocess
import sys
import time
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


# Windows [first, last) of iterations for sustained(): a burst right after idle, then ever later stretches.
SUSTAINED_WINDOWS = ((10, 50), (100, 200), (400, 500), (900, 1000), (1400, 1500))


def sustained(fn, *, windows=SUSTAINED_WINDOWS, rest_s: float = 2.0) -> list[float]:
    """Median ms per call of `fn` in each window of one run of back-to-back calls (a CUDA event between calls,
    no L2 flush), started after `rest_s` idle seconds. A burst runs at the boost clock; a sustained run sinks to
    the clock the power cap allows (on the H200, 700 W: about 1.5 GHz for bf16 GEMMs), where do_bench's 100 ms
    and training also run. `fn` is warmed up (compiled) first."""
    fn()
    torch.cuda.synchronize()
    time.sleep(rest_s)
    n = max(last for _, last in windows)
    events = [torch.cuda.Event(enable_timing=True) for _ in range(n + 1)]
    events[0].record()
    for i in range(n):
        fn()
        events[i + 1].record()
    torch.cuda.synchronize()
    ms = [events[i].elapsed_time(events[i + 1]) for i in range(n)]
    return [statistics.median(ms[a:b]) for a, b in windows]


def summarize_clocks(lines: list[str], busy_watts: float = 300.0) -> str:
    """One line from `nvidia-smi --query-gpu=clocks.sm,power.draw,<reasons> --format=csv,noheader,nounits`
    samples: SM MHz (median, min) and W (median, max) over the busy samples (above busy_watts), and the
    clock-event reasons seen (0x4: SW power cap; 0x1: idle)."""
    busy = []
    for line in lines:
        parts = [p.strip() for p in line.split(",")]
        try:
            mhz, watts = int(parts[0]), float(parts[1])
        except (ValueError, IndexError):
            continue  # a header, "[N/A]" or a torn line
        if watts > busy_watts:
            busy.append((mhz, watts, parts[2] if len(parts) > 2 else "?"))
    if not busy:
        return f"no sample above {busy_watts:.0f} W"
    mhz = sorted(b[0] for b in busy)
    watts = sorted(b[1] for b in busy)
    reasons = collections.Counter(b[2] for b in busy).most_common(3)
    return (f"{len(busy)} busy samples: SM {mhz[len(mhz) // 2]} MHz median, {mhz[0]} min; "
            f"{watts[len(watts) // 2]:.0f} W median, {watts[-1]:.0f} max; reasons {reasons}")


class ClockSampler:
    """Samples SM clock, power and clock-event reasons with nvidia-smi every 100 ms while in the `with` block;
    summary() is summarize_clocks() of the samples, or why there are none."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.error = ""

    def __enter__(self) -> "ClockSampler":
        query = None
        for reasons in ("clocks_event_reasons.active", "clocks_throttle_reasons.active"):  # new and old drivers
            try:
                probe = subprocess.run(["nvidia-smi", f"--query-gpu={reasons}", "--format=csv,noheader"],
                                       capture_output=True, text=True, timeout=20)
            except (OSError, subprocess.TimeoutExpired) as exc:
                self.error = f"nvidia-smi not usable ({exc})"
                break
            if probe.returncode == 0:
                query = f"clocks.sm,power.draw,{reasons}"
                break
        self.proc = None
        if query:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")  # nvidia-smi numbers GPUs without it
            index = visible.split(",")[torch.cuda.current_device()] if visible else torch.cuda.current_device()
            self.proc = subprocess.Popen(["nvidia-smi", f"--id={index}", f"--query-gpu={query}",
                                          "--format=csv,noheader,nounits", "-lms", "100"],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        elif not self.error:
            self.error = "nvidia-smi knows no clock-event reasons field"
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.terminate()
            out, _ = self.proc.communicate(timeout=20)
            self.lines = out.splitlines()

    def summary(self) -> str:
        return self.error or summarize_clocks(self.lines)


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
