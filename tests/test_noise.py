"""Adaptive keep: the noise-scale estimator against a brute-force population, the two-micro-batch probe
against separately computed gradients, the keep rule against a brute-force argmin, exact resume."""

import math
import shutil

import pytest
import torch
from test_train import params, run_losses

from sift_fast.config import build_config
from sift_fast.errors import ConfigError
from sift_fast.train.loop import Trainer
from sift_fast.train.noise import AdaptiveKeep, NoiseScale, step_flops
from sift_fast.train.step import probe_forward_backward


def test_noise_scale_recovers_population_trace_and_signal():
    """Per-sample gradients g_i = G + noise; the probe estimates equal tr(Σ)/|G|² of the population."""
    gen = torch.Generator().manual_seed(0)
    n, d = 4096, 64
    pop = torch.randn(n, d, generator=gen, dtype=torch.float64) * 3.0 + torch.linspace(-1, 1, d, dtype=torch.float64)
    g_true = pop.mean(0)
    trace = ((pop - g_true) ** 2).sum(1).mean()  # tr(Σ) of one sample's gradient
    est = NoiseScale(decay=0.999)
    b_small, b_big = 8, 16
    for _ in range(6000):
        idx = torch.randint(0, n, (b_big,), generator=gen)
        small = pop[idx[:b_small]].mean(0).square().sum()
        big = pop[idx].mean(0).square().sum()
        est.record(small, b_small, big, b_big)
    est.poll()
    expected = float(trace / g_true.square().sum())
    assert est.probes == 6000
    assert est.value == pytest.approx(expected, rel=0.15)
    assert est.trace / est.weight == pytest.approx(float(trace), rel=0.05)


def test_noise_scale_hand_computed_probe():
    est = NoiseScale(decay=0.0)  # no smoothing: the last probe's estimates
    est.record(torch.tensor(5.0), 2, torch.tensor(3.0), 4)
    est.poll()
    # |G|² = (4·3 − 2·5) / 2 = 1;  tr(Σ) = (5 − 3) / (1/2 − 1/4) = 8
    assert est.g2 == pytest.approx(1.0) and est.trace == pytest.approx(8.0) and est.value == pytest.approx(8.0)
    est.record(torch.tensor(3.0), 2, torch.tensor(3.5), 4)  # |G|² = 4, tr(Σ) = -2 → clipped at 0
    est.poll()
    assert est.value == 0.0


