"""TokenLoader: the challenge's sequential stream, rank slices, determinism and resume."""

import numpy as np
import pytest
import torch

from golf.data.loader import TokenLoader
from golf.data.shards import write_shard

SIZES = [37, 50, 23]  # deliberately not multiples of any span: calls cross shard ends and wrap


@pytest.fixture
def shards(tmp_path):
    """Three shards whose concatenation is 0, 1, 2, ... so stream positions are readable from the tokens."""
    paths, start = [], 0
    for i, n in enumerate(SIZES):
        path = tmp_path / f"train_{i:06d}.bin"
        write_shard(path, np.arange(start, start + n))
        paths.append(path)
        start += n
    return paths


def _stream(n_tokens: int, offset: int = 0) -> np.ndarray:
    """The expected stream: the shards' tokens in order, wrapping around."""
    return (np.arange(offset, offset + n_tokens) % sum(SIZES)).astype(np.int64)


def test_sequential_stream_matches_the_challenge(shards):
    # batch 12 tokens, seq_len 4, 1 rank, no accumulation: each call takes 13 tokens, x/y shifted by one
    loader = TokenLoader(list(reversed(shards)), batch_tokens=12, seq_len=4)  # order given does not matter
    pos = 0
    for _ in range(20):  # 260 tokens: wraps around the 110-token stream twice
        x, y = loader.next_batch()
        assert x.shape == y.shape == (3, 4) and x.dtype == y.dtype == torch.int64
        span = _stream(13, pos)
        assert x.flatten().tolist() == span[:-1].tolist()
        assert y.flatten().tolist() == span[1:].tolist()
        pos += 13


def test_determinism_and_seed_is_ignored(shards):
    a = TokenLoader(shards, batch_tokens=16, seq_len=4, seed=1)
    b = TokenLoader(shards, batch_tokens=16, seq_len=4, seed=2)
    for _ in range(15):
        xa, ya = a.next_batch()
        xb, yb = b.next_batch()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("world_size, grad_accum", [(2, 1), (4, 2), (3, 1)])
def test_ranks_are_disjoint_and_their_union_is_the_stream(shards, world_size, grad_accum):
    seq_len, local = 4, 8
    batch = local * world_size * grad_accum
    loaders = [TokenLoader(shards, batch_tokens=batch, seq_len=seq_len, grad_accum=grad_accum, rank=r,
                           world_size=world_size) for r in range(world_size)]
    span = local + 1
    pos = 0
    for _ in range(12):
        for r, loader in enumerate(loaders):
            x, y = loader.next_batch()
            assert x.shape == (local // seq_len, seq_len)
            expected = _stream(span, pos + r * span)  # rank r's slice of one contiguous chunk
            assert x.flatten().tolist() == expected[:-1].tolist() and y.flatten().tolist() == expected[1:].tolist()
        pos += world_size * span  # one call consumes world_size * (local + 1) tokens on every rank


def test_union_over_ranks_equals_single_rank_chunk(shards):
    """With world_size ranks, one call covers exactly the chunk a single-rank loader reads in one call of
    world_size times the micro-batch (plus the per-rank extra token): no token skipped, none read twice."""
    ranks = [TokenLoader(shards, batch_tokens=16, seq_len=4, rank=r, world_size=2) for r in range(2)]
    parts = []
    for loader in ranks:
        x, y = loader.next_batch()
        parts.append(torch.cat([x.flatten(), y.flatten()[-1:]]))
    single = TokenLoader(shards, batch_tokens=17, seq_len=1)  # 18 tokens: the same chunk of 2 * (8 + 1)
    x, y = single.next_batch()
    assert torch.cat(parts).tolist() == torch.cat([x.flatten(), y.flatten()[-1:]]).tolist()


def test_resume_continues_exactly(shards):
    a = TokenLoader(shards, batch_tokens=24, seq_len=8, rank=1, world_size=3)
    for _ in range(7):
        a.next_batch()
    state = a.state_dict()
    rest = [a.next_batch() for _ in range(9)]
    b = TokenLoader(shards, batch_tokens=24, seq_len=8, rank=1, world_size=3)
    b.load_state_dict(state)
    for (xa, ya), (xb, yb) in zip(rest, (b.next_batch() for _ in range(9))):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_state_errors(shards, tmp_path):
    loader = TokenLoader(shards, batch_tokens=8, seq_len=4)
    state = loader.state_dict()
    other = TokenLoader(shards[:2], batch_tokens=8, seq_len=4)
    with pytest.raises(ValueError, match="saved over shards .* resume with the same data directory"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="kind 'shuffled'"):
        loader.load_state_dict({**state, "kind": "shuffled"})
    with pytest.raises(ValueError, match="lies outside the shards"):
        loader.load_state_dict({**state, "pos": 10_000})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_tokens=10, seq_len=4), r"batch_tokens=10 .* multiple of 4"),
        (dict(batch_tokens=16, seq_len=4, world_size=3), r"multiple of 12"),
        (dict(batch_tokens=16, seq_len=4, grad_accum=0), r"grad_accum=0"),
        (dict(batch_tokens=16, seq_len=4, rank=2, world_size=2), r"rank=2 must lie in \[0, world_size=2\)"),
    ],
)
def test_bad_batch_layouts(shards, kwargs, match):
    with pytest.raises(ValueError, match=match):
        TokenLoader(shards, **kwargs)


def test_no_files_and_vocab_check(shards):
    with pytest.raises(ValueError, match="no shard files"):
        TokenLoader([], batch_tokens=8, seq_len=4)
    loader = TokenLoader(shards, batch_tokens=8, seq_len=4, vocab_size=100)  # ids reach 109
    with pytest.raises(ValueError, match=r"train_000002\.bin holds token id 109, but the tokenizer has only 100"):
        for _ in range(20):
            loader.next_batch()
