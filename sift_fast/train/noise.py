"""Adaptive keep from the gradient noise scale: SIFT while small batches pay, the full batch once they don't.

Why: SIFT's early win is partly "more, cheaper steps" at half the backprop batch. That pays while the
gradient noise is small next to its signal and stops paying once the *noise scale*
``B_noise = tr(Σ) / |G|²`` (per-sample gradient covariance over the squared true gradient) outgrows the
batch: then a step's progress is noise-limited and halving the batch halves it (McCandlish et al.
2018, "An Empirical Model of Large-Batch Training": steps ∝ 1 + B_noise/B). The noise scale grows as
training proceeds, which is where the fixed-keep arms fall behind the baseline.

Signal (no extra forward, no host sync on the hot path): every ``noise_every`` steps the kept batch of
k sequences runs as two micro-batches into the same ``.grad`` (the gradient is unchanged); the squared
gradient norm after the first half ``|g_s|²`` (rescaled to that half's mean) and after both ``|G_k|²``
give the unbiased estimates of McCandlish et al. (App. A.1)::

    |G|²  ≈ (B_b |G_b|² − B_s |g_s|²) / (B_b − B_s)       tr(Σ) ≈ (|g_s|² − |G_b|²) / (1/B_s − 1/B_b)

each smoothed by an exponential moving average (``noise_decay`` per probe) before their ratio.

Rule: with ``cost(k)`` the step's FLOPs (``3·k·F_full`` + the scoring pass ``C·F_exit``; the full batch
needs no scoring), pick the backprop size ``k`` in [round(keep·C), C] minimising the predicted time per
unit of progress ``(1 + noise_scale·B_noise/k) · cost(k)``. The rule ignores what selection adds beyond
cheaper steps, so it errs towards the baseline. Deterministic: a function of gradients and shapes only,
never of timings, so runs and resumes stay bitwise reproducible.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from sift_fast.config import Config


def step_flops(cfg: Config, vocab_size: int, kept: int, *, scoring: bool) -> float:
    """Analytic FLOPs of one step (2 per multiply-add; backward = 2× forward; head on the masked rows)."""
    m, s = cfg.model, cfg.data.seq_len
    h, inter = m.hidden_size, m.intermediate_size
    layer = 8 * s * h * h + 4 * s * s * h + 4 * s * h * inter
    head = cfg.data.mask_prob * s * (2 * h * h + 2 * h * vocab_size)
    full = 3 * kept * (m.num_layers * layer + head)
    exit_layer = cfg.sift.exit_layer if isinstance(cfg.sift.exit_layer, int) else 1
    return full + (cfg.sift.candidates * (exit_layer * layer + head) if scoring else 0.0)


def grad_sq_norm(params: list[torch.nn.Parameter]) -> torch.Tensor:
    """Σ ‖p.grad‖² over the parameters with a gradient, as a device fp32 scalar (no host sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norms = torch._foreach_norm(grads)
    return torch.stack([n.float() for n in norms]).square().sum()


class NoiseScale:
    """EMA estimates of ``|G|²`` and ``tr(Σ)`` from two-batch-size probes; their ratio is ``B_noise``.

    ``record`` takes device scalars and reads them only at the next ``poll`` (one probe later), so on
    CUDA the values are long computed by then and reading them does not stall the stream.
    """

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.g2 = 0.0  # EMA of the |G|² estimates
        self.trace = 0.0  # EMA of the tr(Σ) estimates
        self.weight = 0.0  # EMA of 1s: bias correction (cancels in the ratio, kept for the logged parts)
        self.probes = 0
        self._pending: list[tuple[torch.Tensor, int, int]] = []

    def record(self, small_sq: torch.Tensor, b_small: int, big_sq: torch.Tensor, b_big: int) -> None:
        """One probe: ``small_sq`` = |g|² of the mean gradient of ``b_small`` samples, ``big_sq`` of ``b_big``."""
        pair = torch.stack([small_sq.detach().float(), big_sq.detach().float()])
        if pair.device.type == "cuda":
            pair = pair.to("cpu", non_blocking=True)
        self._pending.append((pair, b_small, b_big))

    def poll(self) -> None:
        """Fold the recorded probes into the averages."""
        for pair, bs, bb in self._pending:
            small, big = (float(x) for x in pair.tolist())
            if not (math.isfinite(small) and math.isfinite(big)):
                continue
            g2 = (bb * big - bs * small) / (bb - bs)
            trace = (small - big) / (1.0 / bs - 1.0 / bb)
            d = self.decay
            self.g2, self.trace, self.weight = d * self.g2 + (1 - d) * g2, d * self.trace + (1 - d) * trace, \
                d * self.weight + (1 - d)
            self.probes += 1
        self._pending = []

    @property
    def value(self) -> float | None:
        """``B_noise`` in samples; None before the first probe, inf when the signal estimate is ≤ 0."""
        if not self.probes:
            return None
        if self.g2 <= 0:
            return math.inf
        return max(0.0, self.trace / self.g2)

    def state_dict(self) -> dict[str, Any]:
        self.poll()
        return {"g2": self.g2, "trace": self.trace, "weight": self.weight, "probes": self.probes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.g2, self.trace, self.weight, self.probes = state["g2"], state["trace"], state["weight"], state["probes"]
        self._pending = []


class AdaptiveKeep:
    """Backprop size from the noise scale and the FLOP cost model (see the module docstring)."""

    def __init__(self, cfg: Config, vocab_size: int) -> None:
        sc = cfg.sift
        self.every, self.factor = sc.noise_every, sc.noise_scale
        self.noise = NoiseScale(sc.noise_decay)
        c, base = sc.candidates, sc.backprop_size
        quantum = max(1, c // 16)
        sizes = sorted({min(c, base + i * quantum) for i in range((c - base) // quantum + 2)})
        self.costs = {k: step_flops(cfg, vocab_size, k, scoring=k < c) for k in sizes}
        self.base = base
        self.k = base

    def due(self, step: int) -> bool:
        """Whether step ``step`` runs the two-micro-batch probe."""
        return step % self.every == 0

    def update(self) -> int:
        """Poll the probes and return the backprop size for the next steps."""
        self.noise.poll()
        b = self.noise.value
        if b is not None:
            b = self.factor * b
            self.k = min(self.costs, key=lambda k: (1.0 + b / k) * self.costs[k] if math.isfinite(b) else -k)
        return self.k

    def state_dict(self) -> dict[str, Any]:
        return {"noise": self.noise.state_dict(), "k": self.k}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.noise.load_state_dict(state["noise"])
        self.k = state["k"]
