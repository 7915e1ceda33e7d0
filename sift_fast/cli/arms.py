"""Named comparison arms: each is a set of config overrides on one shared base config.

One table for ``sift-compare`` and ``bench/time_to_accuracy.py``: ``random`` pays for the scoring pass
(the same compute as SIFT, the scores ignored: what isolates the information in them), ``random-free``
does not (only "more, cheaper steps").
"""

from __future__ import annotations

from typing import Any

from sift_fast.config import Config
from sift_fast.errors import ConfigError

ARMS = ("baseline", "entropy", "loss", "random", "random-free", "sb", "anneal", "auto")


def arm_overrides(name: str, base: Config, *, anneal_steps: int | None = None) -> dict[str, Any]:
    """Overrides that turn ``base`` into arm ``name``; ``anneal`` reaches keep 1.0 at ``anneal_steps``
    (default: the base's ``max_steps``)."""
    sift = base.sift
    arms: dict[str, dict[str, Any]] = {
        "baseline": {"selection": "none"},
        "entropy": {"selection": "entropy"},
        "loss": {"selection": "loss"},
        "random": {"selection": "random", "random_pays_scoring": True},
        "random-free": {"selection": "random", "random_pays_scoring": False},
        # selective-backprop style: score with the full forward (exit at the last layer)
        "sb": {"selection": "loss", "exit_layer": base.model.num_layers},
        "anneal": {"selection": "entropy",
                   "anneal_until": max(sift.selection_warmup_steps + 1, anneal_steps or base.train.max_steps)},
        "auto": {"selection": "entropy", "exit_layer": "auto"},
    }
    if name not in arms:
        raise ConfigError(f"unknown arm {name!r}; choose from {', '.join(ARMS)}")
    return arms[name]
