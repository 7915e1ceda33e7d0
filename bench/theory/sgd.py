"""Mini-batch SGD with pool-based sample selection, vectorised over seeds, and convergence metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .problems import Problem
from .selection import Policy, top_b


@dataclass
class Trace:
    """F(w_t) per seed and step, plus how often the scorer's top-b matched the exact top-b (greedy steps)."""

    loss: np.ndarray  # (S, T+1) F(w_t)
    precision_far: float  # mean |selected & exact top-b| / b over steps with F(w_t) > 2 F*
    precision_near: float  # same over steps in the last 10% of the run


def run_sgd(
    problem: Problem,
    scorer: Callable[..., np.ndarray],
    policy: Policy,
    lr: Callable[[int], float],
    steps: int,
    seeds: int,
    pool: int,
    batch: int,
    seed: int = 0,
    precision_every: int = 5,
) -> Trace:
    """Run ``seeds`` independent SGD chains for ``steps`` iterations from ``problem.w0``.

    Every step draws a pool of ``pool`` indices (with replacement) per chain; the policy decides how many
    candidates are scored and the top ``batch`` by score get the gradient step. The pool stream is shared by
    all policies for a given seed (common random numbers); scorer noise has its own stream.
    """
    rng_pool = np.random.default_rng([seed, 0])
    rng_score = np.random.default_rng([seed, 1])
    W = np.tile(problem.w0, (seeds, 1)).astype(float)
    loss = np.empty((seeds, steps + 1))
    loss[:, 0] = problem.full_loss(W)
    late_start = steps - steps // 10
    prec: dict[str, list[float]] = {"far": [], "near": []}
    for t in range(steps):
        idx = rng_pool.integers(0, problem.n, size=(seeds, pool))
        c_t = policy.pool_size(t, steps, pool, batch)
        if c_t > batch:
            cand = idx[:, :c_t]
            sel = top_b(scorer(problem, W, cand, rng_score), cand, batch)
            if t % precision_every == 0:
                exact = top_b(problem.losses(W, cand), cand, batch)
                for s, (a, e) in enumerate(zip(sel, exact, strict=True)):
                    hit = len(np.intersect1d(a, e)) / batch
                    if loss[s, t] > 2.0 * problem.f_opt:
                        prec["far"].append(hit)
                    if t >= late_start:
                        prec["near"].append(hit)
        else:
            sel = idx[:, :batch]
        W -= lr(t) * problem.batch_grad(W, sel)
        loss[:, t + 1] = problem.full_loss(W)
    nan = float("nan")
    return Trace(
        loss,
        float(np.mean(prec["far"])) if prec["far"] else nan,
        float(np.mean(prec["near"])) if prec["near"] else nan,
    )


def iterations_to(loss: np.ndarray, target: float) -> list[int | None]:
    """Per seed: first iteration t with F(w_t) <= target, or None if never reached."""
    out: list[int | None] = []
    for row in loss:
        hit = np.flatnonzero(row <= target)
        out.append(int(hit[0]) if hit.size else None)
    return out


def iterations_to_stay(loss: np.ndarray, target: float) -> list[int | None]:
    """Per seed: first iteration t with F(w_s) <= target for every s >= t, or None if it ends above."""
    out: list[int | None] = []
    for row in loss:
        above = np.flatnonzero(row > target)
        out.append(0 if above.size == 0 else None if above[-1] == row.size - 1 else int(above[-1]) + 1)
    return out


def final_gap(loss: np.ndarray, f_opt: float, tail: float = 0.1) -> np.ndarray:
    """Per seed: mean of F(w_t)/F* - 1 over the last ``tail`` fraction of iterations."""
    k = max(1, int(loss.shape[1] * tail))
    return loss[:, -k:].mean(axis=1) / f_opt - 1.0
