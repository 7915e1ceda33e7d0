"""Selection policy: which candidates of a step are backpropagated.

Per step the policy decides a *plan*:

* ``all``     — backprop every candidate (selection ``none``, or keep annealed to 1.0); no scoring.
* ``uniform`` — a seeded uniform sample of the backprop size; no scoring (selection ``random``, the
  warmup steps, and every ``interrupt_every``-th step).
* ``score``   — score the candidates at the exit layer and keep the top ``backprop size``.

Kept indices are returned in ascending order: sample order inside a batch does not change the
gradient, and a fixed order makes ``keep = 1.0`` bit-identical to the baseline.

Rule ``topk`` keeps the highest scores. Rule ``sample`` (importance sampling, Katharopoulos & Fleuret
2018; InfoBatch-style rescaling) draws the ``k`` kept sequences with replacement from
``p = (1 - mix)·score/Σscore + mix/C`` and weights sequence ``i``'s token losses by ``1 / (k·p_i·N_C)``
(``N_C``: masked tokens of all ``C`` candidates), so the expected loss and gradient equal the
baseline's token mean over every candidate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from sift_fast.config import SiftConfig
from sift_fast.ops import select_topk


@dataclass(frozen=True)
class Plan:
    mode: str  # all | uniform | score
    keep_count: int


@dataclass
class Selection:
    """What a step backpropagates: ``batch.select(kept)``.

    ``batch`` is the step's host candidate batch, or, under global selection, the gathered batch of
    all ranks (``kept`` then indexes it); ``scores`` are that batch's candidate scores when the step
    scored. ``weights`` (per kept sequence, optional) reweight the loss of a sampled selection
    (``Σ w·CE`` over each kept sequence's masked tokens); None is the plain mean over the kept tokens.
    """

    kept: torch.Tensor  # ascending candidate indices into ``batch`` (host)
    batch: Any
    scores: torch.Tensor | None = None
    weights: torch.Tensor | None = None

    def __iter__(self):
        """Unpacks as ``kept, batch, scores`` (the tuple global selection returned before this class)."""
        return iter((self.kept, self.batch, self.scores))


# ``select_fn(plan, host_batch, scores) -> Selection`` replaces the local selection (global selection across ranks)
SelectFn = Callable[[Plan, Any, "torch.Tensor | None"], Selection]


class Selector:
    """Seeded selection policy with a warmup / anneal / interrupt schedule; its state is checkpointed."""

    def __init__(self, cfg: SiftConfig, seed: int = 0) -> None:
        self.cfg = cfg
        self.generator = torch.Generator().manual_seed(seed + 0x5EED)
        self.dynamic_k: int | None = None  # set by the adaptive keep rule (train/noise.py)
        self.progress: float | None = None  # the run's spent horizon fraction, set by the loop (anneal_horizon)

    # --- schedule ---------------------------------------------------------------------------------
    @property
    def switched(self) -> bool:
        """Whether the run is past ``select_until`` of its horizon: plain full-batch steps from then on."""
        return self.cfg.select_until < 1.0 and self.progress is not None and self.progress >= self.cfg.select_until

    def keep_count(self, step: int) -> int:
        """Backprop batch size at ``step`` (annealed linearly to all candidates when configured: by step
        ``anneal_until``, or by the fraction ``anneal_horizon`` of the run's horizon, ``self.progress``); all
        candidates once ``select_until`` of the horizon is spent (:attr:`switched`)."""
        cfg, c = self.cfg, self.cfg.candidates
        base = cfg.backprop_size
        if self.switched:
            return c
        if self.dynamic_k is not None and cfg.selection != "none":
            return self.dynamic_k
        if step < cfg.selection_warmup_steps:
            return base
        if cfg.anneal_until:
            frac = min(1.0, (step - cfg.selection_warmup_steps) / (cfg.anneal_until - cfg.selection_warmup_steps))
        elif cfg.anneal_horizon and self.progress is not None:
            frac = min(1.0, max(0.0, self.progress) / cfg.anneal_horizon)
        else:
            return base
        return min(c, round(base + frac * (c - base)))

    def plan(self, step: int) -> Plan:
        cfg = self.cfg
        k = self.keep_count(step)
        if cfg.selection == "none" or k >= cfg.candidates:
            return Plan("all", cfg.candidates)
        if (
            cfg.selection == "random"
            or step < cfg.selection_warmup_steps
            or (cfg.interrupt_every and step % cfg.interrupt_every == cfg.interrupt_every - 1)
        ):
            return Plan("uniform", k)
        return Plan("score", k)

    # --- choosing ---------------------------------------------------------------------------------
    def uniform(self, n: int, k: int) -> torch.Tensor:
        """``k`` of ``n`` indices uniformly without replacement, ascending (CPU LongTensor)."""
        return torch.randperm(n, generator=self.generator)[:k].sort().values

    def select(self, plan: Plan, n: int, scores: torch.Tensor | None = None) -> torch.Tensor:
        """Kept indices for ``plan`` over ``n`` candidates, ascending; ``scores`` for mode ``score``."""
        if plan.mode == "all":
            return torch.arange(n)
        if plan.mode == "uniform":
            return self.uniform(n, plan.keep_count)
        if scores is None:
            raise ValueError("mode 'score' needs scores")
        return select_topk(scores, plan.keep_count).sort().values

    def probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """Sampling distribution of rule ``sample`` over the candidates (fp64, host)."""
        s = scores.detach().double().cpu()
        s = torch.where(torch.isfinite(s) & (s > 0), s, torch.zeros_like(s))
        n, mix = s.numel(), self.cfg.sample_mix
        total = float(s.sum())
        if total <= 0:
            return torch.full((n,), 1.0 / n, dtype=torch.float64)
        return (1.0 - mix) * s / total + mix / n

    def sample(self, scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rule ``sample``: ``k`` draws with replacement (ascending) and each draw's probability."""
        p = self.probabilities(scores)
        kept = torch.multinomial(p, k, replacement=True, generator=self.generator).sort().values
        return kept, p[kept]

    def sample_weights(self, p_kept: torch.Tensor, num_masked_total: int) -> torch.Tensor:
        """Per kept sequence loss weight ``1 / (k·p·N_C)`` of rule ``sample`` (fp32, host)."""
        return (1.0 / (p_kept.numel() * p_kept * max(1, num_masked_total))).float()

    def selection(self, plan: Plan, batch: Any, scores: torch.Tensor | None = None) -> Selection:
        """The local :class:`Selection` of ``batch`` (its scores are used for mode ``score`` only)."""
        if plan.mode == "score" and self.cfg.selection_rule == "sample":
            if scores is None:
                raise ValueError("mode 'score' needs scores")
            kept, p_kept = self.sample(scores, plan.keep_count)
            return Selection(kept, batch, scores, self.sample_weights(p_kept, batch.num_masked))
        return Selection(self.select(plan, batch.size, scores if plan.mode == "score" else None), batch, scores)

    def score_subset(self, masked_seq: torch.Tensor, max_per_seq: int) -> torch.Tensor:
        """Positions (into the masked list) to score: at most ``max_per_seq`` per sequence, seeded.

        ``masked_seq`` is the (non-decreasing) sequence id of each masked position, on the host.
        Returns ascending positions; all of them when ``max_per_seq`` is 0.
        """
        m = masked_seq.numel()
        if max_per_seq <= 0 or m == 0:
            return torch.arange(m)
        keys = torch.rand(m, generator=self.generator, dtype=torch.float64)
        order = torch.argsort(masked_seq.double() * 2.0 + keys, stable=True)  # by sequence, then key
        seq_sorted = masked_seq[order]
        first = torch.searchsorted(seq_sorted, seq_sorted, right=False)
        rank = torch.arange(m) - first
        return order[rank < max_per_seq].sort().values

    # --- checkpoint -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
