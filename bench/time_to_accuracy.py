"""Time-to-accuracy suite: SIFT vs baseline and controls, several seeds, mean ± spread.

For each (corpus, preset, candidates C, keep) it trains every arm for every seed on the same data, the
same time budget, optimizer and LR schedule (steps, i.e. per candidate batch), sequentially, one run
directory per (arm, seed). It is resumable arm by arm: a run whose ``summary.json`` exists is skipped,
one with a checkpoint continues from it. After every finished run it rewrites
``bench/results/tta_<corpus>_<preset>_c<C>_k<keep>.{json,md,png}``.

Arms (``sift_fast.cli.arms`` plus controls set here):

* ``baseline``  — every candidate backpropagated;
* ``entropy`` / ``loss`` — SIFT with that criterion at the exit layer (``--exit-layer``, default 1);
* ``random``    — uniform keep, *paying* for the scoring pass (same compute as SIFT, no information);
* ``random-free`` — uniform keep without the scoring pass (only "more, cheaper steps");
* ``sb``        — selective-backprop style: loss criterion at the last layer;
* ``anneal``    — entropy SIFT, keep annealed linearly to 1.0 by the step count the ``entropy`` arm of
  the same seed reached in the budget;
* ``auto``      — entropy SIFT with ``--exit-layer auto``.

Time is the trainer's training clock (eval excluded): ``--clock process`` (default; CPU time of the
process, robust to other load on a shared machine) or ``wall`` (use on a GPU). The time to a target is
linearly interpolated between the two evaluations that bracket its first crossing.

    python bench/time_to_accuracy.py --quick                  # smoke: baseline + entropy, one seed
    python bench/time_to_accuracy.py --corpus wiki --preset proxy-12 --candidates 32 --keep 0.5 \\
        --arms baseline,entropy,loss,random --seeds 0,1,2 --budget-s 300
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import sys
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sift_fast.cli.arms import ARMS, arm_overrides  # noqa: E402
from sift_fast.config import Config, build_config  # noqa: E402
from sift_fast.io import atomic_savefig, atomic_write_json, atomic_write_text  # noqa: E402

CORPORA = {"wiki": "bundled", "linux-docs": str(ROOT.parent / "shared" / "data" / "linux-docs-prose.txt")}
HARNESS_ARMS = ARMS
# auto targets: fractions of the baseline's progress within the budget (loss ones skip the fast unigram phase)
ACC_FRACTIONS = (0.6, 0.75, 0.9, 0.97)
LOSS_FRACTIONS = (0.8, 0.9, 0.95, 0.98)
GOAL = 0.65  # SIFT / baseline time to target


# --- configs and runs -------------------------------------------------------------------------------
def base_config(args: argparse.Namespace, corpus: str, preset: str, candidates: int, keep: float) -> Config:
    over: dict[str, Any] = {
        "preset": preset, "corpus": CORPORA.get(corpus, corpus), "candidates": candidates, "keep": keep,
        "exit_layer": args.exit_layer, "time_budget_s": args.budget_s, "max_steps": args.max_steps,
        "eval_every": args.eval_every, "log_every": args.eval_every, "clock": args.clock,
        "num_threads": args.num_threads, "telemetry_every": args.telemetry_every,
        "checkpoint_every": args.checkpoint_every, "max_checkpoints": 1, "device": args.device,
        "exit_auto_every": args.exit_auto_every, "lr_horizon": getattr(args, "lr_horizon", "steps"),
    }
    if args.lr:
        over["lr"] = args.lr
    return build_config(over)


def arm_config(base: Config, arm: str, seed: int, out: Path, group: Path) -> Config:
    """The config of one (arm, seed) run."""
    steps = None
    if arm == "anneal":  # keep reaches 1.0 where the entropy arm of the same seed ended
        ref = group / f"entropy_s{seed}" / "summary.json"
        if not ref.exists():
            raise SystemExit(f"arm anneal needs the entropy arm of seed {seed} first ({ref})")
        steps = json.loads(ref.read_text())["steps"]
    over = arm_overrides(arm, base, anneal_steps=steps)
    return base.replace(**over, seed=seed, out=str(out))


def shared_baseline(group: Path, seed: int, cfg: Config | None = None) -> Path | None:
    """A finished baseline of the same seed in a sibling group that differs only in ``keep``.

    Baseline training never reads ``keep`` (every candidate is backpropagated; only its telemetry's
    top-k size does), so the baseline run of ``..._k0.5_...`` is the baseline of ``..._k0.25_...`` too.
    With ``cfg`` given, the sibling's saved config must equal it apart from keep and the output path.
    """
    m = re.fullmatch(r"(.+_c\d+)_k[^_]+_(.+)", group.name)
    if m is None:
        return None
    for sib in sorted(group.parent.glob(f"{glob.escape(m.group(1))}_k*_{glob.escape(m.group(2))}")):
        src = sib / f"baseline_s{seed}"
        if sib == group or src.is_symlink() or not (src / "summary.json").exists():
            continue
        if cfg is not None and not _same_but_keep(json.loads((src / "config.json").read_text()), cfg.to_dict()):
            continue
        return src
    return None


def _same_but_keep(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def norm(d: dict[str, Any]) -> str:
        with warnings.catch_warnings():  # a config.json of an older run may use renamed fields
            warnings.simplefilter("ignore", FutureWarning)
            d = json.loads(json.dumps(build_config(d).to_dict()))
        for sec in d.values():
            if isinstance(sec, dict):
                for k in ("keep", "out", "resume"):
                    sec.pop(k, None)
        return json.dumps(d, sort_keys=True)

    return norm(a) == norm(b)


def run_one(cfg: Config, data) -> None:
    """Train one run, continuing from its checkpoint when one exists."""
    from sift_fast.train.checkpoint import latest_checkpoint
    from sift_fast.train.loop import Trainer

    out = Path(cfg.train.out)
    resume = latest_checkpoint(out / "checkpoints") is not None
    if not resume and out.exists():
        shutil.rmtree(out)
    Trainer(cfg.replace(resume=resume), data=data).run()


# --- analysis ---------------------------------------------------------------------------------------
def read_evals(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    recs = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    return [r for r in recs if r.get("type") == "eval"]


def crossing(evals: list[dict[str, Any]], key: str, level: float, higher: bool) -> dict[str, float] | None:
    """Interpolated (wall_s, samples, backprop_samples, step) where ``key`` first reaches ``level``."""
    prev = None
    for e in evals:
        v = e[key]
        if v == v and (v >= level if higher else v <= level):
            if prev is None:
                return {x: float(e[x]) for x in ("wall_s", "samples", "backprop_samples", "step")}
            pv = prev[key]
            f = 1.0 if pv == v else (level - pv) / (v - pv)
            return {x: prev[x] + f * (e[x] - prev[x]) for x in ("wall_s", "samples", "backprop_samples", "step")}
        prev = e if v == v else None  # a NaN eval is no point to interpolate from
    return None


def auto_targets(base_runs: list[list[dict[str, Any]]]) -> tuple[list[float], list[float]]:
    """Accuracy and loss levels at fractions of the baseline's progress (its worst seed's best value)."""
    if not base_runs:
        return [], []
    base_runs = [[e for e in ev if e["val_mlm_acc"] == e["val_mlm_acc"] and e["val_loss"] == e["val_loss"]]
                 for ev in base_runs]  # NaN evals carry no level
    base_runs = [ev for ev in base_runs if ev]
    if not base_runs:
        return [], []
    best_acc = min(max(e["val_mlm_acc"] for e in ev) for ev in base_runs)
    best_loss = max(min(e["val_loss"] for e in ev) for ev in base_runs)
    start_loss = statistics.mean(ev[0]["val_loss"] for ev in base_runs)
    acc = sorted({round(f * best_acc, 3) for f in ACC_FRACTIONS})
    loss = sorted({round(start_loss - f * (start_loss - best_loss), 3) for f in LOSS_FRACTIONS}, reverse=True)
    return acc, loss


def mean_sd(xs: list[float]) -> tuple[float | None, float | None]:
    if not xs:
        return None, None
    return statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def summarize(group: Path, arms: list[str], seeds: list[int], acc_t: list[float] | None,
              loss_t: list[float] | None) -> dict[str, Any]:
    """Per arm: seeds done, step time, finals, and per target time/samples (mean ± sd) and ratios."""
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for arm, seed in itertools.product(arms, seeds):
        d = group / f"{arm}_s{seed}"
        if (d / "summary.json").exists():
            runs.setdefault(arm, {})[seed] = {"summary": json.loads((d / "summary.json").read_text()),
                                              "evals": read_evals(d)}
    base = runs.get("baseline", {})
    a_auto, l_auto = auto_targets([r["evals"] for r in base.values()])
    acc_t, loss_t = acc_t or a_auto, loss_t or l_auto
    table: dict[str, Any] = {}
    for arm, by_seed in runs.items():
        row: dict[str, Any] = {"seeds": sorted(by_seed), "targets": {}}
        s = [r["summary"] for r in by_seed.values()]
        row["steps"] = mean_sd([x["steps"] for x in s])
        row["step_time_s"] = mean_sd([x["train_time_s"] / max(1, x["steps"]) for x in s])
        row["final_acc"] = mean_sd([x["final_eval"]["val_mlm_acc"] for x in s])
        row["final_loss"] = mean_sd([x["final_eval"]["val_loss"] for x in s])
        row["best_acc"] = mean_sd([max(e["val_mlm_acc"] for e in r["evals"]) for r in by_seed.values()])
        for kind, levels, key, higher in (("acc", acc_t, "val_mlm_acc", True), ("loss", loss_t, "val_loss", False)):
            for lv in levels:
                hits = {sd: crossing(r["evals"], key, lv, higher) for sd, r in by_seed.items()}
                cell: dict[str, Any] = {"reached": sum(h is not None for h in hits.values()), "of": len(hits)}
                for x in ("wall_s", "samples", "backprop_samples"):
                    cell[x] = mean_sd([h[x] for h in hits.values() if h])
                    ratios = []
                    for sd, h in hits.items():
                        bh = crossing(base[sd]["evals"], key, lv, higher) if sd in base else None
                        if h and bh and bh[x] > 0:
                            ratios.append(h[x] / bh[x])
                    cell[f"{x}_ratio"] = mean_sd(ratios)
                    cell[f"{x}_ratio_n"] = len(ratios)
                row["targets"][f"{kind}:{lv:g}"] = cell
        table[arm] = row
    fractions = {"acc": ACC_FRACTIONS, "loss": LOSS_FRACTIONS}
    return {"acc_targets": acc_t, "loss_targets": loss_t, "auto_target_fractions": fractions, "arms": table,
            "runs": runs}


# --- rendering --------------------------------------------------------------------------------------
def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu}, {os.cpu_count()} CPU cores{gpu}, Python {platform.python_version()}, torch {torch.__version__}"


def _fmt(ms: tuple[float | None, float | None], spec: str = ".0f") -> str:
    m, s = ms
    return "-" if m is None else f"{m:{spec}} ± {s:{spec}}"


def headline(s: dict[str, Any], arms: list[str]) -> str:
    """One table: per arm, time to each accuracy and loss target / baseline (mean ± sd, seeds with both)."""
    keys = [f"acc:{lv:g}" for lv in s["acc_targets"]] + [f"loss:{lv:g}" for lv in s["loss_targets"]]
    names = [f"acc ≥ {lv:g}" for lv in s["acc_targets"]] + [f"loss ≤ {lv:g}" for lv in s["loss_targets"]]
    base = s["arms"].get("baseline", {}).get("step_time_s", (None, None))[0]
    out = ["**Time to target / baseline** (same seed; mean ± sd; `n/N` = seeds where both reached it)", "",
           "| arm | step time / baseline | " + " | ".join(names) + " |", "|---" * (len(keys) + 2) + "|"]
    for a in arms:
        if a == "baseline":
            continue
        r = s["arms"][a]
        st = f"{r['step_time_s'][0] / base:.2f}" if base else "-"
        cells = []
        for k in keys:
            c = r["targets"].get(k) or {"wall_s_ratio_n": 0, "of": 0}
            n = c["wall_s_ratio_n"]
            cells.append(f"{_fmt(c['wall_s_ratio'], '.2f')} ({n}/{c['of']})" if n else f"- (0/{c['of']})")
        out.append(f"| {a} | {st} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def render_markdown(rep: dict[str, Any]) -> str:
    s, meta = rep["summary"], rep["meta"]
    arms = [a for a in meta["arms"] if a in s["arms"]]
    unit = "CPU-s (process clock)" if meta["clock"] == "process" else "s (wall clock)"
    out = [f"# Time to accuracy: {meta['name']}", "",
           f"`{meta['command']}`", "",
           f"Machine: {meta['machine']}; {meta['num_threads']} torch thread(s); clock `{meta['clock']}`.", "",
           f"Preset `{meta['preset']}`, corpus `{meta['corpus']}`, candidates {meta['candidates']}, keep "
           f"{meta['keep']}, exit layer {meta['exit_layer']}, budget {meta['budget_s']:g} {unit} per run, "
           f"seeds {meta['seeds']}. Mean ± sd over the seeds that reached the target (n reached / n run); "
           "ratio = arm / baseline of the same seed, mean ± sd. Times are training time, eval excluded, "
           "interpolated between evaluations.", ""]
    shared = sorted(str(p.name) for p in Path(meta["runs_dir"]).glob("baseline_s*") if p.is_symlink())
    if shared:
        out += [f"Baseline runs {', '.join(shared)} are shared with the same-seed baseline of another keep "
                "value (same config apart from keep; baseline training never reads keep).", ""]
    out += ["| arm | seeds | steps | time/step | final acc | best acc | final val loss |",
           "|---|---|---|---|---|---|---|"]
    for a in arms:
        r = s["arms"][a]
        out.append(f"| {a} | {len(r['seeds'])} | {_fmt(r['steps'])} | {_fmt(r['step_time_s'], '.3f')} | "
                   f"{_fmt(r['final_acc'], '.4f')} | {_fmt(r['best_acc'], '.4f')} | {_fmt(r['final_loss'], '.3f')} |")
    out += ["", headline(s, arms)]
    for kind, levels, what in (("acc", s["acc_targets"], "val MLM accuracy ≥"),
                               ("loss", s["loss_targets"], "val loss ≤")):
        for x, label in (("wall_s", f"time ({unit})"), ("samples", "candidate samples"),
                         ("backprop_samples", "backprop samples")):
            out += ["", f"**{label} to {what} target** (ratio to baseline in parentheses)", "",
                    "| arm | " + " | ".join(f"{lv:g}" for lv in levels) + " |", "|---" * (len(levels) + 1) + "|"]
            for a in arms:
                cells = []
                for lv in levels:
                    c = s["arms"][a]["targets"].get(f"{kind}:{lv:g}")
                    if not c or not c["reached"]:
                        cells.append(f"- (0/{c['of'] if c else 0})")
                        continue
                    spec = ".1f" if x == "wall_s" and (c[x][0] or 0) < 100 else ".0f"
                    cell = f"{_fmt(c[x], spec)} ({c['reached']}/{c['of']})"
                    if a != "baseline" and c[f"{x}_ratio"][0] is not None:
                        cell += f" ({_fmt(c[f'{x}_ratio'], '.2f')}×)"
                    cells.append(cell)
                out.append(f"| {a} | " + " | ".join(cells) + " |")
    out += ["", f"Goal: SIFT / baseline time to target ≤ {GOAL}.", ""]
    return "\n".join(out)


def render_plot(rep: dict[str, Any], path: Path) -> None:
    """Val accuracy (top) and val loss (bottom) vs training time, candidate and backprop samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, meta = rep["summary"], rep["meta"]
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    xl = ("CPU time, s (process)" if meta["clock"] == "process" else "training wall-clock, s",
          "candidate samples", "backprop samples")
    for i, arm in enumerate(a for a in meta["arms"] if a in s["runs"]):
        for j, (_, run) in enumerate(sorted(s["runs"][arm].items())):
            ev = run["evals"]
            for row, key in enumerate(("val_mlm_acc", "val_loss")):
                for col, x in enumerate(("wall_s", "samples", "backprop_samples")):
                    axes[row, col].plot([e[x] for e in ev], [e[key] for e in ev], color=colors[i % len(colors)],
                                        alpha=0.8, lw=1.2, label=arm if j == 0 else None)
    for row, (key, levels) in enumerate((("val MLM accuracy", s["acc_targets"]), ("val loss", s["loss_targets"]))):
        for col in range(3):
            ax = axes[row, col]
            for lv in levels:
                ax.axhline(lv, color="gray", ls=":", lw=0.8)
            ax.set_xlabel(xl[col])
            ax.set_ylabel(key)
            ax.grid(alpha=0.3)
        if row == 1 and s["loss_targets"]:
            lo = min(s["loss_targets"]) - 0.5
            for col in range(3):
                axes[row, col].set_ylim(lo, max(s["loss_targets"]) + 1.0)
    axes[0, 0].legend()
    fig.suptitle(f"{meta['name']}: one line per seed", fontsize=11)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)


