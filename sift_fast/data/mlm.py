"""Dynamic BERT masking (80/10/10), deterministic per (seed, epoch, sample_id)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sift_fast.errors import ConfigError

_M64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_STREAMS = 3  # per position: select, action (mask/random/keep), replacement token


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer on a uint64 array (wrapping arithmetic)."""
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MUL1
    z = (z ^ (z >> np.uint64(27))) * _MUL2
    return z ^ (z >> np.uint64(31))


def _to_unit(h: np.ndarray) -> np.ndarray:
    """uint64 hashes -> uniform floats in [0, 1)."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class MLMMasker:
    """BERT masked-LM corruption with counter-based randomness.

    Among non-special positions (``special_ids`` should include the pad id), each is chosen with
    probability ``mask_prob``; a chosen position becomes ``mask_id`` (80%), a random non-special token
    (10%) or stays (10%). The random numbers are a hash of (seed, epoch, sample_id, position), so a
    row's masking does not depend on the other rows of the batch.
    """

    def __init__(
        self,
        vocab_size: int,
        mask_id: int,
        special_ids: Sequence[int],
        *,
        mask_prob: float = 0.15,
        seed: int = 0,
    ) -> None:
        if not 0.0 < mask_prob < 1.0:
            raise ConfigError(f"mask_prob must be in (0, 1), got {mask_prob}")
        self.vocab_size = int(vocab_size)
        self.mask_id = int(mask_id)
        self.mask_prob = float(mask_prob)
        self.seed = int(seed)
        self.is_special = np.zeros(self.vocab_size, dtype=bool)
        self.is_special[np.asarray(list(special_ids), dtype=np.int64)] = True
        self.replacement_ids = np.flatnonzero(~self.is_special).astype(np.int64)
        if len(self.replacement_ids) == 0:
            raise ConfigError("vocabulary has no non-special tokens to mask")

    def _row_keys(self, sample_ids: np.ndarray, epoch: int) -> np.ndarray:
        key = _mix(np.array([self.seed & _M64], dtype=np.uint64))
        key = _mix(key ^ np.uint64(int(epoch) & _M64))
        return _mix(key ^ sample_ids.astype(np.int64).astype(np.uint64))

    def __call__(
        self, input_ids: np.ndarray, sample_ids: np.ndarray, epoch: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (masked input_ids int64 [B, S], labels int64 [B, S] with -100 where not predicted)."""
        ids = np.asarray(input_ids).astype(np.int64, copy=False)
        if ids.ndim != 2:
            raise ValueError(f"input_ids must be [B, S], got shape {ids.shape}")
        sample_ids = np.asarray(sample_ids).reshape(-1)
        if len(sample_ids) != ids.shape[0]:
            raise ValueError(f"{len(sample_ids)} sample_ids for {ids.shape[0]} rows")
        rows = self._row_keys(sample_ids, epoch)
        counters = np.arange(ids.shape[1] * _STREAMS, dtype=np.uint64).reshape(ids.shape[1], _STREAMS)
        h = _mix(rows[:, None, None] ^ _mix(counters)[None])  # [B, S, streams]
        chosen = (_to_unit(h[..., 0]) < self.mask_prob) & ~self.is_special[ids]
        action = _to_unit(h[..., 1])
        labels = np.where(chosen, ids, -100)
        out = ids.copy()
        to_mask = chosen & (action < 0.8)
        to_random = chosen & (action >= 0.8) & (action < 0.9)
        out[to_mask] = self.mask_id
        picks = (h[..., 2][to_random] % np.uint64(len(self.replacement_ids))).astype(np.int64)
        out[to_random] = self.replacement_ids[picks]
        return out, labels
