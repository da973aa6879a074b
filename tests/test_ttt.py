"""Legal score-first TTT (techniques.md §5.3, §5.4): every target scored exactly once, chunk i's score is
blind to the tokens after it, the update really adapts the model, frozen blocks stay fixed, and 2 gloo
processes compute what one process does."""

import copy
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from golf.config import EvalConfig, ModelConfig
from golf.eval.bpb import ByteLUT
from golf.eval.evaluate import eval_sliding
from golf.eval.ttt import chunk_windows, eval_ttt, ttt_chunk_sums
from golf.model import GPT
from golf.ops._dispatch import kernels_enabled, set_kernels_enabled
from golf.presets import get_preset

V, T, S, K = 32, 32, 8, 64  # vocab, seq_len, stride, chunk_tokens
N = 300  # targets: chunks of 64, 64, 64, 64, 44
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def reference_ops():
    """TTT does not depend on the fused kernels (tests/kernels tests them); without a GPU they would run in the
    Triton interpreter, so these tests use the pure-torch references."""
    before = kernels_enabled()
    set_kernels_enabled(False)
    yield
    set_kernels_enabled(before)


def model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=V, num_layers=3, model_dim=32, num_heads=2, num_kv_heads=1, rope_dims=16,
                      mlp_mult=2.0, smear_gate="v1", bigram_vocab=16, bigram_dim=8)
    return GPT(cfg)


def stream(seed: int = 1, n: int = N) -> torch.Tensor:
    return torch.randint(0, V, (n + 1,), generator=torch.Generator().manual_seed(seed))


def lut(vocab: int = V) -> ByteLUT:
    """Token id t stands for 1 + t % 3 bytes, so the byte sums depend on which targets are scored."""
    ids = torch.arange(vocab)
    no = torch.zeros(vocab, dtype=torch.bool)
    return ByteLUT((1 + ids % 3).to(torch.int16), no, no.clone())


ARGS = dict(seq_len=T, stride=S, batch_seqs=3, chunk_tokens=K, epochs=2, lr=0.05, momentum=0.9, freeze_blocks=0,
            grad_clip=1.0, device=CPU)


def sums(m, tokens, **over):
    return ttt_chunk_sums(m, tokens, lut(), **{**ARGS, **over})


def test_windows_tile_the_targets_chunk_by_chunk():
    chunks = chunk_windows(N, seq_len=T, stride=S, chunk_tokens=K)
    assert len(chunks) == 5
    seen = []
    for ci, starts in enumerate(chunks):
        for ws in starts:
            first = 0 if ws == 0 else ws + T - S
            targets = range(first, min(ws + T, N))
            assert all(ci * K <= p < (ci + 1) * K for p in targets), (ci, ws)
            seen += targets
    assert sorted(seen) == list(range(N))


def test_every_target_scored_once_with_its_bytes():
    tokens = stream()
    s = sums(model(), tokens)
    assert s[:, 1].tolist() == [64, 64, 64, 64, 44]
    expected_bytes = [float((1 + tokens[1 + ci * K : 1 + min((ci + 1) * K, N)] % 3).sum()) for ci in range(5)]
    assert s[:, 2].tolist() == expected_bytes


def test_without_updates_it_is_the_sliding_score():
    tokens = stream()
    frozen = eval_ttt(model(), tokens, lut(), **{**ARGS, "lr": 0.0})
    ref = eval_sliding(model().eval(), tokens, lut(), seq_len=T, stride=S, batch_seqs=5, device=CPU)
    assert frozen.mode == "ttt" and frozen.tokens == ref.tokens == N and frozen.bytes == ref.bytes
    assert frozen.val_loss == pytest.approx(ref.val_loss, rel=1e-6)
    assert frozen.val_bpb == pytest.approx(ref.val_bpb, rel=1e-6)


