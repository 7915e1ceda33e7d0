"""Automatic exit layer: the choice rule, change logging, and exact resume of its state."""

import json
import shutil

from sift_fast.train.auto_exit import AutoExit, choose_layer, scoring_cost
from sift_fast.train.loop import Trainer


def test_cost_model_is_monotone():
    costs = [scoring_cost(k, 12) for k in range(1, 13)]
    assert costs == sorted(costs) and costs[-1] == 1.0


def test_choose_shallowest_above_threshold_with_hysteresis():
    over = [0.5, 0.72, 0.8, 0.9]
    assert choose_layer(over, 0.7, current=1) == 2
    assert choose_layer(over, 0.7, current=4) == 4  # 0.72 does not clear 0.7 by the margin
    assert choose_layer([0.5, 0.76, 0.8, 0.9], 0.7, current=4) == 2
    assert choose_layer([0.5, 0.72, 0.8, 0.9], 0.7, current=1, margin=0.0) == 2
    # none reaches the threshold: best overlap net of cost; equal overlaps go to the shallower layer
    assert choose_layer([0.3, 0.6, 0.6, 0.61], 0.9, current=1) == 2
    assert choose_layer([0.3, 0.3, 0.3, 0.3], 0.9, current=4) == 1


class FakeTrainer:
    def __init__(self):
        self.step, self.exit_layer = 0, 1
        self.records, self.lines = [], []
        self.metrics = type("M", (), {"write": lambda _, r: self.records.append(r)})()
        self.console = type("C", (), {"log": lambda _, s: self.lines.append(s)})()


def test_auto_exit_smooths_decides_every_n_and_logs_changes():
    ctl, tr = AutoExit(0.7, every=4, alpha=0.5), FakeTrainer()
    feed = [[0.2, 0.9, 1.0]] * 2 + [[0.9, 0.9, 1.0]] * 6
    for i, over in enumerate(feed):
        tr.step = 2 * (i + 1)
        ctl(tr, {"topk_overlap_self": over})
    changes = [r for r in tr.records if r["type"] == "exit_layer_change"]
    # step 4: EMA layer 1 = 0.2 -> layer 2; step 8: EMA 0.725 < 0.75 (hysteresis) stays; step 12: -> 1
    assert [(c["step"], c["from"], c["to"]) for c in changes] == [(4, 1, 2), (12, 2, 1)]
    assert tr.exit_layer == 1 and len(tr.lines) == 2 and "exit layer 2 -> 1" in tr.lines[1]
    state = ctl.state_dict()
    other = AutoExit(0.7, every=4)
    other.load_state_dict(json.loads(json.dumps(state)))
    assert other.state_dict() == state


def read(out):
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]


def test_auto_exit_in_the_trainer_resumes_exactly(micro_cfg, tmp_path):
    kw = dict(max_steps=10, checkpoint_every=5, keep_checkpoints=5, selection="entropy", exit_layer="auto",
              exit_auto_every=2, exit_auto_overlap=0.99)
    full_dir, res_dir = tmp_path / "full", tmp_path / "resumed"
    full = Trainer(micro_cfg(out=str(full_dir), **kw))
    assert len(full.step_hooks) == 1 and full.exit_layer == 1
    full.run()
    recs = read(full_dir)
    tele = [r for r in recs if r["type"] == "selection_telemetry"]
    assert [r["step"] for r in tele] == list(range(1, 11)) and all(r["charged"] for r in tele)
    steps = {r["step"]: r for r in recs if r["type"] == "step"}
    for c in (r for r in recs if r["type"] == "exit_layer_change"):
        assert c["to"] != c["from"] and (c["step"] + 1 not in steps or steps[c["step"] + 1]["exit_layer"] == c["to"])
    (res_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(full_dir / "checkpoints" / "step_00000005.pt", res_dir / "checkpoints")
    shutil.copy(full_dir / "metrics.jsonl", res_dir / "metrics.jsonl")
    resumed = Trainer(micro_cfg(out=str(res_dir), resume=True, **kw))
    resumed.run()
    assert resumed.exit_layer == full.exit_layer
    assert resumed.step_hooks[0].listeners[0].state_dict() == full.step_hooks[0].listeners[0].state_dict()

    def key(rs):
        return [(r["type"], r["step"], r.get("loss"), r.get("exit_layer"), r.get("to")) for r in rs
                if r["type"] in ("step", "exit_layer_change")]

    assert key(read(res_dir)) == key(recs)
