"""bench/tta_horizon.py and bench/horizon_report.py: the crossover, verdict, seed-noise and clock rules by hand;
only runs that reached the budget are reported."""

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import horizon_report as hr  # noqa: E402
import tta_horizon as th  # noqa: E402


def _evals(pairs):
    return [{"type": "eval", "wall_s": t, "val_loss": v, "samples": 10 * i, "step": i}
            for i, (t, v) in enumerate(pairs)]


def test_crossover_is_where_the_arm_stays_worse():
    base = _evals([(0, 9.0), (100, 7.0), (200, 6.0), (300, 5.0), (400, 4.0)])
    # ahead, then behind at 150 (briefly), ahead at 250, behind from 350 on
    arm = _evals([(0, 9.0), (50, 7.5), (150, 6.6), (250, 5.4), (350, 4.6), (400, 4.1)])
    # interpolated baseline: 50 -> 8.0, 150 -> 6.5, 250 -> 5.5, 350 -> 4.5
    assert hr.crossover(arm, base, "val_loss", higher=False, after=40)["wall_s"] == 350
    assert hr.crossover(arm[:4], base, "val_loss", higher=False, after=40) is None  # never stays behind


def test_collect_skips_runs_stopped_before_the_budget(tmp_path):
    group = tmp_path / "runs" / "repeated-decay"
    for name, spent in (("entropy_s0", 2700.0), ("baseline_s0", 2700.0), ("baseline_s1", 185.0)):
        d = group / name
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps({"train_time_s": spent, "steps": 10}))
        (d / "metrics.jsonl").write_text("\n".join(json.dumps(e) for e in _evals([(0, 9.0), (spent, 6.0)])) + "\n")
    args = argparse.Namespace(results=str(tmp_path / "results"), runs=str(tmp_path / "runs"), budget_s=2700.0)
    runs, _ = th.collect("repeated-decay", args)
    assert sorted(runs) == ["baseline", "entropy"] and sorted(runs["baseline"]) == [0]  # seed 1 stopped at 185 s


def test_collect_orders_seeds_when_new_runs_join_a_committed_report(tmp_path):
    """Seeds 1 and 4 in the committed report, 2 and 3 from new run dirs: the per-seed lists (worst excess,
    crossover, clock) follow seeds 1, 2, 3, 4, not the order the runs arrived in."""
    group, results = tmp_path / "runs" / "single-pass-decay", tmp_path / "results"
    results.mkdir()
    old = {str(sd): {"summary": {"train_time_s": 2700.0}, "evals": _evals([(0, 9.0), (2700, 6.0 + sd / 10)])}
           for sd in (1, 4)}
    (results / "tta_horizon_single-pass-decay.json").write_text(json.dumps({"runs": {"entropy": old}}))
    for sd in (3, 2):
        d = group / f"entropy_s{sd}"
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps({"train_time_s": 2700.0, "steps": 10}))
        (d / "metrics.jsonl").write_text("\n".join(json.dumps(e) for e in _evals([(0, 9.0), (2700, 6.0 + sd / 10)])))
    args = argparse.Namespace(results=str(results), runs=str(tmp_path / "runs"), budget_s=2700.0)
    runs, _ = th.collect("single-pass-decay", args)
    assert list(runs["entropy"]) == [1, 2, 3, 4]
    assert [r["evals"][-1]["val_loss"] for r in runs["entropy"].values()] == [6.1, 6.2, 6.3, 6.4]


def test_report_names_the_runs_own_eval_interval(tmp_path):
    """The header's eval interval is the runs' (config.json), not the report command's flag."""
    group = tmp_path / "runs" / "wide-decay"
    for name, every in (("baseline_s0", 25), ("until0.1-lr_s0", 25), ("entropy_s0", None)):
        d = group / name
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps({"train_time_s": 2700.0, "steps": 10}))
        (d / "metrics.jsonl").write_text("\n".join(json.dumps(e) for e in _evals([(0, 9.0), (2700, 6.0)])) + "\n")
        if every:
            (d / "config.json").write_text(json.dumps({"train": {"eval_every": every}}))
    args = argparse.Namespace(results=str(tmp_path / "results"), runs=str(tmp_path / "runs"), budget_s=2700.0)
    runs, _ = th.collect("wide-decay", args)
    assert th.eval_every_of(runs, 25) == 25
    assert th.eval_every_of(runs, 50) == "25/50"  # the entropy run without config.json: its report's 50
    runs["entropy"][0]["eval_every"] = 40
    assert th.eval_every_of(runs, 50) == "25/40"
    assert th.eval_every_of({"baseline": {0: {}}}, 50) == 50  # a run of an older report: the report's own


