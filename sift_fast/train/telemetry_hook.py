"""Selection telemetry: how well the early-exit ranking of a candidate batch agrees with full depth.

Every ``every`` steps, one no-grad eval-mode forward over the step's candidate batch collects the hidden
state after each layer 1..L; the MLM head on the masked rows gives, per layer, the per-sequence mean
loss and entropy. The full-depth (layer L) per-sequence loss is the reference. Per exit layer k it logs

* ``spearman[k-1]``: Spearman rank correlation (average ranks for ties) of the layer-k score under the
  run's criterion with the full-depth loss, over sequences that have a masked token;
* ``topk_overlap[k-1]``: |top-k(layer-k score) ∩ top-k(full-depth loss)| / k, k = the backprop size;
* ``spearman_self`` / ``topk_overlap_self``: the same against the full-depth score of the run's own
  criterion (what scoring at full depth would select; equal to the above for the loss criterion);
* ``kept_loss_ratio[k-1]``: mean full-depth loss of the top-k by layer-k score / mean over all candidates;
  ``kept_full_loss_ratio`` is that ratio at the current exit layer, and ``step_kept_full_loss_ratio``
  the same for the candidates the step actually kept.

The hook runs after the step's optimizer update, so all layers are compared under the same (updated)
weights. Its cost (about one no-grad forward over the candidates plus L head passes on the masked rows)
is logged as ``cost_s``; it is added to the run's training clock only when ``charge`` is set (the
automatic exit layer, which depends on it). It consumes no random numbers, so resume stays exact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from sift_fast.models.hf import MLMEncoder, eval_mode
from sift_fast.ops import select_topk
from sift_fast.reference import segment_mean, token_stats
from sift_fast.scoring import criterion_for


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """0-based ranks of ``x`` (1-D), ties getting the average of their positions (fp64)."""
    values, order = torch.sort(x.double(), stable=True)
    _, inverse, counts = torch.unique_consecutive(values, return_inverse=True, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    avg = starts.double() + (counts.double() - 1.0) / 2.0
    ranks = torch.empty_like(values)
    ranks[order] = avg[inverse]
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors (Pearson on average ranks); NaN if either is constant."""
    if a.numel() < 2:
        return float("nan")
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = (ra.square().sum() * rb.square().sum()).sqrt()
    return float("nan") if denom == 0 else float((ra * rb).sum() / denom)


def topk_overlap(a: torch.Tensor, b: torch.Tensor, k: int) -> float:
    """|top-k(a) ∩ top-k(b)| / k with the trainer's deterministic top-k (ties to the lower index)."""
    k = max(1, min(k, a.numel()))
    sa, sb = set(select_topk(a, k).tolist()), set(select_topk(b, k).tolist())
    return len(sa & sb) / k


