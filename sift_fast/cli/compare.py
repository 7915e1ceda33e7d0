"""``sift-compare``: baseline vs SIFT (and more arms) on the same data, seed and budget.

Prints a table (time and samples to each target accuracy, final accuracy, ratios to the baseline) and
writes ``compare.md``, ``compare.json`` and ``compare.png`` into ``--out``. With no arguments it runs
the bundled Wikipedia slice on CPU and finishes within about 10 minutes on a 2-core machine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from sift_fast.cli.args import OneLineParser, add_config_flags, config_from_args, run_cli
from sift_fast.cli.arms import ARMS, arm_overrides, default_name
from sift_fast.cli.report import render_markdown, render_plot, render_table
from sift_fast.config import Config
from sift_fast.io import atomic_write_json, atomic_write_text

# The no-argument run: proxy-12 on the bundled corpus, four CPU-minutes of training per arm; the LR decays
# over those four minutes (optim.lr_horizon=auto: the budget ends the run before max_steps).
QUICK_DEFAULTS = {"time_budget_s": 240.0, "max_steps": 100000, "eval_every": 25, "log_every": 25,
                  "targets": (0.04, 0.06, 0.08, 0.1, 0.12, 0.14), "out": "runs/compare"}
# On CPU the arms are timed in process CPU-seconds on one thread: ratios then hold on a shared machine.
CPU_DEFAULTS = {"clock": "process", "num_threads": 1}


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="sift-compare", description=__doc__)
    add_config_flags(parser)
    parser.add_argument("--arms", default="baseline,default",
                        help=f"comma-separated arms ({', '.join(ARMS)}); default = the trainer's default SIFT")
    return parser


def read_evals(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    recs = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    return [r for r in recs if r.get("type") == "eval"]


def run_arms(base, arms: list[str], out: Path, console=None) -> dict[str, Any]:
    """Train every arm sequentially on the same data; returns {arm: {summary, evals}}."""
    from sift_fast.train.builder import build_data
    from sift_fast.train.loop import Trainer

    data = build_data(base)
    results: dict[str, Any] = {}
    for arm in arms:
        cfg = base.replace(**arm_overrides(arm, base), out=str(out / arm))
        print(f"== arm {arm}: selection={cfg.sift.selection} keep={cfg.sift.keep} exit={cfg.sift.exit_layer}",
              file=sys.stderr, flush=True)
        summary = Trainer(cfg, data=data, console=console).run()
        results[arm] = {"summary": summary, "evals": read_evals(out / arm / "metrics.jsonl")}
    return results


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    given = {k for k, v in vars(args).items() if v is not None}
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    for a in arms:
        arm_overrides(a, config_from_args(args))  # validate names before any training
    cfg = config_from_args(args)
    from sift_fast.train.builder import resolve_device

    on_cpu = resolve_device(cfg.train.device).type == "cpu"
    defaults = {k: v for k, v in {**QUICK_DEFAULTS, **(CPU_DEFAULTS if on_cpu else {})}.items() if k not in given}
    if defaults:
        cfg = cfg.replace(**defaults)
    out = Path(cfg.train.out)
    results = run_arms(cfg, arms, out)
    report = {"config": cfg.to_dict(), "arms": arms, "results": results}
    atomic_write_json(out / "compare.json", report)
    atomic_write_text(out / "compare.md", render_markdown(report))
    render_plot(report, out / "compare.png")
    print(render_table(report))
    print(one_seed_note(cfg))
    print(f"wrote {out / 'compare.md'}, {out / 'compare.json'}, {out / 'compare.png'}")
    return 0


# the long-horizon suites run with the protocol sift-compare uses (the LR decayed over the time budget): the
# bundled corpus many times over, and fresh prose
SUITES = {name: Path(__file__).resolve().parents[2] / "bench" / "results" / f"tta_horizon_{name}.json"
          for name in ("repeated-decay", "single-pass-decay")}


def one_seed_note(cfg: Config) -> str:
    """Say that this is one seed, with the long-horizon suites' multi-seed numbers beside it where they exist."""
    note = (f"note: one seed ({cfg.train.seed}) and {cfg.train.time_budget_s:g} s per arm; run-to-run spread is "
            "larger than the differences early on.")
    cells = []
    for suite, path in SUITES.items():
        try:
            cells += _suite_cells(suite, json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # a missing or older suite file: the note goes without it
    if not cells:
        return note + " The multi-seed evidence: bench/results/tta_horizon_*.md."
    return note + (" Long-horizon suites (LR decayed over each run's budget; val loss ÷ baseline at equal CPU "
                   "time): " + "; ".join(cells) + ".")


def _suite_cells(suite: str, rep: dict[str, Any]) -> list[str]:
    arms, budget = rep["analysis"]["arms"], rep["meta"]["budget_s"]
    cells = []
    for arm in (default_name(), "entropy"):  # the suites name the default by its until<F>[-lr|…] arm
        eq = arms.get(arm, {}).get("equal_time", {})
        parts = [f"{m:.3f}" + (f" ± {sd:.3f}" if sd else "") + f" @{float(f):.0%}" for f in ("0.25", "1")
                 for m, sd in [eq.get(f"val_loss@{f}") or (None, None)] if m is not None]
        if parts:
            n = len(arms[arm]["seeds"])
            cells.append(f"{suite} {arm} ({budget:g} CPU-s, {n} seed{'s' if n > 1 else ''}): {', '.join(parts)}")
    return cells


def main(argv: list[str] | None = None) -> int:
    sys.exit(run_cli("sift-compare", _main, argv))


if __name__ == "__main__":
    main()
