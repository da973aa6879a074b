"""Fused LeakyReLU(0.5)^2 MLP: golf vs the torch reference, eager and torch.compile'd, on one GPU.

    python benchmarks/bench_mlp.py                 # forward / backward / full at the record shapes: ms, TFLOP/s,
                                                   # activation memory kept for backward; rows -> results.csv
    python benchmarks/bench_mlp.py --sweep         # first time candidate launch configs of the two kernels and
                                                   # the cuBLAS pieces around them, then the above with the
                                                   # fastest (what golf.kernels.mlp._CONFIGS is filled from)
    python benchmarks/bench_mlp.py --sustained     # fwd+bwd over 1,500 back-to-back iterations after an idle
                                                   # pause: a burst (boost clock) against the power-capped
                                                   # steady state, with nvidia-smi's clocks, power and reasons

Shapes: M = 98,304 tokens (48 x 2048, one GPU's micro-batch), D = 512, F = 1536 (MLP3x) and 2048 (MLP4x).
FLOPs: 2*M*D*F per GEMM; forward 2 GEMMs, backward 4, forward+backward 6.
The gemm_floor provider is the same six GEMMs without the activation (x @ w_up^T @ w_down^T through autograd:
cuBLAS alone, nothing else): what any bf16 implementation at cuBLAS's GEMM speed cannot beat.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    SUSTAINED_WINDOWS,
    ClockSampler,
    Timing,
    append_csv,
    bench,
    format_table,
    git_commit,
    gpu_name,
    sustained,
    tflops,
)

import golf.ops  # noqa: E402
from golf.kernels import mlp_ws  # noqa: E402
from golf.ops._dispatch import reset as reset_implementations  # noqa: E402
from golf.ops.mlp import leaky_relu2_mlp_ref  # noqa: E402

SHAPES = ((98_304, 512, 1536), (98_304, 512, 2048))
# golf_compiled: the op inside a torch.compile graph, as the model calls it in training. golf_compiled_triton: the
# same with golf.kernels.mlp_ws switched off, i.e. the Triton kernels where the Gluon ones would run (sm_90).
PROVIDERS = ("golf", "golf_compiled", "golf_compiled_triton", "torch_ref", "torch_ref_compiled", "gemm_floor")
SUSTAINED_PROVIDERS = ("golf_compiled", "torch_ref_compiled", "gemm_floor")
MODES = ("forward", "backward", "full")
GEMMS_PER_MODE = {"forward": 2, "backward": 4, "full": 6}
SLOPE = 0.5

# Candidates for --sweep: (BLOCK_M, BLOCK_N, BLOCK_K, num_stages, num_warps, programs_per_sm). Each fits sm_90's
# 227 KB of shared memory per program, and with two programs per SM both fit the SM's 228 KB and 64K registers
# (checked against triton 3.6's compile reports).
FWD_CANDIDATES = (
    (128, 256, 64, 4, 8, 1),
    (128, 256, 64, 3, 8, 1),
    (256, 128, 64, 3, 8, 1),
    (128, 128, 64, 4, 8, 1),
    (128, 128, 64, 3, 4, 2),
    (128, 128, 32, 4, 8, 2),
)
# Backward candidates may add the kernel's epilogue option prefetch_h (h tile prefetched into L2 before the
# main loop).
BWD_CANDIDATES = (
    (128, 256, 64, 3, 8, 1),
    (128, 256, 64, 3, 8, 1, {"prefetch_h": True}),
    (128, 256, 64, 2, 8, 1),
    (256, 128, 64, 3, 8, 1),
    (256, 128, 64, 3, 8, 1, {"prefetch_h": True}),
    (128, 128, 64, 2, 8, 2),
    (128, 128, 64, 2, 8, 2, {"prefetch_h": True}),
    (128, 128, 32, 4, 8, 2),
)


def _inputs(M: int, D: int, F: int, dtype=torch.bfloat16, requires_grad: bool = True):
    """Random x [M, D], w_up [F, D], w_down [D, F] (init-scale weights) and dy [M, D]."""
    g = torch.Generator(device="cuda").manual_seed(0)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, device="cuda", generator=g) * scale).to(dtype)

    x, w_up, w_down = rand(M, D), rand(F, D, scale=D**-0.5), rand(D, F, scale=F**-0.5)
    if requires_grad:
        for t in (x, w_up, w_down):
            t.requires_grad_()
    return x, w_up, w_down, rand(M, D)


def setup_mlp(provider: str, M: int, D: int, F: int, dtype=torch.bfloat16):
    """(forward closure, leaf tensors, dy) for one provider; shared by the speed and memory measurements."""
    x, w_up, w_down, dy = _inputs(M, D, F, dtype)
    fn = {
        "golf": golf.ops.leaky_relu2_mlp,
        "golf_compiled": torch.compile(golf.ops.leaky_relu2_mlp, dynamic=False, fullgraph=True),
        "golf_compiled_triton": torch.compile(golf.ops.leaky_relu2_mlp, dynamic=False, fullgraph=True),
        "torch_ref": leaky_relu2_mlp_ref,
        "torch_ref_compiled": torch.compile(leaky_relu2_mlp_ref, dynamic=False),
        "gemm_floor": lambda x, w_up, w_down, slope: torch.nn.functional.linear(x @ w_up.t(), w_down),
    }[provider]
    return (lambda: fn(x, w_up, w_down, SLOPE)), (x, w_up, w_down), dy


def saved_activation_bytes(forward) -> int:
    """Bytes that stay allocated after a training forward, less the output itself: what backward keeps."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    y = forward()
    torch.cuda.synchronize()
    kept = torch.cuda.memory_allocated() - base - y.numel() * y.element_size()
    del y
    return kept