def test_probe_gradient_equals_unsplit_and_small_norm_is_the_half_batch_gradient(micro_cfg):
    tr = Trainer(micro_cfg(selection="none", candidates=6))
    batch = tr.loader.next_batch()
    model = tr.engine.module

    def grad_of(b):
        model.zero_grad(set_to_none=True)
        tr.engine.forward(b).loss.backward()
        return [p.grad.detach().clone() for p in model.parameters()]

    full = grad_of(batch)
    half = grad_of(batch.select([0, 1, 2]))
    model.zero_grad(set_to_none=True)
    probe = NoiseScale(decay=0.0)
    out = probe_forward_backward(tr.engine, batch, probe, tr.timer)
    split = [p.grad for p in model.parameters()]
    for a, b in zip(full, split, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    small, big = (float(x) for x in probe._pending[0][0])
    assert small == pytest.approx(float(sum(g.double().square().sum() for g in half)), rel=1e-5)
    assert big == pytest.approx(float(sum(g.double().square().sum() for g in full)), rel=1e-5)
    assert probe._pending[0][1:] == (3, 6)
    ref = tr.engine.forward(batch).loss
    torch.testing.assert_close(out.loss, ref.detach(), rtol=1e-6, atol=1e-6)


def test_keep_rule_is_the_brute_force_argmin(micro_cfg):
    cfg = micro_cfg(selection="entropy", adaptive_keep="noise", candidates=32, keep=0.5)
    ak = AdaptiveKeep(cfg, 512)
    assert min(ak.costs) == 16 and max(ak.costs) == 32
    assert ak.costs[32] == step_flops(cfg, 512, 32, scoring=False)  # the full batch needs no scoring pass
    for b in (0.0, 3.0, 40.0, 200.0, 5000.0):
        ak.noise.g2, ak.noise.trace, ak.noise.probes = 1.0, b, 1
        best = min(range(16, 33), key=lambda k: (1 + b / k) * step_flops(cfg, 512, k, scoring=k < 32)
                   if k in ak.costs else math.inf)
        assert ak.update() == best
    ak.noise.g2 = -1.0  # no measurable signal: all noise → the full batch
    assert ak.update() == 32
    fresh = AdaptiveKeep(cfg, 512)
    assert fresh.update() == 16  # no probe yet: the configured keep


def test_adaptive_keep_config_conflicts_are_one_line():
    with pytest.raises(ConfigError, match="two keep schedules"):
        build_config({"adaptive_keep": "noise", "anneal_until": 10})
    with pytest.raises(ConfigError, match="selection_rule=topk"):
        build_config({"adaptive_keep": "noise", "selection_rule": "sample"})
    with pytest.raises(ConfigError, match="adaptive_keep"):
        build_config({"adaptive_keep": "always"})
    assert not build_config({}).sift.adaptive and build_config({"adaptive_keep": "noise"}).sift.adaptive


def test_adaptive_run_probes_logs_and_resumes_bitwise(micro_cfg, tmp_path):
    kw = dict(max_steps=8, checkpoint_every=4, selection="entropy", adaptive_keep="noise", noise_every=2,
              candidates=8, keep=0.5)
    full_dir, resumed_dir = tmp_path / "full", tmp_path / "resumed"
    full = Trainer(micro_cfg(out=str(full_dir), max_checkpoints=5, **kw))
    full.run()
    assert full.adaptive.noise.probes >= 3
    (resumed_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(full_dir / "checkpoints" / "step_00000004.pt", resumed_dir / "checkpoints")
    shutil.copy(full_dir / "metrics.jsonl", resumed_dir / "metrics.jsonl")
    resumed = Trainer(micro_cfg(out=str(resumed_dir), resume=True, **kw), data=full.data)
    resumed.run()
    a, b = run_losses(full_dir), run_losses(resumed_dir)
    assert all(a[s] == b[s] for s in range(5, 9)), (a, b)
    pa, pb = params(full), params(resumed)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert resumed.adaptive.state_dict() == full.adaptive.state_dict()


def test_sample_rule_loss_is_unbiased_for_the_baseline_loss(micro_cfg):
    """k = 1 draw: Σ_i p_i · L_IS(i) equals the baseline's token-mean loss over every candidate (exact)."""
    tr = Trainer(micro_cfg(selection="entropy", selection_rule="sample", keep=0.125, sample_mix=0.3))
    batch = tr.loader.next_batch()
    scores = torch.rand(batch.size, generator=torch.Generator().manual_seed(1)) + 0.1
    scores[2] = float("-inf")  # a sequence without masked tokens scores -inf: only the uniform share draws it
    p = tr.selector.probabilities(scores)
    assert float(p.sum()) == pytest.approx(1.0) and float(p[2]) == pytest.approx(0.3 / batch.size)
    with torch.no_grad():
        expected = 0.0
        for i in range(batch.size):
            sub = batch.select([i])
            w = tr.selector.sample_weights(p[i:i + 1], batch.num_masked)
            rw = torch.repeat_interleave(w, sub.masked_row_ptr.diff())
            if sub.num_masked:
                expected += float(p[i]) * float(tr.engine.forward(sub, row_weight=rw).loss)
        full = float(tr.engine.forward(batch).loss)
    assert expected == pytest.approx(full, rel=1e-5)
    kept, pk = tr.selector.sample(scores, 5)
    assert kept.tolist() == sorted(kept.tolist()) and torch.equal(pk, p[kept])


def test_sample_rule_trains_and_logs(micro_cfg):
    tr = Trainer(micro_cfg(selection="entropy", selection_rule="sample", keep=0.5, max_steps=4,
                          select_until=1.0))
    summary = tr.run()
    assert summary["steps"] == 4 and tr.backprop_samples == 4 * 4


def test_entry_points_without_weighted_loss_refuse_the_sample_rule_and_adaptive_keep():
    from sift_fast.config import SiftConfig
    from sift_fast.megatron import SiftForwardStep

    for kw, msg in (({"selection_rule": "sample"}, "selection_rule 'sample'"), ({"adaptive_keep": "noise"},
                                                                                  "adaptive_keep")):
        with pytest.raises(ConfigError, match=msg):
            SiftForwardStep(lambda *a: None, SiftConfig(**kw))
    with pytest.raises(ConfigError, match="not supported under DeepSpeed"):
        from sift_fast.distributed.engine import DeepSpeedEngine

        DeepSpeedEngine(None, build_config({"selection_rule": "sample"}), torch.device("cpu"), ds_config={})
