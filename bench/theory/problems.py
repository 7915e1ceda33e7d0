"""Smooth convex finite-sum problems with heterogeneous samples: least squares and logistic regression.

Each sample i has a feature scale s_i (log-uniform), so per-sample smoothness ||x_i||^2 varies ~100x.
Objective F(w) = mean_i l(x_i.w, y_i) + lam/2 ||w||^2; per-sample losses l_i are what selection scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * t))


def _softplus(t: np.ndarray) -> np.ndarray:
    """log(1 + e^t), stable; ~3x faster than np.logaddexp(0, t)."""
    return np.maximum(t, 0.0) + np.log1p(np.exp(-np.abs(t)))


@dataclass(frozen=True)
class Problem:
    """A finite-sum problem; weights are batched as (S, p) so S seeds run in lockstep."""

    name: str
    kind: str  # "lsq" | "logistic"
    X: np.ndarray  # (n, p)
    y: np.ndarray  # (n,)
    lam: float
    w0: np.ndarray  # (p,) initial point shared by all seeds
    w_opt: np.ndarray  # (p,) exact minimiser of F
    f_opt: float  # F(w_opt)
    l_max: float  # max_i smoothness of l_i (+ lam)
    description: str = ""

    @property
    def n(self) -> int:
        return self.X.shape[0]

    def sample_loss(self, z: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-sample loss l(z, y) for predictions ``z`` (elementwise)."""
        if self.kind == "lsq":
            return 0.5 * (z - y) ** 2
        return _softplus(-y * z)

    def loss_slope(self, z: np.ndarray, y: np.ndarray) -> np.ndarray:
        """dl/dz elementwise."""
        if self.kind == "lsq":
            return z - y
        return -y * _sigmoid(-y * z)

    def losses(self, W: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Exact per-sample losses, W (S, p), idx (S, m) -> (S, m)."""
        z = np.einsum("smp,sp->sm", self.X[idx], W)
        return self.sample_loss(z, self.y[idx])

    def batch_grad(self, W: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Mini-batch gradient of mean_{i in idx} l_i + lam/2||w||^2, idx (S, b) -> (S, p)."""
        Xb = self.X[idx]
        z = np.einsum("sbp,sp->sb", Xb, W)
        g = self.loss_slope(z, self.y[idx])
        return np.einsum("sb,sbp->sp", g, Xb) / idx.shape[1] + self.lam * W

    def full_loss(self, W: np.ndarray) -> np.ndarray:
        """F(w) for each row of W (S, p) -> (S,)."""
        Z = self.X @ W.T  # (n, S)
        data = self.sample_loss(Z, self.y[:, None]).mean(axis=0)
        return data + 0.5 * self.lam * np.sum(W * W, axis=1)


def _solve_lsq(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(X, y, rcond=None)[0]


def _solve_logistic(X: np.ndarray, y: np.ndarray, lam: float, iters: int = 100) -> np.ndarray:
    """Damped Newton on mean logistic loss + lam/2||w||^2 (strongly convex, so it converges)."""
    n, p = X.shape
    w = np.zeros(p)

    def obj(v: np.ndarray) -> float:
        return float(np.logaddexp(0.0, -y * (X @ v)).mean() + 0.5 * lam * v @ v)

    for _ in range(iters):
        z = X @ w
        s = _sigmoid(-y * z)
        grad = X.T @ (-y * s) / n + lam * w
        if np.linalg.norm(grad) < 1e-13:
            break
        hess = (X * (s * (1 - s))[:, None]).T @ X / n + lam * np.eye(p)
        step = np.linalg.solve(hess, grad)
        t, f0 = 1.0, obj(w)
        while obj(w - t * step) > f0 - 0.25 * t * grad @ step and t > 1e-10:
            t *= 0.5
        w = w - t * step
    return w


def _features(rng: np.random.Generator, n: int, p: int, scale_decades: float) -> np.ndarray:
    scales = 10.0 ** rng.uniform(-scale_decades / 2, scale_decades / 2, size=n)
    return rng.standard_normal((n, p)) * scales[:, None]


def make_least_squares(
    n: int = 2000,
    p: int = 20,
    scale_decades: float = 1.0,
    noise_range: tuple[float, float] = (0.03, 0.3),
    outlier_frac: float = 0.0,
    outlier_noise: float = 3.0,
    seed: int = 0,
    name: str = "lsq",
) -> Problem:
    """Heteroscedastic least squares: y = x.w* + sigma_i eps, sigma_i log-uniform in ``noise_range``.

    ``outlier_frac`` of the samples get noise std ``outlier_noise`` instead (noisy labels).
    """
    rng = np.random.default_rng(seed)
    X = _features(rng, n, p, scale_decades)
    w_star = rng.standard_normal(p)
    lo, hi = np.log10(noise_range[0]), np.log10(noise_range[1])
    sigma = 10.0 ** rng.uniform(lo, hi, size=n)
    n_out = int(round(outlier_frac * n))
    if n_out:
        sigma[rng.choice(n, n_out, replace=False)] = outlier_noise
    y = X @ w_star + sigma * rng.standard_normal(n)
    w0 = rng.standard_normal(p)
    w0 *= np.linalg.norm(w_star) / np.linalg.norm(w0)
    w_opt = _solve_lsq(X, y)
    f_opt = float(0.5 * np.mean((X @ w_opt - y) ** 2))
    l_max = float(np.max(np.sum(X * X, axis=1)))
    desc = (
        f"least squares n={n} p={p}, feature scales log-uniform over {scale_decades:g} decade(s), "
        f"noise std log-uniform {noise_range}"
        + (f", {outlier_frac:.0%} noisy labels std {outlier_noise}" if n_out else "")
    )
    return Problem(name, "lsq", X, y, 0.0, w0, w_opt, f_opt, l_max, desc)


def make_logistic(
    n: int = 2000,
    p: int = 20,
    scale_decades: float = 1.0,
    w_norm: float = 10.0,
    flip_frac: float = 0.0,
    lam: float = 1e-3,
    seed: int = 0,
    name: str = "logistic",
) -> Problem:
    """Logistic regression, y ~ Bernoulli(sigmoid(x.w*)), ||w*|| = ``w_norm``, ``flip_frac`` flipped."""
    rng = np.random.default_rng(seed)
    X = _features(rng, n, p, scale_decades)
    w_star = rng.standard_normal(p)
    w_star *= w_norm / np.linalg.norm(w_star)
    y = np.where(rng.random(n) < _sigmoid(X @ w_star), 1.0, -1.0)
    n_flip = int(round(flip_frac * n))
    if n_flip:
        flip = rng.choice(n, n_flip, replace=False)
        y[flip] = -y[flip]
    w0 = rng.standard_normal(p)
    w0 *= w_norm / np.linalg.norm(w0)
    w_opt = _solve_logistic(X, y, lam)
    f_opt = float(np.logaddexp(0.0, -y * (X @ w_opt)).mean() + 0.5 * lam * w_opt @ w_opt)
    l_max = float(0.25 * np.max(np.sum(X * X, axis=1)) + lam)
    desc = (
        f"logistic regression n={n} p={p} lam={lam:g}, feature scales log-uniform over {scale_decades:g} "
        f"decade(s), ||w*||={w_norm:g}" + (f", {flip_frac:.0%} labels flipped" if n_flip else "")
    )
    return Problem(name, "logistic", X, y, lam, w0, w_opt, f_opt, l_max, desc)