def test_updates_change_later_chunks_only():
    tokens = stream()
    plain, adapted = sums(model(), tokens, lr=0.0), sums(model(), tokens)
    assert torch.equal(plain[0], adapted[0])  # chunk 0 is scored before any update
    assert not torch.allclose(plain[1:, 0], adapted[1:, 0])
    assert torch.equal(plain[:, 1:], adapted[:, 1:])


@pytest.mark.parametrize("i", [0, 2])
def test_legality_chunk_scores_ignore_later_tokens(i):
    tokens = stream()
    changed = tokens.clone()
    # targets of chunk i+1 are the tokens at positions (i+1)K+1 .. (i+2)K of the stream
    lo, hi = (i + 1) * K + 1, min((i + 2) * K, N) + 1
    changed[lo:hi] = (tokens[lo:hi] + 1 + torch.arange(hi - lo) % (V - 1)) % V
    a, b = sums(model(), tokens), sums(model(), changed)
    assert torch.equal(a[: i + 1], b[: i + 1])  # chunks <= i: bit-identical scores
    assert a[i + 1, 0] != b[i + 1, 0]  # the change is visible where it belongs


class ProbeGPT(GPT):
    """Records, per forward, whether it can update the weights (grad enabled) and its target ids."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.calls: list[tuple[bool, torch.Tensor]] = []

    def forward(self, input_ids, target_ids, reduction="mean"):
        self.calls.append((torch.is_grad_enabled(), target_ids.detach().clone()))
        return super().forward(input_ids, target_ids, reduction)


def test_no_update_uses_a_target_before_it_is_scored():
    # Token ids equal stream positions, so a target id is its position + 1 and ids order the stream.
    torch.manual_seed(0)
    probe = ProbeGPT(ModelConfig(vocab_size=N + 1, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1,
                                 rope_dims=16))
    ttt_chunk_sums(probe, torch.arange(N + 1), lut(N + 1), **ARGS)
    scored_up_to, trained = 0, 0
    for grad, y in probe.calls:
        if grad:
            assert int(y.max()) <= scored_up_to  # every training target was already scored
            trained += 1
        else:
            scored_up_to = max(scored_up_to, int(y.max()))
    assert trained == 4 * ARGS["epochs"]  # 2 sequences per chunk, one batch, chunks 0-3 (the last is not trained)
    assert scored_up_to == N


def test_freeze_blocks_keeps_the_first_blocks_and_restores_requires_grad():
    m = model()
    before = copy.deepcopy(m.state_dict())
    # TTT trains every parameter outside the frozen blocks (as R0323), then restores the caller's flags
    m.blocks[2].mlp_scale.requires_grad_(False)
    sums(m, stream(), freeze_blocks=2)
    after = m.state_dict()
    for k in before:
        if k.startswith(("blocks.0.", "blocks.1.")):
            assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["blocks.2.attn.c_q.weight"], after["blocks.2.attn.c_q.weight"])
    assert not torch.equal(before["tok_emb.weight"], after["tok_emb.weight"])
    assert [n for n, p in m.named_parameters() if not p.requires_grad] == ["blocks.2.mlp_scale"]
    assert all(p.grad is None for p in m.parameters())


def test_bad_shapes_and_arguments_raise():
    with pytest.raises(ValueError, match="multiples of the stride"):
        sums(model(), stream(), chunk_tokens=60)
    with pytest.raises(ValueError, match="shorter than seq_len"):
        sums(model(), stream(), chunk_tokens=16)
    with pytest.raises(ValueError, match="ttt_freeze_blocks"):
        sums(model(), stream(), freeze_blocks=4)
    with pytest.raises(ValueError, match="ttt_momentum"):
        sums(model(), stream(), momentum=1.0)


def test_eval_config_fields_and_pr549():
    e = EvalConfig()
    assert (e.ttt, e.ttt_chunk_tokens, e.ttt_epochs, e.ttt_lr, e.ttt_momentum, e.ttt_freeze_blocks,
            e.ttt_grad_clip) == (False, 32768, 3, 0.002, 0.9, 0, 1.0)
    with pytest.raises(ValueError, match="eval.stride"):
        EvalConfig(ttt=True, stride=0).validate()
    with pytest.raises(ValueError, match="eval.ttt_chunk_tokens"):
        EvalConfig(ttt=True, stride=64, ttt_chunk_tokens=1000).validate()
    with pytest.raises(ValueError, match="eval.ttt_momentum"):
        EvalConfig(ttt_momentum=1.5).validate()
    assert get_preset("pr549").eval.ttt is True


def _worker(rank, world_size, init_file, out_dir):
    torch.set_num_threads(1)
    set_kernels_enabled(False)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        m = model()
        s = ttt_chunk_sums(m, stream(), lut(), **ARGS, rank=rank, world_size=world_size)
        torch.save({"sums": s, "state": m.state_dict()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world_size", [2, 3])  # with 3 ranks one rank has no training sequence per batch
def test_gloo_processes_match_one(world_size, tmp_path):
    m = model()
    single = sums(m, stream())
    # fork: the children reuse this process's imported torch (see test_muon_distributed.py)
    mp.start_processes(_worker, args=(world_size, str(tmp_path / "init"), str(tmp_path)), nprocs=world_size,
                       join=True, start_method="fork")
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world_size)]
    r0 = results[0]
    assert r0["sums"][:, 1:].tolist() == single[:, 1:].tolist()
    torch.testing.assert_close(r0["sums"][:, 0], single[:, 0], rtol=1e-5, atol=0)
    for k, v in m.state_dict().items():
        torch.testing.assert_close(r0["state"][k], v, rtol=1e-4, atol=1e-5)
    for r in results[1:]:
        assert torch.equal(r["sums"], r0["sums"])
        for k in r0["state"]:
            assert torch.equal(r["state"][k], r0["state"][k]), k  # every rank holds the same model


class TextDataset:
    """The two members golf.eval scoring reads from a golf Dataset: val_tokens and processor."""

    def __init__(self, sp, tokens):
        self.sp, self.tokens = sp, tokens

    def processor(self):
        return self.sp

    def val_tokens(self, max_tokens=0):
        return self.tokens[:max_tokens] if max_tokens else self.tokens


def test_score_ttt_reads_the_eval_config(tmp_path):
    from pathlib import Path

    from golf.config import GolfConfig
    from golf.data.prepare import TextDocuments
    from golf.data.tokenizer import load_tokenizer, train_tokenizer, training_sentences
    from golf.eval.artifact_eval import score
    from golf.eval.ttt import score_ttt

    sample = Path(__file__).parent / "data" / "sample.txt"
    train_tokenizer(training_sentences(TextDocuments(sample)), tmp_path / "tok.model", vocab_size=360, threads=1)
    sp = load_tokenizer(tmp_path / "tok.model")
    tokens = np.array(sp.encode(sample.read_text(encoding="utf-8"))[:601], dtype=np.uint16)
    cfg = GolfConfig()
    cfg.model = ModelConfig(vocab_size=360, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1, rope_dims=16)
    cfg.train.seq_len = T  # eval.seq_len = 0 falls back to it
    e = cfg.eval
    e.stride, e.batch_seqs, e.ttt, e.ttt_chunk_tokens, e.ttt_epochs, e.ttt_lr = S, 4, True, 128, 1, 0.0
    cfg.validate()
    data = TextDataset(sp, tokens)
    torch.manual_seed(0)
    m = GPT(cfg.model)
    sliding = score(m, cfg, data, CPU)["sliding"]
    frozen = score_ttt(m, cfg, data, CPU)
    assert (frozen.tokens, frozen.bytes) == (sliding.tokens, sliding.bytes) == (600, frozen.bytes)
    assert frozen.val_bpb == pytest.approx(sliding.val_bpb, rel=1e-6)
    e.ttt_lr = 0.05
    assert score_ttt(m, cfg, data, CPU).val_bpb != pytest.approx(sliding.val_bpb, rel=1e-6)
