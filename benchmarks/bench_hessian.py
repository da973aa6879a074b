"""GPTQ calibration's X^T X: the fp32 path against the tensor-core path that bf16 inputs take on CUDA.

    python benchmarks/bench_hessian.py       # one H200: ms, TFLOP/s and error vs fp64; rows -> results.csv

golf.quant.hessian.xtx_fp32 sums X^T X of every calibration batch for every GPTQ'd matrix. Under autocast the
inputs arrive in bf16; the fp32 path upcasts them and runs a true fp32 matmul (SIMT, no TF32), the tensor-core
path runs `torch.mm(x.T, x, out_dtype=torch.float32)`: exact bf16 products, fp32 sums. Shapes: one core11
micro-batch of calibration tokens (M = 98,304) into a 512-wide input (attention, MLP up) and a 1536-wide one
(MLP down, the largest). Inputs: random normal bf16 with a few outlier channels (never zeros).
Error: max |H - H_fp64| / max |H_fp64| on the first 8,192 rows, for both paths.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import append_csv, bench, format_table, git_commit, gpu_name, tflops  # noqa: E402

from golf.quant.gptq import fp32_matmuls  # noqa: E402
from golf.quant.hessian import xtx_fp32  # noqa: E402

TOKENS = 98_304
WIDTHS = (512, 1536)


def fp32_path(x: torch.Tensor) -> torch.Tensor:
    with fp32_matmuls():
        x32 = x.float()
        return x32.T @ x32


def make_input(rows: int, cols: int) -> torch.Tensor:
    g = torch.Generator(device="cuda").manual_seed(cols)
    x = torch.randn(rows, cols, device="cuda", generator=g)
    x[:, :4] *= 20.0  # outlier channels, as real activations have
    return x.bfloat16()


def rel_err(h: torch.Tensor, h64: torch.Tensor) -> float:
    return ((h.double() - h64).abs().max() / h64.abs().max()).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commit", default=None, help="commit label for results.csv (default: git rev-parse)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_hessian.py needs a CUDA GPU")
    commit = args.commit or git_commit()
    rows, csv_rows = [], []
    for cols in WIDTHS:
        x = make_input(TOKENS, cols)
        small = x[:8192]
        h64 = small.double().T @ small.double()
        flops = 2.0 * TOKENS * cols * cols
        for name, fn in (("fp32", fp32_path), ("tensor_core", xtx_fp32)):
            err = rel_err(fn(small), h64)
            t = bench(lambda: fn(x))  # noqa: B023
            rows.append([f"{TOKENS}x{cols}", name, str(t), f"{tflops(flops, t.median_ms):.0f}", f"{err:.1e}"])
            csv_rows.append({"name": f"xtx_{TOKENS}x{cols}_{name}", "median_ms": f"{t.median_ms:.4f}",
                             "rate": f"{tflops(flops, t.median_ms):.1f} TFLOP/s"})
    append_csv(csv_rows, commit=commit)
    print(f"\n{gpu_name()}, torch {torch.__version__}, commit {commit}")
    print(format_table(["X", "path", "ms [p20, p80]", "TFLOP/s", "rel err vs fp64"], rows))


if __name__ == "__main__":
    main()
