"""``overlap=on``: score the next candidate batch on a side CUDA stream while this step trains.

The one-step-stale rule (shared with ``overlap=sequential-stale``): **the candidate batch of step
t+1 is scored with θ_t, the weights step t's forward and backward use, before step t's optimizer
update.** Step 0 scores its own batch. Both modes run the same host code in the same order (loader,
selector RNG), so they choose the same samples; here the scoring kernels run concurrently with step
t's forward/backward instead of in between.

Ordering on CUDA, step t (``main`` = the training stream, ``side`` = the scoring stream)::

    host : wait(done_t) → select_t → launch(t+1) → forward_t → backward_t → fence → optimizer_t
    main : … optimizer_{t-1} │ H2D kept_t │ forward_t │ backward_t │ ⟂done_{t+1} │ optimizer_t
    side :                   ⟂main │ H2D cand_{t+1} │ exit-k + head │ D2H scores │ done_{t+1}

* ``side.wait_stream(main)`` at launch: the scoring reads θ_t only after optimizer_{t-1} wrote it
  (this also covers ZeRO-1/2's post-step all-gather, which the training stream waits for).
* The weights-read fence: ``main.wait_event(done_{t+1})`` right before ``engine.step()``, so the
  update of step t (and any ZeRO update / all-gather behind it on the training stream) never races
  the scoring reads. ZeRO's gradient-reduce streams only touch gradients, which scoring never reads.
* Cross-stream memory: everything the scoring allocates (the candidate copy, activations, autocast
  weight casts, the device scores) is allocated on ``side`` and used only there, so the caching
  allocator's stream-ordered reuse is safe when Python drops it early. Parameters are the only
  tensors read across streams; they are never freed during training. The scores come back through a
  pinned host buffer written by an async D2H copy on ``side``; the host reads it only after
  ``done.synchronize()`` at the start of step t+1, the one host sync the sequential loop already has
  (its ``scores.cpu()``). Host batches are pinned, so both H2D copies are async.
* Nothing in launch → fence syncs the host. An unpadded batch is scored with ``attention_mask=None``:
  Hugging Face drops an all-ones mask anyway, but only after ``mask.all()`` on the device (a sync).

On CPU (no streams) the same object scores in line, in the same order: numerically the
sequential-stale mode. ZeRO-3 partitions the weights the side stream would read (its gather hooks
are not stream-safe), so ``on`` falls back to ``sequential-stale`` there with a one-line notice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from sift_fast.config import SiftConfig
from sift_fast.scoring import compute_scores, wants_scores
from sift_fast.selection import Selector
from sift_fast.train.engine import zero_stage

__all__ = ["Inline", "OverlapScorer", "PendingScores", "SideStream", "Stale", "build_overlap", "overlap_strategy",
           "resolve_pending", "resolve_scores", "zero_stage"]


class PendingScores:
    """Candidate scores of the next step, possibly still in flight on the side stream."""

    __slots__ = ("host", "done")

    def __init__(self, host: torch.Tensor, done: torch.cuda.Event | None = None) -> None:
        self.host = host  # fp32 [C] on the host (pinned on CUDA), valid once ``done`` completed
        self.done = done

    def wait(self) -> torch.Tensor:
        """The host scores; blocks until the side stream's D2H copy finished."""
        if self.done is not None:
            self.done.synchronize()
            self.done = None
        return self.host


def resolve_scores(scores: torch.Tensor | PendingScores | None) -> torch.Tensor | None:
    """Host scores from either a tensor or in-flight scores (waits for the latter)."""
    return scores.wait() if isinstance(scores, PendingScores) else scores


def resolve_pending(pending: tuple[Any, Any] | None) -> tuple[Any, torch.Tensor | None] | None:
    """``Trainer.pending`` with its scores resolved to a host tensor (for checkpoints)."""
    return None if pending is None else (pending[0], resolve_scores(pending[1]))


@dataclasses.dataclass
class _Launch:
    start: Any  # side-stream event: scoring began (after waiting for the weights)
    done: Any  # side-stream event: scores copied to the host buffer
    fenced: Any = None  # main-stream event: the training stream reached the fence


