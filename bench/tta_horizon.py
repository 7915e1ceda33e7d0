"""Long-horizon time-to-accuracy: where SIFT's curves meet the baseline's, and which cause explains it.

Configurations (each run ≥ 2700 CPU-s, extendable: a finished run with a smaller budget resumes from its
last checkpoint when ``--budget-s`` grows):

* ``single-pass`` — proxy-12 on ≥ 60 MB of Debian documentation prose + the linux-docs prose
  (``scripts/make_prose_corpus.py``): no run repeats a sequence within the budget;
* ``repeated``    — proxy-12 on the bundled WikiText-2 slice (many passes, as BERT's ~40 epochs);
* ``wide``        — proxy-12-wide (12 × 256) on the single-pass corpus: model size.

These keep the LR at its peak after the warmup (``max_steps`` is far away): the learning rate per step
is then the same for every arm, whatever its backprop batch. ``repeated-decay``, ``single-pass-decay``
and ``wide-decay`` decay it linearly to 0 over each run's budget (``--lr-horizon budget``), as a real run
decays it over its horizon: what separates the LR-per-batch cause from the others.

Arms: ``baseline``; ``entropy`` (fixed keep); ``random`` (pays for scoring); ``anneal`` (keep → 1 by the
entropy arm's step count); ``anneal-horizon`` (keep → 1 as the run's horizon runs out,
``--anneal-horizon 1``: the product form of the anneal, for time-budgeted runs too); ``lr`` (entropy with
the peak LR × √keep, Adam's square-root rule for the smaller backprop batch); ``sample``
(importance-sampled selection, unbiased reweighting); ``noise`` (entropy with keep raised towards 1 as the
gradient noise scale grows, ``sift_fast/train/noise.py``).
``until<F>`` is the trainer's default schedule with ``select_until`` F: the ``entropy`` arm for the first
fraction F of the run's horizon (the LR decay's), then plain full-batch steps with no scoring pass;
``until<F>-lr`` also scales a selection step's LR by √(kept/candidates) (``--lr-batch-scale sqrt``),
``until<F>-lr4`` by (kept/candidates)^(1/4) (``--lr-batch-scale fourth-root``), ``until<F>-lr38`` by the
power 3/8 (``--lr-batch-scale three-eighths``), ``until<F>-lrp<P>`` by the power P in [0, 1]
(``--lr-batch-scale P``), ``until<F>-emb`` only the
word embeddings' by the square root (``--lr-batch-scale-params embeddings``). A job of arm ``default`` runs as
the default's own ``until<F>[-lr|…]`` name (``until0.1-lr`` today: what ``sift-pretrain`` does with
no selection flag), so a report never mixes two defaults. ``entropy`` and the other fixed-keep
arms pin ``select_until`` to 1 (select to the end).

Reported per configuration and arm by ``bench/horizon_report.py``
(``bench/results/tta_horizon_<config>.{md,json,png}``): val loss and accuracy ÷ baseline at equal CPU time
at 25/50/75/100 % of the budget, the crossover (the first eval time after which the arm's interpolated val
loss / accuracy is worse than the baseline's, in CPU-s, candidate tokens and passes over the training
split), time to the early and late targets, the clock check, the final weight norms, and the "never loses"
check (worst excess of the arm's val loss over the baseline's past 10 % of the budget).

Runs are claimed with a lock file, so two processes with the same ``--jobs`` list share the work:

    python bench/tta_horizon.py --jobs single-pass:baseline:0,single-pass:noise:0 --budget-s 2700 &
    python bench/tta_horizon.py --jobs single-pass:baseline:0,single-pass:noise:0 --budget-s 2700 &
    python bench/tta_horizon.py --report-only            # rewrite every report from finished runs

Prefix probes measure the early targets for a fifth of a run's CPU: ``--probe-s 500`` runs the jobs' first
500 CPU-s of the same schedule (the LR still decays over ``--budget-s``; the trainer's ``--stop-after-s``) into
``<runs>/<config>/probes/``; reports pool them with the full runs for the early targets only (0.6× and 0.75×
best), never for the levels, the late targets, the crossover or the never-loses test:

    python bench/tta_horizon.py --jobs single-pass-decay:baseline:6,single-pass-decay:entropy:6 --probe-s 500

Finished runs' eval curves are kept in the report JSON, so reports from earlier sessions survive the
run directories (which do not persist) and new seeds add to them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from horizon_report import ARMS, analyse, known, render, render_plot, verdict  # noqa: E402
from time_to_accuracy import arm_config, base_config, machine, read_evals, run_one  # noqa: E402

from sift_fast.cli.arms import UNTIL_FORM, default_name  # noqa: E402
from sift_fast.io import atomic_write_json, atomic_write_text  # noqa: E402

PROBES = "probes"  # a configuration's prefix probes live in <runs>/<config>/probes/<arm>_s<seed>
PROSE = Path(os.environ.get("SIFT_PROSE_CORPUS", Path.home() / ".cache/sift_fast/prose/debian-docs-prose.txt"))
# lr_horizon "steps" with max_steps far away keeps the LR at its peak after the warmup (constant LR)
CONFIGS: dict[str, dict[str, Any]] = {
    "single-pass": {"corpus": str(PROSE), "preset": "proxy-12", "lr_horizon": "steps"},
    "repeated": {"corpus": "wiki", "preset": "proxy-12", "lr_horizon": "steps"},
    "wide": {"corpus": str(PROSE), "preset": "proxy-12-wide", "lr_horizon": "steps"},
    # the same with the LR decayed linearly over each run's time budget (optim.lr_horizon=budget; what the
    # default, auto, does when the budget ends the run), as any real pretraining run decays it over its horizon
    "repeated-decay": {"corpus": "wiki", "preset": "proxy-12", "lr_horizon": "budget"},
    "single-pass-decay": {"corpus": str(PROSE), "preset": "proxy-12", "lr_horizon": "budget"},
    "wide-decay": {"corpus": str(PROSE), "preset": "proxy-12-wide", "lr_horizon": "budget"},
}


def horizon_arm(base, arm: str, seed: int, out: Path, group: Path):
    """Config of one (arm, seed) run: the arms of ``sift_fast.cli.arms`` (``random`` pays for scoring)."""
    return arm_config(base, arm, seed, out, group)


def _args_for(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(exit_layer="1", budget_s=args.budget_s, max_steps=1_000_000, eval_every=args.eval_every,
                              clock="process", num_threads=1, telemetry_every=50, checkpoint_every=100,
                              device="cpu", exit_auto_every=100, lr=0.0)


def base_for(name: str, args: argparse.Namespace):
    c = CONFIGS[name]
    base = base_config(_args_for(args), c["corpus"], c["preset"], args.candidates, args.keep)
    return base.replace(lr_horizon=c["lr_horizon"])


# --- running ----------------------------------------------------------------------------------------
def _lock(run: Path) -> Path:
    return run.parent / ".locks" / f"{run.name}.lock"


def _claim(run: Path) -> bool:
    """Take the run's lock (O_EXCL, beside the run dir); a lock whose process is gone is taken over."""
    lock = _lock(run)
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            return True
        except FileExistsError:
            try:
                os.kill(int(lock.read_text() or 0), 0)
                return False  # alive
            except (ProcessLookupError, ValueError):
                lock.unlink(missing_ok=True)
            except PermissionError:
                return False
    return False