def test_verdict_by_hand():
    """Baseline seeds 0 / 1 differ by 0.2 at every eval (sd 0.1414); the default is 0.1 worse than seed 0's
    baseline and level with seed 1's (mean excess 0.05 <= sd: within noise); a loser 0.3 worse is not.
    Early targets: entropy 0.5× the baseline's time, the default 0.6× -> it keeps 0.8 of the saving."""
    t = [0, 100, 200, 300, 400]
    b0 = _evals([(x, 9.0 - 0.01 * x) for x in t])
    b1 = _evals([(x, 9.2 - 0.01 * x) for x in t])
    runs = {"baseline": {0: {"evals": b0, "session": "s"}, 1: {"evals": b1, "session": "s"}},
            "default": {0: {"evals": _evals([(x, 9.1 - 0.01 * x) for x in t]), "session": "s"},
                        1: {"evals": _evals([(x, 9.2 - 0.01 * x) for x in t]), "session": "s"}},
            "entropy": {0: {"evals": _evals([(x, 9.3 - 0.01 * x) for x in t]), "session": "s"},
                        1: {"evals": _evals([(x, 0.0 * x) for x in t]), "session": "other"}}}  # not side by side
    assert abs(hr.seed_sd(runs["baseline"], 400.0) - 0.2 / 2 ** 0.5) < 1e-9
    a = {"arms": {"default": {"targets": {"acc:0.6": {"ratio": (0.6, None)}, "acc:0.75": {"ratio": (1.1, None)}}},
                  "entropy": {"targets": {"acc:0.6": {"ratio": (0.5, None)}, "acc:0.75": {"ratio": (0.9, None)}}}}}
    v = hr.verdict(runs, a, 400.0)
    d, e = v["arms"]["default"], v["arms"]["entropy"]
    assert d["seeds"] == 2 and abs(d["worst_mean_excess"] - 0.05) < 1e-9 and d["within_noise"] is True
    # context: per-seed excesses 0.1 / 0.0 (sd 0.0707, SE 0.05); the baselines 0.2 apart (sd 0.1414)
    assert abs(d["worst_se"] - 0.05) < 1e-9 and abs(d["worst_base_sd"] - 0.2 / 2 ** 0.5) < 1e-9
    assert abs(d["early_share"]["acc:0.6"] - 0.8) < 1e-9 and abs(d["early_share"]["acc:0.75"] + 1.0) < 1e-9
    assert e["seeds"] == 1 and abs(e["worst_mean_excess"] - 0.3) < 1e-9 and e["within_noise"] is False
    assert e["worst_se"] is None and e["worst_base_sd"] is None  # one seed: no spread
    # the baselines' spread pools sessions: 9 / 10 in one (var 0.5), 7 / 9 / 11 in another (var 4) -> (0.5 + 8) / 3
    vb = [(0, 9.0, "s"), (0, 10.0, "s"), (0, 7.0, "t"), (0, 9.0, "t"), (0, 11.0, "t"), (0, 99.0, None)]
    assert abs(hr.pooled_sd(vb) - (8.5 / 3) ** 0.5) < 1e-12
    assert hr.pooled_sd([(0, 9.0, "s"), (0, 10.0, "t")]) is None  # one seed per session: not seed noise
    assert d["passes_both"] is False and e["passes_both"] is False  # d: slower than the baseline at 75 %
    a["arms"]["default"]["targets"]["acc:0.75"]["ratio"] = (0.9, None)  # entropy's own time: share 1.0
    assert hr.verdict(runs, a, 400.0)["arms"]["default"]["passes_both"] is True  # 0.8 at 60 % counts
    a["arms"]["default"]["targets"]["acc:0.6"]["ratio"] = (0.61, None)  # share 0.78 at 60 %
    assert hr.verdict(runs, a, 400.0)["arms"]["default"]["passes_both"] is False
    assert list(hr.paired(runs["entropy"], runs["baseline"])) == [0]  # seed 1 ran in another session
    del runs["entropy"], a["arms"]["entropy"]  # no entropy run: no share, so no verdict on both tests
    assert hr.verdict(runs, a, 400.0)["arms"]["default"]["passes_both"] is None
    assert hr.seed_sd({0: {"evals": b0, "session": "s"}}, 400.0) is None  # one seed: no noise estimate


