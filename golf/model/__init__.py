"""golf.model: the records' GPT built from golf.config.ModelConfig. Model code calls golf.ops for hot ops
and never imports triton or golf.kernels."""

from golf.model.attention import CausalSelfAttention, causal_attention, resolve_backend
from golf.model.embeddings import BigramHash, ValueEmbedding, bigram_hash
from golf.model.features import SmearGate, attention_gate, smear_v2, xsa
from golf.model.gpt import GPT, Block
from golf.model.layers import CastedLinear, Rotary, apply_rotary, ntk_rope_base, rms_norm
from golf.model.mlp import MLP
from golf.model.recurrence import LayerPlan, build_plans, looped_indices

__all__ = [
    "GPT",
    "Block",
    "BigramHash",
    "LayerPlan",
    "SmearGate",
    "ValueEmbedding",
    "attention_gate",
    "bigram_hash",
    "build_plans",
    "looped_indices",
    "smear_v2",
    "xsa",
    "CausalSelfAttention",
    "MLP",
    "CastedLinear",
    "Rotary",
    "apply_rotary",
    "causal_attention",
    "ntk_rope_base",
    "resolve_backend",
    "rms_norm",
]
