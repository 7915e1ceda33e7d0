"""The scoring pass, one implementation for every entry point (CLI loop, overlap scorer, telemetry, Megatron).

* :func:`criterion_for` — the criterion a selection mode scores with;
* :func:`wants_scores` — whether a step with a given plan runs the scoring pass;
* :func:`score_positions` — which masked tokens are scored (``score_tokens``: a seeded subset per sequence);
* :func:`score_candidates` — early-exit scores of a batch already on the model's device;
* :func:`compute_scores` — the same for a host batch on an engine (ZeRO-3 gather included), host scores out.

The math below the exit (head on the masked rows, loss / entropy, per-sequence mean) is
``sift_fast.ops.exit_scores_rows`` (torch reference or the fused Triton kernel).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from sift_fast.ops import exit_scores_rows


def criterion_for(selection: str) -> str:
    """The scoring criterion of a selection mode (``random`` pays for ``loss`` when asked to)."""
    return "loss" if selection in ("loss", "random") else "entropy"


def wants_scores(plan: Any, cfg: Any) -> bool:
    """Whether a step with ``plan`` (a ``selection.Plan``) runs the scoring pass under ``cfg`` (a ``SiftConfig``).

    ``score`` plans always do; a ``uniform`` plan does only for selection ``random`` with
    ``random_pays_scoring`` (same compute as SIFT, scores ignored); warmup and interrupt steps do not.
    """
    return plan.mode == "score" or (plan.mode == "uniform" and cfg.selection == "random" and cfg.random_pays_scoring)


def score_positions(selector: Any, cfg: Any, batch_host: Any) -> torch.Tensor | None:
    """Positions (into the batch's masked list) to score, or None for all: ``cfg.score_tokens`` per sequence."""
    return selector.score_subset(batch_host.masked_seq, cfg.score_tokens) if cfg.score_tokens else None


def scoring_context(engine: Any, exit_layer: int) -> contextlib.AbstractContextManager:
    """The engine's context around a scoring pass (ZeRO-3 gathers the exit's parameters); a no-op otherwise.

    Every ``Engine`` declares ``scoring_context``; a bare duck-typed engine (``module``, ``device``,
    ``autocast``) without one scores as a plain model.
    """
    gather = getattr(engine, "scoring_context", None)
    return gather(exit_layer) if gather is not None else contextlib.nullcontext()


def score_candidates(
    model: Any,
    batch: Any,
    exit_layer: int,
    criterion: str,
    *,
    positions: torch.Tensor | None = None,
    backend: str = "auto",
    autocast: contextlib.AbstractContextManager | None = None,
) -> torch.Tensor:
    """Early-exit score of every candidate (fp32 ``[C]`` on the batch's device), no grad.

    ``model`` is an ``MLMEncoder``; ``positions`` (into the batch's masked list) restricts scoring to a
    subset of masked tokens.
    """
    idx, seq, tgt = batch.masked_index, batch.masked_seq, batch.masked_targets
    if positions is not None:
        positions = positions.to(idx.device, non_blocking=True)
        idx, seq, tgt = idx[positions], seq[positions], tgt[positions]
    with torch.no_grad(), autocast or contextlib.nullcontext():
        rows = model.exit_rows(batch, exit_layer, idx)
        weight, bias = model.decoder_params()
        return exit_scores_rows(
            rows, weight.detach(), None if bias is None else bias.detach(), tgt, seq, batch.size, criterion,
            backend=backend, seq_ids_sorted=True,
        )


def compute_scores(engine: Any, selector: Any, cfg: Any, batch_host: Any, exit_layer: int, timer: Any,
                   *, to_host: bool = True) -> torch.Tensor:
    """Scoring pass of a host batch on the engine's device, timed as phase ``score``; host scores ``[C]``.

    ``to_host=False`` returns the device tensor (the overlap scorer copies it on its own stream).
    """
    with timer.phase("score"):
        positions = score_positions(selector, cfg, batch_host)
        if positions is not None and engine.device.type == "cuda":
            positions = positions.pin_memory()  # async H2D
        cand = batch_host.to(engine.device, non_blocking=True)  # unpadded batches run maskless (no sync)
        with scoring_context(engine, exit_layer):
            scores = score_candidates(engine.module, cand, exit_layer, criterion_for(cfg.selection),
                                      positions=positions, backend=cfg.backend, autocast=engine.autocast())
        return scores.cpu() if to_host else scores
