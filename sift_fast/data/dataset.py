"""Tokenize a corpus once, split train/valid by document, pack, and cache the arrays as .npy."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sift_fast.data.corpus import read_documents
from sift_fast.data.indexed import IndexedTokens, is_indexed
from sift_fast.data.packing import pack_flat, pack_sequences
from sift_fast.data.tokenizer import Vocab
from sift_fast.errors import ConfigError, DataError

_CACHE_VERSION = "packed-v1"


@dataclass
class PackedCorpus:
    """Packed int32 [N, S] train and [Nv, S] validation rows."""

    train: np.ndarray
    valid: np.ndarray


def content_hash(docs: list[str]) -> str:
    """sha256 of a list of documents (length-prefixed, so boundaries count)."""
    h = hashlib.sha256()
    for d in docs:
        b = d.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def cache_key(
    docs_hash: str,
    vocab: Vocab,
    seq_len: int,
    valid_fraction: float,
    max_valid_sequences: int | None,
    max_train_tokens: int | None,
) -> str:
    """Key of the cached arrays: corpus content, vocab fingerprint and every packing parameter."""
    parts = (
        _CACHE_VERSION,
        docs_hash,
        vocab.fingerprint,
        seq_len,
        repr(float(valid_fraction)),
        max_valid_sequences,
        max_train_tokens,
    )
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:24]


def split_documents(lengths: list[int], valid_fraction: float) -> int:
    """Index of the first validation document: the last documents go to valid until they hold
    ``valid_fraction`` of the tokens (counting one [SEP] per document); at least one on each side."""
    if len(lengths) < 2:
        raise DataError(
            f"corpus too small: {len(lengths)} non-empty document(s), need at least 2 to split train/valid"
        )
    total = sum(n + 1 for n in lengths)
    target = valid_fraction * total
    cut, held = len(lengths), 0
    while cut > 1 and (held < target or cut == len(lengths)):
        cut -= 1
        held += lengths[cut] + 1
    return cut


def build_corpus(
    docs_spec: str,
    vocab: Vocab,
    seq_len: int,
    *,
    valid_fraction: float = 0.05,
    max_valid_sequences: int | None = 256,
    cache_dir: str | Path,
    text_key: str = "text",
    max_train_tokens: int | None = None,
) -> PackedCorpus:
    """Read, tokenize (no special tokens), split by document, pack and cache a corpus.

    ``max_valid_sequences`` keeps the first that many validation rows; ``max_train_tokens`` keeps the
    first ``max(1, max_train_tokens // seq_len)`` train rows. The second call with the same inputs
    loads ``cache_dir/packed-<key>-{train,valid}.npy``.
    """
    if seq_len < 3:
        raise ConfigError(f"seq_len must be >= 3, got {seq_len}")
    if not 0.0 < valid_fraction < 1.0:
        raise ConfigError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    if max_valid_sequences is not None and max_valid_sequences < 1:
        raise ConfigError(f"max_valid_sequences must be >= 1 or None, got {max_valid_sequences}")
    if max_train_tokens is not None and max_train_tokens < 1:
        raise ConfigError(f"max_train_tokens must be >= 1 or None, got {max_train_tokens}")
    if is_indexed(docs_spec):
        return _pack_indexed(docs_spec, vocab, seq_len, valid_fraction, max_valid_sequences, max_train_tokens)
    docs = read_documents(docs_spec, text_key=text_key)
    key = cache_key(content_hash(docs), vocab, seq_len, valid_fraction, max_valid_sequences, max_train_tokens)
    cache_dir = Path(cache_dir)
    train_path, valid_path = cache_dir / f"packed-{key}-train.npy", cache_dir / f"packed-{key}-valid.npy"
    if train_path.is_file() and valid_path.is_file():
        try:
            return PackedCorpus(train=np.load(train_path), valid=np.load(valid_path))
        except (OSError, ValueError):
            pass  # unreadable cache entry: rebuild it

    encodings = vocab.tokenizer.encode_batch(docs, add_special_tokens=False)
    tokens = [np.asarray(e.ids, dtype=np.int32) for e in encodings]
    tokens = [t for t in tokens if len(t)]
    cut = split_documents([len(t) for t in tokens], valid_fraction)
    train = pack_sequences(tokens[:cut], seq_len, vocab.cls_id, vocab.sep_id, vocab.pad_id)
    valid = pack_sequences(tokens[cut:], seq_len, vocab.cls_id, vocab.sep_id, vocab.pad_id)
    if max_train_tokens is not None:
        train = train[: max(1, max_train_tokens // seq_len)]
    if max_valid_sequences is not None:
        valid = valid[:max_valid_sequences]
    train, valid = np.ascontiguousarray(train), np.ascontiguousarray(valid)

    cache_dir.mkdir(parents=True, exist_ok=True)
    _save_npy(train_path, train)
    _save_npy(valid_path, valid)
    return PackedCorpus(train=train, valid=valid)


def _pack_indexed(
    spec: str,
    vocab: Vocab,
    seq_len: int,
    valid_fraction: float,
    max_valid_sequences: int | None,
    max_train_tokens: int | None,
) -> PackedCorpus:
    """Pack a Megatron ``.bin``/``.idx`` corpus (already tokenized with ``vocab``'s ids; no cache needed)."""
    ds = IndexedTokens(spec)
    tokens, offsets = ds.flat()
    if tokens.size:
        lo, hi = int(tokens.min()), int(tokens.max())
        if hi >= vocab.vocab_size or lo < 0:
            raise DataError(
                f"{ds.bin_path}: token id {hi if hi >= vocab.vocab_size else lo} is outside the vocabulary "
                f"({vocab.vocab_size} ids); pass --vocab with the tokenizer the dataset was preprocessed with"
            )
    lengths = np.diff(offsets)
    keep = lengths > 0
    starts, lengths = offsets[:-1][keep], lengths[keep]
    cut = split_documents(lengths.tolist(), valid_fraction)

    def part(a: int, b: int) -> np.ndarray:
        t = np.concatenate([tokens[s : s + n] for s, n in zip(starts[a:b], lengths[a:b])]) if b > a else tokens[:0]
        off = np.concatenate([[0], np.cumsum(lengths[a:b])]).astype(np.int64)
        return pack_flat(t, off, seq_len, vocab.cls_id, vocab.sep_id, vocab.pad_id)

    train, valid = part(0, cut), part(cut, len(lengths))
    if max_train_tokens is not None:
        train = train[: max(1, max_train_tokens // seq_len)]
    if max_valid_sequences is not None:
        valid = valid[:max_valid_sequences]
    return PackedCorpus(train=np.ascontiguousarray(train), valid=np.ascontiguousarray(valid))


def _save_npy(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
