"""Selection policy: schedule, determinism, score-token subsets, checkpointed state."""

import torch

from sift_fast.config import SiftConfig
from sift_fast.selection import Selector


def test_plan_schedule_hand_checked():
    s = Selector(SiftConfig(selection="entropy", keep=0.5, candidates=32, warmup_steps=2, anneal_until=12,
                            interrupt_every=3))
    plans = [(s.plan(t).mode, s.plan(t).keep_count) for t in range(14)]
    # warmup: uniform 16; then keep anneals 16 -> 32 linearly over steps 2..12; every 3rd step uniform
    assert plans[:3] == [("uniform", 16)] * 3  # step 2 is an interrupt step (2 % 3 == 2)
    assert plans[3] == ("score", 18) and plans[4] == ("score", 19)
    assert plans[5] == ("uniform", 21)
    assert plans[12] == ("all", 32) and plans[13] == ("all", 32)


def test_none_and_random_and_keep_one():
    assert Selector(SiftConfig(selection="none", candidates=8)).plan(0).mode == "all"
    assert Selector(SiftConfig(selection="random", keep=0.25, candidates=8)).plan(5).keep_count == 2
    assert Selector(SiftConfig(selection="loss", keep=1.0, candidates=8)).plan(0).mode == "all"
    assert SiftConfig(keep=0.01, candidates=8).backprop_size == 1


def test_select_topk_sorted_ascending_and_uniform_seeded():
    s = Selector(SiftConfig(selection="loss", keep=0.5, candidates=6))
    scores = torch.tensor([0.1, 5.0, 3.0, float("-inf"), 4.0, 3.0])
    kept = s.select(s.plan(0), 6, scores)
    assert kept.tolist() == [1, 2, 4]  # top-3 = {1, 4, 2 (tie with 5, lower index wins)}
    a, b = Selector(SiftConfig(), seed=3), Selector(SiftConfig(), seed=3)
    assert torch.equal(a.uniform(32, 16), b.uniform(32, 16))
    u = a.uniform(32, 16)
    assert u.tolist() == sorted(set(u.tolist())) and len(u) == 16


def test_score_subset_at_most_m_per_sequence():
    s = Selector(SiftConfig())
    masked_seq = torch.tensor([0, 0, 0, 0, 1, 3, 3, 3, 3, 3])
    pos = s.score_subset(masked_seq, 2)
    counts = torch.bincount(masked_seq[pos], minlength=4).tolist()
    assert counts == [2, 1, 0, 2]
    assert pos.tolist() == sorted(pos.tolist())
    assert torch.equal(s.score_subset(masked_seq, 0), torch.arange(10))


def test_state_dict_round_trip():
    s = Selector(SiftConfig(), seed=1)
    s.uniform(10, 5)
    state = s.state_dict()
    x = s.uniform(10, 5)
    t = Selector(SiftConfig(), seed=99)
    t.load_state_dict(state)
    assert torch.equal(t.uniform(10, 5), x)


def test_drop_ins_refuse_what_their_host_loss_cannot_do():
    import pytest

    from sift_fast.config import SiftConfig
    from sift_fast.errors import ConfigError

    SiftConfig().require_drop_in("X")  # the defaults pass
    for bad, msg in (({"selection_scope": "global"}, "global"), ({"selection_rule": "sample"}, "sample"),
                     ({"adaptive_keep": "noise"}, "adaptive_keep")):
        with pytest.raises(ConfigError, match=f"{msg}.*not supported by X"):
            SiftConfig(**bad).require_drop_in("X")


def test_anneal_horizon_follows_the_progress_by_hand():
    """keep 0.5 of 32 (16) rises linearly to 32 at progress 0.8: k = round(16 + min(1, p / 0.8) · 16)."""
    s = Selector(SiftConfig(selection="entropy", keep=0.5, candidates=32, anneal_horizon=0.8, select_until=1.0))
    assert s.plan(5).keep_count == 16  # no progress set yet (a host that owns no horizon): no anneal
    for p, k in ((0.0, 16), (0.1, 18), (0.4, 24), (0.5, 26), (0.79, 32), (0.8, 32), (1.0, 32)):
        s.progress = p
        assert s.keep_count(100) == k, p
    s.progress = 0.4
    assert s.plan(7).mode == "score"
    s.progress = 0.9
    assert s.plan(7).mode == "all"  # annealed to every candidate: no scoring pass