@torch.no_grad()
def layer_scores(model: MLMEncoder, batch, autocast: contextlib.AbstractContextManager | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-layer per-sequence mean loss and entropy over masked tokens: two fp32 ``[L, B]`` (``-inf``: none).

    One forward through all layers in eval mode; layer k's rows equal ``model.exit_rows(batch, k, ...)``.
    """
    idx, seq, tgt = batch.masked_index, batch.masked_seq, batch.masked_targets
    weight, bias = model.decoder_params()
    weight, bias = weight.detach(), None if bias is None else bias.detach()
    losses, ents = [], []
    valid = torch.ones_like(tgt, dtype=torch.bool)
    with eval_mode([model]), autocast or contextlib.nullcontext():
        h, mask = model.embed(batch.input_ids, batch.attention_mask, getattr(batch, "token_type_ids", None))
        for layer in model.layers:
            h = layer(h, attention_mask=mask)
            rows = model.head_transform(h.reshape(-1, h.shape[-1]).index_select(0, idx))
            loss, ent = token_stats(rows, weight, bias, tgt)
            losses.append(segment_mean(loss, seq, valid, batch.size))
            ents.append(segment_mean(ent, seq, valid, batch.size))
    return torch.stack(losses).cpu(), torch.stack(ents).cpu()


def agreement(scores: torch.Tensor, reference: torch.Tensor, k: int) -> tuple[list[float], list[float]]:
    """Per layer (rows of ``scores [L, B]``): Spearman with ``reference [B]`` and top-k overlap."""
    has = torch.isfinite(reference)
    rho = [spearman(s[has], reference[has]) for s in scores]
    over = [topk_overlap(s, reference, k) for s in scores]
    return rho, over


def telemetry_record(model: MLMEncoder, batch, criterion: str, k: int, exit_layer: int,
                     kept: torch.Tensor | None = None,
                     autocast: contextlib.AbstractContextManager | None = None) -> dict[str, Any]:
    """The ``selection_telemetry`` record (without ``step``) for one candidate batch on the model's device."""
    losses, ents = layer_scores(model, batch, autocast)
    crit = losses if criterion == "loss" else ents
    ref = losses[-1]
    has = torch.isfinite(ref)
    rho, over = agreement(crit, ref, k)
    rho_self, over_self = agreement(crit, crit[-1], k)
    mean_all = ref[has].mean().item() if has.any() else float("nan")

    def ratio(rows: torch.Tensor) -> float:
        r = ref[rows]
        r = r[torch.isfinite(r)]
        return r.mean().item() / mean_all if r.numel() and mean_all else float("nan")

    kept_ratio = [ratio(select_topk(s, max(1, min(k, s.numel())))) for s in crit]
    rec: dict[str, Any] = {
        "type": "selection_telemetry", "criterion": criterion, "k": k, "candidates": int(batch.size),
        "exit_layer": exit_layer, "spearman": rho, "topk_overlap": over, "spearman_self": rho_self,
        "topk_overlap_self": over_self, "kept_loss_ratio": kept_ratio,
        "kept_full_loss_ratio": kept_ratio[exit_layer - 1], "full_loss_mean": mean_all,
        "step_kept_full_loss_ratio": None if kept is None else ratio(kept.cpu()),
    }
    return rec


Listener = Callable[[Any, dict[str, Any]], None]


class SelectionTelemetry:
    """Step hook: every ``every`` steps, a ``selection_telemetry`` record into metrics.jsonl.

    ``listeners`` get ``(trainer, record)`` after each measurement (the automatic exit layer is one).
    """

    name = "selection_telemetry"

    def __init__(self, every: int, *, charge: bool = False, listeners: list[Listener] | None = None) -> None:
        if every < 1:
            raise ValueError(f"telemetry every must be >= 1; got {every}")
        self.every, self.charge = every, charge
        self.listeners: list[Listener] = list(listeners or [])

    def __call__(self, trainer, res) -> None:
        if trainer.step % self.every or res.batch is None:
            return
        cfg = trainer.cfg.sift
        criterion = criterion_for(cfg.selection)
        k = cfg.keep_size if res.plan.mode == "all" else res.plan.keep_count  # selection none: the would-be top-k
        kept = res.kept if res.plan.mode == "score" else None
        t0 = trainer.clock()
        batch = res.batch.to(trainer.device, non_blocking=True)
        rec = telemetry_record(trainer.engine.module, batch, criterion, k, trainer.exit_layer, kept,
                               trainer.engine.autocast())
        cost = trainer.clock() - t0
        if self.charge:
            trainer.train_time += cost
        rec.update(step=trainer.step, cost_s=cost, charged=self.charge)
        trainer.metrics.write(rec)
        for listener in self.listeners:
            listener(trainer, rec)

    # --- checkpoint: the listeners' state (the automatic exit layer's EMA) --------------------------
    def state_dict(self) -> dict[str, Any]:
        return {ls.name: ls.state_dict() for ls in self.listeners if hasattr(ls, "state_dict")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for ls in self.listeners:
            if hasattr(ls, "load_state_dict") and ls.name in state:
                ls.load_state_dict(state[ls.name])


def install(trainer) -> SelectionTelemetry | None:
    """Register the telemetry hook (and the automatic exit layer) on ``trainer`` as its config asks."""
    from sift_fast.train.auto_exit import AutoExit, telemetry_interval

    sift, every = trainer.cfg.sift, trainer.cfg.train.telemetry_every
    auto = sift.exit_layer == "auto"
    if not (every or auto):
        return None
    listeners: list[Listener] = [AutoExit(sift.exit_auto_overlap, sift.exit_auto_every)] if auto else []
    hook = SelectionTelemetry(telemetry_interval(every, sift.exit_auto_every) if auto else every,
                              charge=auto, listeners=listeners)
    trainer.step_hooks.append(hook)
    return hook
