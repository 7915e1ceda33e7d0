"""DeepSpeed data parallelism: config derivation, sharding, global selection; 2-rank CPU (gloo) launches.

The multi-process tests (``slow``) launch ``tests/dist_worker.py`` / ``sift_fast.pretrain`` with 2 CPU
ranks. The first launch on a machine JIT-builds DeepSpeed's shm comm op (~45 s) into
``TORCH_EXTENSIONS_DIR`` (torch's default ``~/.cache/torch_extensions`` unless set): CI should cache it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sift_fast.config import build_config
from sift_fast.distributed.ds_config import derive_ds_config, load_ds_json
from sift_fast.distributed.selection import (
    GlobalSelection,
    ShardedCandidateLoader,
    assign_kept,
    local_topk_union,
)
from sift_fast.errors import ConfigError
from sift_fast.ops import select_topk

ROOT = Path(__file__).resolve().parents[1]
WORLD = 2
STAGES = (0, 1, 2, 3)


# --- the DeepSpeed JSON ---------------------------------------------------------------------------
def cfg_of(**kw):
    return build_config({"preset": "micro", "candidates": 8, "keep": 0.5, **kw})


def test_derived_config_from_our_config():
    ds = derive_ds_config(cfg_of(grad_clip=0.5, lr=2e-3), 4, {"zero_optimization": {"stage": 2}}, "cpu")
    assert ds["train_micro_batch_size_per_gpu"] == 4  # round(0.5 x 8) per rank
    assert ds["gradient_accumulation_steps"] == 1 and ds["train_batch_size"] == 16
    assert ds["gradient_clipping"] == 0.5 and ds["bf16"]["enabled"] is False and ds["zero_optimization"]["stage"] == 2
    assert ds["optimizer"]["type"] == "AdamW" and ds["optimizer"]["params"]["lr"] == 2e-3
    assert ds["optimizer"]["params"]["torch_adam"] is True  # torch AdamW on CPU
    assert "scheduler" not in ds
    gpu = derive_ds_config(cfg_of(selection="none"), 8, None, "cuda")
    assert gpu["bf16"]["enabled"] is True and gpu["train_micro_batch_size_per_gpu"] == 8
    assert "torch_adam" not in gpu["optimizer"]["params"]  # DeepSpeed's FusedAdam on GPU


@pytest.mark.parametrize("stage", STAGES)
def test_shipped_configs_derive(stage):
    ds = derive_ds_config(cfg_of(precision="bf16"), 2, load_ds_json(ROOT / "configs" / f"ds_zero{stage}.json"), "cpu")
    assert ds["zero_optimization"]["stage"] == stage and ds["bf16"]["enabled"] is True
    assert ds["train_micro_batch_size_per_gpu"] == 4


@pytest.mark.parametrize("user, match", [
    ({"train_micro_batch_size_per_gpu": 16}, "set --candidates 32"),
    ({"gradient_accumulation_steps": 2}, "gradient_accumulation_steps"),
    ({"train_batch_size": 99}, "train_batch_size"),
    ({"bf16": {"enabled": True}}, "bf16.enabled"),
    ({"fp16": {"enabled": True}}, "fp16"),
    ({"gradient_clipping": 5.0}, "gradient_clipping"),
    ({"optimizer": {"type": "AdamW", "params": {"lr": 0.1}}}, "optimizer.params.lr"),
    ({"optimizer": {"type": "AdamW", "params": {"betas": [0.9, 0.999]}}}, "betas"),
    ({"optimizer": {"type": "SGD"}}, "not supported"),
    ({"optimizer": {"type": "Lamb"}}, "optimizer.type"),
    ({"scheduler": {"type": "WarmupLR"}}, "scheduler"),
    ({"zero_optimization": {"stage": 4}}, "stage"),
])
def test_contradictions_are_clear_errors(user, match):
    with pytest.raises(ConfigError, match=match):
        derive_ds_config(cfg_of(), 2, user, "cpu")


def test_lamb_only_without_partitioning():
    for stage in (1, 2, 3):
        with pytest.raises(ConfigError, match="LAMB with ZeRO stage"):
            derive_ds_config(cfg_of(optimizer="lamb"), 2, {"zero_optimization": {"stage": stage}}, "cpu")
    ds = derive_ds_config(cfg_of(optimizer="lamb"), 2, {"optimizer": {"type": "Lamb", "params": {"lr": 3e-3}}}, "cpu")
    assert "optimizer" not in ds  # sift_fast's LAMB, handed to DeepSpeed as a client optimizer


def test_flags_match_deepspeed_add_config_arguments(monkeypatch):
    deepspeed = pytest.importorskip("deepspeed")
    from sift_fast.cli.pretrain import build_parser
    from sift_fast.distributed.launch import add_deepspeed_flags

    monkeypatch.delitem(sys.modules, "deepspeed")  # the copy used while DeepSpeed is not imported
    mine = argparse.ArgumentParser()
    add_deepspeed_flags(mine)
    monkeypatch.undo()
    ours = {a.dest: (a.option_strings, a.default, a.type, a.nargs) for a in mine._actions}
    theirs = deepspeed.add_config_arguments(argparse.ArgumentParser())
    for a in theirs._actions[1:]:
        assert ours[a.dest] == (a.option_strings, a.default, a.type, a.nargs)
    args = build_parser().parse_args(["--deepspeed", "--deepspeed_config", "ds.json", "--selection-scope", "global"])
    assert args.deepspeed and args.deepspeed_config == "ds.json" and args.selection_scope == "global"


def test_cli_refuses_contradiction_before_starting(tmp_path, small_corpus):
    bad = tmp_path / "ds.json"
    bad.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run(
        [sys.executable, "-m", "sift_fast.pretrain", "--deepspeed", "--deepspeed_config", str(bad), "--preset",
         "micro", "--optimizer", "lamb", "--out", str(tmp_path / "run"), "--data", small_corpus["data"]],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("sift-pretrain: error: LAMB with ZeRO stage 2")


# --- sharding and selection -----------------------------------------------------------------------
def _loader_inputs():
    from sift_fast.data import MLMMasker

    rng = np.random.default_rng(0)
    train = rng.integers(5, 100, size=(64, 16)).astype(np.int32)
    masker = MLMMasker(100, 4, [0, 1, 2, 3, 4], mask_prob=0.15, seed=3)
    return train, masker


def test_shards_are_slices_of_the_global_batch():
    from sift_fast.data import CandidateLoader

    train, masker = _loader_inputs()
    ref = CandidateLoader(train, 4 * WORLD, masker, 0, seed=7)
    shards = [ShardedCandidateLoader(train, 4, masker, 0, seed=7, rank=r, world_size=WORLD) for r in range(WORLD)]
    for _ in range(10):  # crosses an epoch boundary (8 global batches per epoch)
        whole = ref.next_batch()
        parts = [s.next_batch() for s in shards]
        for name in ("input_ids", "labels", "sample_ids"):
            assert torch.equal(torch.cat([getattr(p, name) for p in parts]), getattr(whole, name))
    state = shards[0].state_dict()
    assert state == shards[1].state_dict() and state["global_batch"] == 8
    other = ShardedCandidateLoader(train, 8, masker, 0, seed=7, rank=0, world_size=WORLD)
    with pytest.raises(ConfigError, match="same world size x candidates"):
        other.load_state_dict(state)


def test_assigned_shares_are_the_union_top_k_own_first():
    g = torch.Generator().manual_seed(0)
    for w, c, k in ((2, 8, 4), (4, 6, 2), (3, 5, 5), (5, 4, 1)):
        for _ in range(20):
            scores = torch.randn(w * c, generator=g)
            top = select_topk(scores, k * w)
            shares = assign_kept(top, k, w, c)
            assert all(len(s) == k for s in shares)  # every rank backprops the same static count
            assert sorted(np.concatenate(shares).tolist()) == sorted(top.tolist())  # == union top-k
            for r, share in enumerate(shares):  # a rank keeps min(k, its own kept) of its own candidates
                own = [i for i in top.tolist() if i // c == r]
                assert sum(i // c == r for i in share) == min(k, len(own))
    assert [s.tolist() for s in assign_kept([4, 5, 6, 7], 2, 2, 4)] == [[6, 7], [4, 5]]
    local = local_topk_union(torch.tensor([5.0, 1, 2, 9, 0, 7, 8, 3]), 2, 2)
    assert local.tolist() == [0, 3, 5, 6]


def test_global_selection_moves_scores_and_rebuilds_kept_from_ids(monkeypatch):
    from sift_fast.distributed.selection import pack
    from sift_fast.selection import Plan

    train, masker = _loader_inputs()
    shards = [ShardedCandidateLoader(train, 4, masker, 0, seed=1, rank=r, world_size=WORLD) for r in range(WORLD)]
    parts = [s.next_batch() for s in shards]
    scores = [torch.arange(4.0), torch.arange(4.0) + 10]  # rank 1 holds the global top 4
    sent = []

    def run(rank):
        sel = GlobalSelection(rank, WORLD, torch.device("cpu"), 0, seed=0, step_fn=lambda: 0,
                              build=shards[rank].build)

        def gather(t):
            sent.append(t)
            return torch.cat([pack(p.sample_ids, s) for p, s in zip(parts, scores)])

        monkeypatch.setattr(sel, "_all_gather", gather)
        out = sel(Plan("score", 2), parts[rank], scores[rank])
        assert sel.last_bytes == 4 * 8  # C x (int32 id + fp32 score): no tokens
        return out

    (k0, b0, s0), (k1, b1, s1) = run(0), run(1)
    assert all(t.shape == (4, 2) and t.dtype == torch.int32 for t in sent)
    # rank 1 keeps its two lowest-index kept candidates, rank 0 receives the other two, rebuilt from their ids
    assert k1.tolist() == [0, 1] and b1 is parts[1] and k0.tolist() == [4, 5] and b0.size == 6
    whole = parts[1]
    for name in ("input_ids", "labels", "attention_mask", "sample_ids"):
        assert torch.equal(getattr(b0.select(k0), name), getattr(whole.select([2, 3]), name))
        assert torch.equal(getattr(b1.select(k1), name), getattr(whole.select([0, 1]), name))
    assert torch.equal(b0.select(k0).masked_index, whole.select([2, 3]).masked_index)
    # scores: the source rows' first, then the rest of the gathered ones (same multiset, global mean)
    assert torch.equal(s0[:6], torch.cat([scores[0], scores[1][2:]])) and torch.equal(s1[:4], scores[1])
    for s in (s0, s1):
        assert sorted(s.tolist()) == sorted(torch.cat(scores).tolist())


def test_hooks_off_restores_hooks():
    from sift_fast.distributed.engine import hooks_off

    m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    calls = []
    m[0].register_forward_pre_hook(lambda mod, inp: calls.append(1))
    with hooks_off([m]):
        m(torch.zeros(1, 2))
    assert calls == []
    m(torch.zeros(1, 2))
    assert calls == [1]


# --- 2-rank launches ------------------------------------------------------------------------------
def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env  # TORCH_EXTENSIONS_DIR: inherited, or torch's default cache (~/.cache/torch_extensions)


def deepspeed_cmd(*script_args: str) -> list[str]:
    return [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(WORLD), "--master_port",
            str(_port()), *script_args]


@pytest.fixture(scope="module")
def matrix(small_corpus, tmp_path_factory):
    pytest.importorskip("deepspeed")
    out = tmp_path_factory.mktemp("dist_matrix")
    cmd = deepspeed_cmd(str(ROOT / "tests" / "dist_worker.py"), "--scenario", "matrix", "--out", str(out),
                        "--data", small_corpus["data"], "--cache-dir", small_corpus["cache_dir"])
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


def reference(small_corpus, tmp_path, selection: str, scope: str, extra: dict):
    """Single process on the union: candidates = W x C; local selection = each shard's own top-k."""
    from sift_fast.train.loop import Trainer

    cfg = build_config({"preset": "micro", **small_corpus, "out": str(tmp_path / f"ref_{selection}_{scope}"),
                        "max_steps": 10, "log_every": 1, "eval_every": 1000, "selection": selection, "keep": 0.5,
                        "select_until": 1.0, "candidates": 8 * WORLD, **extra})
    trainer = Trainer(cfg)
    if scope == "local" and selection != "none":
        trainer.select_fn = lambda plan, batch, scores: local_topk_union(scores, round(0.5 * 8), WORLD)
    kept = []
    trainer.step_hooks.append(lambda tr, res: kept.append(sorted(res.batch.sample_ids[res.kept].tolist())))
    trainer.run()
    recs = [json.loads(x) for x in (Path(cfg.train.out) / "metrics.jsonl").read_text().splitlines()]
    return {"loss": [r["loss"] for r in recs if r["type"] == "step"], "kept": kept}


