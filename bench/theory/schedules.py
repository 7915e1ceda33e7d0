"""Step-size schedules shared by every selection policy: constant and 1/t-style decay."""

from __future__ import annotations

from collections.abc import Callable


def constant(eta: float) -> Callable[[int], float]:
    """eta_t = eta."""
    return lambda t: eta


def inverse_time(eta: float, t0: float) -> Callable[[int], float]:
    """eta_t = eta / (1 + t / t0)."""
    return lambda t: eta / (1.0 + t / t0)
