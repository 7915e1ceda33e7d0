"""Worker for tests/test_distributed.py: runs under ``deepspeed --num_gpus 2`` or ``torchrun`` on CPU (gloo).

Scenarios (``--scenario``):

* ``matrix``: for each ZeRO stage (the shipped configs/ds_zero{0,1,2,3}.json) and selection case, a
  10-step run with a checkpoint at step 5; then a resume from step 5 to step 10. Rank 0 writes
  ``OUT/results.json``: per case the loss trajectory, the kept sample ids of every step (union over
  ranks), the resumed trajectory, the ZeRO-3 trace state per step and the ZeRO-3 scoring check; the
  ``loss_local`` runs also leave their final gathered weights (``final_weights.pt``) for the export test.
* ``die`` / ``hang``: rank 1 kills itself (SIGKILL) / stops responding at step ``--die-at``; the job
  must fail fast (collective timeout 10 s here).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASES = {  # name: (selection, scope, extra config)
    "none": ("none", "local", {}),
    "loss_local": ("loss", "local", {}),
    "loss_global": ("loss", "global", {}),
    "entropy_local": ("entropy", "local", {"lr_batch_scale": "sqrt"}),  # the scaled update under ZeRO too
    # the scale on the word embeddings' own param group only (lr_batch_scale_params embeddings)
    "entropy_emb": ("entropy", "local", {"lr_batch_scale": "sqrt", "lr_batch_scale_params": "embeddings"}),
    "lamb": ("loss", "global", {"optimizer": "lamb"}),  # ZeRO stage 0 only
}


def make_cfg(args, out: Path, selection: str, scope: str, **extra):
    from sift_fast.config import build_config

    return build_config({
        "preset": "micro", "data": args.data, "cache_dir": args.cache_dir, "out": str(out), "max_steps": 10,
        "log_every": 1, "eval_every": 1000, "selection": selection, "selection_scope": scope, "keep": 0.5,
        "select_until": 1.0, "candidates": 8, "checkpoint_every": 5, "keep_checkpoints": 3, "num_threads": 1, **extra,
    })


def ds_json(stage: int) -> dict:
    from sift_fast.distributed.ds_config import load_ds_json

    return load_ds_json(ROOT / "configs" / f"ds_zero{stage}.json")


def trainer_for(cfg, stage: int, data, timeout: float = 60.0):
    import torch.distributed as dist

    from sift_fast.distributed.ds_config import derive_ds_config
    from sift_fast.distributed.launch import build_trainer, init_distributed

    init_distributed()
    ds = derive_ds_config(cfg, dist.get_world_size(), ds_json(stage), "cpu")
    if stage == 3:  # the micro model is tiny: partition every matrix, keep only vectors (<= 100 values) whole
        ds["zero_optimization"]["stage3_param_persistence_threshold"] = 100
    return build_trainer(cfg, argparse.Namespace(dist_timeout=timeout), ds_config=ds, data=data)


def gather_ids(ids: torch.Tensor) -> list[int]:
    import torch.distributed as dist

    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, ids.tolist())
    return sorted(i for part in out for i in part)


def losses(out: Path) -> dict[int, float]:
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in recs if r["type"] == "step"}


def scoring_check(trainer) -> tuple[int, float]:
    """ZeRO-3: scores through the gathered exit == scores of an unpartitioned copy of the same weights.

    Returns (partitioned parameters of the scoring pass before it ran, max |score difference|).
    """
    import deepspeed
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    from sift_fast.distributed.engine import scoring_modules
    from sift_fast.models.hf import build_model
    from sift_fast.train.step import compute_scores

    engine = trainer.engine
    batch = trainer.loader.next_batch()
    partitioned = sum(p.ds_status == ZeroParamStatus.NOT_AVAILABLE
                      for m in scoring_modules(engine.module, trainer.exit_layer) for p in m.parameters())
    got = compute_scores(engine, trainer.selector, trainer.cfg.sift, batch, trainer.exit_layer, trainer.timer)
    params = list(engine.module.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        state = {k: v.detach().clone() for k, v in engine.module.state_dict().items()}
    plain = build_model(trainer.cfg.model, trainer.data.vocab.vocab_size, trainer.cfg.data.seq_len,
                        pad_id=trainer.data.vocab.pad_id)
    plain.load_state_dict(state)

    class Plain:
        module, device = plain, torch.device("cpu")

        @staticmethod
        def autocast():
            import contextlib

            return contextlib.nullcontext()

    want = compute_scores(Plain, trainer.selector, trainer.cfg.sift, batch, trainer.exit_layer, trainer.timer)
    if not torch.equal(torch.isfinite(got), torch.isfinite(want)):  # -inf: a sequence with no masked token
        return int(partitioned), float("inf")
    finite = torch.isfinite(want)
    return int(partitioned), float((got[finite] - want[finite]).abs().max())


def full_state(trainer) -> dict[str, torch.Tensor]:
    """The encoder's full weights (ZeRO-3: gathered from the partitions; collective)."""
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(trainer.engine.module.parameters()), modifier_rank=None,
                                           enabled=trainer.engine.zero_stage == 3):
        return {k: v.detach().clone() for k, v in trainer.engine.module.state_dict().items()}


