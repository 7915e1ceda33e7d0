"""Named comparison arms: each is a set of config overrides on one shared base config.

One table for ``sift-compare``, ``bench/time_to_accuracy.py`` and ``bench/tta_horizon.py``. Every SIFT
arm names its keep schedule and rule, so an arm means the same thing whatever the defaults are;
``default`` is exactly what ``sift-pretrain`` does when no selection flag is given. ``random`` pays for
the scoring pass (the same compute as SIFT, the scores ignored: what isolates the information in
them), ``random-free`` does not (only "more, cheaper steps").
"""

from __future__ import annotations

import math
import re
from typing import Any

from sift_fast.config import Config, OptimConfig, SiftConfig
from sift_fast.errors import ConfigError

ARMS = ("baseline", "default", "entropy", "loss", "random", "random-free", "sb", "anneal",
        "anneal-horizon", "auto", "lr", "sample", "noise")
# the keep schedule and rule of a fixed-keep top-k arm (selecting to the end of the run)
FIXED = {"adaptive_keep": "off", "anneal_until": 0, "anneal_horizon": 0.0, "selection_rule": "topk",
         "select_until": 1.0, "lr_batch_scale": "none", "lr_batch_scale_params": "all"}


# ``until<F>`` / ``until<F>-lr`` / ``until<F>-lr4`` / ``until<F>-lr38`` / ``until<F>-lrp<P>`` / ``until<F>-emb``:
# the default with select_until F (and the LR batch scale on every parameter: sqrt / fourth-root / three-eighths /
# the power P, e.g. until0.07-lrp0.3125; or the sqrt one on the word embeddings only), e.g. until0.1; results files
# name the default by this form (default_name), so they stay right when the default changes
UNTIL_SCALE = {None: ("none", "all"), "-lr": ("sqrt", "all"), "-lr4": ("fourth-root", "all"),
               "-lr38": ("three-eighths", "all"), "-emb": ("sqrt", "embeddings")}
_SUFFIXES = "|".join(k for k in UNTIL_SCALE if k)
POWER = "-lrp"  # until<F>-lrp<P>: lr_batch_scale P (a number in [0, 1]) on every parameter
UNTIL = re.compile(rf"until(0?\.\d+|1)({_SUFFIXES}|{POWER}(?:0?\.\d+|[01]))?")  # fullmatch: order does not matter
UNTIL_FORM = f"until<F>[{_SUFFIXES}|{POWER}<P>]"  # how messages name the form


def default_name() -> str:
    """The trainer's default SIFT (what ``default`` is today) as an ``until<F>[-lr|…]`` arm (``UNTIL_SCALE``)."""
    o, by_scale = OptimConfig(), {v: k for k, v in UNTIL_SCALE.items()}
    if not isinstance(o.lr_batch_scale, str) and o.lr_batch_scale_params == "all":
        name = f"until{SiftConfig().select_until:g}{POWER}{o.lr_batch_scale!r}"  # repr: the float's shortest exact form
        if not is_arm(name):  # e.g. 1e-05
            raise ConfigError(f"the default lr_batch_scale {o.lr_batch_scale!r} has no until<F> arm name")
        return name
    if (o.lr_batch_scale, o.lr_batch_scale_params) not in by_scale:
        raise ConfigError(f"the default lr_batch_scale {o.lr_batch_scale} / {o.lr_batch_scale_params} has no "
                          "until<F> arm name")
    return f"until{SiftConfig().select_until:g}" + (by_scale[(o.lr_batch_scale, o.lr_batch_scale_params)] or "")


def is_arm(name: str) -> bool:
    m = UNTIL.fullmatch(name)
    return name in ARMS or (m is not None and 0.0 < float(m.group(1)) <= 1.0)


def arm_overrides(name: str, base: Config, *, anneal_steps: int | None = None) -> dict[str, Any]:
    """Overrides that turn ``base`` into arm ``name``; ``anneal`` reaches keep 1.0 at ``anneal_steps``
    (default: the base's ``max_steps``); ``until<F>[-lr|…]`` is the default selecting until F of the horizon."""
    sift, d, o = base.sift, SiftConfig(), OptimConfig()
    default = {"selection": d.selection, "adaptive_keep": d.adaptive_keep, "anneal_until": d.anneal_until,
               "anneal_horizon": d.anneal_horizon, "selection_rule": d.selection_rule, "select_until": d.select_until,
               "lr_batch_scale": o.lr_batch_scale, "lr_batch_scale_params": o.lr_batch_scale_params}
    arms: dict[str, dict[str, Any]] = {
        "baseline": {"selection": "none"},
        "default": default,
        "entropy": {"selection": "entropy", **FIXED},
        "loss": {"selection": "loss", **FIXED},
        "random": {"selection": "random", "random_pays_scoring": True, **FIXED},
        "random-free": {"selection": "random", "random_pays_scoring": False, **FIXED},
        # selective-backprop style: score with the full forward (exit at the last layer)
        "sb": {"selection": "loss", "exit_layer": base.model.num_layers, **FIXED},
        "anneal": {"selection": "entropy", **FIXED,
                   "anneal_until": max(sift.selection_warmup_steps + 1, anneal_steps or base.train.max_steps)},
        # keep -> 1.0 by the end of the run's horizon (steps and/or time budget, as the LR decay)
        "anneal-horizon": {"selection": "entropy", **{**FIXED, "anneal_horizon": 1.0}},
        "auto": {"selection": "entropy", "exit_layer": "auto", **FIXED},
        # entropy with the peak LR × √keep: Adam's square-root rule for the smaller backprop batch
        "lr": {"selection": "entropy", **FIXED, "lr": base.optim.lr * math.sqrt(sift.keep)},
        # importance-sampled selection with unbiased reweighting
        "sample": {"selection": "entropy", **{**FIXED, "selection_rule": "sample"}},
        # entropy with keep raised towards 1 as the gradient noise scale grows (train/noise.py)
        "noise": {"selection": "entropy", **{**FIXED, "adaptive_keep": "noise"}},
    }
    if name not in ARMS and is_arm(name):
        m = UNTIL.fullmatch(name)
        suffix = m.group(2) or ""
        scale, params = (float(suffix[len(POWER):]), "all") if suffix.startswith(POWER) else UNTIL_SCALE[m.group(2)]
        return {**default, "select_until": float(m.group(1)), "lr_batch_scale": scale,
                "lr_batch_scale_params": params}
    if name not in arms:
        raise ConfigError(f"unknown arm {name!r}; choose from {', '.join(ARMS)}, or {UNTIL_FORM} (F in (0, 1])")
    return arms[name]