CASES = {"none": ("none", "local", {}), "loss_local": ("loss", "local", {}), "loss_global": ("loss", "global", {}),
         "entropy_local": ("entropy", "local", {"lr_batch_scale": "sqrt"}),
         "entropy_emb": ("entropy", "local", {"lr_batch_scale": "sqrt", "lr_batch_scale_params": "embeddings"}),
         "lamb": ("loss", "global", {"optimizer": "lamb"})}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_equal_single_process(matrix, small_corpus, tmp_path, case):
    ref = reference(small_corpus, tmp_path, *CASES[case])
    for stage in STAGES if case != "lamb" else (0,):  # LAMB: ZeRO stage 0 only
        got = matrix[f"z{stage}_{case}"]
        assert got["kept"] == ref["kept"], f"ZeRO-{stage}: kept samples differ"  # global top-k == union top-k
        loss = [got["loss"][str(s)] for s in range(1, 11)]
        np.testing.assert_allclose(loss, ref["loss"], rtol=0, atol=1e-5, err_msg=f"ZeRO-{stage} {case}")


@pytest.mark.slow
def test_resume_from_step_5_is_exact(matrix):
    for key, rec in matrix.items():
        for step in range(6, 11):
            assert rec["resumed_loss"][str(step)] == rec["loss"][str(step)], f"{key} step {step}"


