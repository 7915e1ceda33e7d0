"""``sift-pretrain --tensorboard DIR``: the event file holds the metrics.jsonl values (read back with
tensorboard's EventAccumulator), train and eval records under the same field names; a resume purges the
steps after its checkpoint; the missing package is one line at start-up."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from sift_fast.cli.args import run_cli
from sift_fast.config import build_config


def _cfg(small_corpus, tmp_path: Path, **kw):
    return build_config({"preset": "micro", "corpus": small_corpus["data"], "cache_dir": small_corpus["cache_dir"],
                         "out": str(tmp_path / "run"), "max_steps": 6, "log_every": 2, "eval_every": 3,
                         "tensorboard": str(tmp_path / "tb"), "selection": "loss", "keep": 0.5, **kw})


def _scalars(logdir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def _records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_events_equal_metrics_jsonl(small_corpus, tmp_path):
    pytest.importorskip("tensorboard")
    from sift_fast.train.loop import Trainer

    Trainer(_cfg(small_corpus, tmp_path, checkpoint_every=3)).run()
    got = _scalars(tmp_path / "tb")
    recs = _records(tmp_path / "run")
    steps = [r for r in recs if r["type"] == "step"]
    evals = [r for r in recs if r["type"] == "eval"]
    assert len(steps) == 6 and [r["step"] for r in evals] == [0, 3, 6]
    for prefix, group in (("train", steps), ("eval", evals)):
        for rec in group:
            for key, value in rec.items():
                if key in ("step", "type") or isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                assert got[f"{prefix}/{key}"][rec["step"]] == np.float32(value), (prefix, key, rec["step"])
    want = {"train/loss", "train/kept_score_ratio", "train/score_share", "eval/val_mlm_acc", "eval/val_loss"}
    assert want <= set(got)
    # resume from step 3: the events after it are purged and written again, equal to the uninterrupted run
    res = tmp_path / "res"
    (res / "run" / "checkpoints").mkdir(parents=True)
    for name in ("step_00000003.pt", "step_00000003.json"):
        shutil.copy(tmp_path / "run" / "checkpoints" / name, res / "run" / "checkpoints")
    shutil.copy(tmp_path / "run" / "metrics.jsonl", res / "run")
    shutil.copytree(tmp_path / "tb", res / "tb")
    Trainer(_cfg(small_corpus, res, checkpoint_every=3, resume=True)).run()
    again = _scalars(res / "tb")
    assert again["train/loss"] == got["train/loss"] and again["eval/val_loss"] == got["eval/val_loss"]


def test_missing_tensorboard_is_one_line_at_start_up(small_corpus, tmp_path, capfd, monkeypatch):
    from sift_fast.cli.pretrain import _main

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    argv = ["--preset", "micro", "--data", small_corpus["data"], "--cache-dir", small_corpus["cache_dir"],
            "--out", str(tmp_path / "run"), "--max-steps", "2", "--tensorboard", str(tmp_path / "tb")]
    assert run_cli("sift-pretrain", _main, argv) == 2
    err = capfd.readouterr().err
    assert [x for x in err.splitlines() if "error:" in x] == [
        f"sift-pretrain: error: --tensorboard {tmp_path / 'tb'}: the tensorboard package is not installed "
        "(pip install tensorboard, or the dev extra)"]
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
