"""A prepared data directory, validated: shards (golf's or the challenge's names), the tokenizer, and the
vocabulary agreement between tokenizer, shards and model."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sentencepiece

from golf.data.shards import check_token_range, find_shards, read_header, read_shard
from golf.data.tokenizer import load_tokenizer

TOKENIZER_HINT = ("pass the tokenizer the data was made with (--data.tokenizer for train/eval, "
                  "--tokenizer for golf data)")


@dataclass
class Dataset:
    dir: Path
    tokenizer_path: Path
    train_files: list[Path]
    val_files: list[Path]
    vocab_size: int  # the tokenizer's
    _sp: sentencepiece.SentencePieceProcessor | None = field(default=None, init=False, repr=False, compare=False)

    def processor(self) -> sentencepiece.SentencePieceProcessor:
        if self._sp is None:
            self._sp = load_tokenizer(self.tokenizer_path)
        return self._sp

    def val_tokens(self, max_tokens: int = 0) -> np.ndarray:
        """All val tokens in shard order (or the first max_tokens), in memory, ids checked against the vocab."""
        if max_tokens < 0:
            raise ValueError(f"max_tokens={max_tokens}: use 0 for the whole val split or a positive count")
        parts, have = [], 0
        for path in self.val_files:
            tokens = read_shard(path)
            if max_tokens:
                tokens = tokens[: max_tokens - have]
            check_token_range(tokens, self.vocab_size, f"val shard {path}")
            parts.append(np.asarray(tokens))
            have += tokens.size
            if max_tokens and have >= max_tokens:
                break
        if have == 0:
            raise ValueError(f"the val split of {self.dir} holds no tokens; prepare the data again")
        return np.concatenate(parts)

    def loader(self, **kwargs):
        """A TokenLoader over the train shards that checks each shard's ids against this tokenizer."""
        from golf.data.loader import TokenLoader

        return TokenLoader(self.train_files, vocab_size=self.vocab_size, **kwargs)


def resolve_tokenizer(data_dir: Path, tokenizer: str = "") -> Path:
    """The explicit path; else DIR/tokenizer.model; else the only *.model in DIR; else, for the challenge's
    layout data/datasets/fineweb10B_spN, data/tokenizers/fineweb_N_bpe.model."""
    if tokenizer:
        path = Path(tokenizer)
        if not path.is_file():
            raise ValueError(f"tokenizer {path} does not exist; {TOKENIZER_HINT}")
        return path
    if (data_dir / "tokenizer.model").is_file():
        return data_dir / "tokenizer.model"
    models = sorted(data_dir.glob("*.model"))
    if len(models) == 1:
        return models[0]
    if len(models) > 1:
        raise ValueError(f"{data_dir} holds several tokenizers ({', '.join(m.name for m in models)}); {TOKENIZER_HINT}")
    m = re.fullmatch(r"fineweb10B_sp(\d+)", data_dir.name)
    if m:
        challenge = data_dir.parent.parent / "tokenizers" / f"fineweb_{m.group(1)}_bpe.model"
        if challenge.is_file():
            return challenge
    raise ValueError(f"no tokenizer found for {data_dir} (looked for tokenizer.model and *.model there); "
                     f"{TOKENIZER_HINT}")


def open_dataset(data_dir, tokenizer: str = "", model_vocab_size: int | None = None, *,
                 require_train: bool = True) -> Dataset:
    """Find and validate a data directory: every shard's header and size, the tokenizer, the model's
    vocabulary (must cover the tokenizer's), and token ids of the val split and the first train shard
    (the rest of train is checked shard by shard by Dataset.loader; a full scan of 8B tokens would stall
    start-up)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ValueError(f"data directory {data_dir} does not exist; create it with `golf data prepare` "
                         "or `golf data fineweb`, or leave data.dir empty for the builtin corpus")
    tok_path = resolve_tokenizer(data_dir, tokenizer)
    sp = load_tokenizer(tok_path)
    vocab = int(sp.vocab_size())
    if model_vocab_size is not None and model_vocab_size < vocab:
        raise ValueError(f"model.vocab_size={model_vocab_size} is smaller than the tokenizer's {vocab} pieces "
                         f"({tok_path}); set --model.vocab_size={vocab} (or larger, e.g. padded to a multiple of 64)")
    val_files = find_shards(data_dir, "val")
    train_files = find_shards(data_dir, "train") if require_train else _optional_train(data_dir)
    for path in train_files:
        read_header(path)
    if sum(read_header(path) for path in val_files) == 0:
        raise ValueError(f"the val split of {data_dir} holds no tokens; prepare the data again")
    for path in val_files + train_files[:1]:
        check_token_range(read_shard(path), vocab, f"shard {path}")
    dataset = Dataset(data_dir, tok_path, train_files, val_files, vocab)
    dataset._sp = sp
    return dataset


def _optional_train(data_dir: Path) -> list[Path]:
    try:
        return find_shards(data_dir, "train")
    except ValueError:
        return []
