"""The LR schedule: warmup and decay by hand, and the decay over a time budget (``lr_horizon`` budget / auto)."""

import json
import math

import numpy as np
import pytest
import torch

from sift_fast.config import OptimConfig
from sift_fast.errors import ConfigError
from sift_fast.train.loop import Trainer
from sift_fast.train.optim import LrProgress, build_scheduler, horizon_progress, lr_factor


def test_lr_factor_by_hand():
    lin = OptimConfig(lr_warmup_steps=4, lr_decay="linear", min_lr_ratio=0.1)
    assert [lr_factor(s, lin, 14) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, lin, 14) == pytest.approx(1.0)
    assert lr_factor(9, lin, 14) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(14, lin, 14) == pytest.approx(0.1)
    assert lr_factor(99, lin, 14) == pytest.approx(0.1)  # clamped past max_steps
    cos = OptimConfig(lr_warmup_steps=0, lr_decay="cosine", min_lr_ratio=0.0)
    assert lr_factor(5, cos, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    # progress replaces the step fraction after the warmup, clamped to [0, 1]
    assert lr_factor(9, lin, 10**6, progress=0.25) == pytest.approx(0.1 + 0.9 * 0.75)
    assert lr_factor(9, lin, 10**6, progress=1.7) == pytest.approx(0.1)
    assert lr_factor(2, lin, 10**6, progress=0.9) == 0.75  # the warmup stays in steps


def test_auto_horizon_is_the_sooner_end():
    """auto: the decay follows whichever of the step and time fractions is further along."""
    auto = OptimConfig(lr_warmup_steps=4, lr_decay="linear", min_lr_ratio=0.0, lr_horizon="auto")
    assert auto == OptimConfig(lr_warmup_steps=4, lr_decay="linear", min_lr_ratio=0.0)  # auto is the default
    assert lr_factor(9, auto, 14) == pytest.approx(0.5)  # no budget: steps, (9 - 4) / 10
    assert lr_factor(9, auto, 14, progress=0.0) == pytest.approx(0.5)  # a budget not yet spent: steps
    assert lr_factor(9, auto, 14, progress=0.8) == pytest.approx(0.2)  # the budget ends first
    assert lr_factor(9, auto, 10**6, progress=0.3) == pytest.approx(0.7)  # max_steps far away
    assert lr_factor(13, auto, 14, progress=0.3) == pytest.approx(0.1)  # max_steps ends first
    assert lr_factor(2, auto, 14, progress=0.9) == 0.75  # the warmup stays in steps


def test_budget_scheduler_follows_progress():
    w = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([w], lr=2.0)
    cfg = OptimConfig(lr=2.0, lr_warmup_steps=0, lr_horizon="budget")
    prog = LrProgress()
    sched = build_scheduler(opt, cfg, max_steps=10**6, progress=prog)
    for p in (0.1, 0.5, 0.9):
        prog.value = p
        opt.step()
        sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(2.0 * (1 - p))
    with pytest.raises(ValueError):
        build_scheduler(opt, cfg, max_steps=10)


def test_budget_horizon_needs_a_budget(micro_cfg):
    with pytest.raises(ConfigError, match="time-budget-s"):
        micro_cfg(lr_horizon="budget")


@pytest.mark.parametrize("horizon", ["budget", "auto"])
def test_budget_decay_in_the_loop(micro_cfg, horizon):
    """Each step's LR is the peak × (1 - spent budget fraction before the previous step's update)."""
    cfg = micro_cfg(lr_horizon=horizon, time_budget_s=3.0, max_steps=10**6, lr_warmup_steps=0, log_every=1,
                    eval_every=10**6, checkpoint_every=0)
    tr = Trainer(cfg)
    ticks = iter(range(10**6))
    tr.clock = lambda: 0.25 * next(ticks)  # every call advances 0.25 "s": one step = 0.25 s
    tr.run()
    steps = [r for x in (tr.out / "metrics.jsonl").read_text().splitlines() if (r := json.loads(x))["type"] == "step"]
    assert len(steps) == 12  # 3.0 s / 0.25 s
    peak = cfg.optim.lr
    # the LR logged at step i is the one that step i+1 uses: set after step i from progress (i - 1) / 12
    # (auto: or the step fraction i / max_steps, whichever is further along)
    for r in steps:
        spent = (r["step"] - 1) / 12
        if horizon == "auto":
            spent = max(spent, r["step"] / 10**6)
        assert r["lr"] == pytest.approx(peak * (1 - spent), abs=1e-12)


def test_auto_in_the_loop_when_max_steps_ends_first(micro_cfg, tmp_path):
    """A generous time budget and a near max_steps: auto decays over the steps, as steps does."""
    kw = dict(time_budget_s=10**6, max_steps=8, lr_warmup_steps=0, log_every=1, eval_every=10**6, checkpoint_every=0)
    lrs = {}
    for horizon in ("auto", "steps"):
        tr = Trainer(micro_cfg(lr_horizon=horizon, out=str(tmp_path / horizon), **kw))
        tr.run()
        lrs[horizon] = [r["lr"] for x in (tr.out / "metrics.jsonl").read_text().splitlines()
                        if (r := json.loads(x))["type"] == "step"]
    assert lrs["auto"] == lrs["steps"]
    assert lrs["auto"] == pytest.approx([tr.cfg.optim.lr * (1 - s / 8) for s in range(1, 9)], abs=1e-12)


def test_horizon_progress_by_hand():
    assert horizon_progress(0.3, None, "auto") == 0.3  # no clock: the step fraction
    assert horizon_progress(0.3, 0.6, "steps") == 0.3
    assert horizon_progress(0.3, 0.6, "budget") == 0.6
    assert horizon_progress(0.3, 0.6, "auto") == 0.6 and horizon_progress(0.7, 0.6, "auto") == 0.7
    assert horizon_progress(-0.1, None, "steps") == 0.0 and horizon_progress(0.2, 1.4, "budget") == 1.0


def _fake_clock_run(micro_cfg, tmp_path, budget: bool, max_steps: int, **kw):
    """A micro run whose clock ticks 0.25 s a step: a 3 s budget (12 steps), or ``max_steps`` without one."""
    kw.update({"time_budget_s": 3.0, "max_steps": 10**6} if budget else {"max_steps": max_steps})
    cfg = micro_cfg(lr_warmup_steps=0, log_every=1, eval_every=10**6, checkpoint_every=0, out=str(tmp_path / "run"),
                    **kw)
    tr = Trainer(cfg)
    ticks = iter(range(10**6))
    tr.clock = lambda: 0.25 * next(ticks)
    tr.run()
    return cfg, [r for x in (tr.out / "metrics.jsonl").read_text().splitlines()
                 if (r := json.loads(x))["type"] == "step"]


@pytest.mark.parametrize("budget", [True, False])
def test_anneal_horizon_in_the_loop(micro_cfg, tmp_path, budget):
    """Kept count of step r = round(b + min(1, p / 0.5)·(C - b)), p = the horizon spent before step r: the
    clock's share of a 3 s budget (0.25 s a step: (r - 1) / 12), or without a budget (r - 1) / max_steps."""
    cfg, steps = _fake_clock_run(micro_cfg, tmp_path, budget, 8, anneal_horizon=0.5, select_until=1.0)
    c, b = cfg.sift.candidates, cfg.sift.backprop_size
    n = 12 if budget else 8
    assert len(steps) == n and b < c
    for r in steps:
        p = (r["step"] - 1) / n
        assert r["kept"] == min(c, round(b + min(1.0, p / 0.5) * (c - b))), r["step"]
    assert steps[-1]["kept"] == c


@pytest.mark.parametrize("budget,overlap", [(True, "off"), (True, "sequential-stale"), (False, "off")])
def test_select_until_in_the_loop(micro_cfg, tmp_path, monkeypatch, budget, overlap):
    """The default schedule: step r selects (scores, keeps b) while p = the horizon spent before it is < 0.1
    and trains on all C candidates with no scoring pass from then on; p = (r - 1) / 12 under a 3 s budget
    at 0.25 s a step, (r - 1) / 10 by steps. The scoring passes are counted (the stale overlap scores the
    next batch one step ahead: at most one wasted pass at the switch)."""
    import sift_fast.train.overlap as overlap_mod
    import sift_fast.train.step as step_mod

    calls = []
    for mod in (step_mod, overlap_mod):
        real = mod.compute_scores
        monkeypatch.setattr(mod, "compute_scores", lambda *a, _real=real, **k: calls.append(1) or _real(*a, **k))
    cfg, steps = _fake_clock_run(micro_cfg, tmp_path, budget, 10, overlap=overlap)
    assert cfg.sift.select_until == 0.1  # the default
    c, b = cfg.sift.candidates, cfg.sift.backprop_size
    n = 12 if budget else 10
    assert len(steps) == n and b < c
    selecting = [r["step"] for r in steps if (r["step"] - 1) / n < 0.1]
    for r in steps:
        sel = r["step"] in selecting
        assert (r["mode"], r["kept"]) == (("score", b) if sel else ("all", c)), r["step"]
    assert len(selecting) in (len(calls), len(calls) - 1) and len(selecting) == (2 if budget else 1)


@pytest.mark.parametrize("rule,power", [("sqrt", 0.5), ("fourth-root", 0.25), ("three-eighths", 0.375),
                                        ("linear", 1.0), ("none", 0.0), ("0.3125", 0.3125)])
def test_lr_batch_scale_in_the_loop(micro_cfg, tmp_path, rule, power):
    """lr_batch_scale: the update of a selection step uses the schedule's LR × (b / C)^p, a plain step's the
    schedule's own. By steps (10, no warmup, linear decay) update i (0-based) uses lr·(1 - i/10)·s_i, and
    step i selects while i / 10 < 0.3 (select_until): the LR each optimizer.step() call saw."""
    cfg = micro_cfg(lr_warmup_steps=0, log_every=1, eval_every=10**6, checkpoint_every=0, max_steps=10,
                    lr_batch_scale=rule, select_until=0.3, out=str(tmp_path / "run"))
    tr = Trainer(cfg)
    used, real = [], tr.engine.optimizer.step
    tr.engine.optimizer.step = lambda *a, **k: used.append(tr.engine.optimizer.param_groups[0]["lr"]) or real(*a, **k)
    tr.run()
    c, b, lr = cfg.sift.candidates, cfg.sift.backprop_size, cfg.optim.lr
    assert b < c and len(used) == 10
    want = [lr * (1 - i / 10) * ((b / c) ** power if i / 10 < 0.3 else 1.0) for i in range(10)]
    assert used == pytest.approx(want, rel=1e-12, abs=1e-15)
    kept = [r["kept"] for x in (tr.out / "metrics.jsonl").read_text().splitlines()
            if (r := json.loads(x))["type"] == "step"]
    assert kept == [b] * 3 + [c] * 7


def test_lr_batch_scale_params_embeddings_in_the_loop(micro_cfg, tmp_path):
    """lr_batch_scale_params embeddings: a selection step scales the word embeddings' group only (the tied MLM
    decoder is the same tensor); every other group keeps the schedule's LR. Plain steps scale nothing."""
    from sift_fast.train.optim import EMBEDDINGS

    cfg = micro_cfg(lr_warmup_steps=0, log_every=1, eval_every=10**6, checkpoint_every=0, max_steps=10,
                    lr_batch_scale="sqrt", lr_batch_scale_params="embeddings", select_until=0.3,
                    out=str(tmp_path / "run"))
    tr = Trainer(cfg)
    opt, model = tr.engine.optimizer, tr.engine.module
    emb = [p for n, p in model.named_parameters() if n.endswith(EMBEDDINGS)]
    assert len(emb) == 1 and len(opt.param_groups) == 3
    assert model.hf.get_output_embeddings().weight is emb[0]  # tied: the decoder is the same tensor
    marked = [g for g in opt.param_groups if g["batch_scale"]]
    assert len(marked) == 1 and marked[0]["params"] == emb and marked[0]["weight_decay"] == cfg.optim.weight_decay
    assert sum(len(g["params"]) for g in opt.param_groups) == len([p for p in model.parameters() if p.requires_grad])
    used, real = [], opt.step
    opt.step = lambda *a, **k: used.append([g["lr"] for g in opt.param_groups]) or real(*a, **k)
    tr.run()
    c, b, lr = cfg.sift.candidates, cfg.sift.backprop_size, cfg.optim.lr
    for i, lrs in enumerate(used):
        sched = lr * (1 - i / 10)
        s = (b / c) ** 0.5 if i / 10 < 0.3 else 1.0
        want = [sched * s if g["batch_scale"] else sched for g in opt.param_groups]
        assert lrs == pytest.approx(want, rel=1e-12, abs=1e-15), i
    assert len(used) == 10


def test_lr_batch_scale_params_refusals(micro_cfg):
    from sift_fast.train.optim import param_groups

    with pytest.raises(ConfigError, match="does nothing with lr_batch_scale none"):
        OptimConfig(lr_batch_scale="none", lr_batch_scale_params="embeddings")
    with pytest.raises(ConfigError, match="lr_batch_scale_params"):
        OptimConfig(lr_batch_scale_params="decoder")
    with pytest.raises(ConfigError, match="no parameter named"):
        param_groups(torch.nn.Linear(2, 2), 0.01, "embeddings")
    # an untied decoder (tie_word_embeddings false) joins the embeddings' group
    from transformers import BertConfig, BertForMaskedLM

    untied = BertForMaskedLM(BertConfig(vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=8, tie_word_embeddings=False))
    scaled = param_groups(untied, 0.01, "embeddings")[-1]["params"]
    want = {id(untied.bert.embeddings.word_embeddings.weight), id(untied.get_output_embeddings().weight)}
    assert len(want) == 2 and {id(p) for p in scaled} == want
    lin = torch.nn.Linear(2, 2)
    assert [len(g["params"]) for g in param_groups(lin, 0.01)] == [1, 1]
    assert all("batch_scale" not in g for g in param_groups(lin, 0.01))  # "all": the groups of old checkpoints


def test_lr_batch_scale_by_hand():
    from sift_fast.train.optim import batch_scale, scale_step_lr

    assert batch_scale(0.5, "sqrt") == pytest.approx(2 ** -0.5) and batch_scale(0.25, "linear") == 0.25
    assert batch_scale(1.0, "sqrt") == 1.0 and batch_scale(0.1, "none") == 1.0
    w = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([w], lr=2.0)
    prog = LrProgress()
    sched = build_scheduler(opt, OptimConfig(lr=2.0, lr_warmup_steps=0, lr_decay="constant"), max_steps=10,
                            progress=prog)
    prog.kept_fraction = 0.25
    scale_step_lr(opt, prog.kept_fraction, "sqrt")
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0)  # this update only
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(2.0)  # the schedule's again, nothing carried over
    # a group marked batch_scale False is left alone, an unmarked one counts as marked
    v = torch.nn.Parameter(torch.zeros(2))
    opt2 = torch.optim.SGD([{"params": [w], "batch_scale": False}, {"params": [v]}], lr=2.0)
    assert scale_step_lr(opt2, 0.25, "linear") == [2.0, 2.0]
    assert [g["lr"] for g in opt2.param_groups] == [2.0, 0.5]
    with pytest.raises(ConfigError, match="lr_batch_scale"):
        OptimConfig(lr_batch_scale="cubic")