def finished(run: Path, budget: float) -> bool:
    s = run / "summary.json"
    return s.exists() and json.loads(s.read_text())["train_time_s"] >= budget - 1e-6


def run_jobs(args: argparse.Namespace) -> None:
    data_cache: dict[str, Any] = {}
    for job in args.jobs:
        name, arm, seed = job.split(":")
        group = Path(args.runs) / name
        run = (group / PROBES if args.probe_s else group) / f"{arm}_s{seed}"
        if finished(run, args.probe_s or args.budget_s) or not _claim(run):
            continue
        try:
            base = base_for(name, args)
            cfg = horizon_arm(base, arm, int(seed), run, group)
            if args.probe_s:  # the same schedule (the LR decays over --budget-s), paused at --probe-s
                cfg = cfg.replace(stop_after_s=args.probe_s)
            if name not in data_cache:
                from sift_fast.train.builder import build_data

                data_cache = {name: build_data(base)}  # one corpus in memory at a time
            print(f"== horizon {name}: arm {arm} seed {seed} -> {run}", file=sys.stderr, flush=True)
            (run / "summary.json").unlink(missing_ok=True)  # an extension resumes from the checkpoint
            run_one(cfg, data_cache[name])
            atomic_write_text(run / "session", session_id() or "")  # the session that finished it
            meta = {"train_sequences": len(data_cache[name].train), "seq_len": base.data.seq_len}
            write_report(name, args, meta)
        finally:
            _lock(run).unlink(missing_ok=True)


