"""One SIFT training step: score the candidates at the early exit, select, forward + backward the kept.

The same function serves every engine (plain PyTorch, DeepSpeed) and every selection mode; the
baseline (selection ``none``) runs the same lines with plan ``all``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sift_fast.config import SiftConfig
from sift_fast.models.hf import MLMEncoder
from sift_fast.ops import exit_scores_rows
from sift_fast.selection import Plan, Selector


@dataclass
class StepResult:
    loss: torch.Tensor  # detached, on the device
    num_correct: torch.Tensor
    num_rows: int  # masked tokens in the kept batch
    plan: Plan
    kept: torch.Tensor  # kept candidate indices, ascending (host)
    scores: torch.Tensor | None  # candidate scores (host) when the step scored
    num_candidates: int
    batch: object = None  # the host candidate batch


def score_candidates(
    model: MLMEncoder,
    batch,
    exit_layer: int,
    criterion: str,
    *,
    positions: torch.Tensor | None = None,
    backend: str = "auto",
    autocast: contextlib.AbstractContextManager | None = None,
) -> torch.Tensor:
    """Early-exit score of every candidate (fp32 ``[C]`` on the batch's device), no grad.

    ``positions`` (into the batch's masked list) restricts scoring to a subset of masked tokens.
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


def criterion_for(selection: str) -> str:
    """The scoring criterion of a selection mode (``random`` pays for ``loss`` when asked to)."""
    return "loss" if selection in ("loss", "random") else "entropy"


def wants_scores(plan: Plan, cfg: SiftConfig) -> bool:
    """Whether this step's plan runs the scoring pass (``random`` may pay for it to match compute)."""
    return plan.mode == "score" or (plan.mode == "uniform" and cfg.selection == "random" and cfg.random_pays_scoring)


def compute_scores(engine, selector: Selector, cfg: SiftConfig, batch_host, exit_layer: int, timer) -> torch.Tensor:
    """Scoring pass of a host batch on the engine's device; returns host scores ``[C]``."""
    criterion = criterion_for(cfg.selection)
    with timer.phase("score"):
        positions = selector.score_subset(batch_host.masked_seq, cfg.score_tokens) if cfg.score_tokens else None
        cand = batch_host.to(engine.device, non_blocking=True)
        gather = getattr(engine, "scoring_context", None)  # ZeRO-3: gathers exactly the exit's parameters
        with gather(exit_layer) if gather is not None else contextlib.nullcontext():
            scores = score_candidates(
                engine.module, cand, exit_layer, criterion, positions=positions, backend=cfg.backend,
                autocast=engine.autocast(),
            )
        return scores.cpu()


def sift_step(
    engine,
    selector: Selector,
    batch_host,
    step: int,
    cfg: SiftConfig,
    timer,
    *,
    exit_layer: int,
    scores: torch.Tensor | None = None,
    after_backward: Callable[[], None] | None = None,
    select_fn: Callable | None = None,
    before_forward: Callable[[], None] | None = None,
) -> StepResult:
    """Run step ``step`` on the host candidate batch.

    ``scores``: precomputed candidate scores (the overlap modes score step t+1 during step t);
    ``after_backward``: called between backward and the optimizer update (where the overlap modes
    score the next batch with this step's weights); ``select_fn(plan, batch_host, scores) -> kept``
    replaces the local selection (global selection across data-parallel ranks returns
    ``(kept, gathered_batch, gathered_scores)``: ``kept`` then indexes the gathered batch); ``before_forward``:
    called after selection, before the forward (``overlap=on`` launches the side-stream scoring there).
    """
    plan = selector.plan(step)
    if scores is None and wants_scores(plan, cfg):
        scores = compute_scores(engine, selector, cfg, batch_host, exit_layer, timer)
    with timer.phase("select"):
        source = batch_host
        if select_fn is not None:
            kept = select_fn(plan, batch_host, scores)
            if isinstance(kept, tuple):  # global selection: kept indexes the gathered batch of all ranks
                kept, source, scores = kept
        else:
            kept = selector.select(plan, batch_host.size, scores if plan.mode == "score" else None)
        sub = source if plan.mode == "all" else source.select(kept)
        if sub is not batch_host and engine.device.type == "cuda":
            sub = sub.pin_memory()  # async H2D
        sub = sub.to(engine.device, non_blocking=True)
    if before_forward is not None:
        before_forward()
    with timer.phase("forward"):
        out = engine.forward(sub)
    with timer.phase("backward"):
        engine.backward(out.loss)
    if after_backward is not None:
        after_backward()
    with timer.phase("optimizer"):
        engine.step()
    return StepResult(
        loss=out.loss.detach(), num_correct=out.num_correct, num_rows=out.num_rows, plan=plan, kept=kept,
        scores=scores, num_candidates=batch_host.size, batch=source,
    )
