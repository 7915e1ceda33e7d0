"""overlap=on: mode resolution, the scorer's CPU path equals sequential-stale bitwise, the log fields,
the ZeRO-3 fallback; on CUDA (marked gpu) overlapped == sequential-stale, the weights-read fence, and
no host sync between the side-stream launch and the optimizer step."""

from __future__ import annotations

import dataclasses
import json
import os
import types

import pytest
import torch

from sift_fast.train.builder import seed_everything
from sift_fast.train.loop import Trainer, resolve_overlap
from sift_fast.train.overlap import (
    OverlapScorer,
    PendingScores,
    _Launch,
    build_overlap,
    resolve_pending,
    zero_stage,
)
from sift_fast.train.step import compute_scores

gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _trace(tr: Trainer, steps: int) -> list[tuple]:
    """(scores, kept, loss) of ``steps`` training steps, from a freshly seeded global RNG (dropout)."""
    seed_everything(tr.cfg.train.seed)
    out = []
    for _ in range(steps):
        res = tr.train_step()
        tr.step += 1
        out.append((None if res.scores is None else res.scores.clone(), res.kept.clone(), res.loss.float().cpu()))
    return out


def _force_side_scorer(tr: Trainer) -> Trainer:
    """Run the OverlapScorer code path (launch before forward, fence before the update) on any device."""
    tr.overlap, tr.overlap_scorer = "on", OverlapScorer(tr.device)
    return tr


# ------------------------------------------------------------------------------------ CPU


def test_overlap_mode_resolution_on_cpu(micro_cfg):
    cpu = torch.device("cpu")
    assert resolve_overlap("on", cpu) == "sequential-stale"
    assert resolve_overlap("auto", cpu) == "off"
    assert resolve_overlap("auto", torch.device("cuda")) == "on"
    tr = Trainer(micro_cfg(overlap="on"))
    assert tr.overlap == "sequential-stale" and tr.overlap_scorer is None


def test_zero3_falls_back_to_sequential_stale_with_one_notice():
    lines: list[str] = []
    mode, scorer = build_overlap("on", types.SimpleNamespace(zero_stage=3), torch.device("cpu"), lines.append)
    assert (mode, scorer) == ("sequential-stale", None) and len(lines) == 1 and "ZeRO-3" in lines[0]
    mode, scorer = build_overlap("on", types.SimpleNamespace(zero_stage=2), torch.device("cpu"), lines.append)
    assert mode == "on" and isinstance(scorer, OverlapScorer) and len(lines) == 1
    assert build_overlap("off", object(), torch.device("cpu"), lines.append) == ("off", None)
    assert zero_stage(object()) == 0 and zero_stage(types.SimpleNamespace(zero_stage=lambda: 1)) == 1


@pytest.mark.parametrize("selection", ["loss", "entropy"])
def test_scorer_cpu_path_equals_sequential_stale_bitwise(micro_cfg, selection):
    kw = dict(selection=selection, keep=0.5, dropout=0.1, max_steps=8)
    stale = Trainer(micro_cfg(overlap="sequential-stale", **kw))
    side = _force_side_scorer(Trainer(micro_cfg(overlap="sequential-stale", **kw), data=stale.data))
    off = Trainer(micro_cfg(overlap="off", **kw), data=stale.data)
    a, b, c = _trace(stale, 6), _trace(side, 6), _trace(off, 6)
    for t, ((sa, ka, la), (sb, kb, lb)) in enumerate(zip(a, b)):
        assert torch.equal(sa, sb) and torch.equal(ka, kb) and torch.equal(la, lb), t
    pa, pb = stale.engine.module.state_dict(), side.engine.module.state_dict()
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    # step 0 scores its own batch in every mode; from step 1 the stale scores differ from fresh ones
    assert torch.equal(a[0][0], c[0][0])
    assert all(not torch.equal(a[t][0], c[t][0]) for t in range(1, 6))