def test_clock_ratio_times_the_same_full_step_in_both_runs():
    """Default: 4 SIFT steps of 32 candidates, 16 kept (1 s each), then full steps at 3 s each; the baseline's
    full step takes 2 s, 2.5 s inside the default's plain window [4, 10] s -> 3 / 2.5 = 1.2."""
    def ev(t, step, samples, bp):
        return {"wall_s": t, "step": step, "samples": samples, "backprop_samples": bp}

    arm = [ev(0, 0, 0, 0), ev(4, 4, 128, 64), ev(7, 5, 160, 96), ev(10, 6, 192, 128)]
    base = [ev(0, 0, 0, 0), ev(4, 2, 64, 64), ev(6.5, 3, 96, 96), ev(9, 4, 128, 128), ev(11, 5, 160, 160)]
    assert hr.full_step_time(arm) == (3.0, 4, 10)
    assert hr.full_step_time(base)[0] == 11 / 5
    assert abs(hr.clock_ratio(arm, base) - 3.0 / 2.5) < 1e-12
    assert hr.clock_ratio(arm[:2], base) is None  # a fixed-keep arm never takes a full step


def test_seed_sd_pools_seeds_of_one_session_only():
    """Seeds 0 / 1 of session A differ by 0.2 (sd 0.1414); seed 2 ran in session B on a 1.4× slower clock and seed
    3 has no session (an older report's run): neither enters the spread, which needs two seeds in one session."""
    steps = range(0, 500, 50)

    def run(session, offset, clock=1.0):
        return {"session": session, "evals": [{"wall_s": clock * s, "step": s, "val_loss": 9.0 + offset - 0.002 * s}
                                              for s in steps]}

    base = {0: run("A", 0.0), 1: run("A", 0.2), 2: run("B", 0.0, 1.4), 3: run(None, 0.5)}
    assert abs(hr.seed_sd(base, 450.0) - 0.2 / 2 ** 0.5) < 1e-9
    assert hr.seed_sd({0: base[0], 2: base[2], 3: base[3]}, 450.0) is None
    # two sessions with two seeds each: their per-eval sds (0.1414 and 0.2828, 9 evals each) pooled, upper median
    pooled = {**base, 4: run("C", 0.0, 1.4), 5: run("C", 0.4, 1.4)}
    assert abs(hr.seed_sd(pooled, 450.0) - 0.4 / 2 ** 0.5) < 1e-9


def test_final_norms_by_hand(tmp_path):
    import torch

    from sift_fast.train.checkpoint import save_checkpoint

    model = {"hf.bert.embeddings.word_embeddings.weight": torch.full((2, 2), 3.0),  # norm 6
             "hf.bert.encoder.layer.0.attention.self.query.weight": torch.full((1, 4), 2.0),  # norm 4
             "hf.bert.encoder.layer.0.attention.self.query.bias": torch.full((9,), 1.0),  # norm 3, not a matrix
             "hf.bert.embeddings.position_ids": torch.arange(4)}  # not floating point: left out
    save_checkpoint(tmp_path / "run" / "checkpoints", 7, {"step": 7, "engine": {"model": model}}, keep=2)
    n = th.final_norms(tmp_path / "run")
    assert n == {"all": (36 + 16 + 9) ** 0.5, "encoder_matrices": 4.0, "word_embeddings": 6.0}
    assert th.final_norms(tmp_path / "none") is None


