"""LR scale and Muon momentum schedules (techniques.md §3.7) at hand-computed points, boundaries included."""

import pytest

from golf.optim.schedule import lr_scale, muon_momentum


def by_iters(step, *, iterations=100, warmdown_iters=20, min_lr=0.0):
    return lr_scale(step, iterations=iterations, elapsed_s=0.0, max_seconds=0.0, warmdown_iters=warmdown_iters,
                    warmdown_frac=0.0, min_lr=min_lr)


@pytest.mark.parametrize("step, expected", [
    (0, 1.0), (79, 1.0), (80, 1.0),  # (100 − 80)/20 = 1: the warmdown starts here
    (81, 0.95), (90, 0.5), (99, 0.05), (100, 0.0), (130, 0.0),
])
def test_iteration_warmdown_without_cap(step, expected):
    assert by_iters(step) == pytest.approx(expected, abs=1e-12)


def test_iteration_warmdown_longer_than_the_run_starts_below_one():
    # the records' formula: (iterations − step)/W = 10/20 at step 0
    assert by_iters(0, iterations=10) == 0.5
    assert by_iters(5, iterations=10) == 0.25


def test_iteration_warmdown_min_lr_floor():
    assert by_iters(90, min_lr=0.1) == pytest.approx(0.5)
    assert by_iters(98, min_lr=0.1) == pytest.approx(0.1)  # 2/20 = 0.1 exactly at the floor
    assert by_iters(99, min_lr=0.1) == 0.1
    assert by_iters(100, min_lr=0.1) == 0.1


def capped_iters(step, elapsed_s, *, max_seconds=100.0, warmdown_iters=10, min_lr=0.0):
    return lr_scale(step, iterations=10**6, elapsed_s=elapsed_s, max_seconds=max_seconds,
                    warmdown_iters=warmdown_iters, warmdown_frac=0.0, min_lr=min_lr)


@pytest.mark.parametrize("step, elapsed_s, expected", [
    (0, 0.0, 1.0),  # nothing measured yet
    (50, 50.0, 1.0),  # step 1 s, warmdown 10 s, 50 s left
    (90, 90.0, 1.0),  # 10 s left = warmdown length: boundary, 10/10
    (95, 95.0, 0.5),  # 5 s left of a 10 s warmdown
    (40, 96.0, 4.0 / 24.0),  # step 2.4 s -> warmdown 24 s, 4 s left
    (100, 100.0, 0.0), (110, 120.0, 0.0),  # at or past the cap
])
def test_iteration_warmdown_with_wallclock_cap(step, elapsed_s, expected):
    assert capped_iters(step, elapsed_s) == pytest.approx(expected, abs=1e-12)


def test_iteration_warmdown_with_cap_ignores_the_iteration_count():
    assert lr_scale(95, iterations=96, elapsed_s=95.0, max_seconds=100.0, warmdown_iters=10, warmdown_frac=0.0,
                    min_lr=0.0) == pytest.approx(0.5)
    assert capped_iters(110, 120.0, min_lr=0.1) == 0.1


def by_frac(elapsed_s, *, max_seconds=600.0, warmdown_frac=0.85, min_lr=0.0, step=0, iterations=1):
    return lr_scale(step, iterations=iterations, elapsed_s=elapsed_s, max_seconds=max_seconds, warmdown_iters=3500,
                    warmdown_frac=warmdown_frac, min_lr=min_lr)


@pytest.mark.parametrize("elapsed_s, expected", [
    (0.0, 1.0), (89.0, 1.0),
    (90.0, 1.0),  # frac 0.15 = 1 − 0.85: (1 − 0.15)/0.85 = 1
    (300.0, 0.5 / 0.85), (540.0, 0.1 / 0.85), (600.0, 0.0), (660.0, 0.0),
])
def test_fraction_warmdown_with_cap(elapsed_s, expected):
    # warmdown_frac > 0 takes precedence over warmdown_iters (3500 here)
    assert by_frac(elapsed_s) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("elapsed_s, expected", [
    (300.0, 0.5 / 0.85), (540.0, 0.1 / 0.85),
    (549.0, 0.1),  # frac 0.915: (1 − 0.915)/0.85 = 0.1, where R0427's decay meets the floor
    (570.0, 0.1), (600.0, 0.1),
])
def test_fraction_warmdown_min_lr_floor(elapsed_s, expected):
    assert by_frac(elapsed_s, min_lr=0.1) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("step, expected", [(0, 1.0), (99, 1.0), (100, 1.0), (150, 0.5), (190, 0.1), (200, 0.0)])
def test_fraction_warmdown_without_cap_uses_iterations(step, expected):
    got = by_frac(1e9, max_seconds=0.0, warmdown_frac=0.5, step=step, iterations=200)  # elapsed time is ignored
    assert got == pytest.approx(expected, abs=1e-12)


def test_no_warmdown_is_constant():
    for step in (0, 50, 10**6):
        assert lr_scale(step, iterations=100, elapsed_s=1e6, max_seconds=10.0, warmdown_iters=0, warmdown_frac=0.0,
                        min_lr=0.3) == 1.0


@pytest.mark.parametrize("kw, match", [
    (dict(step=-1), "step=-1"),
    (dict(warmdown_frac=1.5), "warmdown_frac=1.5"),
    (dict(min_lr=2.0), "min_lr=2.0"),
    (dict(elapsed_s=-1.0), "elapsed_s=-1.0"),
    (dict(warmdown_iters=-5), "warmdown_iters=-5"),
    (dict(iterations=0), "iterations=0"),
])
def test_lr_scale_rejects_bad_input(kw, match):
    args = dict(step=0, iterations=100, elapsed_s=0.0, max_seconds=0.0, warmdown_iters=10, warmdown_frac=0.0,
                min_lr=0.0) | kw
    step = args.pop("step")
    with pytest.raises(ValueError, match=match):
        lr_scale(step, **args)


@pytest.mark.parametrize("step, expected", [(0, 0.85), (250, 0.90), (500, 0.95), (501, 0.95), (10**5, 0.95)])
def test_muon_momentum_warmup(step, expected):
    assert muon_momentum(step, start=0.85, end=0.95, warmup_steps=500) == pytest.approx(expected, abs=1e-12)


def test_muon_momentum_record_values_and_edges():
    assert muon_momentum(750, start=0.92, end=0.97, warmup_steps=1500) == pytest.approx(0.945, abs=1e-12)
    assert muon_momentum(1500, start=0.92, end=0.99, warmup_steps=1500) == pytest.approx(0.99, abs=1e-12)
    assert muon_momentum(0, start=0.5, end=0.9, warmup_steps=0) == 0.9
    with pytest.raises(ValueError, match="step=-1"):
        muon_momentum(-1, start=0.85, end=0.95, warmup_steps=500)
