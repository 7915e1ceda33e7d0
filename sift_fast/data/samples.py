"""Lazy packed samples: BERT full-sentences rows materialized on demand from memory-mapped tokens.

The packing rule is the one of :func:`sift_fast.data.packing.pack_flat` (token stream = doc1 [SEP]
doc2 [SEP] ..., empty documents skipped, cut into chunks of ``S - 2``; row = [CLS] chunk [SEP], the
last row right-padded), but no row is ever stored: sample ``i`` is stream positions
``[i (S-2), (i+1) (S-2))``, read from the ``.bin`` through two per-document arrays and a sample index,
all cached as ``.npy`` and memory-mapped:

* ``docs``: int64 ``[2, D + 1]``: ``docs[0, d]`` the first token of non-empty document ``d`` in the
  ``.bin``, ``docs[1, d]`` its first stream position (``docs[:, D]`` = (-1, stream length));
* ``index``: int64 ``[N + 1, 2]``, Megatron's ``sample_idx`` shape: (document, offset into that
  document's stream span) of each sample's first stream position, row ``N`` = the end.

Host memory per rank is the page cache of what a batch touches, not the corpus. The index builder
runs in C++ (``sift_fast._C.build_sample_index``) when the extension is built, else in numpy (same
array; ``bench/bench_data.py`` measures both).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from sift_fast.errors import DataError

try:  # optional C++ extension (csrc/data_index.cpp); the numpy paths below give identical arrays
    from sift_fast import _C
except ImportError:  # not built (no compiler, SIFT_FAST_NO_EXT=1)
    _C = None

HAVE_EXT = _C is not None
INDEX_VERSION = "samples-v1"


def doc_table(doc_token_start: np.ndarray, doc_lengths: np.ndarray) -> np.ndarray:
    """The ``docs`` array of the non-empty documents among (token start, length) pairs."""
    start = np.asarray(doc_token_start, dtype=np.int64)
    length = np.asarray(doc_lengths, dtype=np.int64)
    keep = length > 0
    start, length = start[keep], length[keep]
    table = np.empty((2, len(start) + 1), dtype=np.int64)
    table[0, :-1], table[0, -1] = start, -1
    table[1, 0] = 0
    np.cumsum(length + 1, out=table[1, 1:])  # each document is followed by its [SEP]
    return table


def num_samples(stream_len: int, seq_len: int) -> int:
    return -(-int(stream_len) // (seq_len - 2))


def build_sample_index(stream_start: np.ndarray, seq_len: int, n: int, *, use_ext: bool | None = None) -> np.ndarray:
    """int64 ``[n + 1, 2]``: (document, offset) of stream position ``min(i (S-2), stream length)``.

    ``stream_start``: int64 ``[D + 1]``, the documents' first stream positions and the stream length.
    """
    stream_start = np.ascontiguousarray(stream_start, dtype=np.int64)
    chunk = seq_len - 2
    if use_ext is None:
        use_ext = HAVE_EXT
    out = np.empty((n + 1, 2), dtype=np.int64)
    if use_ext:
        if _C is None:
            raise RuntimeError("sift_fast._C is not built")
        _C.build_sample_index(stream_start, chunk, out)
        return out
    pos = np.minimum(np.arange(n + 1, dtype=np.int64) * chunk, stream_start[-1])
    doc = np.searchsorted(stream_start, pos, side="right") - 1
    doc = np.minimum(doc, len(stream_start) - 2) if len(stream_start) > 1 else doc
    out[:, 0] = doc
    out[:, 1] = pos - stream_start[doc]
    return out


class PackedSamples:
    """``N`` packed rows of ``seq_len`` tokens over memory-mapped ``tokens`` (any integer dtype).

    Indexing (an int, a slice or an integer array of sample ids) returns int32 rows, the exact rows
    :func:`~sift_fast.data.packing.pack_flat` would have produced, computed on demand.
    """

    ndim = 2
    dtype = np.dtype(np.int32)

    def __init__(self, tokens: np.ndarray, docs: np.ndarray, index: np.ndarray, seq_len: int,
                 cls_id: int, sep_id: int, pad_id: int, *, limit: int | None = None, key: str = "") -> None:
        if seq_len < 3:
            raise DataError(f"seq_len must be >= 3, got {seq_len}")
        self.tokens, self.docs, self.index, self.key = tokens, docs, index, key
        self.seq_len, self.cls_id, self.sep_id, self.pad_id = int(seq_len), int(cls_id), int(sep_id), int(pad_id)
        n = len(index) - 1
        self.n = n if limit is None else min(n, int(limit))
        self._token_start, self._starts = docs[0], docs[1]  # memory-mapped rows: pages read on demand
        self.stream_len = int(self._starts[-1])

    def __len__(self) -> int:
        return self.n

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.seq_len)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        rows = self.rows(np.arange(self.n))
        return rows if dtype is None else rows.astype(dtype)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):  # rows first, then the columns of the materialized rows
            rows = self[key[0]]
            return rows[key[1:]] if isinstance(key[0], (int, np.integer)) else rows[(slice(None), *key[1:])]
        if isinstance(key, (int, np.integer)):
            if not -self.n <= key < self.n:
                raise IndexError(f"sample {key} out of range ({self.n})")
            return self.rows(np.array([int(key) % self.n]))[0]
        if isinstance(key, slice):
            return self.rows(np.arange(self.n)[key])
        return self.rows(np.asarray(key))

    def rows(self, ids: np.ndarray, epoch: int = 0) -> np.ndarray:
        """int32 ``[len(ids), seq_len]`` rows of the samples ``ids`` (the same in every ``epoch``).

        The sample index gives each row's first document ``d0``; the documents a row spans are the
        window ``d0 .. index[i + 1, 0]``, so only those entries of ``docs`` are read.
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(ids) and (ids.min() < 0 or ids.max() >= self.n):
            raise IndexError(f"sample ids out of range for {self.n} samples")
        s, chunk = self.seq_len, self.seq_len - 2
        out = np.full((len(ids), s), self.pad_id, dtype=np.int32)
        out[:, 0] = self.cls_id
        if not len(ids):
            return out
        first, last = self.index[ids, 0], self.index[ids + 1, 0]
        width = int((last - first).max()) + 2  # documents of the widest row, and the next start
        window = np.minimum(first[:, None] + np.arange(width), len(self._starts) - 1)
        starts = self._starts[window]  # [B, width]
        pos = ids[:, None] * chunk + np.arange(chunk, dtype=np.int64)[None]  # stream positions [B, S-2]
        live = pos < self.stream_len
        step = (starts[:, None, 1:] <= pos[:, :, None]).sum(-1)  # documents passed within the window
        doc = np.minimum(window[np.arange(len(ids))[:, None], step], len(self._starts) - 2)  # past the end: pad
        within = pos - self._starts[doc]
        is_sep = within == self._starts[doc + 1] - self._starts[doc] - 1
        src = np.where(live & ~is_sep, self._token_start[doc] + within, 0)
        toks = np.asarray(self.tokens[src.reshape(-1)]).reshape(src.shape).astype(np.int32)
        out[:, 1 : chunk + 1] = np.where(is_sep, self.sep_id, np.where(live, toks, self.pad_id))
        used = np.minimum(self.stream_len - ids * chunk, chunk)  # the last sample may be short
        out[np.arange(len(ids)), used + 1] = self.sep_id
        return out


