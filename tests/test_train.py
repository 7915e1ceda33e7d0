"""The training step and loop: keep=1 equals baseline, kept = top-k of computed scores, exact resume,
the one-step-stale overlap rule."""

import copy
import json
import shutil

import torch

from sift_fast.ops import exit_scores
from sift_fast.selection import Plan
from sift_fast.train.loop import Trainer
from sift_fast.train.step import sift_step


def params(trainer):
    return {k: v.detach().clone() for k, v in trainer.engine.module.state_dict().items()}


def test_keep_one_sift_step_equals_baseline_step(micro_cfg):
    base = Trainer(micro_cfg(selection="none"))
    sift = Trainer(micro_cfg(selection="loss", keep=1.0), data=base.data)
    n = sift.cfg.sift.candidates
    # force the scoring path (keep=1 would otherwise skip it): top-n of n = every candidate
    sift.selector.plan = lambda step: Plan("score", n)
    for _ in range(3):
        rb, rs = base.train_step(), sift.train_step()
        base.step += 1
        sift.step += 1
        assert rs.scores is not None and rs.kept.tolist() == list(range(n))
        assert torch.equal(rb.loss, rs.loss)
    pb, ps = params(base), params(sift)
    assert all(torch.equal(pb[k], ps[k]) for k in pb)


def reference_entropy_scores(model, batch, k):
    """fp64 brute force: full [B, S, V] logits from the exit hidden state, per-sequence mean entropy."""
    with torch.no_grad():
        h = model.exit_hidden(batch, k)
        model.head_transform.eval()
        t = model.head_transform(h).double()
        w, b = model.decoder_params()
        logp = torch.log_softmax(t @ w.double().T + b.double(), -1)
        ent = -(logp.exp() * logp).sum(-1)
    out = []
    for i in range(batch.size):
        m = batch.labels[i] != -100
        out.append(ent[i][m].mean().item() if m.any() else float("-inf"))
    return torch.tensor(out, dtype=torch.float64)


def test_kept_samples_are_topk_of_the_step_scores(micro_cfg):
    tr = Trainer(micro_cfg(selection="entropy", keep=0.375))
    for _ in range(3):
        batch = tr.loader.next_batch()
        ref = reference_entropy_scores(tr.engine.module, batch, 1)
        res = sift_step(tr.engine, tr.selector, batch, tr.step, tr.cfg.sift, tr.timer, exit_layer=1)
        tr.step += 1
        torch.testing.assert_close(res.scores.double(), ref, rtol=1e-5, atol=1e-5)
        k = tr.cfg.sift.backprop_size
        expected = sorted(sorted(range(batch.size), key=lambda i: (-res.scores[i].item(), i))[:k])
        assert res.kept.tolist() == expected and len(expected) == 3


def run_losses(out_dir):
    recs = [json.loads(ln) for ln in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in recs if r["type"] == "step"}


def test_resume_is_bitwise_identical(micro_cfg, tmp_path):
    for overlap in ("off", "sequential-stale"):
        full_dir, resumed_dir = tmp_path / f"full_{overlap}", tmp_path / f"resumed_{overlap}"
        full = Trainer(micro_cfg(out=str(full_dir), max_steps=8, checkpoint_every=4, keep_checkpoints=5,
                                 overlap=overlap, selection="entropy", dropout=0.1))
        full.run()
        # a run stopped after step 4: its checkpoint and its metrics up to step 4
        (resumed_dir / "checkpoints").mkdir(parents=True)
        shutil.copy(full_dir / "checkpoints" / "step_00000004.pt", resumed_dir / "checkpoints")
        shutil.copy(full_dir / "metrics.jsonl", resumed_dir / "metrics.jsonl")
        resumed = Trainer(micro_cfg(out=str(resumed_dir), max_steps=8, checkpoint_every=4, overlap=overlap,
                                    selection="entropy", dropout=0.1, resume=True), data=full.data)
        resumed.run()
        a, b = run_losses(full_dir), run_losses(resumed_dir)
        assert sorted(b) == list(range(1, 9))
        assert all(a[s] == b[s] for s in range(5, 9)), (overlap, a, b)
        pa, pb = params(full), params(resumed)
        assert all(torch.equal(pa[k], pb[k]) for k in pa)


def test_sequential_stale_scores_next_batch_with_pre_update_weights(micro_cfg):
    """Hand-checked trace of the one-step-stale rule: step t+1's candidates are scored with θ_t
    (the weights at the start of step t, before its update), not with θ_{t+1}."""
    tr = Trainer(micro_cfg(selection="loss", keep=0.5, overlap="sequential-stale", max_steps=5))
    thetas, used = [], []
    for _ in range(4):
        thetas.append(copy.deepcopy(tr.engine.module.state_dict()))
        pending = tr.pending
        res = tr.train_step()
        used.append((pending[0] if pending else None, res.scores))
        tr.step += 1
    model = copy.deepcopy(tr.engine.module)

    def score_with(theta, batch):
        model.load_state_dict(theta)
        with torch.no_grad():
            h = model.exit_hidden(batch, 1)
            model.head_transform.eval()
            t = model.head_transform(h)
            w, b = model.decoder_params()
            return exit_scores(t, w, b, batch.labels, "loss", backend="torch")

    assert used[0][0] is None  # step 0 scores its own batch (nothing was pending)
    for t in range(1, 4):
        batch, scores = used[t]
        torch.testing.assert_close(scores, score_with(thetas[t - 1], batch), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(scores, score_with(thetas[t], batch), rtol=1e-5, atol=1e-6)


def test_triton_backend_in_the_step_matches_torch(micro_cfg):
    """The fused scorer (Triton; the interpreter on CPU) drives the same selection as the torch backend."""
    tr = Trainer(micro_cfg(selection="entropy", keep=0.5))
    batch = tr.loader.next_batch()
    from sift_fast.train.step import score_candidates

    model = tr.engine.module
    s_torch = score_candidates(model, batch, 1, "entropy", backend="torch")
    s_triton = score_candidates(model, batch, 1, "entropy", backend="triton")
    torch.testing.assert_close(s_triton, s_torch, rtol=1e-5, atol=1e-5)
    from sift_fast.ops import select_topk

    k = tr.cfg.sift.backprop_size
    assert torch.equal(select_topk(s_triton, k, backend="triton"), select_topk(s_triton, k, backend="torch"))
