"""sift_fast/cli/arms.py: ``default`` is exactly the trainer's default; every other SIFT arm pins its schedule."""

import pytest

from sift_fast.cli.arms import arm_overrides
from sift_fast.config import build_config
from sift_fast.errors import ConfigError


def test_default_arm_is_the_trainers_default_and_fixed_arms_pin_their_schedule():
    plain = build_config({"preset": "proxy-12"})
    # a base with every schedule knob moved off its default: the arms must not inherit any of it
    base = plain.replace(select_until=0.7, lr_batch_scale="linear", anneal_horizon=0.5, selection="loss")
    default = base.replace(**arm_overrides("default", base))
    assert (default.sift, default.optim) == (plain.sift, plain.optim)
    from sift_fast.cli.arms import default_name

    named = base.replace(**arm_overrides(default_name(), base))  # the default by its explicit name
    assert (named.sift, named.optim) == (plain.sift, plain.optim) and default_name() == "until0.1-lr"
    for arm in ("entropy", "random", "lr", "sample", "noise"):
        c = base.replace(**arm_overrides(arm, base))
        assert (c.sift.select_until, c.optim.lr_batch_scale, c.sift.anneal_horizon) == (1.0, "none", 0.0), arm
    assert base.replace(**arm_overrides("lr", base)).optim.lr == pytest.approx(plain.optim.lr * 0.5 ** 0.5)
    with pytest.raises(ConfigError, match="unknown arm"):
        arm_overrides("nope", base)


def test_until_arms_are_the_default_with_another_switch_point():
    from sift_fast.cli.arms import is_arm

    base = build_config({"preset": "proxy-12"})
    emb = base.replace(lr_batch_scale="sqrt", lr_batch_scale_params="embeddings")  # arms must not inherit it
    for name, until, scale, params in (("until0.1", 0.1, "none", "all"), ("until.25-lr", 0.25, "sqrt", "all"),
                                       ("until1", 1.0, "none", "all"), ("until0.1-emb", 0.1, "sqrt", "embeddings"),
                                       ("until0.1-lr4", 0.1, "fourth-root", "all"),
                                       ("until0.07-lr38", 0.07, "three-eighths", "all"),
                                       ("until0.07-lrp0.3125", 0.07, 0.3125, "all"),
                                       ("until0.1-lrp1", 0.1, "linear", "all"), ("until0.1-lrp.5", 0.1, "sqrt", "all")):
        for b in (base, emb):
            c = b.replace(**arm_overrides(name, b))
            assert (c.sift.selection, c.sift.select_until, c.optim.lr_batch_scale,
                    c.optim.lr_batch_scale_params) == ("entropy", until, scale, params), name
        assert is_arm(name)
    for arm in ("entropy", "lr", "default"):
        assert emb.replace(**arm_overrides(arm, emb)).optim.lr_batch_scale_params == "all", arm
    for bad in ("until0", "until0.0", "until.00", "until1.5", "until-0.1", "until0.1-x", "until0.1-lr-emb",
                "until0.1-lr2", "untilx", "until0.1-lrp", "until0.1-lrp1.5", "until0.1-lrp-0.1", "until0.1-lrpx"):
        assert not is_arm(bad)
        with pytest.raises(ConfigError, match="unknown arm"):
            arm_overrides(bad, base)


def test_compare_note_quotes_the_suite_under_the_defaults_name(tmp_path, monkeypatch):
    import json

    import sift_fast.cli.compare as compare
    from sift_fast.cli.arms import default_name

    suite = tmp_path / "suite.json"
    eq = {"val_loss@0.25": [0.99, 0.004], "val_loss@1": [0.998, 0.0]}
    suite.write_text(json.dumps({"meta": {"budget_s": 2700.0},
                                 "analysis": {"arms": {default_name(): {"equal_time": eq, "seeds": [1, 2]},
                                                       "until0.3": {"equal_time": eq, "seeds": [0]}}}}))
    broken = tmp_path / "broken.json"  # an older or damaged suite file: left out, no traceback
    broken.write_text(json.dumps({"meta": {"budget_s": 2700.0}, "analysis": {"arms": {default_name(): {
        "equal_time": {"val_loss@1": None, "val_loss@0.25": [0.9, 0.0]}}}}}))
    monkeypatch.setattr(compare, "SUITES", {"single-pass-decay": suite, "repeated-decay": tmp_path / "none.json",
                                            "wide-decay": broken})
    cfg = build_config({"preset": "proxy-12", "time_budget_s": 240.0})
    note = compare.one_seed_note(cfg)
    assert f"single-pass-decay {default_name()} (2700 CPU-s, 2 seeds): 0.990 ± 0.004 @25%, 0.998 @100%." in note
    assert "until0.3" not in note and "repeated-decay" not in note and "wide-decay" not in note
    monkeypatch.setattr(compare, "SUITES", {"repeated-decay": tmp_path / "missing.json"})
    assert compare.one_seed_note(cfg).endswith("The multi-seed evidence: bench/results/tta_horizon_*.md.")


def test_default_name_of_a_power_default(monkeypatch):
    """A default power without a name gets the ``until<F>-lrp<P>`` name that runs exactly it; one the form cannot
    spell is one line, not a name that would run another power."""
    import sift_fast.cli.arms as arms
    from sift_fast.config import OptimConfig

    base = build_config({"preset": "micro"})
    monkeypatch.setattr(arms, "OptimConfig", lambda: OptimConfig(lr_batch_scale=0.3125))
    assert arms.default_name() == "until0.1-lrp0.3125"
    assert arms.arm_overrides(arms.default_name(), base)["lr_batch_scale"] == 0.3125
    monkeypatch.setattr(arms, "OptimConfig", lambda: OptimConfig(lr_batch_scale=1e-5))
    with pytest.raises(ConfigError, match="has no until<F> arm name"):
        arms.default_name()
