"""Experiments (a) and (b): greedy (top-b of a pool by approximate loss) vs uniform SGD, plus an annealed
greedy -> uniform variant, on heterogeneous least squares / logistic regression with and without noisy labels.

    python -m bench.theory.greedy_vs_uniform [--quick]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._io import save_figure, write_json
from .problems import Problem, make_least_squares, make_logistic
from .schedules import constant, inverse_time
from .scorers import EarlyExitScorer, ExactScorer, NoisyScorer
from .selection import Policy
from .sgd import final_gap, iterations_to, iterations_to_stay, run_sgd

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {"2x": 2.0, "1.1x": 1.1}


@dataclass(frozen=True)
class Config:
    steps: int = 8000
    seeds: int = 5
    pool: int = 32  # C candidates scored per step
    batch: int = 4  # b samples that get a gradient step
    decay_t0_frac: float = 0.25  # decaying schedule eta/(1 + t/t0), t0 = frac * steps
    anneal_fracs: tuple[float, ...] = (0.25, 0.05)  # annealed policies reach uniform after this fraction
    exit_widths: tuple[int, ...] = (10, 18)  # early-exit bottleneck widths (p = 20)
    mult_levels: tuple[float, ...] = (0.5, 2.0)
    add_levels: tuple[float, ...] = (1.0, 10.0)
    curve_points: int = 80

    @classmethod
    def quick(cls) -> Config:
        return cls(steps=2000, seeds=3, exit_widths=(18,), mult_levels=(2.0,), add_levels=(10.0,), curve_points=50)


def make_problems() -> list[Problem]:
    """Least squares (small / outlier noise) and logistic regression (near separable, Bayes-noisy, flipped)."""
    return [
        make_least_squares(name="lsq"),
        make_least_squares(outlier_frac=0.05, outlier_noise=3.0, name="lsq_noisy_labels"),
        make_logistic(w_norm=20.0, name="logistic_near_separable"),
        make_logistic(w_norm=6.0, name="logistic"),
        make_logistic(w_norm=6.0, flip_frac=0.1, name="logistic_flipped_labels"),
    ]


def make_methods(problem: Problem, cfg: Config) -> list[tuple[str, Any, Policy]]:
    """(label, scorer, policy) for every method compared on ``problem``."""
    methods: list[tuple[str, Any, Policy]] = [
        ("uniform", ExactScorer(), Policy("uniform")),
        ("greedy exact", ExactScorer(), Policy("greedy")),
    ]
    for s in cfg.mult_levels:
        sc = NoisyScorer("mult", s)
        methods.append((f"greedy {sc.label}", sc, Policy("greedy")))
    for s in cfg.add_levels:
        sc = NoisyScorer("add", s)
        methods.append((f"greedy {sc.label}", sc, Policy("greedy")))
    for r in cfg.exit_widths:
        ex = EarlyExitScorer(problem, r)
        methods.append((f"greedy {ex.label}", ex, Policy("greedy")))
    for frac in cfg.anneal_fracs:
        methods.append((f"annealed({frac:g}) exact", ExactScorer(), Policy("anneal", frac)))
    ex = EarlyExitScorer(problem, max(cfg.exit_widths))
    methods.append((f"annealed({cfg.anneal_fracs[0]:g}) {ex.label}", ex, Policy("anneal", cfg.anneal_fracs[0])))
    return methods


def _grid(steps: int, points: int) -> np.ndarray:
    return np.unique(np.concatenate([[0], np.geomspace(1, steps, points).astype(int)]))


def _sig(x: float, digits: int = 4) -> float | None:
    return None if not np.isfinite(x) else float(f"{x:.{digits}g}")


def _median_or_none(vals: list[int | None]) -> float | None:
    """Median over seeds if every seed reached the target, else None."""
    return None if any(v is None for v in vals) else float(np.median(vals))


def run_problem(problem: Problem, cfg: Config) -> dict[str, Any]:
    """Every method x schedule on one problem; returns metrics and downsampled relative-excess curves."""
    eta = 1.0 / problem.l_max
    schedules = {"constant": constant(eta), "decaying": inverse_time(eta, cfg.decay_t0_frac * cfg.steps)}
    grid = _grid(cfg.steps, cfg.curve_points)
    f0 = float(problem.full_loss(problem.w0[None])[0])
    out: dict[str, Any] = {
        "description": problem.description,
        "f_opt": problem.f_opt,
        "f_init": f0,
        "l_max": problem.l_max,
        "eta": eta,
        "schedules": {},
    }
    for sname, lr in schedules.items():
        rows: dict[str, Any] = {}
        for label, scorer, policy in make_methods(problem, cfg):
            tr = run_sgd(problem, scorer, policy, lr, cfg.steps, cfg.seeds, cfg.pool, cfg.batch)
            rel = tr.loss / problem.f_opt - 1.0
            gap = final_gap(tr.loss, problem.f_opt)
            iters: dict[str, Any] = {}
            for key, mult in TARGETS.items():
                first = iterations_to(tr.loss, mult * problem.f_opt)
                stay = iterations_to_stay(tr.loss, mult * problem.f_opt)
                iters[key] = {
                    "first": {"median": _median_or_none(first), "per_seed": first},
                    "stay": {"median": _median_or_none(stay), "per_seed": stay},
                }
            rows[label] = {
                "iters_to": iters,
                "final_gap_mean": _sig(float(gap.mean())),
                "final_gap_std": _sig(float(gap.std())),
                "final_gap_per_seed": [_sig(float(g)) for g in gap],
                "best_gap_mean": _sig(float(rel.min(axis=1).mean())),
                "topb_precision_far": _sig(tr.precision_far, 3),
                "topb_precision_near": _sig(tr.precision_near, 3),
                "curve": {
                    "iter": grid.tolist(),
                    "mean": [_sig(float(v)) for v in rel[:, grid].mean(axis=0)],
                    "min": [_sig(float(v)) for v in rel[:, grid].min(axis=0)],
                    "max": [_sig(float(v)) for v in rel[:, grid].max(axis=0)],
                },
            }
        out["schedules"][sname] = rows
    return out


_PANEL_GROUPS = {
    "exact vs noisy scores": lambda m: m == "uniform" or (m.startswith("greedy") and "exit" not in m),
    "early exit and annealing": lambda m: m in ("uniform", "greedy exact") or "exit" in m or "anneal" in m,
}


def plot_problem(name: str, res: dict[str, Any], path: Path) -> None:
    """2x2 panels: rows = method group, columns = step-size schedule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scheds = list(res["schedules"])
    methods = list(res["schedules"][scheds[0]])
    palette = [plt.cm.tab10(i) for i in range(10)] + ["black", "goldenrod", "teal", "navy"]
    colors = {m: palette[i % len(palette)] for i, m in enumerate(methods)}
    fig, axes = plt.subplots(len(_PANEL_GROUPS), len(scheds), figsize=(13, 9), sharey=True)
    for row, (gname, keep) in enumerate(_PANEL_GROUPS.items()):
        for col, sname in enumerate(scheds):
            ax = axes[row, col]
            for m in methods:
                if not keep(m):
                    continue
                c = res["schedules"][sname][m]["curve"]
                it = np.maximum(np.asarray(c["iter"]), 1)
                floor = 1e-4
                mean = np.maximum(np.asarray(c["mean"], dtype=float), floor)
                lo = np.maximum(np.asarray(c["min"], dtype=float), floor)
                hi = np.maximum(np.asarray(c["max"], dtype=float), floor)
                style = "--" if m.startswith("annealed") else "-"
                lw = 2.2 if m in ("uniform", "greedy exact") else 1.4
                ax.plot(it, mean, style, color=colors[m], lw=lw, label=m)
                ax.fill_between(it, lo, hi, color=colors[m], alpha=0.15, lw=0)
            for y, lab in ((1.0, "2x F*"), (0.1, "1.1x F*")):
                ax.axhline(y, color="k", lw=0.7, ls=":")
                ax.text(1.05, y * 1.08, lab, fontsize=8)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_ylim(5e-4, None)
            ax.grid(True, which="major", alpha=0.3)
            ax.set_title(f"{sname} step, {gname}", fontsize=10)
            if row == len(_PANEL_GROUPS) - 1:
                ax.set_xlabel("iteration (gradient steps of b samples)")
            if col == 0:
                ax.set_ylabel("(F(w_t) - F*) / F*   [mean, band = min..max over seeds]")
            ax.legend(fontsize=7.5, loc="lower left")
    fig.suptitle(f"{name}: {res['description']}\nF*={res['f_opt']:.4g}, F(w0)={res['f_init']:.4g}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def run(cfg: Config, outdir: Path = RESULTS, verbose: bool = True) -> dict[str, Any]:
    """Run all problems, write ``greedy_vs_uniform.json`` and one PNG per problem to ``outdir``."""
    t_start = time.time()
    results: dict[str, Any] = {"config": asdict(cfg), "problems": {}}
    for problem in make_problems():
        t0 = time.time()
        res = run_problem(problem, cfg)
        results["problems"][problem.name] = res
        plot_problem(problem.name, res, outdir / f"gvu_{problem.name}.png")
        if verbose:
            print(f"[greedy_vs_uniform] {problem.name}: {time.time() - t0:.1f}s")
            print(summary_table(problem.name, res))
    results["wall_seconds"] = round(time.time() - t_start, 1)
    write_json(outdir / "greedy_vs_uniform.json", results)
    return results


def summary_table(name: str, res: dict[str, Any]) -> str:
    """Markdown table of iterations-to-target and final gap per method and schedule."""
    lines = [
        f"\n{name} (F*={res['f_opt']:.4g})",
        "| schedule | method | 2xF* first / stay | 1.1xF* first / stay | best F/F*-1 "
        "| final F/F*-1 (mean ± std) | top-b precision far / near |",
        "|---|---|---|---|---|---|---|",
    ]

    def fmt(d: dict[str, Any]) -> str:
        if d["median"] is not None:
            return f"{d['median']:.0f}"
        reached = sum(v is not None for v in d["per_seed"])
        return f"— ({reached}/{len(d['per_seed'])})"

    def both(d: dict[str, Any]) -> str:
        return f"{fmt(d['first'])} / {fmt(d['stay'])}"

    for sname, rows in res["schedules"].items():
        for m, r in rows.items():
            pf, pn = r["topb_precision_far"], r["topb_precision_near"]
            prec = " / ".join("-" if v is None else f"{v:.2f}" for v in (pf, pn))
            lines.append(
                f"| {sname} | {m} | {both(r['iters_to']['2x'])} | {both(r['iters_to']['1.1x'])} | "
                f"{r['best_gap_mean']:.3f} | {r['final_gap_mean']:.3f} ± {r['final_gap_std']:.3f} | {prec} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="short runs (~30 s)")
    ap.add_argument("--out", type=Path, default=None, help="default: results/ (results/quick/ with --quick)")
    args = ap.parse_args(argv)
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    run(Config.quick() if args.quick else Config(), out)


if __name__ == "__main__":
    main()