def test_unpadded_mask_shortcut_scores_equal_compute_scores(micro_cfg):
    """The scorer drops an all-ones attention mask (as HF does after a device sync); padded rows keep it."""
    tr = Trainer(micro_cfg(selection="entropy"))
    batch = tr.loader.next_batch()
    assert bool(batch.attention_mask.all())
    pad = batch.attention_mask.clone()
    pad[0, -5:] = 0
    pad[3, -9:] = 0
    padded = dataclasses.replace(batch, attention_mask=pad)
    scorer = OverlapScorer(tr.device)
    for b in (batch, padded):
        ref = compute_scores(tr.engine, tr.selector, tr.cfg.sift, b, 1, tr.timer)
        got = scorer.launch(tr.engine, tr.selector, tr.cfg.sift, b, 1, tr.timer)
        assert isinstance(got, PendingScores) and torch.equal(got.wait(), ref)
    scorer.fence()  # no-op on CPU
    assert scorer.hidden_share() == 0.0


def test_hidden_share_from_event_times():
    """hidden = span − time the training stream waited at the fence (clipped to [0, span])."""

    class Ev:  # a recorded event at t ms
        def __init__(self, t):
            self.t = t

        def synchronize(self):
            pass

        def elapsed_time(self, other):
            return other.t - self.t

    scorer = OverlapScorer(torch.device("cpu"))
    scorer._timed = [
        _Launch(Ev(0), Ev(10), Ev(12)),  # done before the fence was reached: all 10 hidden
        _Launch(Ev(0), Ev(10), Ev(4)),  # fence reached at 4, done at 10: 6 exposed, 4 hidden
        _Launch(Ev(5), Ev(10), Ev(-20)),  # fence long before the scoring started: all 5 exposed
    ]
    assert scorer.hidden_share() == pytest.approx((10 + 4 + 0) / 25)
    assert scorer.hidden_share() == 0.0  # reset by the previous call


def test_resolve_pending_for_checkpoints():
    host = torch.arange(4.0)
    assert resolve_pending(None) is None
    batch, scores = resolve_pending(("b", PendingScores(host)))
    assert batch == "b" and scores is host
    assert resolve_pending(("b", None)) == ("b", None)


def _step_records(out_dir) -> list[dict]:
    recs = [json.loads(ln) for ln in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if r["type"] == "step"]


@pytest.mark.parametrize("overlap,selection", [("sequential-stale", "entropy"), ("off", "loss"), ("off", "none")])
def test_step_records_carry_score_time_and_hidden_share(micro_cfg, tmp_path, overlap, selection):
    out = tmp_path / f"{overlap}_{selection}"
    Trainer(micro_cfg(out=str(out), overlap=overlap, selection=selection, max_steps=4, log_every=2,
                     select_until=1.0)).run()
    recs = _step_records(out)
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    for r in recs:
        assert r["score_hidden_share"] == 0.0  # nothing runs beside the step on CPU
        assert (r["score_time_s"] > 0) == (selection != "none")
        assert "mem_mib" in r


# ------------------------------------------------------------------------------------ CUDA


