"""GPTQ per tensor and for the whole core11 model: the column-update op's implementations side by side.

    python benchmarks/bench_gptq.py                  # every device present; rows -> benchmarks/results.csv
    python benchmarks/bench_gptq.py --device cpu     # only the CPU rows
    python benchmarks/bench_gptq.py --no-csv         # print only
    python benchmarks/bench_gptq.py --threads 1      # CPU rows with one thread (steadier on a busy machine)

Tensors: core11 = 11 layers x {c_q 512x512, c_k 256x512, c_v 256x512, attn.proj 512x512, mlp.fc 1536x512,
mlp.proj 512x1536} + tok_emb 1024x512 (67 matrices). Weights: random normal with per-row scale spread;
Hessians H = X^T X / n from correlated, heavy-tailed activations with a few outlier channels, n = 2 x cols
tokens (never zeros). int6, absmax clip, block 128, act-order, damping 0.01.
Providers: CPU: the torch loop (impl="reference") and the C++ op (impl="cpp"); GPU: the torch loop on the GPU
and the CUDA op (impl="cuda"). Each times the whole gptq_quantize call (damping, Cholesky, blocked sweep,
trailing matmuls) and, separately, one block of the column update (rows x 128) alone.
Timing: GPU with triton do_bench (median, p20, p80); CPU with wall-clock medians over --reps calls after one
warm-up. The whole-model time is measured (all 67 tensors in sequence, median of --model-reps runs), not
summed. The table ends with the speed-up over the torch loop on the same device.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Timing, append_csv, bench, format_table, gpu_name  # noqa: E402

from golf import _ext  # noqa: E402
from golf.ops.gptq import gptq_block_update  # noqa: E402
from golf.quant import scheme  # noqa: E402
from golf.quant.gptq import gptq_quantize, inverse_cholesky_upper  # noqa: E402

LAYERS = 11
LAYER_SHAPES = {"c_q": (512, 512), "c_k": (256, 512), "c_v": (256, 512), "attn.proj": (512, 512),
                "mlp.fc": (1536, 512), "mlp.proj": (512, 1536)}
EMBED_SHAPE = (1024, 512)
BLOCK = 128


def core11_tensors() -> list[tuple[str, tuple[int, int]]]:
    names = [(f"blocks.{i}.{n}", s) for i in range(LAYERS) for n, s in LAYER_SHAPES.items()]
    return names + [("tok_emb", EMBED_SHAPE)]


def realistic_problem(rows: int, cols: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(W [rows, cols], H [cols, cols]) in fp32 on the CPU."""
    g = torch.Generator().manual_seed(seed)
    n = 2 * cols
    z = torch.randn(n, cols, generator=g) * torch.exp(0.5 * torch.randn(n, 1, generator=g))
    mix = torch.eye(cols) + torch.randn(cols, cols, generator=g) / cols**0.5
    chan = torch.exp(0.6 * torch.randn(cols, generator=g))
    chan[torch.randperm(cols, generator=g)[: cols // 100]] *= 8.0
    x = (z @ mix) * chan
    w = 0.02 * torch.randn(rows, cols, generator=g) * torch.exp(0.3 * torch.randn(rows, 1, generator=g))
    return w, x.T @ x / n


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def wall(fn, reps: int) -> Timing:
    fn()  # warm-up (allocator, thread pool, first-call costs)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    q = lambda p: times[min(len(times) - 1, int(p * len(times)))]  # noqa: E731
    return Timing(statistics.median(times), q(0.2), q(0.8))


def timer(device: str, reps: int):
    if device == "cuda":
        return lambda fn: bench(fn, warmup_ms=50, rep_ms=300)

    return lambda fn: wall(fn, reps)


def providers(device: str) -> list[str]:
    if device == "cpu":
        return ["reference"] + (["cpp"] if _ext.HAS_EXT else [])
    return ["reference"] + (["cuda"] if _ext.has_cuda_ops() else [])


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_device(device: str, args) -> tuple[list[list], list[dict]]:
    time_it = timer(device, args.reps)
    label = gpu_name() if device == "cuda" else f"{cpu_name()}, {torch.get_num_threads()} threads"
    shapes = sorted({s for _, s in core11_tensors()}, key=lambda s: (s[1], s[0]))
    problems = {s: tuple(t.to(device) for t in realistic_problem(*s, seed=i)) for i, s in enumerate(shapes)}
    table, csv_rows = [], []

    def record(case: str, impl: str, t: Timing, ref_ms: float | None):
        speed = f"{ref_ms / t.median_ms:.1f}x" if ref_ms else ""
        table.append([device, case, impl, f"{t.median_ms:.3f}", f"[{t.p20_ms:.3f}, {t.p80_ms:.3f}]", speed])
        csv_rows.append({"name": f"gptq {case} {impl} on {device} ({label})", "median_ms": f"{t.median_ms:.4f}",
                         "rate": f"{speed} vs torch loop" if speed else ""})
        print(f"{device:5s} {case:28s} {impl:10s} {t}", flush=True)

    impls = providers(device)
    for shape in shapes:
        w, h = problems[shape]
        hinv, _ = inverse_cholesky_upper(h)
        s = scheme.row_scales(w, bits=6).float()
        wb, hb = w[:, :BLOCK], hinv[:BLOCK, :BLOCK]
        ref_block = ref_full = None
        for impl in impls:  # the torch loop first: the others report their speed-up over it
            t_block = time_it(lambda: gptq_block_update(wb, hb, s, 31, impl=impl))
            record(f"block {shape[0]}x{BLOCK} of {shape[0]}x{shape[1]}", impl, t_block, ref_block)
            ref_block = ref_block or t_block.median_ms
            t_full = time_it(lambda: gptq_quantize(w, h, bits=6, impl=impl))
            record(f"gptq_quantize {shape[0]}x{shape[1]}", impl, t_full, ref_full)
            ref_full = ref_full or t_full.median_ms

    tensors = core11_tensors()
    ref_model = None
    for impl in impls:

        def whole_model():
            for _, shape in tensors:
                gptq_quantize(*problems[shape], bits=6, impl=impl)
            sync(device)

        # the CPU torch loop over 67 tensors takes minutes: one run, no warm-up (it is the slow baseline)
        t = wall_once(whole_model) if (device == "cpu" and impl == "reference") else wall(whole_model, args.model_reps)
        record(f"core11 model ({len(tensors)} tensors)", impl, t, ref_model)
        ref_model = ref_model or t.median_ms
    return table, csv_rows


def wall_once(fn) -> Timing:
    """One timed run without warm-up: the CPU torch loop over 67 tensors takes minutes."""
    t0 = time.perf_counter()
    fn()
    ms = (time.perf_counter() - t0) * 1e3
    return Timing(ms, ms, ms)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("all", "cpu", "cuda"), default="all")
    p.add_argument("--reps", type=int, default=5, help="CPU wall-clock repetitions per tensor (median)")
    p.add_argument("--model-reps", type=int, default=3, help="whole-model repetitions (median)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (torch.set_num_threads); 0 keeps torch's")
    p.add_argument("--no-csv", action="store_true", help="do not append to benchmarks/results.csv")
    args = p.parse_args(argv)
    if args.threads > 0:
        # On a shared machine one thread is the steadier measurement: a parallel region waits for its
        # slowest thread, and a descheduled thread costs a whole scheduler slice.
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            raise SystemExit("--device cuda: no CUDA device here")
        devices.remove("cuda")
    table, rows = [], []
    for device in devices:
        t, r = run_device(device, args)
        table += t
        rows += r
    print()
    print(f"GPTQ int6 absmax, block {BLOCK}, act-order; CPU: {cpu_name()} ({torch.get_num_threads()} threads)"
          + (f"; GPU: {gpu_name()}" if "cuda" in devices else ""))
    print(format_table(["device", "case", "impl", "median ms", "[p20, p80]", "vs torch loop"], table))
    if not args.no_csv:
        append_csv(rows)


if __name__ == "__main__":
    main()