def test_lr_batch_scale_as_a_power():
    """A number in [0, 1] is the power itself, from a flag (text), a config file (a number) or code; a name and
    its power scale alike; anything else is one line."""
    import argparse

    from sift_fast.cli.args import add_config_flags, config_from_args
    from sift_fast.config import build_config
    from sift_fast.train.optim import batch_scale

    assert batch_scale(0.5, 0.3125) == 0.5 ** 0.3125 and batch_scale(0.5, 0.5) == batch_scale(0.5, "sqrt")
    assert batch_scale(0.3, 0.0) == 1.0 and batch_scale(0.3, 1) == 0.3
    assert OptimConfig(lr_batch_scale="0.3125").lr_batch_scale == 0.3125
    # one form per power, so a resume compares powers: a named power is its name, any other number a float
    assert [OptimConfig(lr_batch_scale=v).lr_batch_scale for v in ("0.5", 1, 0.0, "0.375")] == \
        ["sqrt", "linear", "none", "three-eighths"]
    p = OptimConfig(lr_batch_scale=np.float32(0.3125)).lr_batch_scale
    assert type(p) is float and json.loads(json.dumps(p)) == 0.3125
    assert build_config({"preset": "micro", "lr_batch_scale": 0.3125}).optim.lr_batch_scale == 0.3125
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    args = parser.parse_args(["--preset", "micro", "--lr-batch-scale", "0.3125"])
    assert config_from_args(args).optim.lr_batch_scale == 0.3125
    with pytest.raises(ConfigError, match="does nothing with lr_batch_scale none"):
        OptimConfig(lr_batch_scale=0.0, lr_batch_scale_params="embeddings")
    for bad in ("1.5", -0.25, "nan", "inf", True, "sqrt2", None):
        with pytest.raises(ConfigError, match=r"lr_batch_scale must be one of none, .* or a power in \[0, 1\]"):
            OptimConfig(lr_batch_scale=bad)


