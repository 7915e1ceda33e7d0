"""Megatron-LM's indexed dataset format (``PREFIX.bin`` + ``PREFIX.idx``): read (memory-mapped) and write.

A corpus tokenized by Megatron's ``tools/preprocess_data.py`` (or by ``sift-preprocess``) trains here
unchanged. Layout of ``PREFIX.idx`` (little endian)::

    b"MMIDIDX\\x00\\x00"  u64 version = 1   u8 dtype code   u64 S = #sequences   u64 D = #document indices
    i32 lengths[S]   i64 byte pointers into .bin[S]   i64 document indices[D]   (i8 modes[S]: multimodal only)

``PREFIX.bin`` is the token ids of every sequence back to back in the dtype of the code (``uint16``
for vocabularies under 65500 tokens, else ``int32``). Document ``d`` is sequences
``document_indices[d] : document_indices[d + 1]`` (one per document, or one per sentence with
``--split-sentences``); ``document_indices`` starts at 0, so there are ``D - 1`` documents.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sift_fast.errors import DataError
from sift_fast.io import atomic_open

INDEX_HEADER = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
DTYPE_CODES: dict[int, type[np.number]] = {
    1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32, 8: np.uint16,
}
_INTEGER_CODES = {1, 2, 3, 4, 5, 8}
_FIXED = len(INDEX_HEADER) + 8 + 1 + 8 + 8


def code_of(dtype: type[np.number] | np.dtype) -> int:
    dt = np.dtype(dtype)
    for code, t in DTYPE_CODES.items():
        if np.dtype(t) == dt:
            return code
    raise ValueError(f"dtype {dt} has no Megatron code")


def token_dtype(vocab_size: int) -> type[np.number]:
    """The dtype Megatron's preprocessing picks for a vocabulary of ``vocab_size`` tokens."""
    return np.uint16 if vocab_size < 65500 else np.int32


def index_paths(prefix: str | Path) -> tuple[Path, Path]:
    """(``PREFIX.bin``, ``PREFIX.idx``); a prefix given with either suffix is accepted."""
    p = str(prefix)
    if p.endswith((".bin", ".idx")):
        p = p[:-4]
    return Path(p + ".bin"), Path(p + ".idx")


def is_indexed(spec: str | Path) -> bool:
    """True for ``megatron:PREFIX``, a ``.bin`` / ``.idx`` path, or a prefix whose two files exist."""
    s = str(spec)
    if s.startswith("megatron:") or s.endswith((".bin", ".idx")):
        return True
    b, i = index_paths(s)
    return b.is_file() and i.is_file()


def strip_scheme(spec: str | Path) -> str:
    s = str(spec)
    return s[len("megatron:"):] if s.startswith("megatron:") else s


