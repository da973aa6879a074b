"""Gram Newton–Schulz (golf.ops.newton_schulz.gram_newton_schulz_ref): the standard iteration carried on X X^T."""

import pytest
import torch

from golf.ops.newton_schulz import gram_newton_schulz_ref, newton_schulz_ref


@pytest.mark.parametrize("shape", [(64, 192), (192, 64), (3, 48, 160), (2, 96, 96), (1, 8)])
@pytest.mark.parametrize("coefficients", ["ns5", "polar_express"])
@pytest.mark.parametrize("restart_after", [0, 2, 3])
def test_in_fp64_it_is_the_standard_iteration(shape, coefficients, restart_after):
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gram = gram_newton_schulz_ref(G, coefficients=coefficients, dtype=torch.float64, restart_after=restart_after)
    standard = newton_schulz_ref(G, coefficients=coefficients, dtype=torch.float64)
    assert gram.shape == G.shape and gram.dtype == torch.float64
    # the same polynomial in exact arithmetic; gram normalizes in fp32 (as for fp16), hence 1e-6
    torch.testing.assert_close(gram, standard, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(4, 128, 384), (2, 384, 128)])  # the core11 MLP banks' 1:3 aspect, small
def test_fp16_on_rectangular_banks_is_more_accurate_than_the_bf16_standard(shape):
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    exact = newton_schulz_ref(G.double(), dtype=torch.float64)
    gram_err = (gram_newton_schulz_ref(G).double() - exact).abs().max()
    standard_err = (newton_schulz_ref(G).double() - exact).abs().max()
    assert gram_err < standard_err


def test_zero_steps_return_the_normalized_input_and_bad_input_raises():
    G = torch.randn(6, 10)
    torch.testing.assert_close(gram_newton_schulz_ref(G, steps=0, dtype=torch.float32), G / G.norm())
    with pytest.raises(ValueError, match="steps"):
        gram_newton_schulz_ref(G, steps=-1)
    with pytest.raises(ValueError, match="polar_express defines 5"):
        gram_newton_schulz_ref(G, steps=6, coefficients="polar_express")
