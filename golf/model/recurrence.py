"""Layer plans: which physical block runs at each position of the encoder and decoder, and which skip
weight each decoder position merges with (techniques.md §2.6, §2.15).

A plan is computed once, at model construction, for the plain stack and for the looped stack; the forward
picks one by `GPT.looping` (a Python bool that torch.compile guards on, so toggling it recompiles into the
other graph instead of being constant-folded).

Depth recurrence, variant C (R0405+, R0409, R0427): with seg = [loop_start..loop_end],
    idx = [0..loop_start-1] + seg * (num_loops + 1) + [loop_end+1..L-1],
the first len(idx)//2 entries are the encoder. R0409/R0427 (L=11, 3..5, 2 loops): encoder [0,1,2,3,4,5,3,4],
decoder [5,3,4,5,6,7,8,9,10]. Variant B (R0403, PR #1331: layers 4,5 or 3,4,5 repeated once) is num_loops=1.
Weights are shared across passes (the blocks are physical).

Skip weights, two policies:
- "looped" (R0409, R0427): num_skips = min(len(enc), len(dec)) of the looped lists; decoder position j
  merges skip weight j while j < min(num_skips, len(enc)) (the plain stack uses the first min(E, D)).
- "physical" (R0403, PR #1331): num_skips = min(E, D) of the plain U-Net; decoder position j merges skip
  weight min(j, num_skips-1) while encoder outputs remain on the stack, so a looped decoder reuses the
  last weight (and the record's parameter count has no skip weights for the loop).
"""

from __future__ import annotations

from dataclasses import dataclass

from golf.config import ModelConfig


@dataclass(frozen=True)
class LayerPlan:
    encoder: tuple[int, ...]  # physical block index per encoder position
    decoder: tuple[int, ...]  # physical block index per decoder position
    skip_slots: tuple[int | None, ...]  # per decoder position: skip-weight row to merge with, or None


def looped_indices(num_layers: int, loop_start: int, loop_end: int, num_loops: int) -> list[int]:
    """The virtual-to-physical layer sequence of variant C (see the module docstring)."""
    seg = list(range(loop_start, loop_end + 1))
    return list(range(loop_start)) + seg * (num_loops + 1) + list(range(loop_end + 1, num_layers))


def _split(indices: list[int], unet: bool) -> tuple[list[int], list[int]]:
    if not unet:
        return [], indices
    num_encoder = len(indices) // 2
    return indices[:num_encoder], indices[num_encoder:]


def num_skip_weights(cfg: ModelConfig) -> int:
    """Rows of `skip_weights` (and `skip_gates`) under cfg's skip-weight policy."""
    enc, dec = _split(list(range(cfg.num_layers)), cfg.unet_skips)
    if cfg.num_loops and cfg.loop_skip_weights == "looped":
        enc, dec = _split(looped_indices(cfg.num_layers, cfg.loop_start, cfg.loop_end, cfg.num_loops), cfg.unet_skips)
    return min(len(enc), len(dec))


def _plan(indices: list[int], cfg: ModelConfig, num_skips: int) -> LayerPlan:
    enc, dec = _split(indices, cfg.unet_skips)
    slots: list[int | None] = []
    for j in range(len(dec)):
        if cfg.loop_skip_weights == "physical" and num_skips:
            slots.append(min(j, num_skips - 1) if j < len(enc) else None)
        else:
            slots.append(j if j < min(num_skips, len(enc)) else None)
    return LayerPlan(tuple(enc), tuple(dec), tuple(slots))


def build_plans(cfg: ModelConfig) -> tuple[LayerPlan, LayerPlan | None]:
    """(plain plan, looped plan or None when cfg.num_loops == 0)."""
    num_skips = num_skip_weights(cfg)
    plain = _plan(list(range(cfg.num_layers)), cfg, num_skips)
    looped = None
    if cfg.num_loops:
        looped = _plan(looped_indices(cfg.num_layers, cfg.loop_start, cfg.loop_end, cfg.num_loops), cfg, num_skips)
    for plan in (plain, looped):
        if plan is not None and cfg.parallel_residual == "two_lane":
            _check_two_lane(plan, cfg.parallel_start_layer)
    return plain, looped


def _check_two_lane(plan: LayerPlan, start: int) -> None:
    """The two lanes open at the first decoder block with physical index >= start and must stay open."""
    flags = [i >= start for i in plan.decoder]
    if True in flags and not all(flags[flags.index(True):]):
        raise ValueError(
            f"model.parallel_start_layer={start}: the decoder runs blocks {list(plan.decoder)}, so a block "
            "below the start follows a two-lane block; raise parallel_start_layer past the looped layers"
        )
