"""Weighted blends of corpora: Megatron's ``--data "0.3 PREFIX_A 0.7 PREFIX_B"`` syntax.

A blend of ``K`` lazy sample sources of ``n_d`` samples has ``N = sum n_d`` samples per epoch. The
blend index (built once, cached as ``.npy``; C++ ``sift_fast._C.build_blend_index`` or the Python
loop here, same arrays) interleaves the sources greedily: blend sample ``i`` comes from the source
``d`` maximizing ``w_d max(i, 1) - taken_d`` (lowest ``d`` on ties), as its ``taken_d``-th sample.
Source ``d`` gets ``q_d ~ w_d N`` samples an epoch; in epoch ``e`` its ``t``-th is sample
``(t + e q_d) mod n_d``, so an up-weighted source repeats and a down-weighted one rotates through all
its samples across epochs. Deterministic given the seed, and a pure function of (id, epoch): the
stream resumes exactly and any rank rebuilds any blend sample.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from sift_fast.data.samples import _C, _load_npy, _save_npy
from sift_fast.errors import ConfigError


def parse_blend(spec: str) -> list[tuple[float, str]] | None:
    """``[(weight, prefix), ...]`` (weights normalized) for a blend spec; ``None`` for a single corpus."""
    parts = str(spec).split()
    if len(parts) < 2:
        return None
    try:
        float(parts[0])
    except ValueError:
        return None
    if len(parts) % 2:
        raise ConfigError(f"blend {spec!r}: expected pairs of 'WEIGHT PREFIX', got an odd number of fields")
    pairs = []
    for w, prefix in zip(parts[::2], parts[1::2]):
        try:
            weight = float(w)
        except ValueError:
            raise ConfigError(f"blend {spec!r}: {w!r} is not a weight (expected 'WEIGHT PREFIX' pairs)") from None
        if not weight > 0 or not np.isfinite(weight):
            raise ConfigError(f"blend {spec!r}: weight {w} must be a positive number")
        pairs.append((weight, prefix))
    total = sum(w for w, _ in pairs)
    return [(w / total, p) for w, p in pairs]


def build_blend_index(weights: np.ndarray, n: int, *, use_ext: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(source int16 [n], sample-within-source int64 [n]) of the greedy interleaving (module docstring)."""
    w = np.ascontiguousarray(weights, dtype=np.float64)
    src, within = np.empty(n, dtype=np.int16), np.empty(n, dtype=np.int64)
    if use_ext is None:
        use_ext = _C is not None
    if use_ext:
        if _C is None:
            raise RuntimeError("sift_fast._C is not built")
        _C.build_blend_index(w, src, within)
        return src, within
    wl, tl = w.tolist(), [0] * len(w)
    for i in range(n):
        t = float(i) if i > 1 else 1.0
        best, best_err = 0, wl[0] * t - tl[0]
        for d in range(1, len(wl)):
            err = wl[d] * t - tl[d]
            if err > best_err:
                best, best_err = d, err
        src[i], within[i] = best, tl[best]
        tl[best] += 1
    return src, within


class BlendedSamples:
    """Lazy rows of a weighted blend of lazy sample sources (each with ``rows(ids)`` and ``len``)."""

    ndim = 2
    dtype = np.dtype(np.int32)

    def __init__(self, parts: list, weights: list[float], *, cache_dir: Path, key: str, limit: int | None = None):
        if len(parts) != len(weights) or not parts:
            raise ConfigError("a blend needs one weight per source")
        self.parts, self.weights = list(parts), np.asarray(weights, dtype=np.float64)
        self.sizes = np.array([len(p) for p in parts], dtype=np.int64)
        self.seq_len = parts[0].seq_len
        n = int(self.sizes.sum())
        src_path, within_path = cache_dir / f"blend-{key}-source.npy", cache_dir / f"blend-{key}-sample.npy"
        src, within = _load_npy(src_path), _load_npy(within_path)
        if src is None or within is None or len(src) != n:
            cache_dir.mkdir(parents=True, exist_ok=True)
            s, t = build_blend_index(self.weights, n)
            _save_npy(src_path, s)
            _save_npy(within_path, t)
            src, within = np.load(src_path, mmap_mode="r"), np.load(within_path, mmap_mode="r")
        self.source, self.within = src, within
        self.quota = np.bincount(np.asarray(src), minlength=len(parts)).astype(np.int64)  # samples per epoch
        self.n = n if limit is None else min(n, int(limit))

    def __len__(self) -> int:
        return self.n

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.seq_len)

    def __getitem__(self, key) -> np.ndarray:
        return self.rows(np.arange(self.n)[key] if isinstance(key, slice) else np.asarray(key).reshape(-1))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        rows = self.rows(np.arange(self.n))
        return rows if dtype is None else rows.astype(dtype)

    def rows(self, ids: np.ndarray, epoch: int = 0) -> np.ndarray:
        """int32 ``[len(ids), S]`` rows of blend samples ``ids`` in ``epoch``."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(ids) and (ids.min() < 0 or ids.max() >= self.n):
            raise IndexError(f"blend sample ids out of range for {self.n} samples")
        src = np.asarray(self.source[ids]).astype(np.int64)
        j = (np.asarray(self.within[ids]) + int(epoch) * self.quota[src]) % self.sizes[src]
        out = np.empty((len(ids), self.seq_len), dtype=np.int32)
        for d in np.unique(src):
            sel = src == d
            out[sel] = self.parts[d].rows(j[sel])
        return out


def blend_key(part_keys: list[str], weights: list[float]) -> str:
    parts = ("blend-v1", *part_keys, *map(repr, weights))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]
