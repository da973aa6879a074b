"""Landing the artifact under its byte budget: mixed int5/int6 by Hessian sensitivity (techniques.md §4.9),
selective +-1 pruning (§4.12), and self-generated calibration text (§4.7).

Bytes are always measured, never estimated: a candidate is packed into the real artifact container and
compressed with the configured compressor (golf.quant.artifact.pack_artifact), and compared in decimal bytes
with quant.budget_bytes minus the code bytes (§4.12 ⚠: the records' MiB target overshot 16,000,000).
Because brotli-11 takes about a minute per core11-sized candidate, the searches are steered by a fast proxy
(zstd level 3 of the same body, scaled by the real/proxy ratio interpolated between the two real
measurements that bracket the answer) and every decision is a real measurement; a safeguard bisects when
the proxy misleads, so the search never needs more than about three times a binary search's probes.

- plan_bits: rank the GPTQ'd block matrices by sensitivity trace(H) and give the n most sensitive
  quant.bits, the rest quant.mixed_low_bits; binary search on the largest n that fits (bytes grow with n).
  Each matrix is quantized once per bit width and the candidates are assembled from those entries.
- prune_to_budget: zero the n cheapest codes with |q| = 1 (cost s_row^2 each, ties in flat index order);
  search for the smallest n that fits, stopping early once a fitting n lands within PRUNE_SLACK of the
  target (n runs into the millions; one byte more or less is not worth a minute of brotli).
- quantize_to_budget: the export entry point: quantize, mixed plan when quant.mixed_low_bits > 0, pruning
  when quant.prune_to_budget and still over; returns the entries and a BudgetReport.
- generate_calibration (quant.calib_source == "generated"): the model's own samples (temperature 0.8, seeded torch.Generator, first token
  uniform), the calibration source the organizers accepted (no train or val data touched after training).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import zstandard
from torch import Tensor, nn

from golf.config import QuantConfig
from golf.quant.artifact import artifact_body, pack_artifact
from golf.quant.export import QuantizedTensor, quantize_state_dict, tensor_group

GEN_TEMPERATURE = 0.8
GEN_BATCH = 8
PROXY_ZSTD_LEVEL = 3  # the fast size model that steers the searches (~100x faster than brotli-11)
PRUNE_SLACK = 0.001  # pruning stops once a fitting candidate is within this fraction of the target bytes


def sensitivities(hessians: dict[str, Tensor]) -> dict[str, float]:
    """{name: trace(H)}, the records' per-matrix sensitivity (sum of the Hessian diagonal)."""
    return {name: float(h.diagonal().double().sum()) for name, h in hessians.items()}


def artifact_bytes(entries: dict[str, QuantizedTensor | Tensor], meta: dict, cfg: QuantConfig) -> int:
    """The compressed size of `entries` in golf's artifact container, in bytes."""
    return len(pack_artifact(entries, meta, compressor=cfg.compressor)[0])


class _Sizes:
    """Artifact bytes of candidate n (entries built by `build(n)`): real (the configured compressor) and
    proxy (zstd level 3 of the same body), both cached."""

    def __init__(self, build: Callable[[int], dict], meta: dict, cfg: QuantConfig):
        self.build, self.meta, self.cfg = build, meta, cfg
        self._real: dict[int, int] = {}
        self._proxy: dict[int, int] = {}
        self._zstd = zstandard.ZstdCompressor(level=PROXY_ZSTD_LEVEL)

    def real(self, n: int) -> int:
        if n not in self._real:
            self._real[n] = artifact_bytes(self.build(n), self.meta, self.cfg)
        return self._real[n]

    def proxy(self, n: int) -> int:
        if n not in self._proxy:
            self._proxy[n] = len(self._zstd.compress(artifact_body(self.build(n), self.meta)))
        return self._proxy[n]


