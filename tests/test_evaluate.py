"""Plain and sliding-window evaluation: which targets are scored, with how much context, and the
byte/NLL bookkeeping, against models whose per-token NLL is known in closed form."""

import math

import pytest
import torch

from golf.eval.bpb import ByteLUT
from golf.eval.evaluate import eval_plain, eval_sliding, sliding_starts

V = 16
CPU = torch.device("cpu")


class UnigramModel(torch.nn.Module):
    """NLL of target y is -log p[y], whatever the context."""

    def __init__(self):
        super().__init__()
        self.logp = torch.log_softmax(torch.randn(V, generator=torch.Generator().manual_seed(1)), 0)

    def forward(self, x, y, reduction="none"):
        return -self.logp[y]


class PositionModel(torch.nn.Module):
    """NLL at window position t is t: the summed score reveals how much context each target had."""

    def forward(self, x, y, reduction="none"):
        return torch.arange(x.shape[1], dtype=torch.float32).expand(x.shape[0], -1)


def lut_one_byte_per_token() -> ByteLUT:
    return ByteLUT(
        base_bytes=torch.ones(V, dtype=torch.int16),
        has_leading_space=torch.zeros(V, dtype=torch.bool),
        is_boundary=torch.zeros(V, dtype=torch.bool),
    )


@pytest.mark.parametrize("n, seq_len, stride", [(1000, 64, 16), (64, 64, 16), (40, 64, 16), (1001, 32, 32), (257, 50, 7)])
def test_sliding_scores_every_target_once(n, seq_len, stride):
    tokens = torch.randint(0, V, (n + 1,))
    model = UnigramModel()
    r = eval_sliding(model, tokens, lut_one_byte_per_token(), seq_len=seq_len, stride=stride, batch_seqs=5, device=CPU)
    assert r.tokens == n and r.bytes == n
    expected = -model.logp[tokens[1:]].double().sum().item()
    assert math.isclose(r.val_loss * r.tokens, expected, rel_tol=1e-9)
    assert math.isclose(r.val_bpb, expected / (math.log(2) * n), rel_tol=1e-9)


def test_sliding_context_is_at_least_seq_len_minus_stride():
    n, T, S = 500, 64, 16
    r = eval_sliding(PositionModel(), torch.zeros(n + 1, dtype=torch.long), lut_one_byte_per_token(), seq_len=T,
                     stride=S, batch_seqs=3, device=CPU)
    starts = sliding_starts(n, T, S)
    expected = sum(range(T))  # the first window scores positions 0..T-1
    for ws in starts[1:]:
        wlen = min(ws + T, n) - ws
        expected += sum(range(T - S, wlen))
    assert r.tokens == n
    assert r.val_loss * r.tokens == pytest.approx(expected)


def test_plain_scores_whole_windows_only():
    n, T = 1000, 64
    tokens = torch.randint(0, V, (n + 1,))
    model = UnigramModel()
    r = eval_plain(model, tokens, lut_one_byte_per_token(), seq_len=T, batch_seqs=4, device=CPU)
    scored = (n // T) * T
    assert r.tokens == scored
    assert r.val_loss * r.tokens == pytest.approx(-model.logp[tokens[1 : scored + 1]].double().sum().item())


@pytest.mark.parametrize("world", [2, 3])
def test_rank_shares_partition_the_work(world):
    n, T, S = 777, 32, 8
    tokens = torch.randint(0, V, (n + 1,))
    model, lut = UnigramModel(), lut_one_byte_per_token()
    whole = eval_sliding(model, tokens, lut, seq_len=T, stride=S, batch_seqs=4, device=CPU)
    parts = [eval_sliding(model, tokens, lut, seq_len=T, stride=S, batch_seqs=4, device=CPU, rank=r, world_size=world)
             for r in range(world)]
    assert sum(p.tokens for p in parts) == whole.tokens
    assert sum(p.val_loss * p.tokens for p in parts) == pytest.approx(whole.val_loss * whole.tokens)
    plain = [eval_plain(model, tokens, lut, seq_len=T, batch_seqs=4, device=CPU, rank=r, world_size=world)
             for r in range(world)]
    assert sum(p.tokens for p in plain) == (n // T) * T


def test_leading_space_bytes_follow_the_previous_token():
    # token 5 carries a leading space worth one byte unless it follows a boundary (token 1, BOS)
    lut = lut_one_byte_per_token()
    lut.has_leading_space[5] = True
    lut.is_boundary[1] = True
    lut.base_bytes[1] = 0
    tokens = torch.tensor([1, 5, 5, 1, 5, 2, 3])
    r = eval_sliding(UnigramModel(), tokens, lut, seq_len=8, stride=8, batch_seqs=1, device=CPU)
    # targets 5,5,1,5,2,3 after 1,5,5,1,5,2: bytes 1 (after BOS), 2, 0 (BOS), 1 (after BOS), 1, 1
    assert r.bytes == 6
