"""The MLP's two fused GEMMs, Triton kernels vs the warp-specialized Gluon kernels vs cuBLAS's plain GEMM of the
same shape, on one Hopper GPU: forward h = encode(leaky_relu(x @ w_up^T)^2) against x @ w_up^T, backward
dpre = (dy @ w_down) * phi'(h) against dy @ w_down.

    python benchmarks/bench_mlp_ws.py            # ms [p20, p80], TFLOP/s and max |diff| vs the Triton kernel
    python benchmarks/bench_mlp_ws.py --record   # the same, rows appended to benchmarks/results.csv
    python benchmarks/bench_mlp_ws.py --commit C # label the rows with commit C (default: git rev-parse)

Shapes: M = 98,304 tokens, D = K = 512, F = N = 1536 and 2048; FLOPs 2*M*D*F. Timing: harness.bench (do_bench
medians, L2 flushed per call). The Gluon configs are golf.kernels.mlp_ws.CANDIDATE_CONFIGS and a stage
variant of each; a config that fails to compile or launch prints its error and the run goes on, but a device
fault ends the process (the CUDA context is lost). About a minute on an H200, mostly compiles. Run
tests/kernels/test_mlp_ws.py first (its smoke test runs the kernels in a subprocess with a timeout): a kernel
that hangs would hang this script too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import append_csv, bench, format_table, git_commit, gpu_name, tflops  # noqa: E402

from golf.kernels import mlp as K  # noqa: E402
from golf.kernels import mlp_ws as W  # noqa: E402

M, D, SLOPE = 98304, 512, 0.5


def gluon_configs() -> dict[str, dict]:
    """The candidates and each with one stage fewer (more room, less prefetch depth)."""
    out = {}
    for name, cfg in W.CANDIDATE_CONFIGS.items():
        out[f"{name}s{cfg['num_stages']}"] = dict(cfg)
        out[f"{name}s{cfg['num_stages'] - 1}"] = dict(cfg, num_stages=cfg["num_stages"] - 1)
    return out


def inputs(F: int, seed: int = 0):
    g = torch.Generator(device="cuda").manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, device="cuda") * scale).bfloat16()

    x, w_up, w_down, dy = rand(M, D), rand(F, D, scale=D**-0.5), rand(D, F, scale=F**-0.5), rand(M, D)
    return x, w_up, dy, w_down, K.leaky_relu2_mlp_fwd(x, w_up, SLOPE)


def run_shape(F: int) -> list[list]:
    x, w_up, dy, w_down, h = inputs(F)
    flops = 2 * M * D * F
    cases = {
        "fwd": ({"triton (default config)": lambda: K.leaky_relu2_mlp_fwd(x, w_up, SLOPE)},
                lambda cfg: W.leaky_relu2_mlp_fwd_ws(x, w_up, SLOPE, config=cfg),
                ("cublas x @ w_up^T", lambda: torch.mm(x, w_up.t()))),
        "bwd": ({"triton (default config)": lambda: K.leaky_relu2_mlp_bwd(dy, w_down, h, SLOPE)},
                lambda cfg: W.leaky_relu2_mlp_bwd_ws(dy, w_down, h, SLOPE, config=cfg),
                ("cublas dy @ w_down", lambda: torch.mm(dy, w_down))),
    }
    rows = []
    for direction, (providers, gluon, (cublas_name, cublas)) in cases.items():
        providers = dict(providers)
        default = W.launch_config(D, F, direction)
        for name, cfg in gluon_configs().items():
            mark = " (default)" if cfg == default else ""
            providers[f"gluon_ws {name}{mark}"] = lambda cfg=cfg: gluon(cfg)
        providers[cublas_name] = cublas
        expect = next(iter(providers.values()))()
        for name, fn in providers.items():
            try:
                out = fn()
                torch.cuda.synchronize()
            except Exception as exc:  # a config that does not compile or launch: report it, time the others
                rows.append([F, direction, name, f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}",
                             "", ""])
                continue
            diff = "" if name.startswith("cublas") else f"{(out.float() - expect.float()).abs().max().item():.3e}"
            t = bench(fn)
            rows.append([F, direction, name, str(t), f"{tflops(flops, t.median_ms):.0f}", diff])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", action="store_true", help="append the rows to benchmarks/results.csv")
    parser.add_argument("--commit", default=None, help="commit label for results.csv (default: git rev-parse)")
    args = parser.parse_args()
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0):
        raise SystemExit("bench_mlp_ws.py needs a Hopper GPU (sm_90)")
    if not W.AVAILABLE:
        raise SystemExit(f"golf.kernels.mlp_ws is unavailable: {W.UNAVAILABLE_REASON}")
    import triton

    commit = args.commit or git_commit()
    print(f"{gpu_name()}, torch {torch.__version__}, triton {triton.__version__}, commit {commit}")
    rows = [row for F in (1536, 2048) for row in run_shape(F)]
    print(format_table(["F", "pass", "provider", "ms [p20, p80]", "TFLOP/s", "max|diff| vs triton"], rows))
    if args.record:
        append_csv([{"name": f"mlp_{r[1]} F={r[0]} {r[2]}", "median_ms": r[3].split()[0], "rate": f"{r[4]} TFLOP/s"}
                    for r in rows if r[4]], commit=commit)


if __name__ == "__main__":
    main()