def time_modes(forward, leaves, dy) -> dict[str, Timing]:
    out = {"forward": bench(forward)}
    y = forward()
    try:
        out["backward"] = bench(lambda: y.backward(dy, retain_graph=True), grad_to_none=list(leaves))
    except RuntimeError as exc:  # a provider whose backward cannot run twice: report full - forward instead
        print(f"  backward alone failed ({exc}); reporting full - forward", file=sys.stderr)
        out["backward"] = None
    del y
    allocs = torch.cuda.memory_stats().get("num_device_alloc", 0)
    out["full"] = bench(lambda: forward().backward(dy), grad_to_none=list(leaves))
    allocs = torch.cuda.memory_stats().get("num_device_alloc", 0) - allocs
    if allocs:  # cudaMalloc inside the timed loop synchronizes and inflates the numbers: say so
        print(f"  note: {allocs} device allocations during the forward+backward timing", file=sys.stderr)
    if out["backward"] is None:
        f, b = out["full"], out["forward"]
        out["backward"] = Timing(f.median_ms - b.median_ms, f.p20_ms - b.p20_ms, f.p80_ms - b.p80_ms)
    return out


def host_and_graph_ms(forward, leaves, dy) -> tuple[float, float, float | None]:
    """Forward+backward three ways, no L2 flush: host ms per step (launch cost alone), wall ms per step of 20
    back-to-back steps, and the median of CUDA-graph replays (device time without host overhead)."""
    import triton.testing

    def step():
        return torch.autograd.grad(forward(), leaves, dy)  # no .grad accumulation, so a graph can replay it

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(20):
        step()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    try:
        graph = triton.testing.do_bench_cudagraph(step, rep=40, return_mode="median")
    except Exception as exc:  # a provider that cannot be captured: report the other two
        print(f"  CUDA-graph timing failed: {type(exc).__name__}: {str(exc)[:120]}", file=sys.stderr)
        graph = None
    return (t1 - t0) / 20 * 1e3, (t2 - t0) / 20 * 1e3, graph


def each_provider(providers):
    """(M, D, F, provider, forward, leaves, dy) for every shape and provider, each set up and warmed up (compile,
    autotune and first-launch costs stay out of the numbers), its memory freed before the next."""
    try:
        for M, D, F in SHAPES:
            for provider in providers:
                mlp_ws.ENABLED = provider != "golf_compiled_triton"  # read at each call, forward and backward
                reset_implementations()  # so that implementation() names what this provider ran
                forward, leaves, dy = setup_mlp(provider, M, D, F)
                forward().backward(dy)
                for t in leaves:
                    t.grad = None
                yield M, D, F, provider, forward, leaves, dy
                del forward, leaves, dy
                torch.cuda.empty_cache()
    finally:
        mlp_ws.ENABLED = True


def print_header(commit: str) -> None:
    print(f"\n{gpu_name()}, torch {torch.__version__}, commit {commit}")


