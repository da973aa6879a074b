"""SentencePiece tokenizers with the challenge's settings (techniques.md §1.3), and document encoding."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import sentencepiece as spm

# The challenge's build_sentencepiece_tokenizer settings: BPE, byte fallback (so every byte sequence
# encodes), digits split one per token, NFKC normalization, no dummy prefix, pad/bos/eos/unk = 0/1/2/3.
TRAINER_SETTINGS = dict(
    model_type="bpe",
    character_coverage=0.999,
    byte_fallback=True,
    split_digits=True,
    normalization_rule_name="nmt_nfkc",
    add_dummy_prefix=False,
    pad_id=0,
    bos_id=1,
    eos_id=2,
    unk_id=3,
    hard_vocab_limit=False,
)
SPECIAL_PIECES = 4  # pad, bos, eos, unk
BYTE_PIECES = 256
MAX_VOCAB = 65536  # shards store uint16 ids
# The trainer skips sentences longer than max_sentence_length (default 4192 bytes). golf trains on whole
# documents (so the pieces see words in the context the encoder will: mid-document, after a space), and a
# builtin-corpus document of 16 paragraphs is often longer; 16 MiB keeps every real document.
MAX_SENTENCE_BYTES = 1 << 24


def training_sentences(documents: Iterable[str], max_docs: int = 0) -> Iterator[str]:
    """Tokenizer-training text as the challenge prepares it: NULs to spaces, stripped, empty documents
    dropped; the first max_docs documents (0: all)."""
    for i, doc in enumerate(documents):
        if max_docs and i >= max_docs:
            break
        text = doc.replace("\x00", " ").strip()
        if text:
            yield text


def check_vocab_size(vocab_size: int) -> None:
    if not (SPECIAL_PIECES + BYTE_PIECES < vocab_size <= MAX_VOCAB):
        raise ValueError(f"vocab_size={vocab_size}: must be in [{SPECIAL_PIECES + BYTE_PIECES + 1}, {MAX_VOCAB}] "
                         f"({SPECIAL_PIECES} special and {BYTE_PIECES} byte-fallback pieces come first; "
                         "shards hold uint16 ids)")


def train_tokenizer(sentences: Iterable[str], model_path, *, vocab_size: int, threads: int = 0) -> Path:
    """Train a BPE model with TRAINER_SETTINGS on `sentences` (one document each); atomic write.

    hard_vocab_limit=False: on small inputs the model may end up with fewer than vocab_size pieces."""
    check_vocab_size(vocab_size)
    model_path = Path(model_path)
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=buf,
            vocab_size=vocab_size,
            num_threads=threads or os.cpu_count() or 1,
            max_sentence_length=MAX_SENTENCE_BYTES,
            minloglevel=2,
            **TRAINER_SETTINGS,
        )
    except RuntimeError as e:
        raise ValueError(f"SentencePiece could not train a {vocab_size}-piece tokenizer: {e}; "
                         "give it more text or a smaller --vocab-size") from e
    tmp = model_path.with_name(f".{model_path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, model_path)
    return model_path


def load_tokenizer(path) -> spm.SentencePieceProcessor:
    """Load a SentencePiece model and check what golf's shards and byte accounting rely on."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"tokenizer {path} does not exist; pass the .model file the data was made with")
    sp = spm.SentencePieceProcessor()
    try:
        sp.Load(str(path))
    except (OSError, RuntimeError) as e:
        raise ValueError(f"tokenizer {path} is not a SentencePiece model ({e})") from e
    if sp.vocab_size() > MAX_VOCAB:
        raise ValueError(f"tokenizer {path} has {sp.vocab_size()} pieces; shards hold uint16 ids, at most {MAX_VOCAB}")
    if sp.bos_id() < 0:
        raise ValueError(f"tokenizer {path} has no BOS piece (bos_id=-1); every document starts with BOS: "
                         "train it with bos_id=1 (as `golf data prepare` does)")
    if sp.piece_to_id("\u2581") == sp.unk_id():
        raise ValueError(f"tokenizer {path} has no standalone '\u2581' piece; val_bpb byte counting needs it "
                         "(a space before a byte-fallback character would be miscounted); retrain it")
    return sp


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def encode_documents(sp: spm.SentencePieceProcessor, docs: list[str], threads: int = 1) -> np.ndarray:
    """[BOS] + ids for each document (no EOS, as the challenge's export), concatenated as uint16.

    SentencePiece's batch encoding runs `threads` C++ threads (measured here: 8000 builtin-corpus documents
    in 5.0 s with 1 thread, 2.8 s with 2; a process pool was no faster than 1 thread)."""
    ids = sp.encode(docs, out_type=int, num_threads=threads)
    out = np.empty(sum(len(x) for x in ids) + len(ids), dtype=np.uint16)
    pos = 0
    bos = sp.bos_id()
    for x in ids:
        out[pos] = bos
        out[pos + 1 : pos + 1 + len(x)] = x
        pos += len(x) + 1
    return out