def _closest_fit(sizes: _Sizes, fit: int, fail: int, target: int, slack: int = 0) -> int:
    """The fitting candidate next to the boundary between `fit` (real bytes <= target) and `fail` (> target),
    sizes monotone in n: the n nearest `fail` that fits, or the first fitting probe within `slack` bytes of
    the target.

    Probes go where the proxy predicts the boundary, the proxy scaled by the real/proxy ratio interpolated
    between the bracket's two real measurements; when two such probes leave more than half of the bracket,
    the next one bisects (so at most three real probes per halving).
    """
    round_width, proxy_probes = abs(fail - fit), 0  # a round: up to two proxy probes, then a check
    while abs(fail - fit) > 1 and sizes.real(fit) < target - slack:
        step = 1 if fail > fit else -1
        inside = range(fit + step, fail, step)  # from the fitting side towards the failing one
        bisect = False
        if proxy_probes == 2:
            bisect = 2 * abs(fail - fit) > round_width  # the proxy did not halve the bracket: bisect once
            round_width, proxy_probes = abs(fail - fit), 0
        if bisect:
            n = inside[len(inside) // 2]
        else:
            r_fit, r_fail = (sizes.real(x) / sizes.proxy(x) for x in (fit, fail))

            def predicted(x: int) -> float:
                return sizes.proxy(x) * (r_fit + (r_fail - r_fit) * (x - fit) / (fail - fit))

            lo, hi = 0, len(inside) - 1  # the last index whose predicted bytes fit (predictions grow along inside)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if predicted(inside[mid]) <= target else (lo, mid - 1)
            n, proxy_probes = inside[lo], proxy_probes + 1
        if sizes.real(n) <= target:
            fit = n
        else:
            fail = n
    return fit


def mixed_candidates(state_dict: dict[str, Tensor], hessians: dict[str, Tensor], cfg: QuantConfig) -> list[str]:
    """The matrices that mixed precision may lower: block matrices (attention, MLP, projections) with a
    Hessian, most sensitive first. The tied embedding and the lookup tables keep their own bits."""
    names = [
        n for n, t in state_dict.items()
        if n in hessians and t.dim() == 2 and t.numel() > cfg.passthrough_numel
        and tensor_group(n) not in ("embed", "table")
    ]
    sens = sensitivities({n: hessians[n] for n in names})
    return sorted(names, key=lambda n: -sens[n])


def plan_bits(
    state_dict: dict[str, Tensor],
    hessians: dict[str, Tensor],
    cfg: QuantConfig,
    *,
    target_bytes: int,
    meta: dict | None = None,
    device: torch.device | str | None = None,
    impl: str = "auto",
) -> tuple[dict[str, int], dict[str, QuantizedTensor | Tensor], int]:
    """(bits plan, its entries, its artifact bytes) with the most int-`quant.bits` matrices that fit.

    Candidates (mixed_candidates) ranked by trace(H): the top n get quant.bits, the rest
    quant.mixed_low_bits. If even n = 0 does not fit, the all-low plan is returned (its bytes exceed the
    target: pruning or a smaller k is the caller's next step).
    """
    low, high = cfg.mixed_low_bits, cfg.bits
    if low == 0 or low >= high:
        raise ValueError(f"plan_bits: quant.mixed_low_bits={low} must be in [5, quant.bits={high})")
    meta = meta or {}
    ranked = mixed_candidates(state_dict, hessians, cfg)
    at_low = quantize_state_dict(state_dict, hessians, cfg, device=device, impl=impl,
                                 bits_plan={n: low for n in ranked})
    high_only = quantize_state_dict({n: state_dict[n] for n in ranked}, hessians, cfg, device=device, impl=impl)

    def assemble(n: int) -> tuple[dict[str, int], dict]:
        plan = {name: (high if i < n else low) for i, name in enumerate(ranked)}
        entries = {name: (high_only[name] if plan.get(name) == high else at_low[name]) for name in at_low}
        return plan, entries

    sizes = _Sizes(lambda n: assemble(n)[1], meta, cfg)
    top = len(ranked)
    if sizes.real(top) <= target_bytes:
        n = top
    elif sizes.real(0) > target_bytes:
        n = 0  # not even all-low fits: the caller prunes next
    else:
        n = _closest_fit(sizes, 0, top, target_bytes)
    plan, entries = assemble(n)
    return plan, entries, sizes.real(n)


@dataclasses.dataclass
class _PruneOrder:
    """Every |q| = 1 code of the quantized entries, cheapest first: entry names[tensor_id[i]], flat index
    flat_index[i] into its codes."""

    names: list[str]
    tensor_id: Tensor  # [N] int64
    flat_index: Tensor  # [N] int64


def _prune_order(entries: dict[str, QuantizedTensor | Tensor]) -> _PruneOrder:
    names, ids, idxs, costs = [], [], [], []
    for name, e in entries.items():
        if not (isinstance(e, QuantizedTensor) and e.kind in ("gptq", "rtn")):
            continue
        idx = (e.data.reshape(-1).abs() == 1).nonzero().squeeze(1)  # [n] flat indices into [rows, cols]
        # Zeroing a +-1 code moves the weight by one step: squared reconstruction error s_row^2.
        costs.append(e.scales.float().square()[idx // e.data.shape[1]])
        ids.append(torch.full_like(idx, len(names)))
        idxs.append(idx)
        names.append(name)
    if not names:
        empty = torch.zeros(0, dtype=torch.int64)
        return _PruneOrder([], empty, empty)
    order = torch.sort(torch.cat(costs), stable=True).indices
    return _PruneOrder(names, torch.cat(ids)[order], torch.cat(idxs)[order])


def _apply_pruning(entries: dict, order: _PruneOrder, n: int) -> dict[str, QuantizedTensor | Tensor]:
    """A copy of entries with the n cheapest +-1 codes set to 0 (pruned entries get new code tensors)."""
    out = dict(entries)
    ids, idx = order.tensor_id[:n], order.flat_index[:n]
    for t in ids.unique().tolist():
        name = order.names[t]
        data = entries[name].data.clone()
        data.view(-1)[idx[ids == t]] = 0
        out[name] = dataclasses.replace(entries[name], data=data)
    return out


def prune_to_budget(
    entries: dict[str, QuantizedTensor | Tensor], cfg: QuantConfig, *, target_bytes: int, meta: dict | None = None
) -> tuple[dict[str, QuantizedTensor | Tensor], int, int]:
    """(entries, codes pruned, artifact bytes): the cheapest +-1 codes zeroed so the artifact fits, the fewest
    such codes or a fitting count whose artifact is within PRUNE_SLACK of the target.

    Raises ValueError when pruning every +-1 code still does not fit.
    """
    meta = meta or {}
    order = _prune_order(entries)
    sizes = _Sizes(lambda n: _apply_pruning(entries, order, n) if n else entries, meta, cfg)
    total = len(order.flat_index)
    if sizes.real(0) <= target_bytes:
        return entries, 0, sizes.real(0)
    if sizes.real(total) > target_bytes:
        raise ValueError(
            f"selective pruning cannot reach {target_bytes:,} bytes: with all {total:,} +-1 codes zeroed the "
            f"artifact is {sizes.real(total):,} bytes; lower quant.bits, raise quant.clip_k or set "
            f"quant.mixed_low_bits"
        )
    n = _closest_fit(sizes, total, 0, target_bytes, slack=int(PRUNE_SLACK * target_bytes))
    return _apply_pruning(entries, order, n), n, sizes.real(n)


@dataclasses.dataclass
class BudgetReport:
    bits_plan: dict[str, int]  # matrices whose bits mixed precision set ({} when off)
    pruned: int  # +-1 codes zeroed
    model_bytes: int | None  # the artifact's compressed size (None when nothing needed it measured)
    target_bytes: int  # quant.budget_bytes minus the code bytes


def quantize_to_budget(
    state_dict: dict[str, Tensor],
    hessians: dict[str, Tensor] | None,
    cfg: QuantConfig,
    *,
    code_bytes: int,
    meta: dict | None = None,
    device: torch.device | str | None = None,
    impl: str = "auto",
) -> tuple[dict[str, QuantizedTensor | Tensor], BudgetReport]:
    """quantize_state_dict, then (quant.mixed_low_bits > 0) the mixed int-low / int-bits plan that fits
    quant.budget_bytes - code_bytes, then (quant.prune_to_budget) selective +-1 pruning if still over.

    meta must be the meta the artifact will be written with (its JSON header is part of the bytes).
    """
    cfg.validate()
    target = cfg.budget_bytes - int(code_bytes)
    if target <= 0:
        raise ValueError(f"code_bytes={code_bytes:,} leaves no room under quant.budget_bytes={cfg.budget_bytes:,}")
    meta = meta or {}
    plan: dict[str, int] = {}
    if cfg.mixed_low_bits and hessians and cfg.gptq:
        plan, entries, size = plan_bits(state_dict, hessians, cfg, target_bytes=target, meta=meta, device=device,
                                        impl=impl)
    else:
        entries = quantize_state_dict(state_dict, hessians, cfg, device=device, impl=impl)
        # Compressing costs about a minute for a core11 model at brotli-11: measure only when pruning needs it.
        size = artifact_bytes(entries, meta, cfg) if cfg.prune_to_budget else None
    pruned = 0
    if cfg.prune_to_budget and size > target:
        entries, pruned, size = prune_to_budget(entries, cfg, target_bytes=target, meta=meta)
    return entries, BudgetReport(plan, pruned, size, target)


@torch.no_grad()
def generate_calibration(
    model: nn.Module,
    num_seqs: int,
    seq_len: int,
    *,
    vocab_size: int,
    seed: int = 42,
    temperature: float = GEN_TEMPERATURE,
    batch: int = GEN_BATCH,
    device: torch.device | str | None = None,
) -> list[Tensor]:
    """The model's own text as calibration input: num_seqs sequences of seq_len tokens in batches [batch, T].

    First token uniform over the vocabulary, then autoregressive sampling at `temperature` from
    model.logits(ids)[:, -1] with a torch.Generator seeded by `seed` (on the model's device). No KV cache:
    each step re-runs the prefix, as in the records (§4.7). The model's train/eval mode is restored.
    """
    if num_seqs <= 0 or seq_len <= 0 or batch <= 0 or temperature <= 0 or vocab_size <= 0:
        raise ValueError(
            f"generate_calibration: num_seqs={num_seqs}, seq_len={seq_len}, batch={batch}, "
            f"temperature={temperature}, vocab_size={vocab_size} must all be positive"
        )
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed)
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, num_seqs, batch):
            b = min(batch, num_seqs - start)
            ids = torch.randint(0, vocab_size, (b, 1), generator=gen, device=dev)  # [b, 1]
            for _ in range(seq_len - 1):
                logits = model.logits(ids)[:, -1].float()  # [b, V]
                probs = torch.softmax(logits / temperature, dim=-1)
                ids = torch.cat([ids, torch.multinomial(probs, 1, generator=gen)], dim=1)  # [b, t+1]
            out.append(ids)
    finally:
        model.train(was_training)
    return out
