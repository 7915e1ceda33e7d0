"""Named comparison arms: each is a set of config overrides on one shared base config."""

from __future__ import annotations

from typing import Any

from sift_fast.config import Config
from sift_fast.errors import ConfigError


def arm_overrides(name: str, base: Config) -> dict[str, Any]:
    """Overrides that turn ``base`` into arm ``name``."""
    layers = base.model.num_layers
    arms: dict[str, dict[str, Any]] = {
        "baseline": {"selection": "none"},
        "entropy": {"selection": "entropy"},
        "loss": {"selection": "loss"},
        "random": {"selection": "random"},
        # selective-backprop style: score with the full forward (exit at the last layer)
        "sb": {"selection": "loss", "exit_layer": layers},
        "anneal": {"selection": "entropy", "anneal_until": max(base.sift.warmup_steps + 1, base.train.max_steps)},
        "auto": {"selection": "entropy", "exit_layer": "auto"},
    }
    if name not in arms:
        raise ConfigError(f"unknown arm {name!r}; choose from {', '.join(arms)}")
    return arms[name]


ARM_NAMES = ("baseline", "entropy", "loss", "random", "sb", "anneal", "auto")