class IndexedTokens:
    """Read-only, memory-mapped view of a Megatron ``.bin`` / ``.idx`` pair.

    ``len(ds)`` sequences; ``ds[i]`` the token ids of sequence ``i``; ``ds.document(d)`` the ids of
    document ``d`` (its sequences concatenated). Every inconsistency raises one DataError line.
    """

    def __init__(self, prefix: str | Path, *, check: bool = True) -> None:
        self.bin_path, self.idx_path = index_paths(strip_scheme(prefix))
        for p in (self.idx_path, self.bin_path):
            if not p.is_file():
                raise DataError(f"Megatron indexed dataset: {p} not found")
        name = self.idx_path
        with open(name, "rb") as f:
            head = f.read(_FIXED)
        if len(head) < _FIXED or head[: len(INDEX_HEADER)] != INDEX_HEADER:
            raise DataError(f"{name} is not a Megatron index (.idx) file (bad header)")
        off = len(INDEX_HEADER)
        (version,) = struct.unpack_from("<Q", head, off)
        if version != INDEX_VERSION:
            raise DataError(f"{name}: index version {version} is not supported (only {INDEX_VERSION})")
        (code,) = struct.unpack_from("<B", head, off + 8)
        if code not in _INTEGER_CODES:
            raise DataError(f"{name}: dtype code {code} is not an integer token type")
        self.dtype = np.dtype(DTYPE_CODES[code])
        n_seq, n_doc = struct.unpack_from("<QQ", head, off + 9)
        need = _FIXED + 4 * n_seq + 8 * n_seq + 8 * n_doc
        size = name.stat().st_size
        if size not in (need, need + n_seq):  # + modes when multimodal
            raise DataError(f"{name}: size {size} bytes does not match {n_seq} sequences / {n_doc} documents")
        # memory-mapped views: the index of a corpus larger than memory costs page cache, not heap
        raw = np.memmap(name, dtype=np.uint8, mode="r")
        self.lengths = raw[_FIXED : _FIXED + 4 * n_seq].view(np.int32)
        self.pointers = raw[_FIXED + 4 * n_seq : _FIXED + 12 * n_seq].view(np.int64)
        self.document_indices = raw[_FIXED + 12 * n_seq : _FIXED + 12 * n_seq + 8 * n_doc].view(np.int64)
        if check:
            self._check()
        size = self.bin_path.stat().st_size
        self._data = np.memmap(self.bin_path, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)

    def _check(self) -> None:
        name, isz = self.idx_path, self.dtype.itemsize
        if (self.lengths < 0).any():
            raise DataError(f"{name}: negative sequence length")
        lengths = self.lengths.astype(np.int64)
        expect = np.concatenate([[0], np.cumsum(lengths[:-1] * isz)]) if len(lengths) else lengths
        if not np.array_equal(self.pointers, expect):
            raise DataError(f"{name}: sequence pointers are not contiguous (not a preprocessed dataset?)")
        di = self.document_indices
        if len(di) == 0 or di[0] != 0 or di[-1] != len(lengths) or (np.diff(di) < 0).any():
            raise DataError(f"{name}: document indices must rise from 0 to the sequence count {len(lengths)}")
        size = self.bin_path.stat().st_size
        total = int(lengths.sum()) * isz
        if size != total:
            raise DataError(f"{self.bin_path}: {size} bytes, the index describes {total} (truncated or mismatched?)")

    @property
    def tokens(self) -> np.ndarray:
        """Every token of the ``.bin``, memory-mapped, in its own dtype."""
        return self._data.view(self.dtype)

    def document_spans(self) -> tuple[np.ndarray, np.ndarray]:
        """(first token, token count) of every document, int64 ``[num_documents]`` each."""
        seq_end = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=seq_end[1:])
        bounds = seq_end[self.document_indices]
        return bounds[:-1], np.diff(bounds)

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def num_documents(self) -> int:
        return len(self.document_indices) - 1

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum(dtype=np.int64))

    def _span(self, first: int, last: int) -> np.ndarray:
        """Tokens of sequences ``first .. last-1`` (contiguous in .bin)."""
        if first >= last:
            return np.zeros(0, dtype=self.dtype)
        start = int(self.pointers[first])
        count = int(self.lengths[first:last].sum(dtype=np.int64))
        return self._data[start : start + count * self.dtype.itemsize].view(self.dtype)

    def __getitem__(self, i: int) -> np.ndarray:
        if not -len(self) <= i < len(self):
            raise IndexError(f"sequence {i} out of range ({len(self)})")
        i %= len(self)
        return self._span(i, i + 1)

    def document(self, d: int) -> np.ndarray:
        if not 0 <= d < self.num_documents:
            raise IndexError(f"document {d} out of range ({self.num_documents})")
        return self._span(int(self.document_indices[d]), int(self.document_indices[d + 1]))

    def documents(self) -> Iterator[np.ndarray]:
        for d in range(self.num_documents):
            yield self.document(d)

    def flat(self) -> tuple[np.ndarray, np.ndarray]:
        """(all tokens int32 [T], document token offsets int64 [num_documents + 1])."""
        tokens = self._span(0, len(self)).astype(np.int32)
        starts, lengths = self.document_spans()
        return tokens, np.append(starts, starts[-1] + lengths[-1] if len(lengths) else 0).astype(np.int64)


def _is_sentence_list(doc: Any) -> bool:
    """A document given as several sequences (arrays / lists), not as one flat array or list of ids."""
    if isinstance(doc, np.ndarray):
        return doc.dtype == object
    doc = list(doc) if not isinstance(doc, list) else doc
    return bool(doc) and not np.isscalar(doc[0]) and not (isinstance(doc[0], np.ndarray) and doc[0].ndim == 0)


def write_indexed(
    prefix: str | Path,
    documents: Iterable[np.ndarray | Sequence[np.ndarray]],
    *,
    dtype: type[np.number] = np.int32,
) -> tuple[Path, Path]:
    """Write ``PREFIX.bin`` / ``PREFIX.idx`` atomically (temp files, then rename; idx last).

    ``documents``: one array of token ids per document (one sequence each), or a list of arrays per
    document (one sequence per sentence). Ids must fit ``dtype``.
    """
    bin_path, idx_path = index_paths(strip_scheme(prefix))
    info = np.iinfo(dtype)
    lengths: list[int] = []
    doc_idx = [0]
    # nested: the .bin is renamed first, the .idx last; a failure anywhere leaves neither temp file
    with atomic_open(idx_path, "wb") as fi:
        with atomic_open(bin_path, "wb") as f:
            for doc in documents:
                seqs = list(doc) if _is_sentence_list(doc) else [doc]
                for s in seqs:
                    a = np.asarray(s)
                    if a.size and (a.min() < info.min or a.max() > info.max):
                        raise DataError(f"token id out of range for {np.dtype(dtype)} while writing {bin_path}")
                    f.write(a.astype(dtype).tobytes())
                    lengths.append(int(a.size))
                doc_idx.append(len(lengths))
            lens = np.asarray(lengths, dtype=np.int32)
            ptrs = np.concatenate([[0], np.cumsum(lens[:-1].astype(np.int64) * np.dtype(dtype).itemsize)])
            fi.write(INDEX_HEADER)
            fi.write(struct.pack("<QBQQ", INDEX_VERSION, code_of(dtype), len(lens), len(doc_idx)))
            fi.write(lens.tobytes())
            fi.write(ptrs.astype(np.int64)[: len(lens)].tobytes())
            fi.write(np.asarray(doc_idx, dtype=np.int64).tobytes())
    return bin_path, idx_path