def write_report(group: Path, results: Path, meta: dict[str, Any], acc_t, loss_t) -> Path:
    summary = summarize(group, meta["arms"], meta["seeds"], acc_t, loss_t)
    rep = {"meta": meta, "summary": summary}
    stem = results / f"tta_{meta['name']}"
    ext = lambda suffix: stem.with_name(stem.name + suffix)
    compact = {"meta": meta, "summary": {k: v for k, v in summary.items() if k != "runs"},
               "evals": {a: {str(sd): r["evals"] for sd, r in by.items()} for a, by in summary["runs"].items()}}
    atomic_write_json(ext(".json"), compact)
    atomic_write_text(ext(".md"), render_markdown(rep))
    if summary["runs"]:
        render_plot(rep, ext(".png"))
    return stem


# --- driver -----------------------------------------------------------------------------------------
def _list(tp):
    return lambda text: [tp(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: baseline + entropy, seed 0, one config")
    p.add_argument("--corpus", type=_list(str), default=["wiki"], help="wiki (bundled slice), linux-docs, or a path")
    p.add_argument("--preset", type=_list(str), default=["proxy-12"])
    p.add_argument("--candidates", type=_list(int), default=[32])
    p.add_argument("--keep", type=_list(float), default=[0.5])
    p.add_argument("--arms", type=_list(str), default=["baseline", "entropy", "loss", "random"])
    p.add_argument("--seeds", type=_list(int), default=[0, 1, 2])
    p.add_argument("--budget-s", type=float, default=300.0, help="training time per run (clock below)")
    p.add_argument("--clock", default="process", choices=("process", "wall"))
    p.add_argument("--num-threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--exit-layer", default="1")
    p.add_argument("--exit-auto-every", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--telemetry-every", type=int, default=50)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--max-steps", type=int, default=1_000_000)
    p.add_argument("--lr", type=float, default=0.0, help="override the preset's peak LR (0 = preset)")
    p.add_argument("--lr-horizon", default="steps", choices=("auto", "steps", "budget"),
                   help="LR decay span; steps (with --max-steps far away: the LR stays at its peak after the "
                        "warmup) is how the committed suites were measured; auto = sift-pretrain's default")
    p.add_argument("--acc-targets", type=_list(float), default=None, help="default: auto from the baseline")
    p.add_argument("--loss-targets", type=_list(float), default=None, help="default: auto from the baseline")
    p.add_argument("--runs", default=str(ROOT / "runs" / "tta"), help="run directories (resumable)")
    p.add_argument("--results", default=str(ROOT / "bench" / "results"))
    p.add_argument("--report-only", action="store_true", help="rewrite the reports from finished runs")
    args = p.parse_args(argv)
    if args.quick:
        args.arms, args.seeds = ["baseline", "entropy"], [0]
        args.corpus, args.preset, args.candidates, args.keep = args.corpus[:1], args.preset[:1], [32], [0.5]
    for a in args.arms:
        if a not in HARNESS_ARMS:
            p.error(f"unknown arm {a!r}; choose from {', '.join(HARNESS_ARMS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    given = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--report-only"]
    command = "python bench/time_to_accuracy.py " + shlex.join(given)
    results = Path(args.results)
    for corpus, preset, c, keep in itertools.product(args.corpus, args.preset, args.candidates, args.keep):
        cname = corpus if corpus in CORPORA else Path(corpus).stem
        name = f"{cname}_{preset}_c{c}_k{keep:g}" + ("_quick" if args.quick else "")
        group = Path(args.runs) / f"{cname}_{preset}_c{c}_k{keep:g}_{args.clock}{args.budget_s:g}_t{args.num_threads}"
        base = base_config(args, corpus, preset, c, keep)
        meta = {"name": name, "command": command, "machine": machine(), "preset": preset, "corpus": corpus,
                "candidates": c, "keep": keep, "exit_layer": args.exit_layer, "budget_s": args.budget_s,
                "clock": args.clock, "num_threads": args.num_threads, "arms": args.arms, "seeds": args.seeds,
                "runs_dir": str(group)}
        data = None
        for seed, arm in itertools.product(args.seeds, args.arms):
            run = group / f"{arm}_s{seed}"
            if args.report_only or (run / "summary.json").exists():
                continue
            src = None
            if arm == "baseline" and not run.exists():
                src = shared_baseline(group, seed, arm_config(base, arm, seed, run, group))
            if src is not None:
                group.mkdir(parents=True, exist_ok=True)
                run.symlink_to(os.path.relpath(src, group))
                print(f"== {name}: baseline seed {seed} shared from {src} (baseline training never reads keep)",
                      file=sys.stderr, flush=True)
                continue
            if data is None:
                from sift_fast.train.builder import build_data

                data = build_data(base)
            print(f"== {name}: arm {arm} seed {seed} -> {run}", file=sys.stderr, flush=True)
            run_one(arm_config(base, arm, seed, run, group), data)
            write_report(group, results, meta, args.acc_targets, args.loss_targets)
        stem = write_report(group, results, meta, args.acc_targets, args.loss_targets)
        print(f"wrote {stem}.md / .json / .png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
