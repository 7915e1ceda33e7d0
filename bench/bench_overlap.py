#!/usr/bin/env python3
"""Step time of baseline, SIFT sequential and SIFT overlapped training steps (BERT-base shapes).

Each variant is a real ``Trainer`` (``train_step``, the loop's own code) over the same few fixed random
candidate batches, candidates = 2 × micro-batch, keep 0.5, exit layer 1, entropy scoring; all variants
share one engine (model + AdamW), so they run on the same weights:

* ``baseline``  — selection ``none``: backprop all C candidates;
* ``sift-off``  — score each batch at the start of its own step (``overlap=off``);
* ``sift-stale``— ``overlap=sequential-stale``: score batch t+1 with θ_t between backward and update;
* ``sift-on``   — ``overlap=on``: the same rule on a side CUDA stream during forward/backward (CUDA only;
  on CPU ``on`` resolves to ``sequential-stale``, so it is not run).

Blocks of ``--block`` steps per variant, rotating the variant order every repetition; a block's time is
wall clock with a device sync at both ends (per step = block / steps), so cross-step pipelining is kept.
Reported per variant: median step time, ratio to baseline, scoring time per step (the ``score`` phase:
a side-stream span for ``sift-on``), the hidden share of it (``OverlapScorer.hidden_share``), peak memory.
GPU goal: ``sift-on`` ≤ 0.52 × baseline.

Also ``--summarize-nsys DIR``: turn ``nsys stats --format csv`` outputs in DIR into ``nsys_summary.md``.

Writes ``<out>/overlap_<card>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from step_common import (  # noqa: E402
    MASK_ID,
    PAD_ID,
    SPECIAL_IDS,
    VOCAB_SIZE,
    Clock,
    CyclingLoader,
    card_name,
    environment,
    median,
    random_batches,
    shape_of,
    step_flops,
    write_atomic,
    write_json,
)

from sift_fast.config import build_config  # noqa: E402
from sift_fast.train.builder import DataBundle  # noqa: E402
from sift_fast.train.engine import TorchEngine  # noqa: E402
from sift_fast.train.loop import Trainer  # noqa: E402

VARIANTS = {  # name -> (selection, overlap)
    "baseline": ("none", "off"),
    "sift-off": ("entropy", "off"),
    "sift-stale": ("entropy", "sequential-stale"),
    "sift-on": ("entropy", "on"),
}


def build_trainers(preset: str, candidates: int, device: torch.device, precision: str, backend: str,
                   n_batches: int = 4) -> tuple[dict[str, Trainer], list]:
    shape = shape_of(preset)
    batches = random_batches(n_batches, candidates, shape.seq_len)
    vocab = types.SimpleNamespace(vocab_size=VOCAB_SIZE, pad_id=PAD_ID, mask_id=MASK_ID, special_ids=SPECIAL_IDS)
    data = DataBundle(vocab=vocab, train=np.zeros((candidates, shape.seq_len), np.int32),
                      valid=np.full((4, shape.seq_len), 1000, np.int32))
    shared: dict[str, TorchEngine] = {}

    def engine_factory(model, cfg, dev):
        if "engine" not in shared:
            shared["engine"] = TorchEngine(model, cfg, dev)
        return shared["engine"]

    out_dir = tempfile.mkdtemp(prefix="bench_overlap_")
    trainers = {}
    for name, (selection, overlap) in VARIANTS.items():
        if overlap == "on" and device.type != "cuda":
            continue
        cfg = build_config({"preset": preset, "candidates": candidates, "keep": 0.5, "exit_layer": 1,
                            "selection": selection, "overlap": overlap, "device": str(device),
                            "precision": precision, "backend": backend, "max_steps": 10**6,
                            "lr_warmup_steps": 0, "eval_batch_size": 4, "out": out_dir})
        trainers[name] = Trainer(cfg, data=data, engine_factory=engine_factory,
                                 loader_factory=lambda *a, **k: CyclingLoader(batches))
    return trainers, batches


def run_block(tr: Trainer, steps: int, device: torch.device) -> tuple[float, float]:
    with Clock(device) as clk:
        for _ in range(steps):
            tr.train_step()
            tr.step += 1
    return clk.wall / steps, clk.cpu / steps


def bench(preset: str, candidates: int, device: torch.device, reps: int, warmup: int, block: int,
          precision: str, backend: str) -> dict:
    trainers, batches = build_trainers(preset, candidates, device, precision, backend)
    names = list(trainers)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    peak: dict[str, float] = {n: 0.0 for n in names}
    for _ in range(warmup):
        for n in names:
            run_block(trainers[n], block, device)
    for tr in trainers.values():  # drop warm-up telemetry
        tr.timer.results()
        if tr.overlap_scorer is not None:
            tr.overlap_scorer.hidden_share()
    for r in range(reps):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            w, c = run_block(trainers[n], block, device)
            wall[n].append(w)
            cpu[n].append(c)
            if device.type == "cuda":
                peak[n] = max(peak[n], torch.cuda.max_memory_allocated(device) / 2**20)
    steps = reps * block
    shape = shape_of(preset)
    masked = sum(b.num_masked for b in batches) / (len(batches) * candidates)
    flops = step_flops(shape, candidates, round(0.5 * candidates), masked, exit_layer=1)
    base = median(wall["baseline"])
    variants = {}
    for n in names:
        tr = trainers[n]
        phases = tr.timer.results()
        score = phases.get("score", 0.0) / steps
        hidden = tr.overlap_scorer.hidden_share() if tr.overlap_scorer is not None else 0.0
        variants[n] = {
            "overlap": tr.overlap, "step_s": median(wall[n]), "ratio_to_baseline": median(wall[n]) / base,
            "ratio_paired": median([x / b for x, b in zip(wall[n], wall["baseline"])]),
            "cpu_step_s": median(cpu[n]), "score_time_s": score, "score_share": score / median(wall[n]),
            "score_hidden_share": hidden, "peak_mem_mib": peak[n] or None, "step_all_s": wall[n],
            "phases_s_per_step": {k: v / steps for k, v in phases.items()},
        }
    return {"shape": preset, "candidates": candidates, "kept": round(0.5 * candidates), "exit_layer": 1,
            "reps": reps, "block": block, "warmup_blocks": warmup, "precision": precision, "flops": flops,
            "variants": variants}


def markdown(res: dict) -> str:
    env, r = res["environment"], res["result"]
    lines = [f"# Overlap benchmark — baseline vs SIFT sequential vs SIFT overlapped ({res['card']})", "",
             f"{env['date_utc']}, torch {env['torch']}, device `{env['device']}`"
             + (f" ({env['card']})" if "card" in env else f", {env['threads']} thread(s), {env['cpu_count']} cores"),
             "", res["note"] + _contention(res), "",
             f"Shape {r['shape']}, C = {r['candidates']} candidates "
             f"(2 × micro-batch {r['kept']}), keep 0.5, exit layer 1, entropy. {r['reps']} reps × blocks of "
             f"{r['block']} steps per variant, order rotated per rep; medians of per-step block times. "
             f"FLOP ideal SIFT/baseline: {r['flops']['ideal_ratio']:.3f} "
             f"({r['flops']['ideal_ratio_no_scoring']:.2f} if scoring were free).", "",
             "| variant | overlap | step s | ÷ baseline | paired | CPU-time step s | CPU-time ÷ baseline "
             "| scoring s/step | scoring share | hidden | peak MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    cpu_base = r["variants"]["baseline"]["cpu_step_s"]
    for n, v in r["variants"].items():
        mem = f"{v['peak_mem_mib']:.0f}" if v["peak_mem_mib"] else "–"
        lines.append(f"| {n} | {v['overlap']} | {v['step_s']:.4f} | {v['ratio_to_baseline']:.3f} "
                     f"| {v['ratio_paired']:.3f} | {v['cpu_step_s']:.4f} | {v['cpu_step_s'] / cpu_base:.3f} "
                     f"| {v['score_time_s']:.4f} | {100 * v['score_share']:.1f}% "
                     f"| {100 * v['score_hidden_share']:.0f}% | {mem} |")
    lines += ["", "CPU-time = process CPU time (host threads; on CUDA it is host overhead only, not GPU time). "
              "*hidden* = share of the side-stream scoring span the training stream did not wait for at the "
              "fence (CUDA events); 0 when scoring runs in line.", ""]
    return "\n".join(lines)


def _contention(res: dict) -> str:
    base = res["result"]["variants"]["baseline"]
    if res["card"] != "cpu" or not base.get("cpu_step_s"):
        return ""
    k = base["step_s"] / base["cpu_step_s"]
    return (f" Here wall ≈ {k:.1f}× process CPU time (a 1-thread run should be ≈ 1×): the process got a share of a "
            "core, so compare the CPU-time columns." if k > 1.15 else "")


def summarize_nsys(folder: Path) -> Path:
    """Markdown tables from the ``*.csv`` files ``nsys stats --format csv --output PREFIX`` wrote."""
    lines = ["# nsys capture of steps 10–12 — `nsys stats` summary", ""]
    for path in sorted(folder.glob("*.csv")):
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            continue
        lines += [f"## {path.stem}", "", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows[1:41]]
        if len(rows) > 41:
            lines.append(f"\n({len(rows) - 41} more rows in {path.name})")
        lines.append("")
    out = folder / "nsys_summary.md"
    write_atomic(out, "\n".join(lines))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default="bert-base", help="model shape (bert-base; others for smoke tests)")
    ap.add_argument("--micro", type=int, default=None, help="micro-batch (CUDA default 32, CPU 4); C = 2 × micro")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--block", type=int, default=None, help="steps per timed block")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up blocks per variant")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--summarize-nsys", default=None, metavar="DIR")
    args = ap.parse_args(argv)
    if args.summarize_nsys:
        print(summarize_nsys(Path(args.summarize_nsys)))
        return 0
    device = torch.device(args.device)
    cpu = device.type == "cpu"
    if cpu:
        torch.set_num_threads(args.threads)
    micro = args.micro or (4 if cpu else 32)
    reps, block = args.reps or (3 if cpu else 10), args.block or (2 if cpu else 5)
    print(f"[bench_overlap] {args.preset} C={2 * micro} reps={reps} block={block} on {device}", flush=True)
    r = bench(args.preset, 2 * micro, device, reps, args.warmup, block, args.precision, args.backend)
    for n, v in r["variants"].items():
        print(f"[bench_overlap] {n:10s} step {v['step_s']:.4f}s  ÷base {v['ratio_to_baseline']:.3f}  score "
              f"{v['score_time_s']:.4f}s/step  hidden {100 * v['score_hidden_share']:.0f}%", flush=True)
    card = card_name(device)
    note = ("CPU run on a shared 2-core machine (other jobs running; timings noisy): overlap needs CUDA "
            "(a side stream), so only the sequential variants run; `overlap=on` resolves to sequential-stale "
            "on CPU. bert-base shapes with C = 8 (micro 4) to keep the run short." if cpu else
            "GPU run; goal: sift-on ≤ 0.52 × baseline.")
    res = {"card": card, "environment": environment(device, torch.get_num_threads()), "note": note, "result": r}
    out = Path(args.out)
    write_json(out / f"overlap_{card}.json", res)
    write_atomic(out / f"overlap_{card}.md", markdown(res))
    print(f"[bench_overlap] wrote {out / f'overlap_{card}.json'} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
