"""val_loss and val_bpb of a model over a token stream: plain non-overlapping windows and the sliding
window (techniques.md §5.1, §5.2), split over ranks, fp64 accumulators all-reduced before the division.

`model(x, y, reduction="none")` must return the per-token NLL [B, T] in fp32 (golf.model.GPT does).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from golf.eval.bpb import ByteLUT, bits_per_byte, token_bytes
from golf.train import dist


@dataclass
class EvalResult:
    mode: str  # "plain" | "sliding" | "ttt"
    val_loss: float  # mean NLL per scored token, nats
    val_bpb: float
    tokens: int  # scored tokens
    bytes: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA (the records' dtype policy); plain fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def rank_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous share of n items for `rank` (the records split sequences and windows this way)."""
    return n * rank // world, n * (rank + 1) // world


class _Sums:
    """fp64 accumulators on the device; reduced across ranks once at the end."""

    def __init__(self, device: torch.device):
        self.t = torch.zeros(3, dtype=torch.float64, device=device)  # nll, tokens, bytes

    def add(self, nll: torch.Tensor, nbytes: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        if mask is not None:
            nll, nbytes = nll[mask], nbytes[mask]
        self.t[0] += nll.double().sum()
        self.t[1] += nll.numel()
        self.t[2] += nbytes.double().sum()

    def result(self, mode: str, t0: float) -> EvalResult:
        dist.all_reduce(self.t, "sum")
        nll, ntok, nbytes = self.t.tolist()
        if ntok == 0 or nbytes == 0:
            raise ValueError(f"{mode} evaluation scored no tokens: the val split is shorter than one window")
        return EvalResult(mode, nll / ntok, bits_per_byte(nll, int(nbytes)), int(ntok), int(nbytes), time.perf_counter() - t0)


def as_token_tensor(tokens) -> torch.Tensor:
    if isinstance(tokens, np.ndarray):
        tokens = torch.from_numpy(tokens.astype(np.int64, copy=False))
    return tokens.to(torch.int64)


@torch.no_grad()
def eval_plain(model, tokens, lut: ByteLUT, *, seq_len: int, batch_seqs: int, device: torch.device,
               rank: int = 0, world_size: int = 1) -> EvalResult:
    """Non-overlapping windows of seq_len over tokens[: ((N-1)//T)*T + 1] (§1.5, §5.1)."""
    t0 = time.perf_counter()
    tokens = as_token_tensor(tokens)
    total = (tokens.numel() - 1) // seq_len
    lo, hi = rank_range(total, rank, world_size)
    lut = lut.to(device)
    sums = _Sums(device)
    for s in range(lo, hi, batch_seqs):
        e = min(s + batch_seqs, hi)
        chunk = tokens[s * seq_len : e * seq_len + 1].to(device, non_blocking=True)
        x = chunk[:-1].view(e - s, seq_len)  # [B, T]
        y = chunk[1:].view(e - s, seq_len)
        with autocast_for(device):
            nll = model(x, y, reduction="none")
        sums.add(nll, token_bytes(lut, x, y))
    return sums.result("plain", t0)


def sliding_starts(num_targets: int, seq_len: int, stride: int) -> list[int]:
    """Window starts such that every target is scored exactly once (the corrected rule of R0401+):
    window ws scores positions [0, wlen) if ws == 0 else [seq_len - stride, wlen)."""
    context = seq_len - stride
    return [ws for ws in range(0, num_targets, stride) if ws == 0 or ws + context < num_targets]


@torch.no_grad()
def eval_sliding(model, tokens, lut: ByteLUT, *, seq_len: int, stride: int, batch_seqs: int,
                 device: torch.device, rank: int = 0, world_size: int = 1) -> EvalResult:
    """Sliding-window score: every target after the first window sees >= seq_len - stride tokens of context."""
    t0 = time.perf_counter()
    tokens = as_token_tensor(tokens)
    n = tokens.numel() - 1  # targets
    starts = sliding_starts(n, seq_len, stride)
    lo, hi = rank_range(len(starts), rank, world_size)
    lut = lut.to(device)
    sums = _Sums(device)
    context = seq_len - stride
    pos = torch.arange(seq_len, device=device)
    for b in range(lo, hi, batch_seqs):
        batch = starts[b : min(b + batch_seqs, hi)]
        x = torch.zeros(len(batch), seq_len, dtype=torch.int64)
        y = torch.zeros_like(x)
        first = torch.empty(len(batch), dtype=torch.int64)
        length = torch.empty(len(batch), dtype=torch.int64)
        for i, ws in enumerate(batch):
            wlen = min(ws + seq_len, n) - ws
            x[i, :wlen] = tokens[ws : ws + wlen]
            y[i, :wlen] = tokens[ws + 1 : ws + wlen + 1]
            first[i] = 0 if ws == 0 else context
            length[i] = wlen
        x, y = x.to(device), y.to(device)
        mask = (pos >= first.to(device)[:, None]) & (pos < length.to(device)[:, None])  # [B, T] scored
        with autocast_for(device):
            nll = model(x, y, reduction="none")
        sums.add(nll, token_bytes(lut, x, y), mask)
    return sums.result("sliding", t0)


def evaluate(model, tokens, lut: ByteLUT, *, seq_len: int, stride: int, batch_seqs: int, device: torch.device,
             rank: int = 0, world_size: int = 1) -> dict[str, EvalResult]:
    """The plain score, and the sliding-window score when stride > 0."""
    was_training = model.training
    model.eval()
    try:
        out = {"plain": eval_plain(model, tokens, lut, seq_len=seq_len, batch_seqs=batch_seqs, device=device,
                                   rank=rank, world_size=world_size)}
        if stride:
            out["sliding"] = eval_sliding(model, tokens, lut, seq_len=seq_len, stride=stride, batch_seqs=batch_seqs,
                                          device=device, rank=rank, world_size=world_size)
    finally:
        model.train(was_training)
    for r in out.values():
        if not math.isfinite(r.val_loss):
            raise ValueError(f"{r.mode} val_loss is {r.val_loss}: the model produces non-finite losses")
    return out
