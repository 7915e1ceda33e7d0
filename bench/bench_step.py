#!/usr/bin/env python3
"""Baseline step vs SIFT step on the same candidate batch, beside the FLOP-count ideal of the shape.

One engine (``TorchEngine``, AdamW) and one fixed random candidate batch per shape; the baseline step
backpropagates all C candidates (selection ``none``), the SIFT step scores them at exit layer 1 (entropy),
keeps round(0.5·C) and backpropagates those — both through ``sift_fast.train.step.sift_step``, the
trainer's own step. Warm-up steps first; then repetitions interleaved ABBA (baseline, SIFT, SIFT,
baseline, ...) so slow drifts of a shared machine hit both alike. Reported: median step times, the ratio
of medians and the median of adjacent-pair ratios, the scoring share of the SIFT step (its ``score``
phase), and the analytic FLOP ratio (``step_common.step_flops``) with the gap to it (goal: within 10%).

CPU: wall clock and process CPU time; bert-base shapes are slow there, so they run with fewer candidates
(``--bert-base-candidates``, default 8) and few repetitions. CUDA: wall clock with a device sync around each
step (CUDA events would time the same span: every step syncs on ``scores.cpu()`` anyway).

Writes ``<out>/step_<card>.json`` and ``.md`` (``cpu``, ``h100``, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from step_common import (  # noqa: E402
    Clock,
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
from sift_fast.models.hf import build_model  # noqa: E402
from sift_fast.selection import Selector  # noqa: E402
from sift_fast.telemetry import StepTimer  # noqa: E402
from sift_fast.train.engine import TorchEngine  # noqa: E402
from sift_fast.train.step import sift_step  # noqa: E402


def bench_shape(preset: str, candidates: int, device: torch.device, reps: int, warmup: int, precision: str,
                backend: str) -> dict:
    shape = shape_of(preset)
    cfg = build_config({"preset": preset, "candidates": candidates, "keep": 0.5, "exit_layer": 1,
                        "selection": "entropy", "device": str(device), "precision": precision, "backend": backend,
                        "max_steps": 10**6, "lr_warmup_steps": 0})
    torch.manual_seed(0)
    model = build_model(cfg.model, shape.vocab, shape.seq_len)
    engine = TorchEngine(model, cfg, device)
    batch = random_batches(1, candidates, shape.seq_len)[0]
    if device.type == "cuda":
        batch = batch.pin_memory()
    variants = {"baseline": dataclasses.replace(cfg.sift, selection="none"), "sift": cfg.sift}
    selectors = {k: Selector(c) for k, c in variants.items()}
    timers = {k: StepTimer(device) for k in variants}
    times: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in variants}
    step = 0

    def run(kind: str, record: bool) -> None:
        nonlocal step
        with Clock(device) as clk:
            sift_step(engine, selectors[kind], batch, step, variants[kind], timers[kind], exit_layer=1)
        step += 1
        if record:
            times[kind]["wall"].append(clk.wall)
            times[kind]["cpu"].append(clk.cpu)

    for _ in range(warmup):
        run("baseline", False)
        run("sift", False)
    for t in timers.values():
        t.results()
    for r in range(reps):
        for kind in ("baseline", "sift") if r % 2 == 0 else ("sift", "baseline"):
            run(kind, True)
    phases = {k: t.results() for k, t in timers.items()}

    kept = cfg.sift.backprop_size
    flops = step_flops(shape, candidates, kept, batch.num_masked / candidates, exit_layer=1)
    out = {"shape": dataclasses.asdict(shape), "candidates": candidates, "kept": kept, "exit_layer": 1,
           "masked_per_seq": batch.num_masked / candidates, "reps": reps, "warmup": warmup, "flops": flops,
           "dropout": cfg.model.dropout, "precision": precision}
    for clock in ("wall", "cpu") if device.type == "cpu" else ("wall",):
        b, s = times["baseline"][clock], times["sift"][clock]
        pairs = [si / bi for bi, si in zip(b, s)]
        ratio = median(s) / median(b)
        out[clock] = {"baseline_s": median(b), "sift_s": median(s), "ratio": ratio, "ratio_paired": median(pairs),
                      "vs_ideal": ratio / flops["ideal_ratio"], "baseline_all_s": b, "sift_all_s": s}
    sift_phases = phases["sift"]
    total = sum(sift_phases.values())
    out["sift_phases_s_per_step"] = {k: v / reps for k, v in sift_phases.items()}
    out["baseline_phases_s_per_step"] = {k: v / reps for k, v in phases["baseline"].items()}
    out["scoring_share"] = sift_phases.get("score", 0.0) / total if total else 0.0
    return out


def markdown(res: dict) -> str:
    env = res["environment"]
    lines = [f"# Step benchmark — baseline vs SIFT step on the same candidates ({res['card']})", "",
             f"{env['date_utc']}, torch {env['torch']}, device `{env['device']}`"
             + (f" ({env['card']})" if "card" in env else f", {env['threads']} thread(s), {env['cpu_count']} cores"),
             "", res["note"] + _contention(res), "",
             "keep 0.5, exit layer 1, entropy scoring; baseline = selection `none` (backprop all C). "
             "Ratio = SIFT step / baseline step (median of each; *paired* = median of adjacent-rep ratios). "
             "Ideal = analytic FLOP ratio (3·K·F_L + C·F_1) / (3·C·F_L); goal: measured within 10% of it.", ""]
    clocks = ("wall", "cpu") if res["card"] == "cpu" else ("wall",)
    head = "| shape | C | K | reps | clock | baseline s | SIFT s | ratio | paired | FLOP ideal | ratio/ideal | " \
           "scoring share (meas.) | scoring share (FLOPs) | ratio w/o scoring |"
    lines += [head, "|" + "---|" * 14]
    for r in res["shapes"]:
        f = r["flops"]
        for c in clocks:
            m = r[c]
            lines.append(
                f"| {r['shape']['name']} | {r['candidates']} | {r['kept']} | {r['reps']} | {c} | {m['baseline_s']:.3f} "
                f"| {m['sift_s']:.3f} | {m['ratio']:.3f} | {m['ratio_paired']:.3f} | {f['ideal_ratio']:.3f} "
                f"| {m['vs_ideal']:.3f} | {100 * r['scoring_share']:.1f}% | {100 * f['ideal_scoring_share']:.1f}% "
                f"| {m['ratio'] * (1 - r['scoring_share']):.3f} |")
    lines += ["", "SIFT step phases (wall s per step, mean over the measured reps):", "",
              "| shape | " + " | ".join(("data", "score", "select", "forward", "backward", "optimizer")) + " |",
              "|---|" + "---|" * 6]
    for r in res["shapes"]:
        p = r["sift_phases_s_per_step"]
        lines.append(f"| {r['shape']['name']} | "
                     + " | ".join(f"{p.get(k, 0.0):.4f}" for k in ("data", "score", "select", "forward", "backward",
                                                                      "optimizer")) + " |")
    lines += ["", "The FLOP model leaves out the optimizer update (same in both steps; it pulls the measured ratio "
              "toward 1), element-wise work and embeddings. *ratio w/o scoring* = ratio × (1 − measured scoring "
              "share): the kept samples' forward + backward + update against the baseline's (ideal K/C = 0.5). "
              "Where the measured scoring share exceeds its FLOP share, the difference is the scoring head's "
              "element-wise work over the vocabulary (log-softmax, exp, entropy on [rows, V] logits in the torch "
              "backend), which no FLOP count sees and which weighs most next to a narrow model (tiny-cpu: H 256, "
              "V 30522). The fused Triton scorer avoids the [rows, V] logits on GPUs (not measured here).", ""]
    return "\n".join(lines)


def _contention(res: dict) -> str:
    if res["card"] != "cpu":
        return ""
    k = max(r["wall"]["baseline_s"] / r["cpu"]["baseline_s"] for r in res["shapes"])
    return (f" Here wall was up to {k:.1f}× process CPU time (a 1-thread run should be ≈ 1×): the process shared "
            "its core, so the `cpu` rows are the ones to compare." if k > 1.15 else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shapes", default="tiny-cpu,bert-base")
    ap.add_argument("--candidates", type=int, default=32, help="C for tiny-cpu (and bert-base on CUDA: 64)")
    ap.add_argument("--bert-base-candidates", type=int, default=None, help="C for bert-base (CPU default 8)")
    ap.add_argument("--reps", type=int, default=None, help="measured reps per variant (CPU: 5 / bert-base 3)")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (CPU runs)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--backend", default="auto", help="scoring backend: auto | triton | torch")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    cpu = device.type == "cpu"
    if cpu:
        torch.set_num_threads(args.threads)
    results = []
    for preset in [s for s in args.shapes.split(",") if s]:
        big = preset == "bert-base"
        c = (args.bert_base_candidates or (8 if cpu else 64)) if big else args.candidates
        reps = args.reps or ((3 if big else 5) if cpu else 20)
        warmup = args.warmup if args.warmup is not None else (1 if cpu else 5)
        print(f"[bench_step] {preset}: C={c} reps={reps} warmup={warmup} on {device}", flush=True)
        r = bench_shape(preset, c, device, reps, warmup, args.precision, args.backend)
        m = r["wall"]
        print(f"[bench_step] {preset}: baseline {m['baseline_s']:.3f}s  sift {m['sift_s']:.3f}s  ratio "
              f"{m['ratio']:.3f} (paired {m['ratio_paired']:.3f})  FLOP ideal {r['flops']['ideal_ratio']:.3f}  "
              f"scoring share {100 * r['scoring_share']:.1f}%", flush=True)
        results.append(r)
    card = card_name(device)
    note = ("CPU run on a shared 2-core machine (other jobs running): wall times are noisy, process CPU "
            "time is the steadier clock; bert-base shapes use fewer candidates and reps on CPU." if cpu else
            "GPU run: wall clock with a device sync around each step.")
    res = {"card": card, "environment": environment(device, torch.get_num_threads()), "note": note,
           "shapes": results}
    out = Path(args.out)
    write_json(out / f"step_{card}.json", res)
    write_atomic(out / f"step_{card}.md", markdown(res))
    print(f"[bench_step] wrote {out / f'step_{card}.json'} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