@pytest.mark.slow
def test_counters_are_global(matrix):
    for key, rec in matrix.items():
        kept = 8 * WORLD if key.endswith("none") else 4 * WORLD
        assert rec["samples"] == rec["summary_samples"] == 10 * 8 * WORLD
        assert rec["backprop_samples"] == rec["ds_global_samples"] == 10 * kept


@pytest.mark.slow
def test_zero3_scoring_gathers_and_keeps_the_trace(matrix):
    rec = matrix["z3_loss_local"]
    assert rec["scoring_partitioned_params"] > 0  # the check ran on genuinely partitioned weights
    assert rec["scoring_max_abs_diff"] == 0.0  # == an unpartitioned copy of the same weights
    for key in ("z3_loss_local", "z3_loss_global", "z3_entropy_local"):
        assert all(matrix[key]["trace_complete"][1:]), key  # the partial forward never invalidates the trace


@pytest.mark.slow
def test_zero_checkpoints_export_to_hf(matrix, tmp_path):
    """sift-export consolidates the 2-rank ZeRO 0-3 checkpoints: from_pretrained gives the gathered final weights."""
    from transformers import AutoModelForMaskedLM

    from sift_fast.export import export_checkpoint

    for stage in STAGES:
        run = Path(matrix[f"z{stage}_loss_local"]["run_dir"])
        want = torch.load(run / "final_weights.pt", weights_only=True)
        export_checkpoint(run, tmp_path / f"z{stage}")
        got = AutoModelForMaskedLM.from_pretrained(tmp_path / f"z{stage}").state_dict()
        assert got.keys() == {k.removeprefix("hf.") for k in want}
        for key, value in want.items():
            assert torch.equal(got[key.removeprefix("hf.")], value), f"ZeRO-{stage} {key}"