def test_share_error_by_hand():
    """Entropy 0.5× the baseline's time (sd 0.1 over 4 seeds: SE 0.05), the arm 0.6× (sd 0.2 over 4: SE 0.1): share
    0.8, its SE √(0.1² + 0.8² · 0.05²) / 0.5 = 0.2154; fewer than two seeds on either side: none."""
    arm, ent = {"ratio": (0.6, 0.2), "n": 4}, {"ratio": (0.5, 0.1), "n": 4}
    assert abs(hr.share_error(0.8, arm, ent) - (0.01 + 0.64 * 0.0025) ** 0.5 / 0.5) < 1e-12
    assert hr.share_error(0.8, {**arm, "n": 1}, ent) is None and hr.share_error(None, arm, ent) is None
    a = {"arms": {"d": {"targets": {"acc:0.6": arm, "acc:0.75": arm}},
                  "entropy": {"targets": {"acc:0.6": ent, "acc:0.75": ent}}}}
    t = [0, 100, 200]
    runs = {"baseline": {0: {"evals": _evals([(x, 9.0) for x in t]), "session": "s"}},
            "d": {0: {"evals": _evals([(x, 9.0) for x in t]), "session": "s"}}}
    v = hr.verdict(runs, a, 200.0)["arms"]["d"]
    assert abs(v["early_share_se"]["acc:0.6"] - 0.2154) < 1e-4 and abs(v["early_share"]["acc:0.6"] - 0.8) < 1e-9
    assert hr.share_cell(v) == "0.800 ± 0.22 / 0.800 ± 0.22"
    assert hr.share_cell({"early_share": {"a": 0.7965, "b": None}}) == "0.796 / -"  # an older report: no SE


def test_overview_prints_the_early_share_with_its_error(tmp_path):
    """bench/tta_overview.py's long-horizon table carries each arm's early share ± SE from its report's verdict."""
    from bench.tta_overview import horizon

    arm = {"seeds": [1, 2], "equal_time": {}, "crossover": {}, "clock_ratio": [1.0, 1.02]}
    ver = {"worst_mean_excess": 0.005, "within_noise": True, "passes_both": False,
           "early_share": {"acc:0.6": 0.893, "acc:0.75": 0.7965}, "early_share_se": {"acc:0.6": 0.18, "acc:0.75": None}}
    rep = {"meta": {"preset": "proxy-12", "budget_s": 2700.0},
           "analysis": {"arms": {"baseline": {}, "d": arm}, "verdict": {"arms": {"d": ver}}}}
    (tmp_path / "tta_horizon_x.json").write_text(json.dumps(rep))
    rows, md = horizon(tmp_path)
    assert rows[0]["early_share"] == "0.893 ± 0.18 / 0.796" and rows[0]["both_tests"] == "no"
    assert "| +0.005 | yes | 0.893 ± 0.18 / 0.796 | no | 1.00, 1.02 |" in md


def _acc_evals(pairs):
    return [{"type": "eval", "wall_s": t, "val_loss": 9.0 - a, "val_mlm_acc": a, "samples": 10 * i,
             "backprop_samples": 10 * i, "step": i} for i, (t, a) in enumerate(pairs)]