def committed(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The committed report of configuration ``name`` ({} before its first run)."""
    path = Path(args.results) / f"tta_horizon_{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def collect(name: str, args: argparse.Namespace) -> tuple[dict[str, dict[int, dict[str, Any]]], dict[str, Any]]:
    """Finished runs of configuration ``name``: this session's run dirs, then the committed report's; each arm's
    seeds in ascending order (the report's per-seed lists follow it)."""
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    old = committed(name, args)
    for arm, by in old.get("runs", {}).items():
        for sd, r in by.items():
            runs.setdefault(arm, {})[int(sd)] = r
    group = Path(args.runs) / name
    for d in sorted(group.glob("*_s*")) if group.exists() else []:
        arm, _, sd = d.name.rpartition("_s")
        if not known(arm) or not finished(d, args.budget_s):  # stopped early (SIGTERM) or still running: not quoted
            continue
        summ = json.loads((d / "summary.json").read_text())
        prev = runs.get(arm, {}).get(int(sd))
        if prev is None or summ["train_time_s"] >= prev["summary"]["train_time_s"]:
            runs.setdefault(arm, {})[int(sd)] = {"summary": summ, "evals": read_evals(d),
                                                 "adaptive": _adaptive_trace(d), "norms": final_norms(d),
                                                 "session": _read_session(d), "eval_every": _eval_every(d)}
    return {arm: dict(sorted(by.items())) for arm, by in runs.items()}, old.get("meta", {})


def collect_probes(name: str, args: argparse.Namespace) -> dict[str, dict[int, dict[str, Any]]]:
    """Prefix probes of configuration ``name`` (``--probe-s``: a run's first S CPU-s of the same schedule, for the
    early targets only): the committed report's, then this session's that reached their pause."""
    old = committed(name, args)
    probes = {arm: {int(sd): r for sd, r in by.items()} for arm, by in old.get("probes", {}).items()}
    group = Path(args.runs) / name / PROBES
    for d in sorted(group.glob("*_s*")) if group.exists() else []:
        arm, _, sd = d.name.rpartition("_s")
        summ = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
        if known(arm) and summ.get("paused_after_s"):  # paused by the rule (under DeepSpeed maybe on another rank)
            probes.setdefault(arm, {})[int(sd)] = {"summary": summ, "evals": read_evals(d),
                                                   "session": _read_session(d), "eval_every": _eval_every(d)}
    return {arm: dict(sorted(by.items())) for arm, by in probes.items()}


def _eval_every(run: Path) -> int | None:
    try:
        return int(json.loads((run / "config.json").read_text())["train"]["eval_every"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def eval_every_of(runs: dict[str, dict[int, dict[str, Any]]], fallback: Any) -> Any:
    """The runs' own eval interval (one value, or the distinct values joined by '/'); a run that did not record it
    (runs of older reports) counts as ``fallback``, the interval its report stated."""
    seen = sorted({r.get("eval_every") or fallback for by in runs.values() for r in by.values()}, key=str)
    return "/".join(map(str, seen)) if len(seen) > 1 else (seen[0] if seen else fallback)


def session_id() -> str | None:
    """This machine's boot id: one per session (each session runs on a freshly started machine)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8] or None
    except OSError:
        return None


def _read_session(run: Path) -> str | None:
    """The session that finished a run, written beside it (None: unknown)."""
    try:
        return (run / "session").read_text().strip() or None
    except OSError:
        return None


def final_norms(run: Path) -> dict[str, float] | None:
    """L2 norms of the final weights (all; the encoder's matrices; the word embeddings): more optimizer steps at
    the same LR grow them, and with LayerNorm a larger norm is a smaller effective LR for the rest of the run."""
    from sift_fast.train.checkpoint import latest_checkpoint, load_checkpoint

    path = latest_checkpoint(run / "checkpoints")
    if path is None:
        return None
    model = load_checkpoint(path)["engine"]["model"]

    def norm(keep) -> float:
        return sum(float(v.double().pow(2).sum()) for k, v in model.items()
                   if v.is_floating_point() and keep(k, v)) ** 0.5

    return {"all": norm(lambda k, v: True), "encoder_matrices": norm(lambda k, v: v.dim() == 2 and ".encoder." in k),
            "word_embeddings": norm(lambda k, v: k.endswith("word_embeddings.weight"))}


def _adaptive_trace(run: Path) -> list[list[float]]:
    """(wall_s, step, backprop size, noise scale) of the noise arm's step records, thinned."""
    path = run / "metrics.jsonl"
    out = []
    for ln in path.read_text().splitlines() if path.exists() else []:
        r = json.loads(ln)
        if r.get("type") == "step" and "adaptive_k" in r and r["step"] % 50 == 0:
            out.append([r["wall_s"], r["step"], r["adaptive_k"], r.get("noise_scale")])
    return out


def write_report(name: str, args: argparse.Namespace, extra: dict[str, Any] | None = None) -> Path | None:
    runs, old_meta = collect(name, args)
    if not runs:
        return None
    c = CONFIGS[name]
    if "train_sequences" not in old_meta and not (extra or {}).get("train_sequences"):
        from sift_fast.train.builder import build_data

        base = base_for(name, args)
        extra = {**(extra or {}), "train_sequences": len(build_data(base).train), "seq_len": base.data.seq_len}
    meta = {**old_meta, "corpus": Path(c["corpus"]).name if c["corpus"] != "wiki" else "wiki (bundled)",
            "preset": c["preset"], "candidates": args.candidates, "keep": args.keep,
            "budget_s": max(args.budget_s, old_meta.get("budget_s", 0)),
            "eval_every": eval_every_of(runs, old_meta.get("eval_every", args.eval_every)),
            "machine": old_meta.get("machine") or machine(), **(extra or {})}
    probes = collect_probes(name, args)
    analysis = analyse(runs, meta["budget_s"], meta, probes)
    analysis["verdict"] = verdict(runs, analysis, meta["budget_s"])
    rep = {"meta": meta, "analysis": analysis,
           "runs": {a: {str(s): r for s, r in by.items()} for a, by in runs.items()}}
    if probes:
        rep["probes"] = {a: {str(s): r for s, r in by.items()} for a, by in probes.items()}
    stem = Path(args.results) / f"tta_horizon_{name}"
    atomic_write_json(stem.with_suffix(".json"), rep)
    atomic_write_text(stem.with_suffix(".md"), render(name, rep))
    render_plot(name, rep, stem.with_suffix(".png"))
    return stem


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", default="", help="comma-separated CONFIG:ARM:SEED (run in order, claimed by lock)")
    p.add_argument("--budget-s", type=float, default=2700.0, help="CPU-s of training per run")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--candidates", type=int, default=32)
    p.add_argument("--keep", type=float, default=0.5)
    p.add_argument("--runs", default=str(ROOT / "runs" / "horizon"))
    p.add_argument("--results", default=str(ROOT / "bench" / "results"))
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--probe-s", type=float, default=0.0,
                   help="run the jobs as prefix probes: the same schedule (LR decay over --budget-s), paused after "
                        "this many CPU-s (--stop-after-s); reports use them for the early targets only")
    args = p.parse_args(argv)
    if not 0 <= args.probe_s < args.budget_s:
        p.error(f"--probe-s must be in [0, --budget-s {args.budget_s:g}); got {args.probe_s:g}")
    # a job of arm "default" runs under the default's explicit name (until<F>[-lr|…]): results stay right
    # when it changes
    args.jobs = [j.replace(":default:", f":{default_name()}:") for j in args.jobs.split(",") if j.strip()]
    for j in args.jobs:
        parts = j.split(":")
        if len(parts) != 3 or parts[0] not in CONFIGS or not known(parts[1]) or not parts[2].isdigit():
            p.error(f"bad job {j!r}: CONFIG:ARM:SEED with CONFIG in {', '.join(CONFIGS)}, ARM in {', '.join(ARMS)} "
                    f"or {UNTIL_FORM}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.report_only:
        run_jobs(args)
    for name in CONFIGS:
        stem = write_report(name, args)
        if stem is not None:
            print(stem.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