def test_select_until_by_hand_and_refused_outside_its_range():
    from sift_fast.config import SiftConfig
    from sift_fast.selection import Selector

    s = Selector(SiftConfig(selection="entropy", keep=0.5, candidates=32, select_until=0.4))
    assert s.plan(9).mode == "score"  # no progress set (a host that owns no horizon): select to the end
    for p, plan in ((0.0, ("score", 16)), (0.39, ("score", 16)), (0.4, ("all", 32)), (1.0, ("all", 32))):
        s.progress = p
        assert (s.plan(9).mode, s.plan(9).keep_count) == plan, p
    s.dynamic_k = 8  # past the switch no keep schedule applies, the adaptive one included
    assert s.keep_count(9) == 32
    s = Selector(SiftConfig(selection="entropy", keep=0.5, candidates=32, select_until=1.0))
    s.progress = 1.0
    assert s.plan(9).mode == "score"  # 1 = the paper's fixed SIFT, to the end
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ConfigError, match=r"select_until must be a fraction of the run in \(0, 1\]"):
            SiftConfig(select_until=bad)


def test_anneal_horizon_refused_with_another_keep_schedule():
    from sift_fast.config import SiftConfig

    with pytest.raises(ConfigError, match="third keep schedule"):
        SiftConfig(anneal_horizon=0.5, anneal_until=10)
    with pytest.raises(ConfigError, match=r"anneal_horizon must be a fraction of the run in \[0, 1\]"):
        SiftConfig(anneal_horizon=1.5)
    with pytest.raises(ConfigError, match="not supported by the HF Trainer"):
        SiftConfig(anneal_horizon=0.5).require_drop_in("the HF Trainer")


