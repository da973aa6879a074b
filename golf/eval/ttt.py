"""Legal score-first test-time training (techniques.md §5.3, §5.4; R0323 = PR #549, R0406, R0409).

The val targets are cut into chunks of `chunk_tokens`. The sliding windows of §5.2 (every target scored
exactly once) are assigned to the chunk holding their first scored target. For each chunk in order:

1. score: the chunk's windows, split over ranks, with the current weights (no_grad, fp64 sums, byte LUTs);
2. train, unless it is the last chunk: the chunk's ⌊len/seq_len⌋ whole sequences, whose targets are all
   targets of this chunk and therefore already scored, for `epochs` epochs with SGD + momentum at
   lr·½(1 + cos(π·ci/(n_chunks − 1))), first `freeze_blocks` blocks frozen, global gradient-norm clip.

A target is never rescored, and no weight update uses a target before it is scored: the score of chunk i
depends only on the artifact and the tokens of chunks ≤ i (the rules of §0 / issue #1017).

Distributed: a global training batch is `batch_seqs` sequences split contiguously over ranks; each rank
backpropagates sum-NLL / (tokens in the global batch) and the gradients are all-reduced with SUM, so the
step is the mean-loss step of one process on the whole batch and every rank holds the same weights. Ranks
with no sequences in a batch contribute zero gradients but still join the all-reduce.

Scoring and training both call `model(x, y, reduction=...)`, the forward of every other path.
"""

from __future__ import annotations

import math
import re
import time
from typing import Callable

import torch
from torch import nn

from golf.eval.bpb import ByteLUT, bits_per_byte, build_byte_luts, token_bytes
from golf.eval.evaluate import EvalResult, as_token_tensor, rank_range, autocast_for, sliding_starts
from golf.optim.builder import clip_grad_norm
from golf.train import dist

_BLOCK_RE = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def check_ttt_shape(num_targets: int, *, seq_len: int, stride: int, chunk_tokens: int) -> None:
    """Raise ValueError unless every window's scored span lies inside one chunk (§5.4 step 1)."""
    if seq_len <= 0 or stride <= 0 or chunk_tokens <= 0:
        raise ValueError(f"TTT: seq_len={seq_len}, stride={stride}, chunk_tokens={chunk_tokens} must be positive")
    if stride > seq_len:
        raise ValueError(f"TTT: stride={stride} exceeds seq_len={seq_len}; use a stride <= the eval sequence length")
    if seq_len % stride or chunk_tokens % stride:
        raise ValueError(
            f"TTT: seq_len={seq_len} and eval.ttt_chunk_tokens={chunk_tokens} must be multiples of the stride "
            f"{stride}, so that no window's scored targets straddle two chunks"
        )
    if chunk_tokens < seq_len:
        raise ValueError(
            f"TTT: eval.ttt_chunk_tokens={chunk_tokens} is shorter than seq_len={seq_len}; the first window scores "
            f"{seq_len} targets, which must lie in chunk 0"
        )
    if num_targets < 1:
        raise ValueError("TTT: the val stream has no targets (it needs at least 2 tokens)")