def implementation() -> str:
    """What ran golf's MLP op for the current provider ("-": the provider does not call it)."""
    return golf.ops.implementations().get("leaky_relu2_mlp", "-")


def run_main(commit: str) -> None:
    table, csv_rows, extra = [], [], []
    for M, D, F, provider, forward, leaves, dy in each_provider(PROVIDERS):
        gemm_flops = 2.0 * M * D * F
        kept = saved_activation_bytes(forward)
        timings = time_modes(forward, leaves, dy)
        for mode in MODES:
            t = timings[mode]
            rate = tflops(GEMMS_PER_MODE[mode] * gemm_flops, t.median_ms)
            name = f"mlp_{D}x{F}_M{M}_{provider}_{mode}"
            table.append([f"{D}->{F}->{D}", provider, mode, f"{t.median_ms:.3f}", f"{t.p20_ms:.3f}",
                          f"{t.p80_ms:.3f}", f"{rate:.0f}", f"{kept / 2**20:.0f}"])
            csv_rows.append({"name": name, "median_ms": f"{t.median_ms:.4f}", "rate": f"{rate:.1f} TFLOP/s"})
        csv_rows.append({"name": f"mlp_{D}x{F}_M{M}_{provider}_saved_activations",
                         "median_ms": "", "rate": f"{kept / 2**20:.1f} MiB"})
        host, wall, graph = host_and_graph_ms(forward, leaves, dy)
        extra.append([f"{D}->{F}->{D}", provider, f"{host:.3f}", f"{wall:.3f}",
                      "-" if graph is None else f"{graph:.3f}", implementation()])
        if graph is not None:
            csv_rows.append({"name": f"mlp_{D}x{F}_M{M}_{provider}_full_cudagraph", "median_ms": f"{graph:.4f}",
                             "rate": f"{tflops(6 * gemm_flops, graph):.1f} TFLOP/s"})
    append_csv(csv_rows, commit=commit)
    from golf.kernels import mlp as K

    print_header(commit)
    for M, D, F in SHAPES:
        print(f"  golf configs ({D}, {F}): fwd {K.launch_config(D, F, 'fwd')}, bwd {K.launch_config(D, F, 'bwd')}")
        if mlp_ws.runs_on(torch.empty(1, device="cuda", dtype=torch.bfloat16)):
            print(f"    run by the Gluon kernels instead: fwd {mlp_ws.launch_config(D, F, 'fwd')}, "
                  f"bwd {mlp_ws.launch_config(D, F, 'bwd')}")
    print(format_table(["shape", "provider", "mode", "median ms", "p20", "p80", "TFLOP/s", "saved MiB"], table))
    print("\nforward+backward without L2 flush: host launch ms/step, wall ms/step (20 steps), CUDA-graph replay ms")
    print(format_table(["shape", "provider", "host ms", "wall ms", "graph ms", "golf op ran"], extra))


def run_sustained(commit: str) -> None:
    """fwd+bwd of the compiled op, the compiled reference and the GEMM floor, per window of one 1,500-iteration
    run."""
    table, csv_rows, clocks = [], [], []
    for M, D, F, provider, forward, leaves, dy in each_provider(SUSTAINED_PROVIDERS):

        def step():
            forward().backward(dy)
            for t in leaves:
                t.grad = None

        with ClockSampler() as sampler:
            windows = sustained(step)
        table.append([f"{D}->{F}->{D}", provider] + [f"{ms:.3f}" for ms in windows])
        clocks.append(f"  {D}->{F}->{D} {provider} ({implementation()}): {sampler.summary()}")
        name = f"mlp_{D}x{F}_M{M}_{provider}_full"
        flops = 6 * 2.0 * M * D * F
        for label, ms in (("burst", windows[0]), ("sustained", windows[-1])):
            csv_rows.append({"name": f"{name}_{label}", "median_ms": f"{ms:.4f}",
                             "rate": f"{tflops(flops, ms):.1f} TFLOP/s"})
    append_csv(csv_rows, commit=commit)
    print_header(commit)
    print("forward+backward ms per iteration, median over iteration windows [first, last) of one run:")
    print(format_table(["shape", "provider"] + [f"[{a}:{b}]" for a, b in SUSTAINED_WINDOWS], table))
    print("nvidia-smi during each run:\n" + "\n".join(clocks))


