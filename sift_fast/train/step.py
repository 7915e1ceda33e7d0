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
from sift_fast.models.hf import MLMEncoder, MLMOutput
from sift_fast.ops import exit_scores_rows
from sift_fast.selection import Plan, Selector
from sift_fast.train.noise import NoiseScale


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
    probe: NoiseScale | None = None,
) -> StepResult:
    """Run step ``step`` on the host candidate batch.

    ``scores``: precomputed candidate scores (the overlap modes score step t+1 during step t);
    ``after_backward``: called between backward and the optimizer update (where the overlap modes
    score the next batch with this step's weights); ``select_fn(plan, batch_host, scores) -> kept``
    replaces the local selection (global selection across data-parallel ranks returns
    ``(kept, gathered_batch, gathered_scores)``: ``kept`` then indexes the gathered batch); ``before_forward``:
    called after selection, before the forward (``overlap=on`` launches the side-stream scoring there);
    ``probe``: run the kept batch as two micro-batches and record the gradient-noise probe into it.
    """
    plan = selector.plan(step)
    if scores is None and wants_scores(plan, cfg):
        scores = compute_scores(engine, selector, cfg, batch_host, exit_layer, timer)
    seq_w = row_weight = None
    with timer.phase("select"):
        source = batch_host
        if select_fn is not None:
            kept = select_fn(plan, batch_host, scores)
            if isinstance(kept, tuple):  # global selection: kept indexes the gathered batch of all ranks
                kept, source, scores = kept
        elif plan.mode == "score" and cfg.selection_rule == "sample":
            kept, p_kept = selector.sample(scores, plan.keep_count)
            seq_w = selector.sample_weights(p_kept, batch_host.num_masked)
        else:
            kept = selector.select(plan, batch_host.size, scores if plan.mode == "score" else None)
        sub = source if plan.mode == "all" else source.select(kept)
        if seq_w is not None:  # per masked row, from the host-side CSR offsets (no sync)
            row_weight = torch.repeat_interleave(seq_w, sub.masked_row_ptr.diff()).to(engine.device, non_blocking=True)
        if sub is not batch_host and engine.device.type == "cuda":
            sub = sub.pin_memory()  # async H2D
        sub = sub.to(engine.device, non_blocking=True)
    if before_forward is not None:
        before_forward()
    if probe is not None and row_weight is None and sub.size >= 2:
        out = probe_forward_backward(engine, sub, probe, timer)
    else:
        with timer.phase("forward"):
            out = engine.forward(sub) if row_weight is None else engine.forward(sub, row_weight=row_weight)
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


def probe_forward_backward(engine, sub, probe: NoiseScale, timer) -> MLMOutput:
    """Forward + backward of ``sub`` as two halves into the same gradient, recording the noise probe.

    Each half's mean loss is scaled by its share of the masked tokens, so the accumulated gradient is
    the gradient of the whole batch's mean loss (up to float summation order). After the first half the
    gradient is ``share · ĝ_half``; its squared norm over ``share²`` is the small-batch ``|g_s|²``.
    """
    half = sub.size // 2
    parts = (sub.select(list(range(half))), sub.select(list(range(half, sub.size))))
    n, n_a = sub.num_masked, parts[0].num_masked
    if n_a == 0 or n_a == n:  # a half without masked tokens: no probe this step
        with timer.phase("forward"):
            out = engine.forward(sub)
        with timer.phase("backward"):
            engine.backward(out.loss)
        return out
    loss, correct, small = None, None, None
    for part in parts:
        share = part.num_masked / n
        with timer.phase("forward"):
            o = engine.forward(part)
        with timer.phase("backward"):
            engine.backward(o.loss * share)
        if small is None:
            small = engine.grad_sq_norm() / (share * share)
        part_loss = o.loss.detach() * share
        loss = part_loss if loss is None else loss + part_loss
        correct = o.num_correct if correct is None else correct + o.num_correct
    probe.record(small, half, engine.grad_sq_norm(), sub.size)
    return MLMOutput(loss=loss, num_correct=correct, num_rows=n)