def test_probes_pool_into_the_early_targets_only():
    """Seed 1 ran in full (baseline best acc 0.2: levels 0.12 / 0.15 / 0.18 / 0.194); seed 2 only as prefix probes
    to 300 s. Early targets: seed 1's arm reaches 0.12 at 50 s vs the baseline's 100 s (0.5), seed 2's probe at
    60 s vs 200 s (0.3) -> 0.4 over two seeds; a probe of another session pairs with nothing. The late targets,
    the levels and the seed lists are the full runs' alone."""
    full_b = _acc_evals([(0, 0.0), (100, 0.12), (200, 0.15), (1000, 0.2)])
    full_a = _acc_evals([(0, 0.0), (50, 0.12), (100, 0.15), (1000, 0.2)])
    summ = {"summary": {"train_time_s": 1000.0, "steps": 100}}
    runs = {"baseline": {1: {"evals": full_b, "session": "s", **summ}}, "d": {1: {"evals": full_a, "session": "s",
                                                                                **summ}}}
    probes = {"baseline": {2: {"evals": _acc_evals([(0, 0.0), (200, 0.12), (300, 0.15)]), "session": "s"},
                           3: {"evals": _acc_evals([(0, 0.0), (10, 0.15)]), "session": "t"}},
              "d": {2: {"evals": _acc_evals([(0, 0.0), (60, 0.12), (300, 0.15)]), "session": "s"},
                    1: {"evals": _acc_evals([(0, 0.0), (1, 0.15)]), "session": "s"},  # a full run wins
                    3: {"evals": _acc_evals([(0, 0.0), (10, 0.15)]), "session": "u"},  # not its baseline's session
                    4: {"evals": _acc_evals([(0, 0.0), (50, 0.15)]), "session": "s"}}}  # its baseline stopped first
    probes["baseline"][4] = {"evals": _acc_evals([(0, 0.0), (600, 0.1)]), "session": "s",
                             "summary": {"paused_after_s": 600.0}}
    a = hr.analyse(runs, 1000.0, {"seq_len": 128}, probes)
    assert a["levels"]["acc:0.6"] == 0.12 and a["levels"]["acc:0.97"] == 0.194
    t = a["arms"]["d"]["targets"]
    assert t["acc:0.6"]["ratio"][0] == pytest.approx(0.4) and (t["acc:0.6"]["n"], t["acc:0.6"]["of"]) == (2, 4)
    assert t["acc:0.6"]["probes"] == 3 and t["acc:0.9"]["probes"] == 0 and t["acc:0.9"]["of"] == 1
    assert t["acc:0.6"]["censored"] == t["acc:0.75"]["censored"] == 1 and t["acc:0.9"]["censored"] == 0
    assert a["arms"]["d"]["probe_seeds"] == [2, 4]  # seed 1 has a full run, seed 3 no baseline of its session
    assert t["acc:0.75"]["ratio"][0] == pytest.approx((0.5 + 300 / 300) / 2)
    assert a["arms"]["d"]["seeds"] == [1] and a["arms"]["baseline"]["seeds"] == [1]
    assert hr.analyse(runs, 1000.0, {"seq_len": 128})["arms"]["d"]["targets"]["acc:0.6"]["n"] == 1
    note = hr.probe_note({"analysis": a, "probes": probes})
    assert "first 600 CPU-s of the same schedule" in note and "probe seeds: d 2, 4);" in note
    assert "2 pair(s) dropped" in note  # seed 4 at both early levels
    assert hr.probe_note({"analysis": hr.analyse(runs, 1000.0, {"seq_len": 128}), "probes": {}}) == ""


def test_collect_probes_reads_paused_runs(tmp_path):
    """A probe counts once it reached its pause (summary with paused_after_s); one still running does not;
    --probe-s must lie below the budget."""
    root = tmp_path / "runs" / "single-pass-decay" / th.PROBES
    for name, summ in (("baseline_s6", {"train_time_s": 600.2, "paused_after_s": 600.0}),
                       ("until0.1-lr_s6", {"train_time_s": 600.0, "paused_after_s": 600.0}),
                       ("entropy_s6", None), ("until0.07-lr38_s6", {"train_time_s": 200.0, "stopped_by": "SIGTERM"})):
        (root / name).mkdir(parents=True)
        (root / name / "metrics.jsonl").write_text(json.dumps(_acc_evals([(0, 0.0)])[0]) + "\n")
        if summ:
            (root / name / "summary.json").write_text(json.dumps(summ))
    args = argparse.Namespace(results=str(tmp_path / "results"), runs=str(tmp_path / "runs"))
    probes = th.collect_probes("single-pass-decay", args)
    assert sorted(probes) == ["baseline", "until0.1-lr"] and list(probes["baseline"]) == [6]
    with pytest.raises(SystemExit):
        th.parse_args(["--probe-s", "2700", "--budget-s", "2700"])
