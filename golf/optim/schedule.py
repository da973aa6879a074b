"""Learning-rate and Muon-momentum schedules (techniques.md §3.7). Pure functions of the step and the clock.

There is no LR warmup: the records' "warmup" is compile priming whose state is thrown away (§3.7 a). Every
optimizer group uses the same LR scale (§3.7, last paragraph): lr = base_lr · lr_scale(...).

Which warmdown runs:
- warmdown_frac > 0: by fraction of the budget (§3.7 d), the budget being the wallclock cap when there is one,
  else the iteration count;
- else warmdown_iters > 0: the last warmdown_iters iterations (§3.7 c), measured in wallclock time when there
  is a cap (the step time is the running mean so far);
- else: constant 1.
The MIN_LR floor (§3.7 e) bounds the scale from below in every mode.
"""

from __future__ import annotations


def lr_scale(
    step: int,
    *,
    iterations: int,
    elapsed_s: float,
    max_seconds: float,
    warmdown_iters: int,
    warmdown_frac: float,
    min_lr: float,
) -> float:
    """LR multiplier in [min_lr, 1] for the optimizer step that follows `step` completed steps.

    step: steps done so far (0 before the first); iterations: the planned step count; elapsed_s: training
    time so far (timed loop only, §3.10); max_seconds: the wallclock cap already reduced by any
    quantization reserve, 0 for none.
    """
    _check(step=step, iterations=iterations, elapsed_s=elapsed_s, max_seconds=max_seconds,
           warmdown_iters=warmdown_iters, warmdown_frac=warmdown_frac, min_lr=min_lr)
    if warmdown_frac > 0:
        scale = _by_fraction(step, iterations, elapsed_s, max_seconds, warmdown_frac)
    elif warmdown_iters > 0:
        scale = _by_iterations(step, iterations, elapsed_s, max_seconds, warmdown_iters)
    else:
        scale = 1.0
    return max(scale, min_lr)


def _by_fraction(step: int, iterations: int, elapsed_s: float, max_seconds: float, warmdown_frac: float) -> float:
    """§3.7 (d): frac = elapsed/max (or step/iterations without a cap);
    scale = 1 while frac < 1 − warmdown_frac, then (1 − frac)/warmdown_frac, never below 0."""
    frac = elapsed_s / max_seconds if max_seconds > 0 else step / iterations
    if frac < 1.0 - warmdown_frac:
        return 1.0
    return max((1.0 - frac) / warmdown_frac, 0.0)


def _by_iterations(step: int, iterations: int, elapsed_s: float, max_seconds: float, warmdown_iters: int) -> float:
    """§3.7 (c). Without a cap: (iterations − step)/W clipped to [0, 1], i.e. linear over the last W steps.
    With a cap: step_s = elapsed/max(step, 1); warmdown_s = W·step_s; remaining = max(max − elapsed, 0);
    scale = remaining/warmdown_s once remaining ≤ warmdown_s, else 1."""
    if max_seconds <= 0:
        return min(max((iterations - step) / warmdown_iters, 0.0), 1.0)
    step_s = elapsed_s / max(step, 1)
    warmdown_s = warmdown_iters * step_s
    remaining = max(max_seconds - elapsed_s, 0.0)
    if remaining > warmdown_s:
        return 1.0
    # warmdown_s is 0 only when no time has elapsed, and then remaining = max_seconds > 0 took the branch above.
    return remaining / warmdown_s


def muon_momentum(step: int, *, start: float, end: float, warmup_steps: int) -> float:
    """§3.7 (b): μ = (1 − f)·start + f·end with f = min(step/warmup_steps, 1); `end` when warmup_steps is 0."""
    if step < 0:
        raise ValueError(f"muon_momentum: step={step} must be >= 0")
    if warmup_steps < 0:
        raise ValueError(f"muon_momentum: warmup_steps={warmup_steps} must be >= 0")
    f = min(step / warmup_steps, 1.0) if warmup_steps > 0 else 1.0
    return (1.0 - f) * start + f * end


def _check(*, step: int, iterations: int, elapsed_s: float, max_seconds: float, warmdown_iters: int,
           warmdown_frac: float, min_lr: float) -> None:
    if step < 0:
        raise ValueError(f"lr_scale: step={step} must be >= 0")
    if elapsed_s < 0 or max_seconds < 0:
        raise ValueError(f"lr_scale: elapsed_s={elapsed_s} and max_seconds={max_seconds} must be >= 0")
    if warmdown_iters < 0:
        raise ValueError(f"lr_scale: warmdown_iters={warmdown_iters} must be >= 0")
    if not 0 <= warmdown_frac <= 1:
        raise ValueError(f"lr_scale: warmdown_frac={warmdown_frac} must be in [0, 1]")
    if not 0 <= min_lr <= 1:
        raise ValueError(f"lr_scale: min_lr={min_lr} is a fraction of the peak LR; use a value in [0, 1]")
    needs_iterations = max_seconds <= 0 and (warmdown_frac > 0 or warmdown_iters > 0)
    if needs_iterations and iterations <= 0:
        raise ValueError(f"lr_scale: iterations={iterations} must be positive for a warmdown without a wallclock cap")
