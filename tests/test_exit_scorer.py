"""Fused Triton exit scorer vs an fp64 brute force (CPU interpreter; the same tests on CUDA, marked gpu)."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")

from sift_fast.kernels.exit_scorer import (  # noqa: E402
    exit_scorer,
    exit_scorer_ref,
    exit_scorer_rows,
    exit_token_stats,
    interpreting,
)

from sift_fast import ops  # noqa: E402
from sift_fast.reference import exit_scores_ref, segment_mean, token_stats  # noqa: E402

IGN = -100
if torch.cuda.is_available() and not interpreting():
    DEVICES = [pytest.param("cuda", marks=pytest.mark.gpu)]
else:
    DEVICES = ["cpu"]
DTYPES = [torch.float32, torch.bfloat16]
CRITERIA = ["loss", "entropy"]


def make(device, dtype, B=5, S=37, H=96, V=1000, frac=0.3, scale=1.0, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(B, S, H, generator=g) * scale).to(dtype)
    weight = (torch.randn(V, H, generator=g) * (scale * 0.15)).to(dtype)
    b = torch.randn(V, generator=g) * 0.1 if bias else None
    labels = torch.randint(0, V, (B, S), generator=g)
    labels[torch.rand(B, S, generator=g) >= frac] = IGN
    if B > 2:
        labels[2] = IGN  # a sequence with no masked token
    return [t.to(device) if t is not None else None for t in (hidden, weight, b, labels)]


def ref64(hidden, weight, bias, labels, criterion):
    """fp64 logits from the hidden-dtype inputs -> per-sequence mean (``sift_fast.reference`` at fp64)."""
    return exit_scores_ref(hidden, weight, bias, labels, criterion, compute_dtype=torch.float64)


# The fp32-accumulation contract: whatever the input dtype, the kernel's scores are within this many units
# of (1 + max |score|) of the fp64 scores of the same (already quantized) inputs. Measured on the interpreter:
# <= 1.2e-7 in every test here (bf16, fp16, fp32), a ~30x margin for the GPU's accumulation order and
# ex2/lg2 approximations; PyTorch's bf16 error (the relative rule below) is 5e-6 .. 9e-4 of the scale, so a
# kernel regressed to bf16-like accuracy fails here even where 2x PyTorch's error would still admit it.
ACC_TOL = 4e-6


def check(out, ref, base, rel=2e-6):
    """Kernel error within ACC_TOL of fp64 (absolute, scaled by the score magnitude) and <= 2x the torch
    backend's error (same dtype) + a small atol; same -inf pattern; kernel output fp32."""
    assert out.dtype == torch.float32 and out.shape == ref.shape
    out, ref, base = out.cpu().double(), ref.cpu().double(), base.cpu().double()
    assert not torch.isnan(out).any()
    assert torch.equal(torch.isneginf(out), torch.isneginf(ref))
    fin = torch.isfinite(ref)
    if not fin.any():
        return 0.0, 0.0
    assert torch.isfinite(out[fin]).all()
    err = (out - ref)[fin].abs().max().item()
    err_t = (base - ref)[fin].abs().max().item()
    scale = 1.0 + ref[fin].abs().max().item()
    assert err <= ACC_TOL * scale, (err, ACC_TOL * scale)
    assert err <= 2 * err_t + rel * scale, (err, err_t, rel * scale)
    return err, err_t


def run_both(hidden, weight, bias, labels, criterion):
    """(kernel, fp64 reference, torch backend): the argument order of ``check``."""
    with torch.no_grad():
        out = exit_scorer(hidden, weight, bias, labels, criterion)
        base = ops.exit_scores(hidden, weight, bias, labels, criterion, backend="torch")
    assert out.dtype == torch.float32 and out.shape == (labels.shape[0],)
    return out, ref64(hidden, weight, bias, labels, criterion), base


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("criterion", CRITERIA)
def test_matches_fp64_with_ignored_and_empty_sequence(device, dtype, criterion):
    hidden, weight, bias, labels = make(device, dtype)
    out, ref, base = run_both(hidden, weight, bias, labels, criterion)
    check(out, ref, base)
    assert torch.isneginf(out[2])
    # the chunked pure-PyTorch reference of the kernel agrees too
    check(exit_scorer_ref(hidden, weight, bias, labels, criterion), ref, base)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("V", [3001, 30522])
