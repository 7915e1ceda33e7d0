"""The time-to-accuracy suite's analysis: target crossings, ratios to baseline, shared baselines."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.time_to_accuracy import crossing, shared_baseline, summarize  # noqa: E402


def _ev(step: int, acc: float, loss: float, t: float) -> dict:
    return {"type": "eval", "step": step, "val_mlm_acc": acc, "val_loss": loss, "wall_s": t,
            "samples": 32 * step, "backprop_samples": 16 * step}


def test_crossing_interpolates_first_crossing():
    evals = [_ev(0, 0.0, 9.0, 0.0), _ev(10, 0.04, 8.0, 10.0), _ev(20, 0.08, 7.0, 30.0), _ev(30, 0.02, 6.0, 40.0)]
    # acc 0.06 is crossed halfway between the evals at t=10 and t=30 -> t=20, step 15
    hit = crossing(evals, "val_mlm_acc", 0.06, higher=True)
    assert hit == pytest.approx({"wall_s": 20.0, "samples": 480.0, "backprop_samples": 240.0, "step": 15.0})
    # loss 6.5 (lower is better): between t=30 (7.0) and t=40 (6.0)
    assert crossing(evals, "val_loss", 6.5, higher=False)["wall_s"] == pytest.approx(35.0)
    assert crossing(evals, "val_mlm_acc", 0.5, higher=True) is None
    # reached at the first eval: no interpolation
    assert crossing(evals, "val_loss", 9.5, higher=False)["wall_s"] == 0.0
    # NaN values never count as a crossing
    assert crossing([_ev(0, float("nan"), 9.0, 0.0), _ev(5, 0.1, 8.0, 5.0)], "val_mlm_acc", 0.05, True)["wall_s"] == 5.0


def _write_run(d: Path, evals: list[dict], steps: int) -> None:
    d.mkdir(parents=True)
    (d / "metrics.jsonl").write_text("\n".join(json.dumps(e) for e in evals) + "\n")
    fin = evals[-1]
    (d / "summary.json").write_text(json.dumps({"steps": steps, "train_time_s": fin["wall_s"], "final_eval": fin}))


def test_summarize_ratios_against_same_seed_baseline(tmp_path):
    g = tmp_path / "wiki_micro_c8_k0.5_process10_t1"
    _write_run(g / "baseline_s0", [_ev(0, 0.0, 9.0, 0.0), _ev(10, 0.1, 7.0, 100.0)], 10)
    _write_run(g / "entropy_s0", [_ev(0, 0.0, 9.0, 0.0), _ev(20, 0.1, 7.0, 50.0)], 20)
    s = summarize(g, ["baseline", "entropy"], [0], acc_t=[0.05], loss_t=[8.0])
    cell = s["arms"]["entropy"]["targets"]["acc:0.05"]
    # baseline reaches 0.05 at t=50, entropy at t=25 -> ratio 0.5; samples: 160 vs 320 -> 2.0... per step
    assert cell["wall_s_ratio"][0] == pytest.approx(0.5)
    assert cell["samples_ratio"][0] == pytest.approx(320 / 160)
    assert cell["reached"] == 1 and cell["wall_s_ratio_n"] == 1
    assert s["arms"]["entropy"]["step_time_s"][0] == pytest.approx(2.5)


def test_shared_baseline_only_across_keep(tmp_path):
    runs = tmp_path / "runs"
    k5 = runs / "wiki_proxy-12_c32_k0.5_process300_t1"
    _write_run(k5 / "baseline_s0", [_ev(0, 0.0, 9.0, 0.0)], 1)
    k25 = runs / "wiki_proxy-12_c32_k0.25_process300_t1"
    assert shared_baseline(k25, 0) == k5 / "baseline_s0"
    assert shared_baseline(k25, 1) is None  # no such seed
    assert shared_baseline(runs / "wiki_proxy-12_c64_k0.25_process300_t1", 0) is None  # different C
    assert shared_baseline(runs / "wiki_proxy-12_c32_k0.25_process600_t1", 0) is None  # different budget
    assert shared_baseline(runs / "linux-docs_proxy-12_c32_k0.25_process300_t1", 0) is None
    # a symlinked (already shared) baseline is never a source
    k1 = runs / "wiki_proxy-12_c32_k1_process300_t1"
    k1.mkdir()
    (k1 / "baseline_s0").symlink_to(k5 / "baseline_s0")
    assert shared_baseline(k5, 0) is None


def test_shared_baseline_needs_the_same_config_apart_from_keep(tmp_path):
    from sift_fast.config import build_config

    runs = tmp_path / "runs"
    src = runs / "my_k_corpus_micro_c8_k0.5_process10_t1" / "baseline_s0"  # '_k' inside the corpus name
    _write_run(src, [_ev(0, 0.0, 9.0, 0.0)], 1)
    made = build_config({"preset": "micro", "selection": "none", "candidates": 8, "keep": 0.5, "out": str(src)})
    (src / "config.json").write_text(json.dumps(made.to_dict()))
    group = runs / "my_k_corpus_micro_c8_k0.25_process10_t1"
    same = made.replace(keep=0.25, out=str(group / "baseline_s0"))
    assert shared_baseline(group, 0, same) == src
    assert shared_baseline(group, 0, same.replace(lr=3e-4)) is None
    assert shared_baseline(group, 0, same.replace(seq_len=64)) is None


def test_overview_table_from_suite_reports(tmp_path):
    """bench/tta_overview.py reads the suite's JSON reports and prints the ratios they hold."""
    from bench.time_to_accuracy import write_report
    from bench.tta_overview import overview

    g = tmp_path / "runs" / "wiki_micro_c8_k0.5_process10_t1"
    _write_run(g / "baseline_s0", [_ev(0, 0.0, 9.0, 0.0), _ev(10, 0.1, 7.0, 100.0)], 10)
    _write_run(g / "entropy_s0", [_ev(0, 0.0, 9.0, 0.0), _ev(20, 0.1, 7.0, 50.0)], 20)
    _write_run(g / "random_s0", [_ev(0, 0.0, 9.0, 0.0), _ev(20, 0.02, 8.5, 50.0)], 20)
    meta = {"name": "wiki_micro_c8_k0.5", "command": "x", "machine": "m", "preset": "micro", "corpus": "wiki",
            "candidates": 8, "keep": 0.5, "exit_layer": "1", "budget_s": 10.0, "clock": "process",
            "num_threads": 1, "arms": ["baseline", "entropy", "random"], "seeds": [0], "runs_dir": str(g)}
    res = tmp_path / "results"
    res.mkdir()
    write_report(g, res, meta, [0.05, 0.1], [8.0, 7.0])
    rows, md = overview(res)
    ent = next(r for r in rows if r["arm"] == "entropy")
    assert ent["step_time_ratio"] == pytest.approx(0.25)  # 2.5 s/step vs 10 s/step
    assert ent["cells"] == ["0.50 ± 0.00", "0.50 ± 0.00", "0.50 ± 0.00", "0.50 ± 0.00"]
    rnd = next(r for r in rows if r["arm"] == "random")
    assert rnd["cells"] == ["-", "-", "-", "-"]  # never reached acc 0.05 / loss 8.0
    assert "| entropy | 1 | 0.25 |" in md
