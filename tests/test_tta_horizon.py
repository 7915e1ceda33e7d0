"""bench/tta_horizon.py: the crossover rule by hand, and only runs that reached the budget are reported."""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import tta_horizon as th  # noqa: E402


def _evals(pairs):
    return [{"type": "eval", "wall_s": t, "val_loss": v, "samples": 10 * i, "step": i}
            for i, (t, v) in enumerate(pairs)]


def test_crossover_is_where_the_arm_stays_worse():
    base = _evals([(0, 9.0), (100, 7.0), (200, 6.0), (300, 5.0), (400, 4.0)])
    # ahead, then behind at 150 (briefly), ahead at 250, behind from 350 on
    arm = _evals([(0, 9.0), (50, 7.5), (150, 6.6), (250, 5.4), (350, 4.6), (400, 4.1)])
    # interpolated baseline: 50 -> 8.0, 150 -> 6.5, 250 -> 5.5, 350 -> 4.5
    assert th.crossover(arm, base, "val_loss", higher=False, after=40)["wall_s"] == 350
    assert th.crossover(arm[:4], base, "val_loss", higher=False, after=40) is None  # never stays behind


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