def chunk_windows(num_targets: int, *, seq_len: int, stride: int, chunk_tokens: int) -> list[list[int]]:
    """Window starts of each chunk, chunk ci holding the windows whose first scored target is in
    [ci·chunk_tokens, (ci+1)·chunk_tokens)."""
    check_ttt_shape(num_targets, seq_len=seq_len, stride=stride, chunk_tokens=chunk_tokens)
    n_chunks = (num_targets + chunk_tokens - 1) // chunk_tokens
    context = seq_len - stride
    out: list[list[int]] = [[] for _ in range(n_chunks)]
    for ws in sliding_starts(num_targets, seq_len, stride):
        first = 0 if ws == 0 else ws + context
        out[min(first // chunk_tokens, n_chunks - 1)].append(ws)
    return out


def _window_batch(tokens: torch.Tensor, starts: list[int], n: int, seq_len: int, stride: int):
    """x, y [B, T] (zero-padded past the stream end) and the scored mask [B, T] of windows `starts`."""
    x = torch.zeros(len(starts), seq_len, dtype=torch.int64)
    y = torch.zeros_like(x)
    mask = torch.zeros(len(starts), seq_len, dtype=torch.bool)
    for i, ws in enumerate(starts):
        wlen = min(ws + seq_len, n) - ws
        x[i, :wlen] = tokens[ws : ws + wlen]
        y[i, :wlen] = tokens[ws + 1 : ws + wlen + 1]
        mask[i, 0 if ws == 0 else seq_len - stride : wlen] = True
    return x, y, mask


@torch.no_grad()
def _score_chunk(model, tokens, lut: ByteLUT, starts: list[int], out: torch.Tensor, *, n: int, seq_len: int,
                 stride: int, batch_seqs: int, device: torch.device) -> None:
    """Add this rank's (nll, tokens, bytes) of the windows `starts` into out [3] (fp64)."""
    for b in range(0, len(starts), batch_seqs):
        x, y, mask = _window_batch(tokens, starts[b : b + batch_seqs], n, seq_len, stride)
        x, y, mask = x.to(device), y.to(device), mask.to(device)
        with autocast_for(device):
            nll = model(x, y, reduction="none")  # [B, T] fp32
        out[0] += nll[mask].double().sum()
        out[1] += mask.sum()
        out[2] += token_bytes(lut, x, y)[mask].double().sum()


def _freeze(model: nn.Module, freeze_blocks: int) -> tuple[list[nn.Parameter], dict[str, bool]]:
    """Trainable TTT parameters (all but those of blocks < freeze_blocks) and the original requires_grad."""
    original = {name: p.requires_grad for name, p in model.named_parameters()}
    params = []
    for name, p in model.named_parameters():
        m = _BLOCK_RE.search(name)
        frozen = m is not None and int(m.group(1)) < freeze_blocks
        p.requires_grad_(not frozen)
        if not frozen:
            params.append(p)
    return params, original


def _all_reduce_grads(params: list[nn.Parameter]) -> None:
    """SUM the gradients over ranks in one flat buffer; missing gradients count as zeros."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, "sum")
    offset = 0
    for p in params:
        p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()


def _train_chunk(model, tokens, params, opt, *, chunk_start: int, num_seqs: int, seq_len: int, epochs: int,
                 batch_seqs: int, grad_clip: float, device: torch.device, rank: int, world_size: int) -> None:
    """`epochs` passes over the chunk's num_seqs whole sequences in global batches of batch_seqs."""
    for _ in range(epochs):
        for b in range(0, num_seqs, batch_seqs):
            e = min(b + batch_seqs, num_seqs)
            lo, hi = rank_range(e - b, rank, world_size)
            opt.zero_grad(set_to_none=True)
            if hi > lo:
                s = chunk_start + (b + lo) * seq_len
                local = tokens[s : s + (hi - lo) * seq_len + 1].to(device)
                x = local[:-1].view(hi - lo, seq_len)  # [b_rank, T]
                y = local[1:].view(hi - lo, seq_len)
                with autocast_for(device):
                    loss = model(x, y, reduction="sum") / ((e - b) * seq_len)
                loss.backward()
            if world_size > 1:
                _all_reduce_grads(params)
            clip_grad_norm(params, grad_clip)
            opt.step()


def ttt_chunk_sums(model: nn.Module, tokens, lut: ByteLUT, *, seq_len: int, stride: int, batch_seqs: int,
                   chunk_tokens: int, epochs: int, lr: float, momentum: float, freeze_blocks: int, grad_clip: float,
                   device: torch.device, rank: int = 0, world_size: int = 1,
                   log: Callable[[str], None] | None = None) -> torch.Tensor:
    """Run the score-first pass; return the all-reduced per-chunk sums [n_chunks, 3] (nll nats, tokens,
    bytes) in fp64 on the CPU. The model is left adapted (its weights are those after the last update)."""
    _check_args(model, batch_seqs=batch_seqs, epochs=epochs, lr=lr, momentum=momentum, freeze_blocks=freeze_blocks,
                grad_clip=grad_clip, rank=rank, world_size=world_size)
    tokens = as_token_tensor(tokens)
    n = tokens.numel() - 1
    chunks = chunk_windows(n, seq_len=seq_len, stride=stride, chunk_tokens=chunk_tokens)
    lut = lut.to(device)
    sums = torch.zeros(len(chunks), 3, dtype=torch.float64, device=device)
    params, original = _freeze(model, freeze_blocks)
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
    was_training, t0 = model.training, time.perf_counter()
    try:
        for ci, windows in enumerate(chunks):
            lo, hi = rank_range(len(windows), rank, world_size)
            model.eval()
            _score_chunk(model, tokens, lut, windows[lo:hi], sums[ci], n=n, seq_len=seq_len, stride=stride,
                         batch_seqs=batch_seqs, device=device)
            chunk_start = ci * chunk_tokens
            num_seqs = (min(chunk_start + chunk_tokens, n) - chunk_start) // seq_len
            if ci < len(chunks) - 1 and epochs > 0 and num_seqs > 0:
                for group in opt.param_groups:
                    group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * ci / max(len(chunks) - 1, 1)))
                model.train()
                _train_chunk(model, tokens, params, opt, chunk_start=chunk_start, num_seqs=num_seqs, seq_len=seq_len,
                             epochs=epochs, batch_seqs=batch_seqs, grad_clip=grad_clip, device=device, rank=rank,
                             world_size=world_size)
            if log is not None and (ci % 100 == 0 or ci == len(chunks) - 1):
                log(f"ttt chunk {ci + 1}/{len(chunks)} ({time.perf_counter() - t0:.1f}s)")
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(original[name])
            p.grad = None
        model.train(was_training)
    dist.all_reduce(sums, "sum")
    return sums.cpu()


