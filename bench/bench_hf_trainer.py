#!/usr/bin/env python3
"""SiftTrainer vs the stock transformers.Trainer: step cost on the same candidates, and a short time-to-accuracy.

Step cost. One fixed list of random candidate batches (proxy-12 shapes, C = 32, the bench's masker), fed in
order (sequential sampler) to four runs: ``Trainer`` (baseline: backprop every candidate), ``SiftTrainer``
(keep 0.5, exit layer 1, entropy), and ``sift-pretrain``'s own loop (``sift_fast.train.loop.Trainer``) as
baseline (selection none) and SIFT on the very same batches. One step = the process CPU time between two
optimizer steps (HF: two ``on_step_end`` callbacks, so the fetch, collation, scoring, forward/backward and
update are all in it; ours: the loop's ``--clock process`` step time). 1 thread, warm-up steps dropped,
median over the measured steps, the four runs in ABBA order (twice each). Reported: both ratios
(SIFT / baseline), the FLOP ideal of the shape (``step_common.step_flops``) and the gap of the Trainer ratio
to ours (goal: within 5%, i.e. no integration overhead).

Time to accuracy. ``Trainer`` vs ``SiftTrainer`` on the bundled corpus (proxy-12 model, the corpus-trained
8192 WordPiece, ``DataCollatorForLanguageModeling`` masking on the fly), one seed, each for the same budget of
training process CPU time; every few steps the fixed validation set of ``sift-pretrain`` is evaluated (its
time is excluded). CPU only: the machine is shared, so process CPU time, never wall time.

Writes ``<out>/hf_trainer_cpu.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import transformers  # noqa: E402
from step_common import (  # noqa: E402
    CyclingLoader,
    environment,
    median,
    random_batches,
    shape_of,
    step_flops,
    write_atomic,
    write_json,
)

from sift_fast.config import build_config  # noqa: E402
from sift_fast.hf import SiftArguments, SiftTrainer  # noqa: E402
from sift_fast.models.hf import MLMEncoder, build_model  # noqa: E402
from sift_fast.train.builder import DataBundle, seed_everything  # noqa: E402

C, KEEP, EXIT = 32, 0.5, 1


class Rows(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def stack(rows: list[dict]) -> dict:
    return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


class InOrder:
    """Feed the dataset in order (the same candidate batches for every run)."""

    def _get_train_sampler(self, *args, **kwargs):
        return torch.utils.data.SequentialSampler(self.train_dataset)


class HFBase(InOrder, transformers.Trainer):
    pass


class HFSift(InOrder, SiftTrainer):
    pass


class StepClock(transformers.TrainerCallback):
    """Process CPU time between optimizer steps; an optional eval hook whose time is excluded; a CPU budget."""

    def __init__(self, budget_s: float = 0.0, every: int = 0, eval_fn=None) -> None:
        self.steps: list[float] = []
        self.curve: list[dict] = []
        self.budget_s, self.every, self.eval_fn = budget_s, every, eval_fn
        self.last = None

    def on_train_begin(self, args, state, control, **kw):
        if self.eval_fn is not None:
            self.curve.append({"step": 0, "cpu_s": 0.0, **self.eval_fn()})
        self.last = time.process_time()

    def on_step_end(self, args, state, control, **kw):
        now = time.process_time()
        self.steps.append(now - self.last)
        spent = sum(self.steps)
        stop = self.budget_s and spent >= self.budget_s
        if self.eval_fn is not None and (state.global_step % self.every == 0 or stop):
            self.curve.append({"step": state.global_step, "cpu_s": spent, **self.eval_fn()})
        if stop:
            control.should_training_stop = True
        self.last = time.process_time()


def hf_args(out: str, steps: int, **kw) -> transformers.TrainingArguments:
    base = dict(output_dir=out, per_device_train_batch_size=C, max_steps=steps, learning_rate=1e-3,
                lr_scheduler_type="constant", weight_decay=0.01, adam_beta2=0.98, adam_epsilon=1e-6,
                max_grad_norm=1.0, logging_steps=10**6, save_strategy="no", eval_strategy="no", report_to="none",
                use_cpu=True, disable_tqdm=True, seed=0, remove_unused_columns=False, dataloader_pin_memory=False)
    return transformers.TrainingArguments(**{**base, **kw})


def sift_args() -> SiftArguments:
    return SiftArguments(selection="entropy", keep=KEEP, exit_layer=str(EXIT))


# --- step cost ----------------------------------------------------------------------------------------
def hf_steps(kind: str, model: torch.nn.Module, rows: list[dict], steps: int) -> list[float]:
    clock = StepClock()
    with tempfile.TemporaryDirectory() as tmp:
        kw = dict(model=model, args=hf_args(tmp, steps), train_dataset=Rows(rows), data_collator=stack,
                  callbacks=[clock])
        trainer = HFBase(**kw) if kind == "base" else HFSift(**kw, sift_args=sift_args())
        trainer.train()
    return clock.steps


def our_steps(kind: str, batches: list, steps: int, vocab) -> list[float]:
    from sift_fast.train.loop import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = build_config({"preset": "proxy-12", "selection": "none" if kind == "base" else "entropy",
                            "keep": KEEP, "exit_layer": EXIT, "candidates": C, "max_steps": steps, "lr_warmup_steps": 0,
                            "lr_decay": "constant", "eval_every": 10**6, "log_every": 10**6, "clock": "process",
                            "num_threads": 1, "device": "cpu", "overlap": "off", "out": tmp, "prefetch": 0})
        shape = shape_of("proxy-12")
        valid = np.full((2, shape.seq_len), 1000, dtype=np.int32)
        data = DataBundle(vocab=vocab, train=valid, valid=valid)
        quiet = contextlib.redirect_stderr(io.StringIO())
        with quiet:
            Trainer(cfg, data=data, loader_factory=lambda *a, **k: CyclingLoader(batches)).run()
        recs = [json.loads(x) for x in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    return [r["step_time_s"] for r in recs if r["type"] == "step"]


def hf_flop_ideal(shape, masked_per_seq: float) -> float:
    """The FLOP ratio of the Trainer path: ``BertForMaskedLM``'s training forward runs the MLM head on all S
    positions (ours: on the masked rows only); the scoring pass (ours, shared) on the masked rows."""
    s, h, i, v = shape.seq_len, shape.hidden, shape.intermediate, shape.vocab
    layer = 8 * s * h * h + 4 * s * s * h + 4 * s * h * i
    row = 2 * h * h + 2 * h * v
    full = shape.layers * layer + s * row
    base = 3 * C * full
    return (3 * round(KEEP * C) * full + C * (EXIT * layer + masked_per_seq * row)) / base


def step_cost(n_batches: int, warmup: int, measured: int) -> dict:
    from sift_fast.data import load_tokenizer

    shape = shape_of("proxy-12")
    batches = random_batches(n_batches, C, shape.seq_len)
    rows = [{"input_ids": b.input_ids[i], "attention_mask": b.attention_mask[i], "labels": b.labels[i]}
            for b in batches for i in range(C)]
    vocab = load_tokenizer("bundled")  # 30522 ids, the shapes' vocabulary
    cfg = build_config({"preset": "proxy-12"})
    seed_everything(0)
    init = build_model(cfg.model, shape.vocab, shape.seq_len).hf
    steps = warmup + measured
    times: dict[str, list[float]] = {"hf_base": [], "hf_sift": [], "our_base": [], "our_sift": []}
    order = ["hf_base", "hf_sift", "our_base", "our_sift"]
    for kind in order + order[::-1]:  # ABBA
        if kind.startswith("hf"):
            t = hf_steps(kind[3:], copy.deepcopy(init), rows, steps)
        else:
            t = our_steps(kind[4:], batches, steps, vocab)
        times[kind] += t[warmup:]
        print(f"  {kind}: median {median(t[warmup:]):.3f}s over {len(t) - warmup} steps", file=sys.stderr)
    med = {k: median(v) for k, v in times.items()}
    masked = float(np.mean([b.num_masked / C for b in batches]))
    flops = step_flops(shape, C, round(KEEP * C), masked, EXIT)
    hf_ideal = hf_flop_ideal(shape, masked)
    hf_ratio, our_ratio = med["hf_sift"] / med["hf_base"], med["our_sift"] / med["our_base"]
    return {"shape": "proxy-12", "candidates": C, "kept": round(KEEP * C), "exit_layer": EXIT,
            "warmup": warmup, "measured_per_run": measured, "runs_per_variant": 2, "median_s": med,
            "all_s": times, "hf_ratio": hf_ratio, "our_ratio": our_ratio, "flop_ideal": flops["ideal_ratio"],
            "hf_flop_ideal": hf_ideal, "hf_vs_ideal": hf_ratio / hf_ideal,
            "our_vs_ideal": our_ratio / flops["ideal_ratio"],
            "hf_vs_ours": hf_ratio / our_ratio - 1.0, "hf_overhead_base": med["hf_base"] / med["our_base"] - 1.0,
            "hf_overhead_sift": med["hf_sift"] / med["our_sift"] - 1.0}


# --- time to accuracy ---------------------------------------------------------------------------------
def tta(budget_s: float, every: int, eval_rows: int) -> dict:
    from sift_fast.data import MLMMasker, validation_batches
    from sift_fast.data.tokenizer import hf_tokenizer_of
    from sift_fast.train.builder import build_data
    from sift_fast.train.evaluate import evaluate

    cfg = build_config({"preset": "proxy-12", "corpus": "bundled", "max_valid_sequences": eval_rows})
    data = build_data(cfg)
    vocab = data.vocab
    tok = hf_tokenizer_of(vocab)
    rows = [{"input_ids": torch.as_tensor(np.asarray(data.train[i]), dtype=torch.long)} for i in range(len(data.train))]
    masker = MLMMasker(vocab.vocab_size, vocab.mask_id, vocab.special_ids, mask_prob=0.15, seed=12345)
    val = validation_batches(data.valid, 64, masker, vocab.pad_id)
    seed_everything(0)
    init = build_model(cfg.model, vocab.vocab_size, cfg.data.seq_len, pad_id=vocab.pad_id).hf
    out = {}
    for kind in ("base", "sift"):
        model = copy.deepcopy(init)
        adapter = MLMEncoder(model)
        clock = StepClock(budget_s, every, lambda a=adapter: evaluate(a, val, torch.device("cpu")))
        collator = transformers.DataCollatorForLanguageModeling(tok, mlm=True, mlm_probability=0.15)
        with tempfile.TemporaryDirectory() as tmp:
            args = hf_args(tmp, 10**6, lr_scheduler_type="constant_with_warmup", warmup_steps=20)
            kw = dict(model=model, args=args, train_dataset=Rows(rows), data_collator=collator, callbacks=[clock])
            trainer = transformers.Trainer(**kw) if kind == "base" else SiftTrainer(**kw, sift_args=sift_args())
            trainer.train()
        out[kind] = {"steps": len(clock.steps), "train_cpu_s": sum(clock.steps), "curve": clock.curve,
                     "step_cpu_median_s": median(clock.steps[3:])}
        print(f"  tta {kind}: {len(clock.steps)} steps, final acc {clock.curve[-1]['val_mlm_acc']:.4f}",
              file=sys.stderr)
    targets = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
    for rec in out.values():
        rec["time_to"] = {f"{t:g}": next((p["cpu_s"] for p in rec["curve"] if p["val_mlm_acc"] >= t), None)
                          for t in targets}
    return {"budget_cpu_s_per_arm": budget_s, "eval_every": every, "eval_rows": len(data.valid),
            "train_rows": len(data.train), "arms": out}


def markdown(res: dict) -> str:
    s, t, env = res["step"], res["tta"], res["environment"]
    m = s["median_s"]
    lines = ["# SiftTrainer vs transformers.Trainer (cpu)", "",
             f"{env['date_utc']}, torch {env['torch']}, transformers {res['transformers']}, 1 thread, "
             f"{env['cpu_count']} cores shared with two background runs: every time is process CPU time. "
             f"Total CPU of this bench: {res['total_cpu_s'] / 60:.1f} min (budget 10 CPU-min).", "",
             f"## Step cost: the same candidates, proxy-12 shapes (C {s['candidates']}, keep 0.5 → K {s['kept']}, "
             f"exit layer {s['exit_layer']}, entropy)", "",
             f"Median process CPU s per optimizer step over {s['measured_per_run']} steps × {s['runs_per_variant']} "
             f"runs per variant (ABBA order, {s['warmup']} warm-up steps dropped per run).", "",
             "| path | baseline s | SIFT s | SIFT / baseline | FLOP ideal | ratio / ideal |",
             "|---|---|---|---|---|---|",
             f"| transformers.Trainer → SiftTrainer | {m['hf_base']:.3f} | {m['hf_sift']:.3f} | {s['hf_ratio']:.3f} "
             f"| {s['hf_flop_ideal']:.3f} | {s['hf_vs_ideal']:.3f} |",
             f"| sift-pretrain loop | {m['our_base']:.3f} | {m['our_sift']:.3f} | {s['our_ratio']:.3f} "
             f"| {s['flop_ideal']:.3f} | {s['our_vs_ideal']:.3f} |", "",
             f"Trainer ratio vs ours: {100 * s['hf_vs_ours']:+.1f}% (the issue's goal: within ±5%; not met as a raw "
             "ratio). The two paths do not run the same model code: the stock `BertForMaskedLM` forward the Trainer "
             "calls computes the MLM head on all S positions ([B, S, V] logits), ours on the masked rows only, so "
             f"the Trainer's step costs {100 * s['hf_overhead_base']:+.1f}% (baseline) / "
             f"{100 * s['hf_overhead_sift']:+.1f}% (SIFT) more than our loop's on the same batches, and a larger "
             f"share of it scales with K (FLOP ideal {s['hf_flop_ideal']:.3f} vs {s['flop_ideal']:.3f}). Against "
             f"its own FLOP model the Trainer path is at {s['hf_vs_ideal']:.3f}× its ideal, our loop at "
             f"{s['our_vs_ideal']:.3f}× (its fixed costs, the optimizer update and the scoring's element-wise work "
             "over [rows, V], weigh more next to its cheaper step): the SiftTrainer ratio is within 5% of what the "
             "Trainer's own model allows; the bench cannot separate a few % of integration overhead from that.", "",
             f"## Time to accuracy: bundled corpus, proxy-12, one seed, {t['budget_cpu_s_per_arm']:.0f} CPU-s of "
             f"training per arm", "",
             f"Val MLM accuracy on sift-pretrain's fixed validation set ({t['eval_rows']} sequences, every "
             f"{t['eval_every']} steps, eval time excluded); `DataCollatorForLanguageModeling` masking; LR 1e-3 "
             "after 20 warm-up steps, constant.", "",
             "| arm | steps | step CPU s (median) | final val acc | " +
             " | ".join(f"CPU s to {k}" for k in t["arms"]["base"]["time_to"]) + " |",
             "|---|---|---|---|" + "---|" * len(t["arms"]["base"]["time_to"])]
    for kind, name in (("base", "Trainer"), ("sift", "SiftTrainer")):
        a = t["arms"][kind]
        cells = " | ".join("-" if v is None else f"{v:.0f}" for v in a["time_to"].values())
        lines.append(f"| {name} | {a['steps']} | {a['step_cpu_median_s']:.3f} | {a['curve'][-1]['val_mlm_acc']:.4f} "
                     f"| {cells} |")
    lines += ["", "One seed and a short budget (the 10 CPU-min cap of the whole bench): the first tens of steps "
              "only, below 5% accuracy, where one eval of 128 sequences is noisy (a curve may cross a target and "
              "fall back). What it shows is the step rate at equal CPU; accuracy needs a longer run (the README's "
              "long-horizon results: SIFT's early lead does not last at a constant LR).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8, help="measured steps per run")
    ap.add_argument("--tta-budget-s", type=float, default=100.0, help="training CPU seconds per arm")
    ap.add_argument("--tta-eval-every", type=int, default=20)
    ap.add_argument("--tta-eval-rows", type=int, default=128)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    logging.getLogger("sift_fast").setLevel(logging.WARNING)
    c0 = time.process_time()
    res = {"environment": environment(torch.device("cpu"), 1), "transformers": transformers.__version__,
           "step": step_cost(args.batches, args.warmup, args.steps),
           "tta": tta(args.tta_budget_s, args.tta_eval_every, args.tta_eval_rows)}
    res["total_cpu_s"] = time.process_time() - c0
    out = Path(args.out)
    write_json(out / "hf_trainer_cpu.json", res)
    write_atomic(out / "hf_trainer_cpu.md", markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
