"""golf.ops: every hot op of the model and optimizer. Each op has a pure-torch `<op>_ref` (the spec)
and a dispatcher `<op>` with the same signature that picks a kernel or the reference."""

from golf.ops._dispatch import flush_warnings, implementations, kernels_enabled, set_kernels_enabled
from golf.ops.fake_quant import fake_quant, fake_quant_ref
from golf.ops.gptq import gptq_block_update, gptq_block_update_ref
from golf.ops.mlp import leaky_relu2_mlp, leaky_relu2_mlp_hidden, leaky_relu2_mlp_hidden_ref, leaky_relu2_mlp_ref
from golf.ops.newton_schulz import newton_schulz, newton_schulz_banks, newton_schulz_banks_ref, newton_schulz_ref

__all__ = [
    "flush_warnings",
    "implementations",
    "kernels_enabled",
    "set_kernels_enabled",
    "fake_quant",
    "fake_quant_ref",
    "gptq_block_update",
    "gptq_block_update_ref",
    "leaky_relu2_mlp",
    "leaky_relu2_mlp_ref",
    "leaky_relu2_mlp_hidden",
    "leaky_relu2_mlp_hidden_ref",
    "newton_schulz",
    "newton_schulz_ref",
    "newton_schulz_banks",
    "newton_schulz_banks_ref",
]
