"""Per-row int6 fake quantization of the core11 banks: golf's kernel vs the torch reference, eager and compiled.

    python benchmarks/bench_fake_quant.py              # fp32 banks, absmax and sdclip; rows -> results.csv
    python benchmarks/bench_fake_quant.py --dtype bf16
    python benchmarks/bench_fake_quant.py --sweep      # first the kernel's launch settings per bank (device time)

Bytes moved per call: the weight read once and written once, plus the fp16 scales (2 B per row; the "copy" rows,
a plain device copy of the bank, count the same bytes, 0.05 % more than the copy moves); the target is
>= 3,400 GB/s in fp32 (80 % of the H200's measured 4,219 GB/s copy ceiling). Two timings per provider: per
call as a caller sees it (do_bench: host launch path included, which dominates calls of a few microseconds)
and device time alone (harness.bench_device: CUDA-graph replay with a cold L2), the kernel's bandwidth. The reference is
golf.quant.scheme.fake_quant_ref (row scales, quantize, dequantize): separate passes in eager mode, fused by
inductor when compiled.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import append_csv, bench, bench_device, format_table, gbps, git_commit, gpu_name  # noqa: E402

from golf.ops import _dispatch  # noqa: E402
from golf.ops.fake_quant import fake_quant  # noqa: E402
from golf.quant import scheme  # noqa: E402

SHAPES = ((22, 512, 512), (22, 256, 512), (11, 1536, 512), (11, 512, 1536))
SCHEMES = (("absmax", None), ("sdclip", 12.85))
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TARGET_GBPS = 3400.0


def _moved_bytes(w: torch.Tensor) -> int:
    return 2 * w.numel() * w.element_size() + 2 * (w.numel() // w.shape[-1])


def run(dtype_name: str, commit: str) -> None:
    dtype = DTYPES[dtype_name]
    reference_compiled = torch.compile(scheme.fake_quant_ref, fullgraph=True, dynamic=False)
    rows, csv_rows = [], []
    totals: dict[tuple[str, str], list[float]] = {}  # (provider, clip) -> [bytes, device ms] over the banks
    for shape in SHAPES:
        g = torch.Generator(device="cuda").manual_seed(0)
        w = (torch.randn(*shape, device="cuda", generator=g) * 0.02).to(dtype)
        nbytes = _moved_bytes(w)
        for clip, k in SCHEMES:
            _dispatch.reset()
            golf_out = fake_quant(w, bits=6, clip=clip, k=k)
            impl = _dispatch.implementations()["fake_quant"]
            if not impl.startswith("triton"):
                raise SystemExit(f"golf.ops.fake_quant ran {impl!r}, not the kernel: nothing to benchmark")
            ref_out = scheme.fake_quant_ref(w, bits=6, clip=clip, k=k)
            mismatch = (golf_out != ref_out).float().mean().item()
            copy_out = torch.empty_like(w)
            providers = {
                "golf": lambda: fake_quant(w, bits=6, clip=clip, k=k),
                # the same bytes without the math: the bandwidth a kernel can reach at this size under this timing
                "copy": lambda: copy_out.copy_(w),  # noqa: B023
                "torch_ref": lambda: scheme.fake_quant_ref(w, bits=6, clip=clip, k=k),
                "torch_ref_compiled": lambda: reference_compiled(w, bits=6, clip=clip, k=k),
            }
            for provider, fn in providers.items():
                if provider == "copy" and clip != SCHEMES[0][0]:
                    continue  # the copy does not depend on the clip rule: one row per bank
                label = "-" if provider == "copy" else clip
                t = bench(fn)
                rate = gbps(nbytes, t.median_ms)
                name = f"fake_quant {provider} {dtype_name} {label} {'x'.join(map(str, shape))}"
                csv_rows.append({"name": name, "median_ms": f"{t.median_ms:.4f}", "rate": f"{rate:.0f} GB/s"})
                try:  # a provider that cannot be captured in a CUDA graph keeps its per-call row
                    d = bench_device(fn)
                except RuntimeError as exc:
                    print(f"{name}: no device time ({type(exc).__name__}: {str(exc)[:120]})")
                    device_cells = ["n/a", "n/a"]
                else:
                    device_rate = gbps(nbytes, d.median_ms)
                    device_cells = [str(d), f"{device_rate:,.0f}"]
                    total = totals.setdefault((provider, label), [0.0, 0.0])
                    total[0] += nbytes
                    total[1] += d.median_ms
                    csv_rows.append({"name": name + " device", "median_ms": f"{d.median_ms:.4f}",
                                     "rate": f"{device_rate:.0f} GB/s"})
                rows.append([provider, dtype_name, label, "x".join(map(str, shape)), str(t), f"{rate:,.0f}",
                             *device_cells, f"{mismatch:.1e}" if provider == "golf" else ""])
    print(format_table(["provider", "dtype", "clip", "shape", "per call [p20, p80]", "GB/s", "device [p20, p80]",
                        "device GB/s", "mismatch"], rows))
    for col, what in ((5, "per call"), (7, "device")):
        golf_rates = [float(r[col].replace(",", "")) for r in rows if r[0] == "golf" and r[col] != "n/a"]
        if not golf_rates:
            continue
        print(f"golf {what}: min {min(golf_rates):,.0f} GB/s (target >= {TARGET_GBPS:,.0f} in fp32) on {gpu_name()}")
    # every weight of the four banks, all bytes over the summed device times (a QAT forward fake-quantizes the
    # same weights, one layer's matrix per call)
    for (provider, clip), (nbytes, ms) in totals.items():
        print(f"all four banks, {provider} {clip}: {gbps(nbytes, ms):,.0f} GB/s device ({ms * 1e3:.1f} us)")
    append_csv(csv_rows, commit=commit)


# num_warps None: the kernel's rule (one warp per 512 padded columns of a row)
SWEEP = [dict(elems=e, num_warps=nw) for e in (512, 1024, 2048, 4096) for nw in (None, 1, 2, 4, 8)]


def run_sweep(dtype_name: str) -> None:
    """Device time of the kernel alone for every launch setting in SWEEP at each bank and clip rule, with the
    share of elements that differ from the reference (a setting that changes a code is not a speed-up)."""
    from golf.kernels import fake_quant as kernels

    dtype = DTYPES[dtype_name]
    rows = []
    totals: dict[tuple[str, str], list[float]] = {}  # (config, clip) -> [bytes, device ms, max mismatch]
    for shape in SHAPES:
        g = torch.Generator(device="cuda").manual_seed(0)
        w = (torch.randn(*shape, device="cuda", generator=g) * 0.02).to(dtype)
        nbytes = _moved_bytes(w)
        for clip, k in SCHEMES:
            ref = scheme.fake_quant_ref(w, bits=6, clip=clip, k=k)
            floor = scheme.MIN_SCALE
            best = None
            for cfg in SWEEP:
                fn = lambda: kernels.fake_quant_fwd(w, 31, clip, k or 0.0, floor, config=cfg)  # noqa: E731,B023
                mismatch = (fn()[0] != ref).float().mean().item()
                d = bench_device(fn)
                rate = gbps(nbytes, d.median_ms)
                rows.append(["x".join(map(str, shape)), clip, str(cfg), str(d), f"{rate:,.0f}", f"{mismatch:.1e}"])
                total = totals.setdefault((str(cfg), clip), [0.0, 0.0, 0.0])
                total[0] += nbytes
                total[1] += d.median_ms
                total[2] = max(total[2], mismatch)
                if mismatch == 0 and (best is None or rate > best[0]):
                    best = (rate, cfg)
            print(f"{'x'.join(map(str, shape))} {clip}: fastest exact setting {best}")
    print(format_table(["bank", "clip", "config", "device [p20, p80]", "GB/s", "mismatch"], rows))
    summary = [[clip, cfg, f"{gbps(b, ms):,.0f}", f"{ms * 1e3:.1f}", f"{mm:.1e}"]
               for (cfg, clip), (b, ms, mm) in sorted(totals.items(), key=lambda kv: kv[1][1] / kv[1][0])]
    print("all four banks (bytes over summed device times), fastest first:")
    print(format_table(["clip", "config", "GB/s", "us", "max mismatch"], summary))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--commit", default=None, help="commit label for results.csv (default: git rev-parse)")
    parser.add_argument("--sweep", action="store_true", help="time the kernel's launch settings first")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_fake_quant.py needs a CUDA GPU")
    if args.sweep:
        run_sweep(args.dtype)
    run(args.dtype, args.commit or git_commit())


if __name__ == "__main__":
    main()
