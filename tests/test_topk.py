"""Deterministic top-k: equal to a Python sort (highest first, ties to the lower index, NaN as -inf)."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")

from sift_fast.kernels.exit_scorer import interpreting  # noqa: E402
from sift_fast.kernels.topk import MAX_SINGLE_PROGRAM, topk_indices, topk_ref, topk_torch  # noqa: E402

from sift_fast import ops  # noqa: E402

if torch.cuda.is_available() and not interpreting():
    DEVICES = [pytest.param("cuda", marks=pytest.mark.gpu)]
    SIZES = [1, 7, 100, 1000, MAX_SINGLE_PROGRAM, MAX_SINGLE_PROGRAM + 3]
else:
    DEVICES = ["cpu"]
    SIZES = [1, 7, 100, 300, MAX_SINGLE_PROGRAM + 3]  # the interpreter's sort is slow beyond a few hundred


def py_topk(scores: torch.Tensor, k: int) -> list[int]:
    vals = [float("-inf") if v != v else v for v in scores.float().tolist()]
    return sorted(range(len(vals)), key=lambda i: (-vals[i], i))[:k]


def tied_scores(n: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    s = torch.randint(-4, 5, (n,), generator=g).float() * 0.5  # many ties
    s[::7] = float("nan")
    s[3::11] = -0.0
    s[5::13] = float("-inf")
    s[1::17] = float("inf")
    return s.to(dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", SIZES)
def test_matches_python_sort(device, n):
    s = tied_scores(n, seed=n).to(device)
    for k in sorted({1, max(1, n // 3), n}):
        got = topk_indices(s, k)
        assert got.dtype == torch.int64 and got.shape == (k,)
        expect = py_topk(s.cpu(), k)
        assert got.tolist() == expect
        assert topk_ref(s, k).tolist() == expect
        assert topk_torch(s, k).tolist() == expect
        assert ops.select_topk(s, k).tolist() == expect


@pytest.mark.parametrize("device", DEVICES)
def test_continuous_scores_and_dtypes(device):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(200, generator=g)
    s[10] = s[20] = s[5]  # exact ties among continuous values
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        x = s.to(dtype).to(device)
        assert topk_indices(x, 50).tolist() == py_topk(x.cpu(), 50)


@pytest.mark.parametrize("device", DEVICES)
def test_deterministic_and_neg_inf_scores(device):
    # Sequences without a masked token score -inf: they rank last, by index.
    s = torch.tensor([float("-inf"), 1.0, float("-inf"), 1.0, 0.5, float("-inf")], device=device)
    assert topk_indices(s, 6).tolist() == [1, 3, 4, 0, 2, 5]
    x = tied_scores(250, seed=3).to(device)
    assert torch.equal(topk_indices(x, 100), topk_indices(x, 100))


@pytest.mark.parametrize("device", DEVICES)
def test_bad_arguments(device):
    s = torch.zeros(5, device=device)
    for k in (0, 6):
        with pytest.raises(ValueError, match="k must be"):
            topk_indices(s, k)
    with pytest.raises(ValueError, match="1-D"):
        topk_indices(torch.zeros(2, 3, device=device), 1)
