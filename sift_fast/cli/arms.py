"""Named comparison arms: each is a set of config overrides on one shared base config.

Every SIFT arm names its keep schedule, so an arm means the same thing whatever the defaults are;
``default`` is exactly what ``sift-pretrain`` does when no selection flag is given.
"""

from __future__ import annotations

import math
from typing import Any

from sift_fast.config import Config, SiftConfig
from sift_fast.errors import ConfigError

FIXED = {"adaptive_keep": "off", "anneal_until": 0, "selection_rule": "topk"}


def arm_overrides(name: str, base: Config) -> dict[str, Any]:
    """Overrides that turn ``base`` into arm ``name``."""
    layers = base.model.num_layers
    defaults = SiftConfig()
    arms: dict[str, dict[str, Any]] = {
        "baseline": {"selection": "none"},
        # the trainer's default SIFT (today: entropy at the exit layer, fixed keep)
        "default": {"selection": defaults.selection, "adaptive_keep": defaults.adaptive_keep, "anneal_until": 0,
                    "selection_rule": defaults.selection_rule},
        # entropy with keep raised towards 1 as the gradient noise scale grows (train/noise.py)
        "noise": {"selection": "entropy", **{**FIXED, "adaptive_keep": "noise"}},
        "entropy": {"selection": "entropy", **FIXED},
        "loss": {"selection": "loss", **FIXED},
        "random": {"selection": "random", **FIXED},  # uniform keep, no scoring pass ("more, cheaper steps")
        # selective-backprop style: score with the full forward (exit at the last layer)
        "sb": {"selection": "loss", "exit_layer": layers, **FIXED},
        "anneal": {"selection": "entropy", **FIXED,
                   "anneal_until": max(base.sift.warmup_steps + 1, base.train.max_steps)},
        "auto": {"selection": "entropy", "exit_layer": "auto", **FIXED},
        # entropy with the peak LR scaled by sqrt(keep): Adam's square-root rule for the smaller backprop batch
        "lr": {"selection": "entropy", **FIXED, "lr": base.optim.lr * math.sqrt(base.sift.keep)},
        # importance-sampled selection with unbiased reweighting
        "sample": {"selection": "entropy", **{**FIXED, "selection_rule": "sample"}},
    }
    if name not in arms:
        raise ConfigError(f"unknown arm {name!r}; choose from {', '.join(arms)}")
    return arms[name]
