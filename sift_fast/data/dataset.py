"""Tokenize a corpus once into ``.bin``/``.idx`` (cached), split train/valid by document, pack lazily.

Train rows are a :class:`~sift_fast.data.samples.PackedSamples` (memory-mapped tokens + cached sample
index: host memory does not grow with the corpus); the validation rows (at most
``max_valid_sequences``) are materialized once. Both are bitwise the rows of the in-memory packer
(:func:`~sift_fast.data.packing.pack_sequences`) over the same documents.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sift_fast.data.blend import BlendedSamples, blend_key, parse_blend
from sift_fast.data.corpus import read_documents
from sift_fast.data.indexed import IndexedTokens, index_paths, is_indexed, token_dtype, write_indexed
from sift_fast.data.samples import PackedSamples, cached_samples, index_key
from sift_fast.data.tokenizer import Vocab
from sift_fast.errors import ConfigError, DataError

_TOKENS_VERSION = "tokens-v1"
_SCAN_CHUNK = 1 << 26  # tokens per chunk of the one-time vocabulary range check


@dataclass
class PackedCorpus:
    """Packed train rows (lazy ``[N, S]``, indexable like an int32 array) and int32 ``[Nv, S]`` validation rows."""

    train: PackedSamples | BlendedSamples | np.ndarray
    valid: np.ndarray


def content_hash(docs: list[str]) -> str:
    """sha256 of a list of documents (length-prefixed, so boundaries count)."""
    h = hashlib.sha256()
    for d in docs:
        b = d.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def tokens_key(docs_hash: str, vocab: Vocab) -> str:
    """Key of a text corpus's cached ``.bin``/``.idx``: its content and the tokenizer's fingerprint."""
    parts = (_TOKENS_VERSION, docs_hash, vocab.fingerprint)
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:24]


def source_id(ds: IndexedTokens) -> str:
    """Identity of an indexed dataset for the sample-index cache: its files' paths, sizes and mtimes."""
    parts = []
    for p in (ds.bin_path, ds.idx_path):
        st = p.stat()
        parts.append(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def split_documents(lengths, valid_fraction: float) -> int:
    """Index of the first validation document: the last documents go to valid until they hold
    ``valid_fraction`` of the tokens (counting one [SEP] per document); at least one on each side."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) < 2:
        raise DataError(
            f"corpus too small: {len(lengths)} non-empty document(s), need at least 2 to split train/valid"
        )
    held = np.cumsum((lengths + 1)[::-1])[::-1]  # held[j]: tokens (+ [SEP]s) of documents j..end
    target = valid_fraction * float(held[0])
    enough = np.flatnonzero(held[1:] >= target) + 1  # cut candidates 1..len-1 holding enough
    return int(enough[-1]) if len(enough) else 1


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
    """Read (or memory-map), tokenize (no special tokens), split by document and pack a corpus.

    ``docs_spec``: a text corpus (see :func:`~sift_fast.data.corpus.read_documents`), tokenized once
    into ``cache_dir/tokens-<key>.{bin,idx}``, or a Megatron ``.bin``/``.idx`` prefix (already
    tokenized with ``vocab``). ``max_valid_sequences`` keeps the first that many validation rows;
    ``max_train_tokens`` the first ``max(1, max_train_tokens // seq_len)`` train rows. Sample indices
    are cached in ``cache_dir`` (``samples-<key>-{docs,index}.npy``).
    """
    if seq_len < 3:
        raise ConfigError(f"seq_len must be >= 3, got {seq_len}")
    if not 0.0 < valid_fraction < 1.0:
        raise ConfigError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    if max_valid_sequences is not None and max_valid_sequences < 1:
        raise ConfigError(f"max_valid_sequences must be >= 1 or None, got {max_valid_sequences}")
    if max_train_tokens is not None and max_train_tokens < 1:
        raise ConfigError(f"max_train_tokens must be >= 1 or None, got {max_train_tokens}")
    cache_dir = Path(cache_dir)
    limit = max(1, max_train_tokens // seq_len) if max_train_tokens is not None else None
    blend = parse_blend(docs_spec)
    if blend is not None:
        return _build_blend(blend, vocab, seq_len, valid_fraction, max_valid_sequences, cache_dir, text_key, limit)
    train, valid = corpus_samples(docs_spec, vocab, seq_len, valid_fraction, cache_dir, text_key)
    if limit is not None and limit < len(train):
        train = PackedSamples(train.tokens, train.docs, train.index, seq_len, vocab.cls_id, vocab.sep_id,
                              vocab.pad_id, limit=limit, key=train.key)
    n_valid = len(valid) if max_valid_sequences is None else min(len(valid), max_valid_sequences)
    return PackedCorpus(train=train, valid=valid.rows(np.arange(n_valid)))


def corpus_samples(docs_spec: str, vocab: Vocab, seq_len: int, valid_fraction: float, cache_dir: Path,
                   text_key: str = "text") -> tuple[PackedSamples, PackedSamples]:
    """Lazy (train, valid) samples of one corpus: a text corpus (tokenized once) or an indexed dataset."""
    if is_indexed(docs_spec):
        ds, checked = IndexedTokens(docs_spec), False
    else:
        ds, checked = tokenize_to_indexed(docs_spec, vocab, cache_dir, text_key=text_key), True
    return split_samples(ds, vocab, seq_len, valid_fraction, cache_dir, vocab_checked=checked)


def _build_blend(blend: list[tuple[float, str]], vocab: Vocab, seq_len: int, valid_fraction: float,
                 max_valid_sequences: int | None, cache_dir: Path, text_key: str, limit: int | None) -> PackedCorpus:
    """A weighted blend: train = :class:`BlendedSamples`; valid = each corpus's first ``w_d x max_valid`` rows."""
    parts = [corpus_samples(p, vocab, seq_len, valid_fraction, cache_dir, text_key) for _, p in blend]
    weights = [w for w, _ in blend]
    train = BlendedSamples([t for t, _ in parts], weights, cache_dir=cache_dir,
                           key=blend_key([t.key for t, _ in parts], weights), limit=limit)
    valid = []
    for w, (_, v) in zip(weights, parts):
        n = len(v) if max_valid_sequences is None else min(len(v), max(1, round(w * max_valid_sequences)))
        valid.append(v.rows(np.arange(n)))
    return PackedCorpus(train=train, valid=np.concatenate(valid))


def tokenize_to_indexed(docs_spec: str, vocab: Vocab, cache_dir: Path, *, text_key: str = "text") -> IndexedTokens:
    """The text corpus ``docs_spec`` tokenized with ``vocab`` as a cached ``.bin``/``.idx`` (built once)."""
    docs = read_documents(docs_spec, text_key=text_key)
    prefix = cache_dir / f"tokens-{tokens_key(content_hash(docs), vocab)}"
    if all(p.is_file() for p in index_paths(prefix)):
        try:
            return IndexedTokens(prefix)
        except DataError:
            pass  # unreadable cache entry: rebuild it
    encodings = vocab.tokenizer.encode_batch(docs, add_special_tokens=False)
    write_indexed(prefix, (np.asarray(e.ids, dtype=np.int64) for e in encodings), dtype=token_dtype(vocab.vocab_size))
    return IndexedTokens(prefix)


def check_vocab_range(ds: IndexedTokens, vocab: Vocab) -> None:
    """DataError when a token id of ``ds`` is outside ``vocab`` (scanned in chunks: bounded memory)."""
    tokens = ds.tokens
    lo, hi = 0, -1
    for start in range(0, len(tokens), _SCAN_CHUNK):
        part = tokens[start : start + _SCAN_CHUNK]
        lo, hi = min(lo, int(part.min())), max(hi, int(part.max()))
    if hi >= vocab.vocab_size or lo < 0:
        raise DataError(
            f"{ds.bin_path}: token id {hi if hi >= vocab.vocab_size else lo} is outside the vocabulary of "
            f"--vocab {vocab.source or '(the tokenizer)'} ({vocab.vocab_size} ids); pass --vocab with the tokenizer "
            f"{ds.idx_path.name} / {ds.bin_path.name} were preprocessed with"
        )


def split_samples(ds: IndexedTokens, vocab: Vocab, seq_len: int, valid_fraction: float, cache_dir: Path, *,
                  vocab_checked: bool = False) -> tuple[PackedSamples, PackedSamples]:
    """Lazy train and validation samples of ``ds`` (split by document, see :func:`split_documents`).

    The split and both sample indices are cached under a key of the dataset's identity, the vocabulary
    size, ``seq_len`` and ``valid_fraction``: a second start reads no document table.
    """
    src = f"{source_id(ds)}|{vocab.vocab_size}|{valid_fraction!r}"
    keys = [index_key(f"{src}|{part}", 0, 0, seq_len) for part in ("train", "valid")]
    kw = dict(cache_dir=cache_dir)
    ids = (vocab.cls_id, vocab.sep_id, vocab.pad_id)
    cached = [cache_dir / f"samples-{k}-{s}.npy" for k in keys for s in ("docs", "index")]
    if all(p.is_file() for p in cached):
        try:
            return tuple(cached_samples(ds.tokens, None, None, seq_len, *ids, key=k, **kw) for k in keys)
        except (OSError, ValueError, TypeError):
            pass  # unreadable cache entry: rebuild it
    if not vocab_checked:
        check_vocab_range(ds, vocab)
    starts, lengths = ds.document_spans()
    keep = lengths > 0
    starts, lengths = starts[keep], lengths[keep]
    cut = split_documents(lengths, valid_fraction)
    train = cached_samples(ds.tokens, starts[:cut], lengths[:cut], seq_len, *ids, key=keys[0], **kw)
    valid = cached_samples(ds.tokens, starts[cut:], lengths[cut:], seq_len, *ids, key=keys[1], **kw)
    return train, valid