def torchrun_cmd(*script_args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD), "--master_port",
            str(_port()), *script_args]


@pytest.mark.slow
@pytest.mark.parametrize("launcher, scenario", [("deepspeed", "die"), ("torchrun", "die"), ("deepspeed", "hang")])
def test_rank_death_fails_fast(small_corpus, tmp_path, launcher, scenario):
    """A rank killed (or hung: alive, silent) at step 3 ends the job non-zero within 60 s."""
    pytest.importorskip("deepspeed")
    worker = [str(ROOT / "tests" / "dist_worker.py"), "--scenario", scenario, "--out", str(tmp_path), "--data",
              small_corpus["data"], "--cache-dir", small_corpus["cache_dir"], "--die-at", "3"]
    cmd = deepspeed_cmd(*worker) if launcher == "deepspeed" else torchrun_cmd(*worker)
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the launcher hung after a rank died")
    ended = time.time()
    killed_at = float((tmp_path / "killed_at").read_text())
    print(f"{launcher} {scenario}: exit {proc.returncode} {ended - killed_at:.1f}s after rank 1 stopped")
    assert proc.returncode != 0
    assert ended - killed_at < 60, f"took {ended - killed_at:.1f}s"
    if scenario == "hang":  # the collective timeout (10 s in the worker) fires on rank 0, which says so
        assert "rank 0: error:" in output and "another rank probably died or hung" in output, output[-3000:]
    elif launcher == "deepspeed":  # the launcher names the dead rank
        assert "return code = -9" in output, output[-3000:]
    else:
        assert "SIGKILL" in output, output[-3000:]


@pytest.mark.slow
def test_cli_under_torchrun_bf16_zero2_global(small_corpus, tmp_path):
    pytest.importorskip("deepspeed")
    out = tmp_path / "run"
    cmd = torchrun_cmd(
        "-m", "sift_fast.pretrain", "--deepspeed", "--deepspeed_config", str(ROOT / "configs" / "ds_zero2.json"),
        "--preset", "micro", "--data", small_corpus["data"], "--cache-dir", small_corpus["cache_dir"], "--out",
        str(out), "--max-steps", "4", "--log-every", "2", "--precision", "bf16", "--selection", "loss",
        "--selection-scope", "global", "--num-threads", "1")
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"step"' in x]
    steps = [r for r in steps if r["type"] == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]  # one writer: rank 0
    assert all(r["candidates"] == 8 * WORLD for r in steps)
    # the default select_until 0.1 of 4 steps: step 1 selects (global top-k), 2-4 train on every candidate
    assert [(r["mode"], r["kept"]) for r in steps] == [("score", 4 * WORLD)] + [("all", 8 * WORLD)] * 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == 4 * 8 * WORLD and summary["backprop_samples"] == (4 + 3 * 8) * WORLD
    assert proc.stderr.count("done: 4 steps") == 1  # the summary line comes from rank 0 only
    assert (out / "checkpoints" / "latest").read_text() == "step_00000004"
