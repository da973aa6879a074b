"""Quantization-aware training: STE fake-quant of every exported matrix, switched on late (techniques.md §4.4).

While QAT is on, each CastedLinear whose weight the exporter quantizes multiplies by
golf.ops.fake_quant(weight) on the exporter's own grid (bits, clip rule and group SDClip factor from
golf.quant.export.tensor_scheme), so the forward sees exactly the weights the artifact will hold after
round-to-nearest (bit for bit; with quant.clip "percentile_search", whose grid the export picks per matrix,
QAT uses the "absmax_floor" grid, the search's k = 1 candidate); the backward is the straight-through
estimator (quant.qat_ste).

Why a per-instance Python attribute: the records' late QAT set a *class* attribute, which torch.compile
constant-folded at the first trace, so the QAT branch never ran (§4.4 ⚠). dynamo guards on instance
attributes of the modules it inlines, so `set_qat` makes the next compiled call recompile once with the
fake-quant in the graph.

Trainer use:
    if cfg.quant.qat and not qat_on and qat_should_enable(lr_scale, cfg.quant):
        set_qat(model, True, cfg.quant); qat_on = True
Not covered: the tied embedding (an nn.Embedding read as the head, not a CastedLinear) and matrices the
exporter keeps in float (numel <= quant.passthrough_numel).
"""

from __future__ import annotations

from torch import nn

from golf.config import QuantConfig
from golf.model.layers import CastedLinear
from golf.quant.export import tensor_scheme


def qat_modules(model: nn.Module, cfg: QuantConfig) -> list[tuple[str, CastedLinear]]:
    """(state-dict weight name, module) of every CastedLinear the exporter quantizes to an int grid."""
    out = []
    for name, module in model.named_modules():
        if not isinstance(module, CastedLinear):
            continue
        weight_name = f"{name}.weight" if name else "weight"
        if module.weight.numel() <= cfg.passthrough_numel or tensor_scheme(weight_name, cfg)[0] == 16:
            continue
        out.append((weight_name, module))
    return out


def set_qat(model: nn.Module, enabled: bool, cfg: QuantConfig) -> list[str]:
    """Switch QAT on or off on every quantized CastedLinear of `model`; returns the weight names switched.

    The grid of each module is the exporter's for that name (bits, clip, group k), and the STE mode is
    quant.qat_ste. A compiled model recompiles once at its next call after the switch.
    """
    cfg.validate()
    names = []
    for weight_name, module in qat_modules(model, cfg):
        bits, clip, k = tensor_scheme(weight_name, cfg)
        if clip == "percentile_search":  # chosen per matrix only at export: train on its k = 1 candidate's grid
            clip, k = "absmax_floor", None
        module.qat_bits, module.qat_clip, module.qat_k, module.qat_ste = bits, clip, k, cfg.qat_ste
        module.qat = bool(enabled)
        names.append(weight_name)
    if enabled and not names:
        raise ValueError(
            f"set_qat: no CastedLinear of {type(model).__name__} is quantized (every weight has numel <= "
            f"quant.passthrough_numel={cfg.passthrough_numel}); lower passthrough_numel or leave quant.qat off"
        )
    return names


def qat_enabled(model: nn.Module) -> bool:
    """Whether any CastedLinear of `model` has QAT on."""
    return any(isinstance(m, CastedLinear) and m.qat for m in model.modules())


def qat_should_enable(lr_scale: float, cfg: QuantConfig) -> bool:
    """The schedule point: quant.qat is on and the LR scale is below quant.qat_start_lr_scale (>= 1.0: always)."""
    return cfg.qat and (cfg.qat_start_lr_scale >= 1.0 or lr_scale < cfg.qat_start_lr_scale)
