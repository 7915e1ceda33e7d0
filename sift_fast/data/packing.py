"""BERT "full-sentences" packing of tokenized documents into fixed-length rows, in memory.

The reference of the packing rule: training reads the same rows lazily through
:mod:`sift_fast.data.samples` (tests/test_samples.py checks they are bitwise these).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sift_fast.errors import ConfigError


def concat_documents(docs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate documents into (tokens int32 [T], offsets int64 [n_docs + 1])."""
    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    parts = [np.asarray(d, dtype=np.int32).reshape(-1) for d in docs if len(d)]
    tokens = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    return tokens, offsets


def packed_rows(offsets: np.ndarray, seq_len: int) -> int:
    """Number of rows the packing of documents with these offsets produces."""
    lengths = np.diff(offsets)
    stream_len = int(lengths.sum() + np.count_nonzero(lengths))
    return -(-stream_len // (seq_len - 2))


def pack_sequences(
    docs: Sequence[np.ndarray], seq_len: int, cls_id: int, sep_id: int, pad_id: int
) -> np.ndarray:
    """Pack documents into int32 [N, seq_len] rows.

    Token stream = doc1 [SEP] doc2 [SEP] ... (empty documents are skipped), cut into chunks of
    ``seq_len - 2`` tokens; each row is [CLS] chunk [SEP], the last row right-padded with ``pad_id``.
    """
    tokens, offsets = concat_documents(docs)
    return pack_flat(tokens, offsets, seq_len, cls_id, sep_id, pad_id)


def pack_flat(
    tokens: np.ndarray,
    offsets: np.ndarray,
    seq_len: int,
    cls_id: int,
    sep_id: int,
    pad_id: int,
) -> np.ndarray:
    """:func:`pack_sequences` on concatenated documents (vectorized numpy)."""
    if seq_len < 3:
        raise ConfigError(f"seq_len must be >= 3 (room for [CLS], a token and [SEP]), got {seq_len}")
    tokens = np.ascontiguousarray(tokens, dtype=np.int32)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    return _pack_numpy(tokens, offsets, seq_len, cls_id, sep_id, pad_id)


def _pack_numpy(
    tokens: np.ndarray, offsets: np.ndarray, seq_len: int, cls_id: int, sep_id: int, pad_id: int
) -> np.ndarray:
    if len(offsets) < 1 or offsets[0] < 0 or np.any(np.diff(offsets) < 0) or offsets[-1] > len(tokens):
        raise ValueError("offsets must be non-decreasing and within tokens")
    tokens = tokens[offsets[0] : offsets[-1]]
    lengths = np.diff(offsets)
    nonempty = lengths > 0
    seps_before = np.cumsum(nonempty) - nonempty  # [SEP]s emitted before each document
    stream_len = len(tokens) + int(nonempty.sum())
    stream = np.empty(stream_len, dtype=np.int32)
    doc_of_token = np.repeat(np.arange(len(lengths)), lengths)
    stream[np.arange(len(tokens)) + seps_before[doc_of_token]] = tokens
    stream[(offsets[1:] - offsets[0] + seps_before)[nonempty]] = sep_id  # right after each doc's end
    chunk = seq_len - 2
    n_rows = -(-stream_len // chunk)
    out = np.full((n_rows, seq_len), pad_id, dtype=np.int32)
    out[:, 0] = cls_id
    n_full = stream_len // chunk
    out[:n_full, 1 : chunk + 1] = stream[: n_full * chunk].reshape(n_full, chunk)
    out[:n_full, chunk + 1] = sep_id
    rest = stream_len - n_full * chunk
    if rest:
        out[n_full, 1 : rest + 1] = stream[n_full * chunk :]
        out[n_full, rest + 1] = sep_id
    return out
