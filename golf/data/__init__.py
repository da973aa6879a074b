"""The data layer: challenge-format uint16 shards (shards), SentencePiece tokenizers (tokenizer), the
builtin English corpus (corpus, sources), `golf data prepare` (prepare), dataset validation (dataset), the
rank-aware token loader (loader), FineWeb downloads (fineweb) and the `golf data` command (commands).

Nothing is imported eagerly: corpus-building worker processes import only what they use, without torch."""
