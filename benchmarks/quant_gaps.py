"""Post-quantization gap table (issue 6) from finished `golf train` runs: what each export loses.

    python benchmarks/quant_gaps.py runs/qg_noqat_absmax runs/qg_noqat_sdclip runs/qg_qat_absmax ... [--md FILE]

Each run's run.json holds its pre-quantization val_bpb (the float weights the job quantized) and the plain
val_bpb of its artifact, scored from the artifact alone on the same val tokens; the table adds the gap and the
artifact's bytes, with the settings that differ between such runs (QAT, clip rule, GPTQ, bits). `scripts/
gpu_suite.sh quantgap` trains the runs (one seed and data order, so runs without QAT differ only in export).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def gap_row(run_dir: Path) -> dict:
    path = run_dir / "run.json"
    if not path.is_file():
        raise ValueError(f"{path} does not exist; pass the directory of a finished `golf train` run")
    run = json.loads(path.read_text())
    q = run["config"]["quant"]
    pre, post = run["pre_quant"]["val_bpb"], run["post_quant"]["plain"]["val_bpb"]
    return {"run": run_dir.name, "steps": run["steps"], "qat": q["qat"], "clip": q["clip"], "gptq": q["gptq"],
            "bits": q["bits"], "pre_bpb": pre, "post_bpb": post, "gap": post - pre,
            "total_bytes": run["artifact"]["total_bytes"]}


def markdown(rows: list[dict]) -> str:
    lines = ["| run | steps | QAT | clip | GPTQ | bits | val_bpb float | val_bpb artifact | gap | artifact bytes |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['steps']} | {'on' if r['qat'] else 'off'} | {r['clip']} | "
                     f"{'yes' if r['gptq'] else 'no'} | {r['bits']} | {r['pre_bpb']:.4f} | {r['post_bpb']:.4f} | "
                     f"{r['gap']:+.4f} | {r['total_bytes']:,} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--md", type=Path, default=None, help="also write the table here")
    args = p.parse_args(argv)
    table = markdown([gap_row(run) for run in args.runs])
    print(table)
    if args.md:
        args.md.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
