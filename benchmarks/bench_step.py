"""End-to-end training-step benchmark on the current GPU (design.md; issue 3 item 8).

Times golf's compiled training step at a per-rank micro-batch of 98,304 tokens (fwd+bwd) and the full
786,432-token step run as micro-batches with gradient accumulation plus the optimizer step, warm-up
excluded, on random tokens (never zeros). Reports ms, tokens/s, MFU against the measured 791 TFLOP/s bf16
peak of the H200, the optimizer's share, peak memory and the implementation of every op.

    python benchmarks/bench_step.py --preset core11                # golf's kernels where available
    python benchmarks/bench_step.py --preset core11 --compare      # also with every op on its reference
    python benchmarks/bench_step.py --preset core11 --qat          # also with QAT's fake-quant switched on
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import golf.ops
from golf.config import GolfConfig, apply_overrides, parse_override_args
from golf.eval.evaluate import autocast_for
from golf.model import GPT
from golf.optim import build_optimizers
from golf.presets import get_preset
from golf.quant.qat import set_qat
from golf.train.report import environment

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import append_csv  # noqa: E402

PEAK_TFLOPS = 791.0  # measured bf16 dense matmul ceiling of one H200 (performance.md §I)
MICRO_TOKENS = 98_304


def flops_per_token(cfg: GolfConfig) -> float:
    """Model FLOPs per trained token: 6 x (block matrices + tied head) + causal attention 6 x L x T x D
    (the performance.md §F floor: 228 MFLOP/token for core11)."""
    m = cfg.model
    kv = m.num_kv_heads * m.head_dim
    per_layer = 2 * m.model_dim * m.model_dim + 2 * kv * m.model_dim + 2 * m.mlp_hidden * m.model_dim
    matmul = m.num_layers * per_layer + m.vocab_size * m.model_dim
    return 6 * matmul + 6 * m.num_layers * cfg.train.seq_len * m.model_dim


def cuda_time(fn, reps: int) -> list[float]:
    """Per-call milliseconds of `reps` calls, each bracketed by CUDA events."""
    out = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        out.append(start.elapsed_time(end))
    return out


def bench(cfg: GolfConfig, steps: int, warmup: int, qat: bool = False) -> dict:
    device = torch.device("cuda")
    torch.manual_seed(cfg.seed)
    model = GPT(cfg.model).to(device)
    set_qat(model, qat, cfg.quant)  # on: every exported matrix is fake-quantized in forward, as late in training
    fwd = torch.compile(model, dynamic=False, fullgraph=True)
    opt = build_optimizers(model, cfg.optim)
    seq = cfg.train.seq_len
    rows = MICRO_TOKENS // seq
    accum = cfg.train.batch_tokens // MICRO_TOKENS
    gen = torch.Generator(device=device).manual_seed(0)
    data = [torch.randint(0, cfg.model.vocab_size, (rows, seq + 1), device=device, generator=gen) for _ in range(accum)]

    def micro(i: int) -> None:
        x, y = data[i][:, :-1], data[i][:, 1:]
        with autocast_for(device):
            loss = fwd(x, y)
        (loss / accum).backward()

    def full_step() -> None:
        for i in range(accum):
            micro(i)
        opt.step()
        opt.zero_grad(set_to_none=True)

    golf.ops._dispatch.reset()
    t0 = time.perf_counter()
    for _ in range(warmup):
        full_step()
    torch.cuda.synchronize()
    compile_s = time.perf_counter() - t0
    torch.cuda.reset_peak_memory_stats()
    micro_ms = cuda_time(lambda: micro(0), steps * 2)
    opt.zero_grad(set_to_none=True)
    full_ms = cuda_time(full_step, steps)
    for i in range(accum):  # gradients in place, then the optimizer alone
        micro(i)
    opt_ms = cuda_time(opt.step, steps)
    opt.zero_grad(set_to_none=True)
    fpt = flops_per_token(cfg)
    full = statistics.median(full_ms)
    return {
        "preset": cfg.preset,
        "kernels": golf.ops.kernels_enabled(),
        "qat": qat,
        "micro_batch_tokens": MICRO_TOKENS,
        "micro_ms": statistics.median(micro_ms),
        "step_tokens": accum * MICRO_TOKENS,
        "step_ms": full,
        "tokens_per_s": accum * MICRO_TOKENS / (full / 1000),
        "mfu": fpt * accum * MICRO_TOKENS / (full / 1000) / (PEAK_TFLOPS * 1e12),
        "optimizer_ms": statistics.median(opt_ms),
        "optimizer_share": statistics.median(opt_ms) / full,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
        "compile_s": compile_s,
        "attention": model.attention_backend,
        "ops": golf.ops.implementations(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="core11")
    p.add_argument("--steps", type=int, default=5, help="timed full steps (micro-batches: twice as many)")
    p.add_argument("--warmup", type=int, default=3, help="untimed full steps (compilation, autotuning)")
    p.add_argument("--compare", action="store_true", help="also run with every golf.ops op on its reference")
    p.add_argument("--qat", action="store_true", help="also run with QAT on (kernels on): QAT's share of the step")
    p.add_argument("--csv", default="benchmarks/results.csv", help="append rows here ('' to skip)")
    p.add_argument("--commit", default=None, help="commit label for the CSV rows (default: git rev-parse; pass it "
                   "where the checkout's git history is not the tree's)")
    args, rest = p.parse_known_args(argv)
    if not torch.cuda.is_available():
        print("bench_step needs a CUDA GPU", file=sys.stderr)
        return 2
    cfg = get_preset(args.preset)
    apply_overrides(cfg, parse_override_args(rest))
    cfg.train.batch_tokens = max(cfg.train.batch_tokens // MICRO_TOKENS, 1) * MICRO_TOKENS
    variants = [(True, False)] + [(False, False)] * args.compare + [(True, True)] * args.qat  # (kernels, qat)
    results = []
    for kernels, qat in variants:
        golf.ops.set_kernels_enabled(kernels)
        torch._dynamo.reset()
        results.append(bench(cfg, args.steps, args.warmup, qat=qat))
    env = environment()
    commit = args.commit or env["git_commit"]
    print(f"\n{env['gpu']}  torch {env['torch']}  triton {env['triton']}  commit {commit}")
    print(f"{'preset':8} {'kernels':7} {'qat':5} {'micro ms':>9} {'step ms':>9} {'tok/s':>11} {'MFU':>6} {'opt ms':>7} "
          f"{'opt %':>6} {'peak GiB':>8}")
    for r in results:
        print(f"{r['preset']:8} {str(r['kernels']):7} {str(r['qat']):5} {r['micro_ms']:9.2f} {r['step_ms']:9.1f} "
              f"{r['tokens_per_s']:11,.0f} {100 * r['mfu']:5.1f}% {r['optimizer_ms']:7.2f} "
              f"{100 * r['optimizer_share']:5.1f}% {r['peak_mem_gib']:8.1f}")
        print("  ops: " + json.dumps(r["ops"]) + f"  attention: {r['attention']}")
    if args.qat:
        print(f"QAT cost: {100 * (results[-1]['step_ms'] / results[0]['step_ms'] - 1):+.2f}% of the step")
    if args.csv:
        record_csv(results, commit, Path(args.csv))
    return 0


def record_csv(results: list[dict], commit: str, path: Path) -> None:
    """One row per result, in the schema and with the atomic append every benchmark uses (harness.append_csv);
    names like step_core11_kernels=True_qat=False_786432tok."""
    append_csv([{"name": f"step_{r['preset']}_kernels={r['kernels']}_qat={r['qat']}_{r['step_tokens']}tok",
                 "median_ms": f"{r['step_ms']:.2f}", "rate": f"{r['tokens_per_s']:.0f} tok/s"} for r in results],
               commit=commit, path=path)


if __name__ == "__main__":
    sys.exit(main())