# --- building and caching -----------------------------------------------------------------------
def _save_npy(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load_npy(path: Path) -> np.ndarray | None:
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None  # missing or unreadable cache entry: rebuild it


def index_key(source_id: str, first_doc: int, last_doc: int, seq_len: int) -> str:
    parts = (INDEX_VERSION, source_id, first_doc, last_doc, seq_len)
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:24]


def cached_samples(tokens: np.ndarray, doc_token_start: np.ndarray, doc_lengths: np.ndarray, seq_len: int,
                   cls_id: int, sep_id: int, pad_id: int, *, cache_dir: Path, key: str,
                   limit: int | None = None) -> PackedSamples:
    """:class:`PackedSamples` of the given documents, its ``docs``/``index`` arrays cached under ``key``."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    docs_path, index_path = cache_dir / f"samples-{key}-docs.npy", cache_dir / f"samples-{key}-index.npy"
    docs, index = _load_npy(docs_path), _load_npy(index_path)
    if docs is None or index is None:
        table = doc_table(doc_token_start, doc_lengths)
        idx = build_sample_index(table[1], seq_len, num_samples(table[1, -1], seq_len))
        _save_npy(docs_path, table)
        _save_npy(index_path, idx)
        del table, idx
        docs, index = np.load(docs_path, mmap_mode="r"), np.load(index_path, mmap_mode="r")
    return PackedSamples(tokens, docs, index, seq_len, cls_id, sep_id, pad_id, limit=limit, key=key)
