"""Which b of a candidate pool of C samples get a gradient step: uniform, greedy top-b, or annealed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def top_b(scores: np.ndarray, idx: np.ndarray, b: int) -> np.ndarray:
    """Indices (S, b) of the ``b`` highest-scoring entries of ``idx`` (S, m) per row (unordered)."""
    if b >= idx.shape[1]:
        return idx
    part = np.argpartition(-scores, b - 1, axis=1)[:, :b]
    return np.take_along_axis(idx, part, axis=1)


@dataclass(frozen=True)
class Policy:
    """``kind``: "uniform" (first b of the pool = b uniform draws), "greedy" (top-b of C by score) or
    "anneal" (top-b of the first C_t candidates, C_t decaying linearly from C to b over the first
    ``anneal_frac`` of the run, i.e. keep fraction b/C -> 1 = uniform)."""

    kind: str
    anneal_frac: float = 0.25

    def pool_size(self, t: int, horizon: int, pool: int, batch: int) -> int:
        if self.kind == "uniform":
            return batch
        if self.kind == "greedy":
            return pool
        if self.kind == "anneal":
            frac = max(0.0, 1.0 - t / (self.anneal_frac * horizon))
            return batch + int(round((pool - batch) * frac))
        raise ValueError(f"unknown policy {self.kind!r}")
