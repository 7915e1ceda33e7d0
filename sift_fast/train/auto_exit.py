"""Automatic exit layer (``--exit-layer auto``): re-pick the scoring depth from selection telemetry.

Each telemetry measurement (see :mod:`sift_fast.train.telemetry_hook`) gives, per exit layer k, the
top-k overlap of the layer-k selection with the selection full-depth scoring would make under the
run's criterion (``topk_overlap_self``). An exponential moving average smooths it over the last few
measurements. Every ``every`` steps the controller picks

* the cheapest layer whose smoothed overlap is >= ``threshold``; the cost model is the scoring pass
  of layer k ≈ ``(k + head) / (L + head)`` of a full no-grad forward over the candidates (embeddings
  and the MLM head on masked rows are the fixed ``head`` part, in layer units), so cheapest = shallowest;
* if no layer reaches the threshold: the layer maximizing ``overlap - cost_weight * cost(k)``.

A shallower layer replaces the current one only if it clears the threshold by ``margin`` (hysteresis,
so measurement noise does not make the layer flap). Every change is logged as an
``exit_layer_change`` record and a console line. The EMA is checkpointed through ``state_dict``.
"""

from __future__ import annotations

from typing import Any


def scoring_cost(k: int, num_layers: int, head: float = 0.25) -> float:
    """Relative cost of scoring at exit layer ``k`` (1.0 = a full-depth scoring forward)."""
    return (k + head) / (num_layers + head)


def choose_layer(overlap: list[float], threshold: float, current: int, *, margin: float = 0.05,
                 cost_weight: float = 0.1, head: float = 0.25) -> int:
    """The exit layer (1-based) for smoothed per-layer ``overlap``; see the module docstring."""
    n = len(overlap)
    ok = [k for k in range(1, n + 1) if overlap[k - 1] >= threshold]
    if ok:
        best = ok[0]
        if best < current and current in ok and overlap[best - 1] < threshold + margin:
            return current  # not clearly good enough to move shallower
        return best
    utility = [overlap[k - 1] - cost_weight * scoring_cost(k, n, head) for k in range(1, n + 1)]
    return max(range(1, n + 1), key=lambda k: (utility[k - 1], -k))


class AutoExit:
    """Telemetry listener that sets ``trainer.exit_layer`` every ``every`` steps."""

    name = "auto_exit"

    def __init__(self, threshold: float, every: int, *, alpha: float = 0.5, margin: float = 0.05,
                 cost_weight: float = 0.1) -> None:
        self.threshold, self.every, self.alpha = threshold, every, alpha
        self.margin, self.cost_weight = margin, cost_weight
        self.ema: list[float] | None = None
        self.last_decision = 0

    def observe(self, overlap: list[float]) -> list[float]:
        """Fold one measurement into the EMA; returns it."""
        if self.ema is None or len(self.ema) != len(overlap):
            self.ema = list(overlap)
        else:
            self.ema = [self.alpha * o + (1 - self.alpha) * e for o, e in zip(overlap, self.ema)]
        return self.ema

    def __call__(self, trainer, record: dict[str, Any]) -> None:
        ema = self.observe(record["topk_overlap_self"])
        if trainer.step - self.last_decision < self.every:
            return
        self.last_decision = trainer.step
        old = trainer.exit_layer
        new = choose_layer(ema, self.threshold, old, margin=self.margin, cost_weight=self.cost_weight)
        if new != old:
            trainer.exit_layer = new
            trainer.metrics.write({"type": "exit_layer_change", "step": trainer.step, "from": old, "to": new,
                                   "overlap": ema[new - 1], "overlap_from": ema[old - 1], "overlaps": ema})
            trainer.console.log(f"step {trainer.step}: exit layer {old} -> {new} "
                                f"(smoothed top-k overlap {ema[old - 1]:.3f} -> {ema[new - 1]:.3f}, "
                                f"threshold {self.threshold:g})")

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema, "last_decision": self.last_decision}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema = None if state["ema"] is None else list(state["ema"])
        self.last_decision = int(state["last_decision"])


def telemetry_interval(telemetry_every: int, auto_every: int) -> int:
    """Measurement interval when the exit layer is automatic: the telemetry's, else 4 per decision."""
    return telemetry_every if telemetry_every else max(1, auto_every // 4)