def test_vocab_tail(device, dtype, V):
    # 30522 (BERT) and 3001 are not multiples of any vocab block: the padded tail must not count.
    hidden, weight, bias, labels = make(device, dtype, B=3, S=9, H=40, V=V, frac=0.5, seed=1)
    for criterion in CRITERIA:
        check(*run_both(hidden, weight, bias, labels, criterion))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_all_masked_no_bias_many_row_blocks(device, dtype):
    # 259 rows: more row blocks than persistent programs under the interpreter (splits = 1, tiles loop).
    hidden, weight, _, labels = make(device, dtype, B=7, S=37, H=64, V=1000, frac=1.0, bias=False, seed=2)
    labels[2] = torch.arange(37, device=device)  # make(...) cleared row 2; all masked again
    assert (labels != IGN).all()
    for criterion in CRITERIA:
        check(*run_both(hidden, weight, None, labels, criterion))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_inputs(device, dtype):
    hidden, weight, bias, labels = make(device, dtype, B=4, S=21, H=48, V=700, frac=0.4, seed=3)
    big = torch.zeros(21, 4, 96, dtype=dtype, device=device)
    big[..., ::2] = hidden.transpose(0, 1)
    hid_nc = big[..., ::2].transpose(0, 1)  # [B, S, H], strides (96, 384, 2)
    lab_nc = labels.t().contiguous().t()
    assert not hid_nc.is_contiguous() and not lab_nc.is_contiguous() and torch.equal(hid_nc, hidden)
    w_nc = torch.zeros(48, 700, dtype=dtype, device=device)
    w_nc.copy_(weight.t())
    for criterion in CRITERIA:
        out, ref, base = run_both(hid_nc, w_nc.t(), bias, lab_nc, criterion)
        check(out, ref, base)
        assert torch.equal(out, exit_scorer(hidden, weight, bias, labels, criterion))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_peaked_distribution(device, dtype):
    # Weight rows equal to (scaled) hidden rows: one logit dominates, entropy ~ 0 with no cancellation.
    hidden, weight, bias, labels = make(device, dtype, B=3, S=8, H=64, V=500, frac=1.0, bias=False, seed=4)
    labels[2] = 5
    flat = hidden.reshape(-1, 64)
    for i in range(flat.shape[0]):
        weight[i] = flat[i] * 4
    labels.copy_(torch.arange(24, device=device).reshape(3, 8))
    for criterion in CRITERIA:
        out, ref, base = run_both(hidden, weight, None, labels, criterion)
        check(out, ref, base)
        assert out.max().item() < 1e-3  # loss and entropy both ~0 for every sequence
        assert (out >= 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_large_logits_no_overflow(device, dtype):
    hidden, weight, bias, labels = make(device, dtype, B=3, S=11, H=64, V=800, frac=0.6, scale=30.0, seed=5)
    ref_logits = hidden.double().reshape(-1, 64) @ weight.double().T
    assert ref_logits.abs().max() > 2e3  # exp() of these overflows fp32 without max-subtraction
    for criterion in CRITERIA:
        out, ref, base = run_both(hidden, weight, bias, labels, criterion)
        assert not torch.isinf(out[torch.isfinite(ref)]).any()
        check(out, ref, base)


@pytest.mark.parametrize("device", DEVICES)
def test_fp16(device):
    hidden, weight, bias, labels = make(device, torch.float16, B=3, S=13, H=32, V=600, seed=6)
    for criterion in CRITERIA:
        check(*run_both(hidden, weight, bias, labels, criterion))


@pytest.mark.parametrize("device", DEVICES)
def test_deterministic_bitwise(device):
    hidden, weight, bias, labels = make(device, torch.bfloat16, B=6, S=37, H=64, V=1500, frac=0.5, seed=7)
    a = exit_scorer(hidden, weight, bias, labels, "entropy")
    b = exit_scorer(hidden, weight, bias, labels, "entropy")
    assert torch.equal(a, b)
    rows = hidden.reshape(-1, 64)[:150]
    tgt = labels.reshape(-1)[:150]
    sid = torch.arange(150, device=device) // 37
    r1 = exit_scorer_rows(rows, weight, bias, tgt, sid, 5, "loss")
    r2 = exit_scorer_rows(rows, weight, bias, tgt, sid, 5, "loss")
    assert torch.equal(r1, r2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_api_unsorted_seq_ids(device, dtype):
    g = torch.Generator().manual_seed(8)
    n, H, V, nseq = 90, 48, 900, 7
    rows = torch.randn(n, H, generator=g).to(dtype).to(device)
    weight = (torch.randn(V, H, generator=g) * 0.2).to(dtype).to(device)
    bias = (torch.randn(V, generator=g) * 0.1).to(device)
    tgt = torch.randint(0, V, (n,), generator=g).to(device)
    tgt[::5] = IGN
    sid = torch.randint(0, nseq - 1, (n,), generator=g).to(device)
    sid[sid == 4] = 3  # sequence 4 has no row
    sid[torch.arange(n, device=device) % 10 == 0] = 6  # sequence 6: only ignored rows (0, 10, ... are ::5)
    loss, ent = token_stats(rows, weight, bias, tgt, compute_dtype=torch.float64)
    valid = tgt != IGN
    for criterion in CRITERIA:
        ref = segment_mean(loss if criterion == "loss" else ent, sid, valid, nseq)
        with torch.no_grad():
            out = exit_scorer_rows(rows, weight, bias, tgt, sid, nseq, criterion)
            base = ops.exit_scores_rows(rows, weight, bias, tgt, sid, nseq, criterion, backend="torch")
        check(out, ref, base)
        assert torch.isneginf(out[4]) and torch.isneginf(out[6])
        # sorted fast path on the sorted layout gives the same scores
        order = torch.sort(sid, stable=True).indices
        fast = exit_scorer_rows(rows[order], weight, bias, tgt[order], sid[order], nseq, criterion,
                                seq_ids_sorted=True)
        torch.testing.assert_close(fast, out, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_token_stats(device, dtype):
    hidden, weight, bias, labels = make(device, dtype, B=2, S=30, H=32, V=1100, frac=0.7, seed=9)
    rows, tgt = hidden.reshape(-1, 32), labels.reshape(-1)
    loss, ent = exit_token_stats(rows, weight, bias, tgt)
    tl_, te_ = ops.token_stats_torch(rows, weight, bias, tgt)
    loss64, ent64 = token_stats(rows, weight, bias, tgt, compute_dtype=torch.float64)
    check(loss, loss64, tl_)
    check(ent, ent64, te_)
    assert (loss[tgt == IGN] == 0).all()


@pytest.mark.parametrize("device", DEVICES)
def test_forward_only_and_dispatch(device):
    hidden, weight, bias, labels = make(device, torch.float32, B=3, S=9, H=32, V=300, frac=0.5, seed=10)
    w = weight.clone().requires_grad_(True)
    with pytest.raises(RuntimeError, match="forward-only"):
        exit_scorer(hidden, w, bias, labels, "loss")
    with pytest.raises(RuntimeError, match="forward-only"):
        sid = torch.zeros(27, dtype=torch.long, device=device)
        exit_scorer_rows(hidden.reshape(-1, 32), w, bias, labels.reshape(-1), sid, 1, "loss")
    with torch.no_grad():
        direct = exit_scorer(hidden, w, bias, labels, "loss")
        via_ops = ops.exit_scores(hidden, weight, bias, labels, "loss", backend="triton")
    assert torch.equal(direct, via_ops)
    with pytest.raises(ValueError, match="criterion"):
        exit_scorer(hidden, weight, bias, labels, "margin")


@pytest.mark.parametrize("device", DEVICES)
def test_nothing_masked(device):
    hidden, weight, bias, labels = make(device, torch.float32, B=3, S=9, H=32, V=300, frac=0.0, seed=11)
    assert (labels == IGN).all()
    out = exit_scorer(hidden, weight, bias, labels, "loss")
    assert torch.isneginf(out).all()