@pytest.fixture
def deterministic():
    """Bitwise run-to-run equality on CUDA (cuBLAS workspace must be set before CUDA init; see
    bench/gpu_suite.sh, which exports it)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(prev)


@gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_overlapped_equals_sequential_stale_on_cuda(micro_cfg, deterministic, precision):
    kw = dict(selection="loss", keep=0.5, dropout=0.1, max_steps=12, device="cuda", precision=precision,
              backend="torch")
    seq = Trainer(micro_cfg(overlap="sequential-stale", **kw))
    ovl = Trainer(micro_cfg(overlap="on", **kw), data=seq.data)
    assert ovl.overlap == "on" and ovl.overlap_scorer is not None and seq.overlap_scorer is None
    a, b = _trace(seq, 10), _trace(ovl, 10)
    for t, ((sa, ka, la), (sb, kb, lb)) in enumerate(zip(a, b)):
        assert torch.equal(ka, kb), (t, ka, kb)
        assert torch.equal(sa, sb), t
        assert torch.equal(la, lb), (t, la, lb)


@gpu
@needs_cuda
def test_fence_orders_the_update_after_the_scoring_reads(micro_cfg):
    """A slow side stream (a sleep queued before the launch) and an in-place "update" right after the
    fence: the scores are those of the old weights. Without the fence the update races ahead."""
    tr = Trainer(micro_cfg(selection="loss", device="cuda", precision="fp32", backend="torch"))
    batch = tr.loader.next_batch().pin_memory()
    ref = compute_scores(tr.engine, tr.selector, tr.cfg.sift, batch, 1, tr.timer)
    scorer = OverlapScorer(tr.device)
    params = list(tr.engine.module.parameters())

    def launch_slow():
        with torch.cuda.stream(scorer.stream):
            torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU clock cycles
        return scorer.launch(tr.engine, tr.selector, tr.cfg.sift, batch, 1, tr.timer)

    pending = launch_slow()
    scorer.fence()
    with torch.no_grad():
        for p in params:
            p.add_(1.0)
    torch.testing.assert_close(pending.wait(), ref, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        for p in params:
            p.sub_(1.0)
    torch.cuda.synchronize()
    # negative control: no fence → the update lands before the delayed scoring reads the weights
    pending = launch_slow()
    with torch.no_grad():
        for p in params:
            p.add_(1.0)
    assert (pending.wait() - ref).abs().max() > 1e-2
    scorer._inflight = None


@gpu
@needs_cuda
def test_no_host_sync_from_launch_to_optimizer_step(micro_cfg, monkeypatch):
    """``set_sync_debug_mode("error")`` from the side-stream launch to the fence (which is right before
    the optimizer step): (1) around the scorer's own code; (2) across forward + backward too, with HF's
    "is the padding mask all ones" check answered on the host (it calls ``mask.all()`` on the device,
    a sync inherent to the HF model forward, not to the overlap)."""
    import transformers.masking_utils as mu

    tr = Trainer(micro_cfg(selection="entropy", overlap="on", device="cuda", backend="torch", max_steps=10))
    scorer = tr.overlap_scorer
    for _ in range(2):  # warm-up: allocator, cuBLAS handles, lazy inits
        tr.train_step()
        tr.step += 1
    launch, fence = scorer.launch, scorer.fence

    def strict(fn):
        def wrapped(*args, **kwargs):
            torch.cuda.set_sync_debug_mode("error")
            try:
                return fn(*args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        return wrapped

    monkeypatch.setattr(scorer, "launch", strict(launch))
    monkeypatch.setattr(scorer, "fence", strict(fence))
    for _ in range(3):
        tr.train_step()
        tr.step += 1

    # (2) the whole region: launch → forward → backward → fence
    assert bool(tr.loader.next_batch().attention_mask.all())  # packed data: no padding
    monkeypatch.setattr(mu, "_ignore_bidirectional_mask_sdpa", lambda *a, **k: True)

    def open_region(*args, **kwargs):
        torch.cuda.set_sync_debug_mode("error")
        return launch(*args, **kwargs)

    def close_region():
        try:
            fence()
        finally:
            torch.cuda.set_sync_debug_mode(0)

    monkeypatch.setattr(scorer, "launch", open_region)
    monkeypatch.setattr(scorer, "fence", close_region)
    try:
        for _ in range(3):
            tr.train_step()
            tr.step += 1
    finally:
        torch.cuda.set_sync_debug_mode(0)


@gpu
@needs_cuda
def test_cuda_run_logs_score_time_and_hidden_share(micro_cfg, tmp_path):
    out = tmp_path / "run"
    Trainer(micro_cfg(out=str(out), selection="entropy", overlap="on", device="cuda", max_steps=6,
                      log_every=3)).run()
    recs = _step_records(out)
    assert len(recs) == 6
    for r in recs:
        assert r["score_time_s"] > 0 and 0.0 <= r["score_hidden_share"] <= 1.0
        assert r["mem_allocated_mib"] > 0
