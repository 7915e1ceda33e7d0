"""Approximate per-sample losses used to rank a candidate pool.

* ``ExactScorer``: the true losses.
* ``NoisyScorer``: true losses with multiplicative log-normal noise (mean preserving) or additive Gaussian
  noise whose std is a fixed multiple of the optimal loss F* (so it swamps the ranking near the optimum).
* ``EarlyExitScorer``: a truncated linear network. h = W_k ... W_1 x with Gaussian factors and a width-r
  bottleneck (r < p); a linear read-out v_t on h is refit every step by least squares on a fixed reference
  set so that v_t.h matches the current model's prediction w_t.x (the exit tracks the model, as SIFT's
  jointly trained exits do). The exit's prediction is x.(Pi w_t) with Pi a rank-r oblique projection, so
  its loss misses the part of the prediction outside the exit's subspace.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .problems import Problem


class ExactScorer:
    """Exact per-sample losses."""

    label = "exact"

    def __call__(self, problem: Problem, W: np.ndarray, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return problem.losses(W, idx)


@dataclass
class NoisyScorer:
    """Exact losses corrupted by ``mode`` = "mult" (l * exp(s xi - s^2/2)) or "add" (l + s F* xi) noise."""

    mode: str
    level: float

    @property
    def label(self) -> str:
        return f"mult noise s={self.level:g}" if self.mode == "mult" else f"add noise {self.level:g}F*"

    def __call__(self, problem: Problem, W: np.ndarray, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        loss = problem.losses(W, idx)
        xi = rng.standard_normal(loss.shape)
        if self.mode == "mult":
            return loss * np.exp(self.level * xi - 0.5 * self.level**2)
        if self.mode == "add":
            return loss + self.level * problem.f_opt * xi
        raise ValueError(f"unknown noise mode {self.mode!r}")


def random_truncated_net(p: int, width: int, depth: int, rng: np.random.Generator) -> np.ndarray:
    """Product W_k ... W_1 of ``depth`` Gaussian factors (1/sqrt(fan_in)), first one p -> width."""
    S = rng.standard_normal((width, p)) / np.sqrt(p)
    for _ in range(depth - 1):
        S = rng.standard_normal((width, width)) / np.sqrt(width) @ S
    return S


@dataclass
class EarlyExitScorer:
    """Loss of a width-``width`` early exit with a least-squares read-out fitted to the current model."""

    problem: Problem
    width: int
    depth: int = 2
    n_ref: int = 256
    seed: int = 1234
    proj: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        p = self.problem.X.shape[1]
        S = random_truncated_net(p, self.width, self.depth, rng)
        ref = rng.choice(self.problem.n, self.n_ref, replace=False)
        X_ref = self.problem.X[ref]
        H_ref = X_ref @ S.T  # (m, r) exit features of the reference set
        # read-out v = pinv(H_ref) (X_ref w); exit prediction h.v = x.(Pi w) with Pi = S^T pinv(H_ref) X_ref
        self.proj = S.T @ np.linalg.pinv(H_ref) @ X_ref

    @property
    def label(self) -> str:
        return f"early exit r={self.width}/{self.problem.X.shape[1]}"

    def __call__(self, problem: Problem, W: np.ndarray, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return problem.losses(W @ self.proj.T, idx)
