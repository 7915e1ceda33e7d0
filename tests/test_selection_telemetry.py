"""Selection telemetry: Spearman against a brute-force reference, full-depth agreement is exact,
per-layer scores match the trainer's scoring pass, and the hook only runs every N steps."""

import json
import random

import pytest
import torch

from sift_fast.train.loop import Trainer
from sift_fast.train.step import score_candidates
from sift_fast.train.telemetry_hook import average_ranks, layer_scores, spearman, telemetry_record, topk_overlap


def brute_ranks(xs):
    """Average 0-based rank by counting: #smaller + (#equal - 1) / 2."""
    return [sum(y < x for y in xs) + (sum(y == x for y in xs) - 1) / 2 for x in xs]


def brute_spearman(a, b):
    ra, rb = brute_ranks(a), brute_ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    return cov / (va * vb) ** 0.5


def test_average_ranks_known_case():
    assert average_ranks(torch.tensor([3.0, 1.0, 2.0, 2.0])).tolist() == [3.0, 0.0, 1.5, 1.5]


def test_spearman_matches_brute_force_with_ties():
    rng = random.Random(0)
    for n in (2, 5, 17, 64):
        for _ in range(20):
            a = [float(rng.randint(0, 6)) for _ in range(n)]  # many ties
            b = [float(rng.randint(0, 6)) for _ in range(n)]
            if len(set(a)) < 2 or len(set(b)) < 2:
                continue
            assert spearman(torch.tensor(a), torch.tensor(b)) == pytest.approx(brute_spearman(a, b), abs=1e-12)
    x = torch.arange(10.0)
    assert spearman(x, x.exp()) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert spearman(x, torch.ones(10)) != spearman(x, torch.ones(10))  # NaN for a constant input


def test_topk_overlap():
    a = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    b = torch.tensor([5.0, 1.0, 3.0, 2.0, 4.0])
    assert topk_overlap(a, b, 2) == 0.5
    assert topk_overlap(a, b, 5) == 1.0
    assert topk_overlap(a, a.flip(0), 1) == 0.0


def test_full_depth_agrees_with_itself_and_layers_match_the_scoring_pass(micro_cfg):
    tr = Trainer(micro_cfg(selection="loss", keep=0.5))
    model, batch = tr.engine.module, tr.loader.next_batch()
    n_layers = model.num_layers
    rec = telemetry_record(model, batch, "loss", 4, exit_layer=1)
    assert len(rec["spearman"]) == len(rec["topk_overlap"]) == n_layers
    assert rec["spearman"][-1] == pytest.approx(1.0) and rec["topk_overlap"][-1] == 1.0
    assert rec["kept_loss_ratio"][-1] >= 1.0  # the top-k by full loss has at least the mean loss
    ent = telemetry_record(model, batch, "entropy", 4, exit_layer=2)
    assert ent["topk_overlap_self"][-1] == 1.0 and ent["spearman_self"][-1] == pytest.approx(1.0)
    losses, ents = layer_scores(model, batch)
    for k in range(1, n_layers + 1):
        for crit, got in (("loss", losses), ("entropy", ents)):
            ref = score_candidates(model, batch, k, crit, backend="torch")
            torch.testing.assert_close(got[k - 1], ref, rtol=1e-5, atol=1e-5)


def test_hook_runs_every_n_steps_and_logs(micro_cfg, tmp_path):
    out = tmp_path / "tele"
    tr = Trainer(micro_cfg(out=str(out), selection="entropy", telemetry_every=3, max_steps=7,
                           select_until=1.0))
    tr.run()
    recs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    tele = [r for r in recs if r["type"] == "selection_telemetry"]
    assert [r["step"] for r in tele] == [3, 6]
    for r in tele:
        assert len(r["spearman"]) == tr.engine.module.num_layers
        assert all(0.0 <= o <= 1.0 for o in r["topk_overlap"])
        assert r["exit_layer"] == 1 and r["charged"] is False and r["cost_s"] >= 0
        assert r["kept_full_loss_ratio"] == r["kept_loss_ratio"][0]
        assert r["step_kept_full_loss_ratio"] is not None


def test_telemetry_off_by_default(micro_cfg):
    assert Trainer(micro_cfg()).step_hooks == []
