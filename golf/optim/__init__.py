"""golf.optim: Muon + Adam by parameter-group rules, LR/momentum schedules, EMA (techniques.md §3)."""

from golf.optim.builder import Optimizers, build_optimizers, clip_grad_norm
from golf.optim.ema import EMA
from golf.optim.banks import Bank, build_banks
from golf.optim.muon import Muon, exclude_from_ddp, muon_update, normalize_rows, normuon_rescale, orthogonalize, shape_scale
from golf.optim.param_groups import (
    CONTROL_PATTERNS,
    GroupSpec,
    ParamGroups,
    Rule,
    assign_param_groups,
    default_rules,
    describe,
)
from golf.optim.schedule import lr_scale, muon_momentum

__all__ = [
    "Bank",
    "CONTROL_PATTERNS",
    "EMA",
    "GroupSpec",
    "Muon",
    "Optimizers",
    "ParamGroups",
    "Rule",
    "assign_param_groups",
    "build_banks",
    "build_optimizers",
    "clip_grad_norm",
    "default_rules",
    "describe",
    "exclude_from_ddp",
    "lr_scale",
    "muon_momentum",
    "muon_update",
    "normalize_rows",
    "normuon_rescale",
    "orthogonalize",
    "shape_scale",
]