def eval_ttt(model: nn.Module, tokens, lut: ByteLUT, *, seq_len: int, stride: int, batch_seqs: int, chunk_tokens: int,
             epochs: int, lr: float, momentum: float, freeze_blocks: int, grad_clip: float, device: torch.device,
             rank: int = 0, world_size: int = 1, log: Callable[[str], None] | None = None) -> EvalResult:
    """val_loss / val_bpb of the legal score-first TTT pass (mode "ttt"). Adapts `model` in place: pass the
    artifact's model, or a copy when its weights are needed afterwards."""
    t0 = time.perf_counter()
    sums = ttt_chunk_sums(model, tokens, lut, seq_len=seq_len, stride=stride, batch_seqs=batch_seqs,
                          chunk_tokens=chunk_tokens, epochs=epochs, lr=lr, momentum=momentum,
                          freeze_blocks=freeze_blocks, grad_clip=grad_clip, device=device, rank=rank,
                          world_size=world_size, log=log)
    nll, ntok, nbytes = sums.sum(0).tolist()
    if not math.isfinite(nll):
        raise ValueError(f"ttt val_loss is {nll / max(ntok, 1)}: the adapted model produced non-finite losses; "
                         "lower eval.ttt_lr or set eval.ttt_grad_clip")
    return EvalResult("ttt", nll / ntok, bits_per_byte(nll, int(nbytes)), int(ntok), int(nbytes),
                      time.perf_counter() - t0)


def score_ttt(model: nn.Module, cfg, dataset, device: torch.device, rank: int = 0, world_size: int = 1,
              log: Callable[[str], None] | None = None) -> EvalResult:
    """eval_ttt with the eval section of a GolfConfig over dataset's val split (the tokens and byte LUTs of
    golf.eval.artifact_eval.score). Run it on the artifact's dequantized model, after its other scores:
    it adapts the model (TTT before quantization is not legal, techniques.md §5.3)."""
    e = cfg.eval
    return eval_ttt(model, dataset.val_tokens(e.max_tokens), build_byte_luts(dataset.processor(), cfg.model.vocab_size),
                    seq_len=e.seq_len or cfg.train.seq_len, stride=e.stride, batch_seqs=e.batch_seqs,
                    chunk_tokens=e.ttt_chunk_tokens, epochs=e.ttt_epochs, lr=e.ttt_lr, momentum=e.ttt_momentum,
                    freeze_blocks=e.ttt_freeze_blocks, grad_clip=e.ttt_grad_clip, device=device, rank=rank,
                    world_size=world_size, log=log)


def _check_args(model, *, batch_seqs, epochs, lr, momentum, freeze_blocks, grad_clip, rank, world_size) -> None:
    if batch_seqs <= 0:
        raise ValueError(f"TTT: batch_seqs={batch_seqs} must be positive (eval.batch_seqs)")
    if epochs < 0:
        raise ValueError(f"TTT: eval.ttt_epochs={epochs} must be >= 0 (0 scores without adapting)")
    if lr < 0 or grad_clip < 0:
        raise ValueError(f"TTT: eval.ttt_lr={lr} and eval.ttt_grad_clip={grad_clip} must be >= 0")
    if not 0 <= momentum < 1:
        raise ValueError(f"TTT: eval.ttt_momentum={momentum} must be in [0, 1)")
    num_blocks = len(getattr(model, "blocks", []))
    if not 0 <= freeze_blocks <= num_blocks:
        raise ValueError(f"TTT: eval.ttt_freeze_blocks={freeze_blocks} must be in [0, {num_blocks}] (the model's blocks)")
    if not 0 <= rank < world_size:
        raise ValueError(f"TTT: rank={rank} must be in [0, world_size={world_size})")
