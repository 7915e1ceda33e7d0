"""Fast checks of the bench/theory building blocks against hand-computed cases and brute force."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.theory.gaussian_limit import argmax_prob, linear_net_correlation  # noqa: E402
from bench.theory.linear_net import _next_layer, argmax_agreement, chi2_model, simulate, topk_overlap  # noqa: E402
from bench.theory.problems import make_least_squares, make_logistic  # noqa: E402
from bench.theory.schedules import constant, inverse_time  # noqa: E402
from bench.theory.scorers import EarlyExitScorer, ExactScorer, NoisyScorer  # noqa: E402
from bench.theory.selection import Policy, top_b  # noqa: E402
from bench.theory.sgd import final_gap, iterations_to, iterations_to_stay, run_sgd  # noqa: E402


@pytest.fixture(scope="module")
def problems():
    return [
        make_least_squares(n=200, p=6, outlier_frac=0.1, seed=3),
        make_logistic(n=200, p=6, w_norm=3.0, flip_frac=0.1, seed=4),
    ]


def test_top_b_matches_brute_force_sort():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((5, 12))
    idx = rng.permutation(60).reshape(5, 12)
    got = top_b(scores, idx, 3)
    for s, i, g in zip(scores, idx, got, strict=True):
        assert set(g) == set(i[np.argsort(-s)[:3]])


@pytest.mark.parametrize("scorer", [ExactScorer(), NoisyScorer("mult", 0.0), NoisyScorer("add", 0.0)])
def test_greedy_with_zero_noise_picks_true_top_losses(problems, scorer):
    rng = np.random.default_rng(1)
    for pr in problems:
        W = rng.standard_normal((4, pr.X.shape[1]))
        idx = rng.choice(pr.n, size=(4, 16), replace=False)
        sel = top_b(scorer(pr, W, idx, rng), idx, 4)
        for w, i, s in zip(W, idx, sel, strict=True):
            true = [pr.sample_loss(pr.X[j] @ w, pr.y[j]) for j in i]
            assert set(s) == set(i[np.argsort(true)[::-1][:4]])


def test_batch_grad_matches_finite_difference(problems):
    rng = np.random.default_rng(2)
    for pr in problems:
        w = rng.standard_normal(pr.X.shape[1])
        idx = rng.integers(0, pr.n, size=(1, 7))

        def f(v, pr=pr, idx=idx):
            return float(pr.losses(v[None], idx).mean() + 0.5 * pr.lam * v @ v)

        g = pr.batch_grad(w[None], idx)[0]
        eps = 1e-6
        fd = np.array([(f(w + eps * e) - f(w - eps * e)) / (2 * eps) for e in np.eye(w.size)])
        np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-7)


def test_optimum_is_stationary_and_minimal(problems):
    rng = np.random.default_rng(3)
    for pr in problems:
        g = pr.batch_grad(pr.w_opt[None], np.arange(pr.n)[None])[0]
        assert np.linalg.norm(g) < 1e-8
        assert math.isclose(pr.full_loss(pr.w_opt[None])[0], pr.f_opt, rel_tol=1e-12)
        W = pr.w_opt + 1e-2 * rng.standard_normal((10, pr.X.shape[1]))
        assert np.all(pr.full_loss(W) > pr.f_opt)


def test_full_width_exit_is_exact(problems):
    rng = np.random.default_rng(4)
    for pr in problems:
        ex = EarlyExitScorer(pr, width=pr.X.shape[1], n_ref=50)
        W = rng.standard_normal((3, pr.X.shape[1]))
        idx = rng.integers(0, pr.n, size=(3, 9))
        np.testing.assert_allclose(ex(pr, W, idx, rng), pr.losses(W, idx), rtol=1e-8, atol=1e-10)


def test_anneal_pool_goes_from_C_to_b():
    pol = Policy("anneal", anneal_frac=0.5)
    sizes = [pol.pool_size(t, 100, 32, 4) for t in range(100)]
    assert sizes[0] == 32 and sizes[50] == 4 and sizes[-1] == 4
    assert all(a >= b for a, b in zip(sizes, sizes[1:], strict=False))
    assert Policy("uniform").pool_size(0, 100, 32, 4) == 4
    assert Policy("greedy").pool_size(99, 100, 32, 4) == 32


def test_schedules_and_metrics():
    assert constant(0.3)(1000) == 0.3
    assert inverse_time(1.0, 10.0)(10) == 0.5
    loss = np.array([[4.0, 3.0, 1.9, 1.05, 1.2], [4.0, 3.0, 2.5, 2.2, 2.1]])
    assert iterations_to(loss, 2.0) == [2, None]
    assert iterations_to(loss, 1.1) == [3, None]
    assert iterations_to_stay(loss, 2.0) == [2, None]
    assert iterations_to_stay(loss, 1.1) == [None, None]
    assert iterations_to_stay(loss, 5.0) == [0, 0]
    np.testing.assert_allclose(final_gap(loss, 1.0, tail=0.4), [0.125, 1.15])


def test_sgd_greedy_and_uniform_decrease_loss(problems):
    pr = problems[0]
    for pol in (Policy("uniform"), Policy("greedy"), Policy("anneal")):
        tr = run_sgd(pr, ExactScorer(), pol, constant(1.0 / pr.l_max), 300, 2, 16, 2)
        assert tr.loss.shape == (2, 301)
        assert np.all(tr.loss[:, -1] < 0.2 * tr.loss[:, 0])
        if pol.kind == "greedy":
            assert tr.precision_far == 1.0


def test_argmax_and_topk_hand_cases():
    true = np.array([[1.0, 5.0, 3.0, 2.0], [4.0, 0.0, 1.0, 2.0]])
    approx = np.array([[0.0, 9.0, 1.0, 2.0], [0.0, 1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(argmax_agreement(true, approx), [1.0, 0.0])
    np.testing.assert_allclose(topk_overlap(true, approx, 2), [0.5, 0.5])


def test_next_layer_preserves_gram_in_expectation():
    rng = np.random.default_rng(5)
    H = rng.standard_normal((1, 8, 3))
    Hs = np.repeat(H, 20000, axis=0)
    out = _next_layer(Hs, rng)
    gram = np.einsum("tdi,tdj->ij", out, out) / out.shape[0]
    np.testing.assert_allclose(gram, H[0].T @ H[0], atol=0.05 * np.abs(H[0].T @ H[0]).max())


def test_exit_at_full_depth_always_preserves_argmax():
    net = simulate(trials=300, width=16, depth=4, samples=8, rng=np.random.default_rng(6))
    assert argmax_agreement(net.true[4], net.exit_[4]).mean() == 1.0
    t, e = chi2_model(300, 16, 4, 4, 8, np.random.default_rng(7))
    assert argmax_agreement(t, e).mean() == 1.0


def test_pure_noise_exit_is_at_chance():
    R, trials = 8, 20000
    net = simulate(trials=trials, width=16, depth=3, samples=R, rng=np.random.default_rng(8))
    noise = np.random.default_rng(9).random((trials, R))
    p = argmax_agreement(net.true[3], noise).mean()
    assert abs(p - 1 / R) < 4 * math.sqrt((1 / R) * (1 - 1 / R) / trials)


def test_gaussian_closed_form_limits():
    for c in (0.0, 0.3, 0.8):
        assert abs(argmax_prob(c, 2) - (0.5 + math.asin(c) / math.pi)) < 1e-4
    assert abs(argmax_prob(0.0, 16) - 1 / 16) < 1e-4
    assert argmax_prob(1.0, 16) == 1.0
    assert linear_net_correlation(3, 3) == 1.0
    rng = np.random.default_rng(10)
    c, R = 0.6, 8
    a = rng.standard_normal((40000, R))
    t = c * a + math.sqrt(1 - c * c) * rng.standard_normal((40000, R))
    assert abs(argmax_agreement(t, a).mean() - argmax_prob(c, R)) < 0.01
