"""State dict <-> quantized entries (techniques.md §4.1–§4.3, §4.7, §4.8).

Rules, per tensor of the reference-layout state dict:
- non-float tensors are kept as they are (a plain Tensor entry);
- float tensors with numel <= quant.passthrough_numel (control vectors, gates, scales) are stored as fp16;
- 2-D float tensors above that size are quantized per row on golf.quant.scheme's grid: `tok_emb.weight`
  with quant.embed_bits (16 keeps it fp16) and SDClip factor quant.embed_clip_k, attention and MLP matrices
  with quant.bits and their group's factor (quant.clip_k_attn / clip_k_mlp, default quant.clip_k), every
  other matrix with quant.bits and quant.clip_k (k only matters for quant.clip == "sdclip"; see
  tensor_scheme); the bigram / value-embedding lookup tables (TABLE_NAMES) with quant.table_bits by
  round-to-nearest (they have no Hessian); the rest by GPTQ when quant.gptq is on and a Hessian for the name
  exists, else by round-to-nearest with the same scales;
- any other large float tensor (not 2-D) is stored as fp16, with a warning.
Values outside fp16's range are never rounded to inf: such a tensor is stored as fp32, with a warning.

dequantize_state_dict gives fp32 tensors (non-float ones unchanged) with the original shapes, ready for
`model.load_state_dict`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from golf.config import QuantConfig
from golf.quant import scheme

EMBED_NAMES = ("tok_emb.weight",)  # the tied embedding / head: its own bits and clip factor
# Lookup tables (BigramHash, value embeddings): no matmul input, hence no Hessian; round-to-nearest with
# quant.table_bits and the embedding's SDClip factor.
TABLE_NAMES = ("bigram.embed.weight", "ve_shared.embed.weight")
KINDS = ("gptq", "rtn", "fp16", "fp32")
FP16_MAX = 65504.0


@dataclass
class QuantizedTensor:
    """One stored float tensor.

    kind   "gptq" | "rtn": data = int8 codes [rows, cols], scales = fp16 [rows];
           "fp16" | "fp32": data = the values in that dtype (original shape), scales = None.
    bits   5..8 for codes, 16 / 32 for float storage.
    clip   the clip rule of the scales (None for float storage); k its SDClip factor or row quantile (None for
           the rules without one).
    shape  the original shape; dtype the original dtype's name, e.g. "float32" (informational: the
           dequantized tensor is always fp32).
    """

    kind: str
    data: Tensor
    scales: Tensor | None
    bits: int
    clip: str | None
    k: float | None
    shape: tuple[int, ...]
    dtype: str

    def dequantize(self) -> Tensor:
        """fp32 tensor of the original shape."""
        if self.kind in ("gptq", "rtn"):
            return scheme.dequantize(self.data, self.scales, torch.float32).reshape(self.shape)
        return self.data.float().reshape(self.shape)


def _dtype_name(t: Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _float_entry(name: str, t: Tensor) -> QuantizedTensor:
    if bool((t.float().abs() > FP16_MAX).any()):
        warnings.warn(f"{name}: values beyond fp16's range ({FP16_MAX}); stored as fp32", RuntimeWarning, stacklevel=3)
        data, kind, bits = t.detach().float().cpu().clone(), "fp32", 32
    else:
        data, kind, bits = t.detach().to(device="cpu", dtype=torch.float16), "fp16", 16
    return QuantizedTensor(kind, data, None, bits, None, None, tuple(t.shape), _dtype_name(t))


def tensor_group(name: str) -> str:
    """The clip-factor group of a state-dict matrix: "embed" (the tied embedding), "table" (the bigram and
    value-embedding lookup tables), "attn" (blocks.i.attn.*), "mlp" (blocks.i.mlp.*) or "other" (bigram/
    value-embedding projections and anything else)."""
    if name in EMBED_NAMES:
        return "embed"
    if name in TABLE_NAMES:
        return "table"
    parts = name.split(".")
    if "attn" in parts[:-1]:
        return "attn"
    if "mlp" in parts[:-1]:
        return "mlp"
    return "other"


def tensor_scheme(
    name: str, cfg: QuantConfig, bits_plan: dict[str, int] | None = None
) -> tuple[int, str, float | None]:
    """(bits, clip, k) the exporter quantizes matrix `name` with; bits 16 means fp16 storage.

    bits: bits_plan[name] when the plan has the name (golf.quant.mixed), else quant.embed_bits for the tied
    embedding, quant.table_bits for the lookup tables and quant.bits for the rest.
    k is the group's SDClip factor (quant.clip_k_attn / clip_k_mlp, 0 meaning quant.clip_k; embed_clip_k for
    the embedding and the tables) and None unless quant.clip == "sdclip". QAT (golf.quant.qat) uses the same
    triple, so its fake-quant equals the exported round-to-nearest dequantization; clip "percentile_search"
    (chosen per matrix at export) is the exception, where QAT trains on the "absmax_floor" grid (its k = 1
    candidate, the records' late-QAT grid). Under "percentile_search" the embedding and the tables keep the
    records' fixed int8 row quantile (scheme.INT8_CLIP_PERCENTILE) instead of a search.
    """
    group = tensor_group(name)
    bits = {"embed": cfg.embed_bits, "table": cfg.table_bits}.get(group, cfg.bits)
    if bits_plan is not None and name in bits_plan:
        bits = bits_plan[name]
    if cfg.clip == "percentile_search" and group in ("embed", "table"):
        return bits, "percentile", scheme.INT8_CLIP_PERCENTILE  # the records searched only the block matrices
    if cfg.clip != "sdclip":
        return bits, cfg.clip, None
    factors = {"embed": cfg.embed_clip_k, "table": cfg.embed_clip_k, "attn": cfg.clip_k_attn, "mlp": cfg.clip_k_mlp}
    k = factors.get(group, 0.0) or cfg.clip_k
    return bits, cfg.clip, float(k)


def _matrix_entry(
    name: str, t: Tensor, hessian: Tensor | None, cfg: QuantConfig, device: torch.device | None, impl: str,
    bits_plan: dict[str, int] | None = None,
) -> QuantizedTensor:
    bits, clip, k = tensor_scheme(name, cfg, bits_plan)
    if bits == 16:
        return _float_entry(name, t)
    if clip == "percentile_search":
        # One quantization per candidate row quantile; keep the least squared error in weight space (not
        # Hessian-weighted), as the records do (§4.5, §4.7).
        best, target = None, t.detach().float().cpu()
        for p in scheme.PERCENTILES:
            entry = _codes_entry(name, t, hessian, cfg, device, impl, bits, "percentile", p)
            err = float((entry.dequantize() - target).square().sum())
            if best is None or err < best[0]:
                best = (err, entry)
        return best[1]
    return _codes_entry(name, t, hessian, cfg, device, impl, bits, clip, k)


def _codes_entry(
    name: str, t: Tensor, hessian: Tensor | None, cfg: QuantConfig, device: torch.device | None, impl: str,
    bits: int, clip: str, k: float | None,
) -> QuantizedTensor:
    """GPTQ (with a Hessian) or round-to-nearest codes of `t` on one grid."""
    if hessian is not None:
        # Imported here: evaluating an artifact imports this module for dequantize_state_dict, and every golf
        # module it loads is counted against the byte budget (golf.quant.codesize); GPTQ is not needed there.
        from golf.quant.gptq import gptq_quantize

        dev = device if device is not None else hessian.device
        try:
            codes, scales = gptq_quantize(
                t.to(dev), hessian.to(dev), bits=bits, block_size=cfg.block_size, damp=cfg.damp,
                act_order=cfg.act_order, clip=clip, k=k, impl=impl,
            )
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from e
        kind = "gptq"
    else:
        scales = scheme.row_scales(t, bits=bits, clip=clip, k=k)
        codes = scheme.quantize(t, scales, bits=bits)
        kind = "rtn"
    return QuantizedTensor(kind, codes.cpu(), scales.cpu(), bits, clip, k, tuple(t.shape), _dtype_name(t))


def quantize_state_dict(
    state_dict: dict[str, Tensor],
    hessians: dict[str, Tensor] | None,
    cfg: QuantConfig,
    *,
    device: torch.device | str | None = None,
    impl: str = "auto",
    bits_plan: dict[str, int] | None = None,
) -> dict[str, QuantizedTensor | Tensor]:
    """Quantize a reference-layout state dict by the rules in the module docstring.

    hessians: {weight name: H [cols, cols]} from golf.quant.hessian.collect_hessians (None: RTN for all).
    device: where GPTQ runs (default: each Hessian's device). impl: GPTQ's column-update implementation
    (golf.ops.gptq). bits_plan: {matrix name: bits (5..8, or 16 for fp16)} overriding the config's bits
    per tensor (golf.quant.mixed.plan_bits). Entries are on the CPU, in the state dict's order.
    """
    cfg.validate()
    for name, b in (bits_plan or {}).items():
        if name not in state_dict:
            raise ValueError(f"bits_plan names {name!r}, which is not in the state dict")
        if b not in (*scheme.SUPPORTED_BITS, 16):
            raise ValueError(f"bits_plan[{name!r}]={b}: use one of {scheme.SUPPORTED_BITS} or 16 (fp16)")
    dev = torch.device(device) if device is not None else None
    use_gptq = cfg.gptq and bool(hessians)
    entries: dict[str, QuantizedTensor | Tensor] = {}
    missing: list[str] = []
    for name, t in state_dict.items():
        if not isinstance(t, Tensor):
            raise ValueError(f"state_dict[{name!r}] is a {type(t).__name__}, not a tensor")
        t = t.detach()
        if not t.is_floating_point():
            entries[name] = t.cpu().clone()
        elif t.numel() <= cfg.passthrough_numel:
            entries[name] = _float_entry(name, t)
        elif t.dim() == 2:
            # Lookup tables never get a Hessian (nothing multiplies them): RTN by design, not a missing one.
            h = hessians.get(name) if use_gptq and name not in TABLE_NAMES else None
            if use_gptq and h is None and name not in TABLE_NAMES and tensor_scheme(name, cfg, bits_plan)[0] != 16:
                missing.append(name)
            entries[name] = _matrix_entry(name, t, h, cfg, dev, impl, bits_plan)
        else:
            warnings.warn(
                f"{name}: a {t.dim()}-D float tensor with {t.numel()} elements is stored as fp16 (only 2-D "
                "matrices are quantized; export banked weights in the per-layer reference layout)",
                RuntimeWarning,
                stacklevel=2,
            )
            entries[name] = _float_entry(name, t)
    if missing:
        warnings.warn(f"GPTQ: no Hessian for {len(missing)} matrices, rounded to nearest instead: {missing}",
                      RuntimeWarning, stacklevel=2)
    return entries


def dequantize_state_dict(entries: dict[str, QuantizedTensor | Tensor]) -> dict[str, Tensor]:
    """fp32 tensors (non-float entries unchanged) in the original shapes."""
    out: dict[str, Tensor] = {}
    for name, e in entries.items():
        if isinstance(e, QuantizedTensor):
            out[name] = e.dequantize()
        elif isinstance(e, Tensor):
            out[name] = e
        else:
            raise ValueError(f"entry {name!r} is a {type(e).__name__}; expected QuantizedTensor or Tensor")
    return out
