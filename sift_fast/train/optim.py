"""Optimizers and the learning-rate schedule.

AdamW: torch's fused kernel on CUDA, foreach on CPU. LAMB: apex ``FusedLAMB`` when apex is importable
on CUDA, else ``Lamb`` below (a plain PyTorch implementation of You et al., 2020).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import nn

from sift_fast.config import OptimConfig, batch_scale_power
from sift_fast.errors import ConfigError

# the word embedding matrix of HF BERT / RoBERTa and the MLM decoder matrix (the same tensor when tied, the default:
# named_parameters yields it once; an --init-from model with tie_word_embeddings false has both)
EMBEDDINGS = ("word_embeddings.weight", "predictions.decoder.weight")


def param_groups(model: nn.Module, weight_decay: float,
                 scale_params: Literal["all", "embeddings"] = "all") -> list[dict]:
    """No weight decay on biases and LayerNorm weights (1-D parameters). ``scale_params`` embeddings
    (``optim.lr_batch_scale_params``): the word embeddings (and an untied decoder matrix) get a group of their
    own, the only one marked ``batch_scale`` (:func:`scale_step_lr` scales marked groups; an unmarked group
    counts as marked)."""
    decay, no_decay, emb = [], [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            if scale_params == "embeddings" and name.endswith(EMBEDDINGS):
                emb.append(p)
            else:
                (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if scale_params == "all":
        return groups
    if not emb:
        raise ConfigError(f"lr_batch_scale_params {scale_params}: the model has no parameter named *{EMBEDDINGS[0]}; "
                          "use --lr-batch-scale-params all")
    return [{**g, "batch_scale": False} for g in groups] + [
        {"params": emb, "weight_decay": weight_decay, "batch_scale": True}]


class Lamb(torch.optim.Optimizer):
    """LAMB: Adam moments with bias correction, decoupled weight decay, per-tensor trust ratio."""

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D401 - torch API
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                m_hat = m / (1 - b1 ** state["step"])
                v_hat = v / (1 - b2 ** state["step"])
                update = m_hat / (v_hat.sqrt() + group["eps"])
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                w_norm, u_norm = p.norm(), update.norm()
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                p.add_(update * trust, alpha=-group["lr"])
        return loss


def build_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.lr_batch_scale_params)
    betas = (cfg.beta1, cfg.beta2)
    if cfg.optimizer == "lamb":
        if device.type == "cuda":
            try:
                from apex.optimizers import FusedLAMB

                return FusedLAMB(groups, lr=cfg.lr, betas=betas, eps=cfg.eps)
            except ImportError:
                pass
        return Lamb(groups, lr=cfg.lr, betas=betas, eps=cfg.eps)
    kwargs = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, eps=cfg.eps, **kwargs)


class LrProgress:
    """Set by the training loop: ``value``, the fraction of the time budget spent, before each step
    (``lr_horizon`` auto/budget; stays 0 in a run without a time budget; the scheduler reads it when it sets
    the next step's LR), and ``kept_fraction``, the step's backprop size ÷ candidates, before its update
    (``lr_batch_scale``: :func:`scale_step_lr` scales that very update)."""

    def __init__(self) -> None:
        self.value = 0.0
        self.kept_fraction = 1.0


def batch_scale(kept_fraction: float, rule: str | float) -> float:
    """LR multiplier of a step that backprops ``kept_fraction`` of its candidates (``optim.lr_batch_scale``)."""
    return kept_fraction ** batch_scale_power(rule)


def scale_step_lr(optimizer: torch.optim.Optimizer, kept_fraction: float, rule: str | float) -> list[Any] | None:
    """Multiply this update's LR by the batch scale; returns the LRs it replaced (None: nothing scaled) for a
    caller whose scheduler does not set the LR afresh. The trainer's LambdaLR writes base LR × factor at its next
    ``step()``, so there the scale touches this update only. A group with a non-numeric lr (Adafactor's
    relative step: None) is left alone, and so is a group marked ``batch_scale: False`` (:func:`param_groups`)."""
    s = batch_scale(kept_fraction, rule)
    if s == 1.0:
        return None
    saved = [g["lr"] for g in optimizer.param_groups]
    for g in optimizer.param_groups:
        if g.get("batch_scale", True) and isinstance(g["lr"], (float, int, torch.Tensor)):
            g["lr"] = g["lr"] * s
    return saved


def horizon_progress(by_steps: float, clock: float | None, horizon: str) -> float:
    """The run's spent fraction in [0, 1], one rule for the LR decay and the keep anneal (``anneal_horizon``):
    the step fraction (``horizon=steps``, or no clock), the clock's spent share of the time budget
    (``budget``), or whichever is further along (``auto``: the run ends at the sooner of the two)."""
    if clock is None or horizon == "steps":
        p = by_steps
    elif horizon == "budget":
        p = clock
    else:
        p = max(by_steps, clock)
    return min(1.0, max(0.0, p))


def lr_factor(step: int, cfg: OptimConfig, max_steps: int, progress: float | None = None) -> float:
    """Multiplier of the peak lr at ``step``: linear warmup, then linear / cosine / constant decay.

    The decay spans ``max_steps`` (``lr_horizon=steps``), the spent fraction ``progress`` of a time budget
    (``budget``: the decay ends when the budget does, whatever the step cost), or whichever of the two is
    further along (``auto``, the default: the decay ends when the run ends). ``progress=None`` = steps.
    """
    if cfg.lr_warmup_steps and step < cfg.lr_warmup_steps:
        return (step + 1) / cfg.lr_warmup_steps
    if cfg.lr_decay == "constant":
        return 1.0
    by_steps = (step - cfg.lr_warmup_steps) / max(1, max_steps - cfg.lr_warmup_steps)
    progress = horizon_progress(by_steps, progress, cfg.lr_horizon)
    shape = 1.0 - progress if cfg.lr_decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * shape


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, max_steps: int,
                    progress: LrProgress | None = None):
    """LambdaLR over :func:`lr_factor`; ``progress`` (the loop's time fraction) enters unless lr_horizon=steps."""
    if cfg.lr_horizon != "steps" and progress is None:
        raise ValueError(f"lr_horizon={cfg.lr_horizon} needs the loop's LrProgress")
    p = progress if cfg.lr_horizon != "steps" else None
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg, max_steps, None if p is None else p.value))