def test_stop_after_pauses_without_moving_the_horizon(micro_cfg, tmp_path):
    """--stop-after-s 1 under a 3 s budget (0.25 s a step): the run pauses after 4 steps at the LRs of the 3 s
    schedule, not of a 1 s one; --resume with it off continues to step 12, and the whole run's per-step LRs and
    losses are those of the uninterrupted run."""
    kw = dict(lr_horizon="budget", time_budget_s=3.0, max_steps=10**6, lr_warmup_steps=0, log_every=1,
              eval_every=3, checkpoint_every=0, targets=(0.01, 0.02, 0.03, 0.05, 0.08, 0.1))

    def run(out: str, **extra):
        tr = Trainer(micro_cfg(out=str(tmp_path / out), **kw, **extra))
        ticks = iter(range(10**6))
        tr.clock = lambda: 0.25 * next(ticks)
        summary = tr.run()
        recs = [json.loads(x) for x in (tr.out / "metrics.jsonl").read_text().splitlines()]
        run.evals = [(r["step"], r["wall_s"], r["val_loss"], r["val_mlm_acc"]) for r in recs if r["type"] == "eval"]
        return summary, [r for r in recs if r["type"] == "step"]

    whole, ref = run("whole")
    ref_evals = run.evals
    assert len(ref) == 12 and "paused_after_s" not in whole and [e[0] for e in ref_evals] == [0, 3, 6, 9, 12]
    paused, first = run("paused", stop_after_s=1.0)
    assert [e[0] for e in run.evals] == [0, 3]  # no eval at the pause (step 4): the grid of the whole run
    assert paused["paused_after_s"] == 1.0 and paused["steps"] == 4 and paused["train_time_s"] == pytest.approx(1.0)
    peak = micro_cfg(**kw).optim.lr
    assert [r["lr"] for r in first] == pytest.approx([peak * (1 - (s - 1) / 12) for s in range(1, 5)], abs=1e-12)
    done, steps = run("paused", stop_after_s=0.0, resume=True)
    assert done["steps"] == 12 and "paused_after_s" not in done
    assert [(r["step"], r["lr"], r["loss"]) for r in steps] == [(r["step"], r["lr"], r["loss"]) for r in ref]
    assert run.evals == ref_evals and done["time_to_target"] == whole["time_to_target"]
