"""One SIFT training step: score the candidates at the early exit, select, forward + backward the kept, update.

The same function serves every engine (plain PyTorch, DeepSpeed) and every selection mode; the
baseline (selection ``none``) runs the same lines with plan ``all``. The scoring rules live in
``sift_fast.scoring`` (re-exported here for older imports).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from sift_fast.config import SiftConfig
from sift_fast.models.hf import MLMOutput
from sift_fast.scoring import compute_scores, criterion_for, score_candidates, wants_scores
from sift_fast.selection import Plan, SelectFn, Selection, Selector
from sift_fast.train.noise import NoiseScale

__all__ = ["StepResult", "compute_scores", "criterion_for", "probe_forward_backward", "score_candidates",
           "sift_step", "wants_scores"]


@dataclass
class StepResult:
    loss: torch.Tensor  # detached, on the device
    num_correct: torch.Tensor
    num_rows: int  # masked tokens in the kept batch
    plan: Plan
    kept: torch.Tensor  # kept candidate indices, ascending (host)
    scores: torch.Tensor | None  # candidate scores (host) when the step scored
    num_candidates: int
    batch: object = None  # the host candidate batch (global selection: the gathered batch ``kept`` indexes)


def _as_selection(picked: Selection | torch.Tensor, batch_host, scores: torch.Tensor | None) -> Selection:
    """A ``select_fn`` result as a :class:`Selection` (a bare index tensor means: into the local batch)."""
    return picked if isinstance(picked, Selection) else Selection(picked, batch_host, scores)


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
    select_fn: SelectFn | None = None,
    before_forward: Callable[[], None] | None = None,
    probe: NoiseScale | None = None,
) -> StepResult:
    """Run step ``step`` on the host candidate batch: score → select → forward → backward → update.

    ``scores``: candidate scores made earlier (the overlap modes score step t+1 during step t);
    ``select_fn(plan, batch_host, scores) -> Selection`` replaces the local selection (global selection
    across data-parallel ranks); ``before_forward`` / ``after_backward``: the overlap modes' hooks
    (launch the side-stream scoring of the next batch / score it in order or fence the update on it);
    ``probe``: run the kept batch as two micro-batches and record the gradient-noise probe into it.
    """
    plan = selector.plan(step)
    if scores is None and wants_scores(plan, cfg):
        scores = compute_scores(engine, selector, cfg, batch_host, exit_layer, timer)
    row_weight = None
    with timer.phase("select"):
        if select_fn is not None:
            sel = _as_selection(select_fn(plan, batch_host, scores), batch_host, scores)
        else:
            sel = selector.selection(plan, batch_host, scores)
        sub = sel.batch if plan.mode == "all" else sel.batch.select(sel.kept)
        if sel.weights is not None:  # per masked row, from the host-side CSR offsets (no sync)
            row_weight = torch.repeat_interleave(sel.weights, sub.masked_row_ptr.diff()).to(engine.device,
                                                                                           non_blocking=True)
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
    # for optim.lr_batch_scale: this rank's kept rows over its own candidates (global selection hands a rank a
    # batch with the rows it received from others; its share of the global top-k is still keep_count of C)
    engine.lr_progress.kept_fraction = sel.kept.numel() / batch_host.size
    with timer.phase("optimizer"):
        engine.step()
    return StepResult(
        loss=out.loss.detach(), num_correct=out.num_correct, num_rows=out.num_rows, plan=plan, kept=sel.kept,
        scores=sel.scores, num_candidates=batch_host.size, batch=sel.batch,
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