class OverlapScorer:
    """Launches the stale scoring of the next batch (``launch``) and fences the update on it (``fence``).

    ``launch`` has ``compute_scores``' signature and returns :class:`PendingScores`; call ``fence``
    between backward and the optimizer step. ``hidden_share()`` reports, since its last call, the
    fraction of the side stream's scoring time that was off the critical path (CUDA events; 0 on CPU).
    """

    def __init__(self, device: torch.device, *, priority: int = 0) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.stream = torch.cuda.Stream(self.device, priority=priority) if self.cuda else None
        self._inflight: _Launch | None = None
        self._timed: list[_Launch] = []

    def launch(self, engine, selector: Selector, cfg: SiftConfig, batch_host, exit_layer: int,
               timer) -> PendingScores:
        """Start scoring ``batch_host`` with the current weights; the result is valid after ``wait()``."""
        if not self.cuda:
            return PendingScores(compute_scores(engine, selector, cfg, batch_host, exit_layer, timer))
        main = torch.cuda.current_stream(self.device)
        side = self.stream
        host = torch.empty(batch_host.size, dtype=torch.float32, pin_memory=True)
        start, done = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        side.wait_stream(main)  # θ_t is final: optimizer_{t-1} (and anything before) is ordered first
        with torch.cuda.stream(side):
            start.record(side)  # the "score" phase below is a CUDA-event span on the side stream
            scores = compute_scores(engine, selector, cfg, batch_host, exit_layer, timer, to_host=False)
            host.copy_(scores, non_blocking=True)
            done.record(side)
        self._inflight = _Launch(start, done)
        return PendingScores(host, done)

    def fence(self) -> None:
        """Make the training stream wait until the scoring in flight stopped reading the weights."""
        launch, self._inflight = self._inflight, None
        if launch is None:
            return
        main = torch.cuda.current_stream(self.device)
        launch.fenced = torch.cuda.Event(enable_timing=True)
        launch.fenced.record(main)  # when the critical path reached the fence
        main.wait_event(launch.done)
        self._timed.append(launch)

    def hidden_share(self) -> float:
        """Hidden fraction of the scoring span since the last call: 1 − exposed/span, where exposed is
        how long the training stream waited at the fence. (Slowdown of the training kernels from
        sharing the GPU is not counted.) Waits for the events; call it where the loop syncs anyway."""
        span = exposed = 0.0
        for launch in self._timed:
            launch.done.synchronize()
            launch.fenced.synchronize()
            s = launch.start.elapsed_time(launch.done)
            span += s
            exposed += min(s, max(0.0, launch.fenced.elapsed_time(launch.done)))
        self._timed.clear()
        return (span - exposed) / span if span > 0 else 0.0


def build_overlap(mode: str, engine: Any, device: torch.device,
                  log: Callable[[str], None]) -> tuple[str, OverlapScorer | None]:
    """The effective overlap mode and, for ``on``, its scorer. ``mode`` is already resolved for the device."""
    if mode != "on":
        return mode, None
    if zero_stage(engine) >= 3:
        log("overlap: ZeRO-3 partitions the weights the side-stream scoring reads; using sequential-stale")
        return "sequential-stale", None
    return mode, OverlapScorer(device)


# --- the three overlap modes, as the loop sees them -----------------------------------------------------
class Inline:
    """``off``: each step fetches its candidate batch and scores it at its own start (inside ``sift_step``)."""

    def fetch(self, tr) -> tuple[Any, torch.Tensor | None]:
        """This step's host batch and its scores when the previous step already made them (else None)."""
        if tr.pending is not None:
            (batch, scores), tr.pending = tr.pending, None
            return batch, resolve_scores(scores)  # overlap=on: waits for the side stream's scores
        return tr.fetch_batch(), None

    def before_forward(self, tr) -> None:
        """Between this step's selection and its forward."""

    def after_backward(self, tr) -> None:
        """Between this step's backward and its optimizer update."""


class Stale(Inline):
    """``sequential-stale``: after step t's backward, fetch batch t+1 and score it with θ_t, in order."""

    def score_next(self, tr, score: Callable[..., Any]) -> None:
        nxt = tr.fetch_batch()
        scores = None
        if wants_scores(tr.selector.plan(tr.step + 1), tr.cfg.sift):
            scores = score(tr.engine, tr.selector, tr.cfg.sift, nxt, tr.exit_layer, tr.timer)
        tr.pending = (nxt, scores)

    def after_backward(self, tr) -> None:
        if tr.step + 1 < tr.cfg.train.max_steps:
            self.score_next(tr, compute_scores)


class SideStream(Stale):
    """``on``: launch the scoring of batch t+1 on the side stream before step t's forward; fence the update."""

    def before_forward(self, tr) -> None:
        if tr.step + 1 < tr.cfg.train.max_steps:
            self.score_next(tr, tr.overlap_scorer.launch)

    def after_backward(self, tr) -> None:
        if tr.step + 1 < tr.cfg.train.max_steps:
            tr.overlap_scorer.fence()


def overlap_strategy(mode: str, scorer: OverlapScorer | None) -> Inline:
    """The strategy of an effective overlap mode (``on`` needs its scorer; without one it runs in order)."""
    if mode == "on" and scorer is not None:
        return SideStream()
    return Stale() if mode in ("sequential-stale", "on") else Inline()
