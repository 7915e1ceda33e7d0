"""Random linear feed-forward networks f(x) = W_L ... W_1 x and their early-exit loss estimates.

Layers are d x d with iid N(0, 1/d) entries, inputs x ~ N(0, I_d), targets y ~ N(0, tau^2 I_d) independent
of x (tau = 0: y = 0). True loss l = ||f(x) - y||^2. The exit after k layers (h_k = W_k ... W_1 x) replaces
the unseen layers by their expectation under the same Gaussian prior: E[||W_{L:k+1} h - y||^2 | h, y] =
||h||^2 + ||y||^2, i.e. an identity read-out (E||W h||^2 = ||h||^2) that drops the cross term <f, y>, whose
conditional mean is 0. For tau = 0 this is exactly ||h_k||^2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NetLosses:
    """Per-trial, per-sample losses; ``exit_[k]`` is the exit after k layers (k = 0: the input itself)."""

    true: dict[int, np.ndarray]  # depth L -> (trials, R) true loss of the depth-L prefix network
    exit_: dict[int, np.ndarray]  # k -> (trials, R) exit loss


def _next_layer(H: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sample W H for a fresh Gaussian W (N(0, 1/d)), H (T, d, R), without drawing the d x d matrix.

    With H = Q R (reduced QR), W Q has iid N(0, 1/d) entries (rotation invariance) and is independent of
    everything else, so W H has the same joint law as G R / sqrt(d) with G standard Gaussian (T, d, m).
    """
    T, d, _ = H.shape
    _, Rf = np.linalg.qr(H, mode="reduced")  # (T, m, R), m = min(d, R)
    G = rng.standard_normal((T, d, Rf.shape[1]))
    return G @ Rf / np.sqrt(d)


def simulate(
    trials: int,
    width: int,
    depth: int,
    samples: int,
    tau: float = 0.0,
    rng: np.random.Generator | None = None,
) -> NetLosses:
    """Losses of ``samples`` random inputs through one random network per trial, for every prefix depth.

    One pass gives the true loss of every prefix network (depth 1..``depth``) and every exit k (0..depth),
    since a depth-L network is the first L layers of the deeper one.
    """
    rng = rng or np.random.default_rng(0)
    H = rng.standard_normal((trials, width, samples))
    Y = tau * rng.standard_normal((trials, width, samples))
    y2 = np.sum(Y * Y, axis=1)
    exit_ = {0: np.sum(H * H, axis=1) + y2}
    true: dict[int, np.ndarray] = {}
    for layer in range(1, depth + 1):
        H = _next_layer(H, rng)
        h2 = np.sum(H * H, axis=1)
        exit_[layer] = h2 + y2
        true[layer] = h2 - 2.0 * np.sum(H * Y, axis=1) + y2
    return NetLosses(true, exit_)


def argmax_agreement(true: np.ndarray, approx: np.ndarray) -> np.ndarray:
    """Per trial: 1.0 if the argmax over samples (last axis) of ``approx`` equals that of ``true``."""
    return (np.argmax(true, axis=-1) == np.argmax(approx, axis=-1)).astype(float)


def topk_overlap(true: np.ndarray, approx: np.ndarray, k: int) -> np.ndarray:
    """Per trial: |top-k(approx) & top-k(true)| / k over the last axis."""
    t = np.argpartition(-true, k - 1, axis=-1)[..., :k]
    a = np.argpartition(-approx, k - 1, axis=-1)[..., :k]
    mask_t = np.zeros(true.shape, dtype=bool)
    mask_a = np.zeros(true.shape, dtype=bool)
    np.put_along_axis(mask_t, t, True, axis=-1)
    np.put_along_axis(mask_a, a, True, axis=-1)
    return (mask_t & mask_a).sum(axis=-1) / k


def chi2_model(
    trials: int, width: int, depth: int, exit_layer: int, samples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Independent-samples model: log l_i = sum_{l=0..L} log(chi2_d / d), exit keeps terms l <= k.

    These marginals are exact for the network (||W h||^2 = ||h||^2 chi2_d / d for Gaussian W independent of
    h); the model only drops the O(1/d) dependence between samples that share the same W.
    """
    Z = np.log(rng.chisquare(width, size=(trials, samples, depth + 1)) / width)
    exit_log = Z[..., : exit_layer + 1].sum(axis=-1)
    return Z.sum(axis=-1), exit_log
