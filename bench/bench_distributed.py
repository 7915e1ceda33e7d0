#!/usr/bin/env python3
"""Data-parallel step time: ZeRO 0-3 x {baseline, SIFT local, SIFT global} under DeepSpeed.

``python bench/bench_distributed.py [--ranks N]`` launches itself under ``torchrun`` (N CPU ranks,
gloo, or N GPUs, NCCL) and runs every (stage, arm) for ``--steps`` steps through the real trainer
(``sift_fast.distributed.launch.build_trainer``). Per arm: median step time over the steps after
``--warmup``, global candidate and backprop samples/s, the scoring share, and for SIFT global the
bytes each rank contributes to the selection all-gathers per step. Also writes the on-paper estimate
of the global-selection communication at 64 nodes x 8 GPUs for BERT-base/large against the step's
gradient all-reduce (``paper_estimate``).

Baseline = selection ``none`` (backprop all C per rank); SIFT = loss scoring at exit layer 1,
keep 0.5. Writes ``<out>/distributed_<where>.json`` and ``.md`` (``where``: ``cpu`` or ``<N>x<card>``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

ARMS = {"baseline": ("none", "local"), "sift_local": ("loss", "local"), "sift_global": ("loss", "global")}
BERT = {"bert-base": 110_000_000, "bert-large": 335_000_000}


def paper_estimate(nodes: int = 64, gpus_per_node: int = 8, candidates: int = 128, seq_len: int = 128,
                   grad_bytes: int = 4, link_gbps: float = 25.0, hop_latency_us: float = 5.0) -> dict:
    """Bytes per rank per step: global selection's all-gathers vs the gradient ring all-reduce.

    ``candidates`` per rank (keep 0.5 -> 64 backprop samples per GPU), one int32 ``[C, 2S+2]``
    message per rank (ids, labels, sample id, score bits) as ``GlobalSelection`` sends it;
    ``link_gbps``: GB/s per GPU across nodes (8 x 200 Gb/s InfiniBand per 8-GPU node);
    ``hop_latency_us``: per ring step (pessimistic: every hop priced as an inter-node hop).
    """
    w = nodes * gpus_per_node
    scores = w * candidates * 4
    tokens = w * candidates * (2 * seq_len + 1) * 4
    ring = (w - 1) / w
    rows = {}
    for name, params in BERT.items():
        grad = 2 * ring * params * grad_bytes  # reduce-scatter + all-gather of a ring all-reduce
        t_grad = grad / (link_gbps * 1e9) + 2 * (w - 1) * hop_latency_us * 1e-6
        t_sel = ring * (scores + tokens) / (link_gbps * 1e9) + (w - 1) * hop_latency_us * 1e-6  # one all-gather
        t_scores = ring * scores / (link_gbps * 1e9) + (w - 1) * hop_latency_us * 1e-6
        rows[name] = {
            "params": params, "grad_allreduce_bytes": grad, "selection_bytes": ring * (scores + tokens),
            "scores_bytes": ring * scores, "tokens_bytes": ring * tokens,
            "selection_over_grad": ring * (scores + tokens) / grad, "scores_only_over_grad": ring * scores / grad,
            "grad_allreduce_ms": 1e3 * t_grad, "selection_ms": 1e3 * t_sel, "scores_only_ms": 1e3 * t_scores,
        }
    return {"nodes": nodes, "gpus_per_node": gpus_per_node, "world_size": w, "candidates_per_rank": candidates,
            "seq_len": seq_len, "grad_bytes": grad_bytes, "link_GBps": link_gbps, "hop_latency_us": hop_latency_us,
            "models": rows}


# --- worker (runs on every rank under torchrun) ---------------------------------------------------
def worker(args) -> None:
    import torch
    import torch.distributed as dist

    from sift_fast.config import build_config
    from sift_fast.distributed.ds_config import derive_ds_config
    from sift_fast.distributed.launch import build_data_once, build_trainer, init_distributed, shutdown

    torch.set_num_threads(args.threads)
    base = {"preset": args.preset, "candidates": args.candidates, "keep": 0.5, "exit_layer": 1,
            "max_steps": args.steps, "log_every": args.steps, "eval_every": 10**6, "num_threads": args.threads,
            "max_valid_sequences": 32, "eval_batch_size": 32, "lr_warmup_steps": 0, "cache_dir": args.cache_dir}
    if args.data:
        base["corpus"] = args.data
    data = build_data_once(build_config(base))
    _, world, _ = init_distributed(120.0)
    rows = []
    for stage in [int(s) for s in args.stages.split(",")]:
        for arm, (selection, scope) in ARMS.items():
            out = Path(args.tmp) / f"z{stage}_{arm}"
            cfg = build_config(base, {"selection": selection, "selection_scope": scope, "out": str(out)})
            ds = derive_ds_config(cfg, world, {"zero_optimization": {"stage": stage}}, "cuda" if
                                  torch.cuda.is_available() else "cpu")
            trainer = build_trainer(cfg, ds_config=ds, data=data)
            sel_bytes: list[int] = []
            if trainer.select_fn is not None:
                trainer.step_hooks.append(lambda tr, res, acc=sel_bytes: acc.append(tr.select_fn.last_bytes))
            trainer.run()
            if trainer.rank0:
                recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
                steps = [r for r in recs if r["type"] == "step"][args.warmup:]
                times = sorted(r["step_time_s"] for r in steps)
                t = times[len(times) // 2]
                rows.append({
                    "stage": stage, "arm": arm, "steps": len(steps), "step_time_s": t,
                    "candidates": steps[0]["candidates"], "kept": steps[0]["kept"],
                    "samples_per_s": steps[0]["candidates"] / t, "backprop_samples_per_s": steps[0]["kept"] / t,
                    "score_share": sum(r["score_share"] for r in steps) / len(steps),
                    "selection_bytes_per_rank": max(sel_bytes) if sel_bytes else 0,
                })
                print(f"ZeRO-{stage} {arm}: {t:.3f} s/step", file=sys.stderr, flush=True)
            dist.barrier()
    if dist.get_rank() == 0:
        Path(args.tmp, "rows.json").write_text(json.dumps(rows))
    shutdown()


# --- driver -----------------------------------------------------------------------------------------
def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render_md(res: dict) -> str:
    env, p = res["environment"], res["paper"]
    lines = [
        f"# Distributed step benchmark — DeepSpeed ZeRO 0-3 ({res['where']})", "",
        f"{env['date_utc']}, torch {env['torch']}, deepspeed {res['deepspeed']}, {res['ranks']} ranks "
        f"({res['backend']}), {res['threads']} thread(s) per rank, {env['cpu_count']} cores, preset "
        f"`{res['preset']}`, {res['candidates']} candidates per rank, keep 0.5, exit layer 1, loss scoring.", "",
        "Median step time over the measured steps (after warm-up); samples/s count the *global* candidates "
        "(all ranks), bp/s the global backpropagated samples. `sel. bytes` = what each rank contributes to "
        "the global selection's all-gather per step (one int32 [C, 2S+2] message: tokens, labels, sample id, "
        "score).", "",
        "| ZeRO | arm | step s | samples/s | bp samples/s | vs baseline | scoring share | sel. bytes/rank |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = {r["stage"]: r["step_time_s"] for r in res["rows"] if r["arm"] == "baseline"}
    for r in res["rows"]:
        lines.append(
            f"| {r['stage']} | {r['arm']} | {r['step_time_s']:.3f} | {r['samples_per_s']:.1f} | "
            f"{r['backprop_samples_per_s']:.1f} | {r['step_time_s'] / base[r['stage']]:.2f} | "
            f"{100 * r['score_share']:.1f}% | {r['selection_bytes_per_rank']:,} |")
    if res.get("note"):
        lines += ["", res["note"]]
    lines += [
        "", f"## On paper: global selection at {p['nodes']} nodes x {p['gpus_per_node']} GPUs "
        f"(W = {p['world_size']})", "",
        f"Per rank and step, {p['candidates_per_rank']} candidates of {p['seq_len']} tokens (keep 0.5: 64 "
        f"backprop samples per GPU), gradients in {8 * p['grad_bytes']}-bit, ring collectives at "
        f"{p['link_GBps']:g} GB/s per GPU and {p['hop_latency_us']:g} µs per ring step. Bytes are what one rank "
        "receives/sends ((W-1)/W of the gathered total; a ring all-reduce moves 2(W-1)/W x the gradient).", "",
        "| model | gradient all-reduce | selection all-gather | of which scores | selection / gradient | "
        "scores only / gradient | est. time: gradient | est. time: selection | est. time: scores only |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in p["models"].items():
        lines.append(
            f"| {name} | {m['grad_allreduce_bytes'] / 2**20:,.0f} MiB | {m['selection_bytes'] / 2**20:,.1f} MiB | "
            f"{m['scores_bytes'] / 2**10:,.0f} KiB | {100 * m['selection_over_grad']:.2f}% | "
            f"{100 * m['scores_only_over_grad']:.3f}% | {m['grad_allreduce_ms']:.1f} ms | {m['selection_ms']:.1f} ms | "
            f"{m['scores_only_ms']:.1f} ms |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=0, help="processes (default: GPUs, or 2 on CPU)")
    ap.add_argument("--preset", default="tiny-cpu")
    ap.add_argument("--candidates", type=int, default=16, help="per rank")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--stages", default="0,1,2,3")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per rank (default: cores / ranks)")
    ap.add_argument("--data", default="", help="corpus (default: the preset's)")
    ap.add_argument("--cache-dir", dest="cache_dir", default="")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--note", default="", help="a line for the .md (e.g. machine load)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    import tempfile

    import deepspeed
    import torch
    from step_common import card_name, environment, write_atomic, write_json

    gpus = torch.cuda.device_count()
    ranks = args.ranks or (gpus if gpus else 2)
    threads = args.threads or max(1, (os.cpu_count() or 2) // ranks)
    device = torch.device("cuda" if gpus else "cpu")
    where = "cpu" if not gpus else f"{ranks}x{card_name(device)}"
    with tempfile.TemporaryDirectory(prefix="bench_dist_") as tmp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port",
               str(_port()), __file__, "--worker", "--tmp", tmp, "--preset", args.preset, "--candidates",
               str(args.candidates), "--steps", str(args.steps), "--warmup", str(args.warmup), "--stages",
               args.stages, "--threads", str(threads), "--data", args.data,
               "--cache-dir", args.cache_dir]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        if not gpus:
            env["DS_ACCELERATOR"] = "cpu"
        subprocess.run(cmd, env=env, check=True)
        rows = json.loads(Path(tmp, "rows.json").read_text())
    res = {"where": where, "ranks": ranks, "backend": "nccl" if gpus else "gloo", "threads": threads,
           "preset": args.preset, "candidates": args.candidates, "steps": args.steps, "warmup": args.warmup,
           "deepspeed": deepspeed.__version__, "environment": environment(device, threads), "note": args.note,
           "rows": rows, "paper": paper_estimate()}
    out = Path(args.out)
    write_json(out / f"distributed_{where}.json", res)
    write_atomic(out / f"distributed_{where}.md", render_md(res))
    print(render_md(res))


if __name__ == "__main__":
    main()