def run_matrix(args) -> None:
    import torch.distributed as dist

    from sift_fast.config import build_config
    from sift_fast.distributed.launch import build_data_once

    data = build_data_once(make_cfg(args, Path(args.out), "none", "local"))
    results: dict = {}
    stages = [int(s) for s in args.stages.split(",")]
    for stage in stages:
        for name, (selection, scope, extra) in CASES.items():
            if name == "lamb" and stage != 0:
                continue
            key = f"z{stage}_{name}"
            out = Path(args.out) / key
            cfg = make_cfg(args, out, selection, scope, **extra)
            trainer = trainer_for(cfg, stage, data)
            kept: list[list[int]] = []
            trace: list[bool] = []

            def hook(tr, res, kept=kept, trace=trace):
                kept.append(gather_ids(res.batch.sample_ids[res.kept]))
                if tr.engine.zero_stage == 3:
                    trace.append(tr.engine.ds.optimizer.parameter_offload.get_param_coordinator().is_complete_trace())

            trainer.step_hooks.append(hook)
            summary = trainer.run()
            rec = {"kept": kept, "trace_complete": trace, "samples": trainer.samples,
                   "backprop_samples": trainer.backprop_samples, "ds_global_samples": trainer.engine.ds.global_samples}
            if name == "loss_local":  # the final weights, gathered: the reference of sift-export's consolidation
                final = full_state(trainer)
                if trainer.rank0:
                    torch.save(final, out / "final_weights.pt")
                    rec["run_dir"] = str(out)
            if stage == 3 and name == "loss_local":
                rec["scoring_partitioned_params"], rec["scoring_max_abs_diff"] = scoring_check(trainer)
            if trainer.rank0:
                rec["loss"] = losses(out)
                rec["summary_samples"] = summary["samples"]
            # resume from step 5 in a copy of the run directory
            dist.barrier()
            res_out = Path(args.out) / f"{key}_resume"
            if trainer.rank0:
                shutil.copytree(out, res_out)
                ck = res_out / "checkpoints"
                shutil.rmtree(ck / "step_00000010")
                (ck / "latest").write_text("step_00000005")
            dist.barrier()
            cfg2 = build_config(cfg.to_dict(), {"out": str(res_out), "resume": True})
            trainer2 = trainer_for(cfg2, stage, data)
            trainer2.run()
            if trainer.rank0:
                rec["resumed_loss"] = losses(res_out)
                results[key] = rec
            del trainer, trainer2
    if dist.get_rank() == 0:
        Path(args.out, "results.json").write_text(json.dumps(results))


def run_die(args) -> None:
    """Rank 1 dies (SIGKILL) or hangs (sleeps, alive) at step ``--die-at``; rank 0 carries on."""
    import torch.distributed as dist

    from sift_fast.distributed.launch import build_data_once, run_with_error_report

    cfg = make_cfg(args, Path(args.out) / "die", "loss", "global", max_steps=1000, checkpoint_every=0)
    trainer = trainer_for(cfg, 2, build_data_once(cfg), timeout=10.0)

    def hook(tr, res):
        if dist.get_rank() == 1 and tr.step == args.die_at:
            Path(args.out, "killed_at").write_text(str(time.time()))
            if args.scenario == "hang":
                time.sleep(3600)
            os.kill(os.getpid(), signal.SIGKILL)

    trainer.step_hooks.append(hook)
    run_with_error_report(trainer.run)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--scenario", choices=("matrix", "die", "hang"), required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--cache-dir", dest="cache_dir", required=True)
    p.add_argument("--stages", default="0,1,2,3")
    p.add_argument("--die-at", dest="die_at", type=int, default=3)
    p.add_argument("--local_rank", type=int, default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    {"matrix": run_matrix, "die": run_die, "hang": run_die}[args.scenario](args)
    from sift_fast.distributed.launch import shutdown

    shutdown()


if __name__ == "__main__":
    main()
