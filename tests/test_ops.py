"""exit_scores / select_topk (torch backend) against brute-force fp64 references."""

import pytest
import torch

from sift_fast.ops import exit_scores, exit_scores_rows, select_topk


def brute_force(hidden, weight, bias, labels, criterion, ignore_index=-100):
    """Full [B, S, V] logits in float64, then a Python loop over sequences."""
    h, w, b = hidden.double(), weight.double(), bias.double()
    logits = h @ w.T + b
    logp = torch.log_softmax(logits, -1)
    out = []
    for i in range(labels.shape[0]):
        vals = []
        for j in range(labels.shape[1]):
            y = int(labels[i, j])
            if y == ignore_index:
                continue
            if criterion == "loss":
                vals.append(-logp[i, j, y].item())
            else:
                vals.append(-(logp[i, j].exp() * logp[i, j]).sum().item())
        out.append(sum(vals) / len(vals) if vals else float("-inf"))
    return torch.tensor(out, dtype=torch.float64)


def make_case(b=5, s=37, h=24, v=1001, seed=0, p=0.3):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, s, h, generator=g)
    weight = torch.randn(v, h, generator=g) * 0.5
    bias = torch.randn(v, generator=g)
    labels = torch.randint(0, v, (b, s), generator=g)
    labels[torch.rand(b, s, generator=g) > p] = -100
    labels[1] = -100  # a sequence with no masked token
    return hidden, weight, bias, labels


@pytest.mark.parametrize("criterion", ["loss", "entropy"])
@pytest.mark.parametrize("chunk", [7, 4096])
def test_exit_scores_matches_fp64(criterion, chunk):
    hidden, weight, bias, labels = make_case()
    got = exit_scores(hidden, weight, bias, labels, criterion, backend="torch", chunk_rows=chunk)
    ref = brute_force(hidden, weight, bias, labels, criterion)
    assert got.dtype == torch.float32 and got.shape == (5,)
    assert torch.isneginf(got[1]) and torch.isneginf(ref[1])
    finite = torch.isfinite(ref)
    torch.testing.assert_close(got[finite].double(), ref[finite], rtol=1e-5, atol=1e-5)


def test_exit_scores_non_contiguous_and_bf16():
    hidden, weight, bias, labels = make_case(b=4, s=19, h=16, v=300)
    wide = torch.randn(4, 19, 40)
    wide[..., ::2][..., :16] = hidden  # hidden as a strided view
    view = wide[..., ::2][..., :16]
    assert not view.is_contiguous()
    ref = brute_force(hidden, weight, bias, labels, "entropy")
    got = exit_scores(view, weight, bias, labels, "entropy", backend="torch")
    finite = torch.isfinite(ref)
    torch.testing.assert_close(got[finite].double(), ref[finite], rtol=1e-5, atol=1e-5)
    # bf16 input: error within a few bf16 ulps of the score scale
    got16 = exit_scores(hidden.bfloat16(), weight.bfloat16(), bias.bfloat16(), labels, "loss", backend="torch")
    ref16 = brute_force(hidden.bfloat16().float(), weight.bfloat16().float(), bias.bfloat16().float(), labels, "loss")
    assert got16.dtype == torch.float32
    assert (got16[finite].double() - ref16[finite]).abs().max() < 0.1


def test_rows_api_equals_dense_api_and_is_forward_only():
    hidden, weight, bias, labels = make_case(b=3, s=11, h=8, v=50)
    flat = labels.reshape(-1)
    idx = (flat != -100).nonzero().squeeze(1)
    rows = hidden.reshape(-1, 8)[idx]
    a = exit_scores_rows(rows, weight, bias, flat[idx], idx // 11, 3, "loss", backend="torch")
    b = exit_scores(hidden, weight, bias, labels, "loss", backend="torch")
    torch.testing.assert_close(a, b)
    with pytest.raises(RuntimeError, match="forward-only"):
        exit_scores(hidden.requires_grad_(), weight, bias, labels, backend="torch")


def test_all_masked_and_peaked():
    hidden, weight, bias, labels = make_case(b=2, s=5, h=8, v=20, p=1.1)
    labels[1] = torch.randint(0, 20, (5,))
    hidden[0, 0] = weight[3] * 50  # very peaked row: entropy ~ 0, no overflow
    ref = brute_force(hidden, weight, bias, labels, "entropy")
    got = exit_scores(hidden, weight, bias, labels, "entropy", backend="torch")
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-4)


def test_select_topk_matches_python_sort():
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        n = int(torch.randint(1, 40, (1,), generator=g))
        scores = torch.randint(0, 5, (n,), generator=g).float()  # many ties
        scores[torch.rand(n, generator=g) < 0.2] = float("-inf")
        for k in {1, n, max(1, n // 2)}:
            expected = sorted(range(n), key=lambda i: (-scores[i].item(), i))[:k]
            assert select_topk(scores, k).tolist() == expected
    with pytest.raises(ValueError):
        select_topk(torch.zeros(3), 4)