def _config(c) -> dict:
    bm, bn, bk, stages, warps, per_sm, *options = c
    return dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_stages=stages, num_warps=warps, programs_per_sm=per_sm,
                **(options[0] if options else {}))


def run_sweep() -> dict:
    """Times every candidate; returns the fastest config per (D, F, direction)."""
    from golf.kernels import mlp as K

    rows, best = [], {}
    for M, D, F in SHAPES:
        flops = 2.0 * M * D * F
        x, w_up, w_down, dy = _inputs(M, D, F, requires_grad=False)
        h_ref = K.leaky_relu2_mlp_fwd(x, w_up, SLOPE)
        g_ref = K.leaky_relu2_mlp_bwd(dy, w_down, h_ref, SLOPE)
        for direction, candidates in (("fwd", FWD_CANDIDATES), ("bwd", BWD_CANDIDATES)):
            for c in candidates:
                cfg = _config(c)
                if direction == "fwd":
                    fn = lambda: K.leaky_relu2_mlp_fwd(x, w_up, SLOPE, config=cfg)  # noqa: E731
                    ref = h_ref
                else:
                    fn = lambda: K.leaky_relu2_mlp_bwd(dy, w_down, h_ref, SLOPE, config=cfg)  # noqa: E731
                    ref = g_ref
                try:
                    diff = (fn().float() - ref.float()).abs().max().item()
                    t = bench(fn)
                except Exception as exc:  # a config that does not compile or launch on this GPU / triton
                    rows.append([f"{D}x{F}", direction, str(c), "failed", type(exc).__name__, str(exc)[:60]])
                    continue
                rows.append([f"{D}x{F}", direction, str(c), f"{t.median_ms:.4f}", f"{tflops(flops, t.median_ms):.0f}",
                             f"maxdiff {diff:.2e}"])
                if (D, F, direction) not in best or t.median_ms < best[D, F, direction][0]:
                    best[D, F, direction] = (t.median_ms, cfg)
        dpre = g_ref
        pieces = {
            "cublas y = h w_down^T": lambda: torch.mm(h_ref, w_down.t()),
            "cublas dW_down = dy^T h": lambda: torch.mm(dy.t(), h_ref),
            "cublas dx = dpre w_up": lambda: torch.mm(dpre, w_up),
            "cublas dW_up = dpre^T x": lambda: torch.mm(dpre.t(), x),
            "cublas u = x w_up^T (no epilogue)": lambda: torch.mm(x, w_up.t()),
            "cublas dpost = dy w_down (no epilogue)": lambda: torch.mm(dy, w_down),
        }
        for name, fn in pieces.items():
            t = bench(fn)
            rows.append([f"{D}x{F}", "cublas", name, f"{t.median_ms:.4f}", f"{tflops(flops, t.median_ms):.0f}", ""])
        del x, w_up, w_down, dy, h_ref, g_ref, dpre
        torch.cuda.empty_cache()
    print(f"\n{gpu_name()}, torch {torch.__version__}")
    print(format_table(["shape", "kernel", "config (BM,BN,BK,stages,warps,per_SM)", "ms", "TFLOP/s", "note"], rows))
    print("\nfastest per shape (for golf.kernels.mlp._CONFIGS):")
    for (D, F, direction), (ms, cfg) in sorted(best.items()):
        print(f"  ({D}, {F}) {direction}: {ms:.4f} ms  {cfg}")
    return {key: cfg for key, (ms, cfg) in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", action="store_true", help="time launch-config candidates first, then run the "
                        "main benchmark with the fastest of them")
    parser.add_argument("--sustained", action="store_true", help="only the burst vs power-capped steady-state "
                        "fwd+bwd of the compiled op and reference")
    parser.add_argument("--commit", default=None, help="commit label for results.csv (default: git rev-parse)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_mlp.py needs a CUDA GPU")
    if args.sustained:
        run_sustained(args.commit or git_commit())
        return
    if args.sweep:
        from golf.kernels import mlp as K

        for (D, F, direction), cfg in run_sweep().items():
            K._CONFIGS[D, F] = {**K._CONFIGS.get((D, F), K._DEFAULT_GPU_CONFIG), direction: cfg}
        print("\nforward+backward with the fastest configs:")
    run_main(args.commit or git_commit())


if __name__ == "__main__":
    main()
