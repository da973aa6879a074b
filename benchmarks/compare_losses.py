"""Compare the training-loss curves of two golf runs (e.g. fused kernels vs every op on its reference).

    python benchmarks/compare_losses.py runs/a runs/b [--tolerance 0.02]
    python benchmarks/compare_losses.py runs/a/train.log other.log       # logs of runs with train.log_every=1

Reads each run's checkpoint.pt history (step, loss), or the `step:N/M train_loss:X` lines of a log file,
prints the largest and mean absolute difference over the common steps and the final losses, and exits 1 when
the largest difference exceeds --tolerance, or, with --noise C D, 1.5x the largest difference of a pair that
differs by rounding alone (the same run with another micro-batch split: the same gradients summed in
another order), which is what "agrees within bf16 noise" means.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from golf.train import checkpoint


STEP_LINE = re.compile(r"step:(\d+)/\d+ train_loss:([0-9.naif]+)")


def losses(path: Path) -> dict[int, float]:
    """{step: train loss} of a run directory (its checkpoint's history) or a train log file."""
    if path.is_file():
        found = {int(m.group(1)): float(m.group(2)) for m in STEP_LINE.finditer(path.read_text())}
        if not found:
            raise ValueError(f"{path} has no 'step:N/M train_loss:X' lines; is it a golf train log?")
        return found
    state, _ = checkpoint.load(path / "checkpoint.pt", with_optim=False)
    return {int(step): float(loss) for step, loss in state["history"]}


def compare(a: dict[int, float], b: dict[int, float]) -> dict[str, float]:
    steps = sorted(set(a) & set(b))
    if not steps:
        raise ValueError("the two runs share no steps; were they trained with the same iterations?")
    diffs = [abs(a[s] - b[s]) for s in steps]
    return {"steps": len(steps), "max_abs_diff": max(diffs), "mean_abs_diff": sum(diffs) / len(diffs),
            "final_a": a[steps[-1]], "final_b": b[steps[-1]]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_a", type=Path)
    p.add_argument("run_b", type=Path)
    p.add_argument("--tolerance", type=float, default=0.02, help="largest allowed |loss_a - loss_b| (nats)")
    p.add_argument("--noise", type=Path, nargs=2, metavar=("RUN_C", "RUN_D"), default=None,
                   help="a pair whose difference is numerical noise alone (the same math, e.g. another micro-batch "
                        "split); the tolerance becomes --noise-factor times their largest |diff|")
    p.add_argument("--noise-factor", type=float, default=1.5)
    args = p.parse_args(argv)
    tolerance = args.tolerance
    if args.noise:
        n = compare(losses(args.noise[0]), losses(args.noise[1]))
        tolerance = args.noise_factor * n["max_abs_diff"]
        print(f"noise pair: {n['steps']} common steps, max |diff| {n['max_abs_diff']:.4f}, mean "
              f"{n['mean_abs_diff']:.4f}; tolerance {args.noise_factor} x {n['max_abs_diff']:.4f} = {tolerance:.4f}")
    r = compare(losses(args.run_a), losses(args.run_b))
    print(f"{r['steps']} common steps: max |diff| {r['max_abs_diff']:.4f}, mean {r['mean_abs_diff']:.4f}; "
          f"final {r['final_a']:.4f} vs {r['final_b']:.4f}; {'within' if r['max_abs_diff'] <= tolerance else 'OVER'} "
          f"tolerance {tolerance:.4f}")
    return 0 if r["max_abs_diff"] <= tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
