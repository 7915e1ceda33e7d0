"""Closed form for argmax preservation when (log exit loss, log true loss) are iid bivariate Gaussian.

For R iid pairs (a_i, t_i) with correlation c,  P[argmax a = argmax t] = R * E[1{a_1 max} 1{t_1 max}]
  = R * int int phi_c(u, v) Phi_c(u, v)^(R-1) du dv,
with phi_c / Phi_c the standard bivariate normal density / CDF. R = 2 gives 1/2 + arcsin(c)/pi.
For the random linear network (identity exit, tau = 0) c = sqrt((k + 1) / (L + 1)), independent of d.
"""

from __future__ import annotations

import math

import numpy as np

_erf = np.vectorize(math.erf, otypes=[float])


def _Phi(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + _erf(x / math.sqrt(2.0)))


def _phi(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def linear_net_correlation(exit_layer: int, depth: int) -> float:
    """corr(log exit loss, log true loss) in the independent log-chi2 model: sqrt((k+1)/(L+1))."""
    return math.sqrt((exit_layer + 1) / (depth + 1))


def argmax_prob(c: float, samples: int, half_width: float = 7.0) -> float:
    """P[argmax of a equals argmax of t] for ``samples`` iid bivariate normal pairs with correlation ``c``."""
    if samples == 1 or c >= 1.0 - 1e-12:
        return 1.0
    s = math.sqrt(1.0 - c * c)
    h = min(0.025, s / 12.0)
    x = np.arange(-half_width, half_width + h / 2, h)
    # F[i, j] = P(a < x_i, t < x_j) = int_{-inf}^{x_i} phi(r) Phi((x_j - c r)/s) dr   (cumulative trapezoid)
    inner = _phi(x)[:, None] * _Phi((x[None, :] - c * x[:, None]) / s)
    F = np.concatenate([np.zeros((1, x.size)), np.cumsum(0.5 * (inner[1:] + inner[:-1]) * h, axis=0)])
    dens = _phi(x)[:, None] * _phi((x[None, :] - c * x[:, None]) / s) / s
    return float(min(1.0, samples * np.sum(dens * F ** (samples - 1)) * h * h))
