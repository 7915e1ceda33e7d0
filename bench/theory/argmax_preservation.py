"""Experiment (c): Monte-Carlo probability that the early exit of a random linear network preserves the
argmax (and the top-K set) of the true per-sample losses over R samples, vs depth L, exit layer k, width d,
number of samples R and target scale tau; compared with chance (1/R, K/R), an independent-samples log-chi2
model and the d-independent Gaussian closed form (see gaussian_limit.py).

    python -m bench.theory.argmax_preservation [--quick]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._io import save_figure, write_json
from .gaussian_limit import argmax_prob, linear_net_correlation
from .linear_net import argmax_agreement, chi2_model, simulate, topk_overlap

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Config:
    trials: int = 4000
    width: int = 64  # d
    depth: int = 8  # L
    exit_layer: int = 2  # k
    samples: int = 16  # R
    max_depth: int = 16  # depth of the (k, L) grid pass
    widths: tuple[int, ...] = (8, 16, 32, 64, 128, 256)
    sample_counts: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128)
    taus: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
    seed: int = 0

    @classmethod
    def quick(cls) -> Config:
        return cls(trials=1000, widths=(16, 64, 256), sample_counts=(2, 8, 32, 128), taus=(0.0, 1.0))


def _topk(samples: int) -> int:
    return max(1, samples // 4)


def _point(
    true: np.ndarray,
    exit_: np.ndarray,
    d: int,
    L: int,
    k: int,
    R: int,
    tau: float,
    rng: Any,
    model: bool = True,
) -> dict:
    """Statistics for one (d, L, k, R, tau) configuration; ``model`` adds the chi2 / Gaussian predictions."""
    K = _topk(R)
    agree = argmax_agreement(true, exit_)
    p = float(agree.mean())
    out = {
        "d": d,
        "L": L,
        "k": k,
        "R": R,
        "tau": tau,
        "K": K,
        "p_argmax": round(p, 4),
        "p_argmax_se": round(float(np.sqrt(p * (1 - p) / agree.size)), 4),
        "topk_overlap": round(float(topk_overlap(true, exit_, K).mean()), 4),
        "chance_argmax": round(1.0 / R, 4),
        "chance_topk": round(K / R, 4),
    }
    if model and tau == 0.0 and k < L:
        c = linear_net_correlation(k, L)
        t_log, e_log = chi2_model(true.shape[0], d, L, k, R, rng)
        out["gauss_corr"] = round(c, 4)
        out["p_gauss_closed_form"] = round(argmax_prob(c, R), 4)
        out["p_chi2_model"] = round(float(argmax_agreement(t_log, e_log).mean()), 4)
        out["topk_chi2_model"] = round(float(topk_overlap(t_log, e_log, K).mean()), 4)
        lt, le = np.log(true), np.log(exit_)  # pooled within-trial correlation of log losses
        lt, le = lt - lt.mean(1, keepdims=True), le - le.mean(1, keepdims=True)
        out["corr_log_mc"] = round(float((lt * le).sum() / np.sqrt((lt * lt).sum() * (le * le).sum())), 4)
    return out


def run(cfg: Config, outdir: Path = RESULTS, verbose: bool = True) -> dict[str, Any]:
    """All sweeps; writes ``argmax_preservation.json`` and two PNGs to ``outdir``."""
    t_start = time.time()
    rng = np.random.default_rng(cfg.seed)
    d, L, k, R = cfg.width, cfg.depth, cfg.exit_layer, cfg.samples
    sweeps: dict[str, list[dict]] = {}

    net = simulate(cfg.trials, d, cfg.max_depth, R, rng=rng)  # one pass gives every (k, L) pair
    sweeps["k_L_grid"] = [
        _point(net.true[ll], net.exit_[kk], d, ll, kk, R, 0.0, rng, model=False)
        for ll in range(1, cfg.max_depth + 1)
        for kk in range(0, ll + 1)
    ]
    sweeps["vs_k"] = [_point(net.true[L], net.exit_[kk], d, L, kk, R, 0.0, rng) for kk in range(0, L + 1)]
    sweeps["vs_L"] = [_point(net.true[ll], net.exit_[1], d, ll, 1, R, 0.0, rng) for ll in range(1, cfg.max_depth + 1)]
    sweeps["vs_d"] = []
    for dd in cfg.widths:
        n = simulate(cfg.trials, dd, L, R, rng=rng)
        sweeps["vs_d"].append(_point(n.true[L], n.exit_[k], dd, L, k, R, 0.0, rng))
    sweeps["vs_R"] = []
    for rr in cfg.sample_counts:
        n = simulate(cfg.trials, d, L, rr, rng=rng)
        sweeps["vs_R"].append(_point(n.true[L], n.exit_[k], d, L, k, rr, 0.0, rng))
    sweeps["vs_tau"] = []
    for tau in cfg.taus:
        n = simulate(cfg.trials, d, L, R, tau=tau, rng=rng)
        sweeps["vs_tau"].append(_point(n.true[L], n.exit_[k], d, L, k, R, tau, rng))
    if verbose:
        for name in ("vs_k", "vs_L", "vs_d", "vs_R", "vs_tau"):
            print(f"[argmax] {name}")
            for pt in sweeps[name]:
                print("   ", {kk: pt[kk] for kk in pt if kk not in ("chance_topk", "K")})
    res = {"config": asdict(cfg), "sweeps": sweeps, "wall_seconds": round(time.time() - t_start, 1)}
    plot(res, outdir)
    write_json(outdir / "argmax_preservation.json", res)
    return res


def plot(res: dict[str, Any], outdir: Path) -> None:
    """argmax_preservation.png (4 sweeps x {argmax, top-K}) and argmax_grid.png (k-L heatmap, tau sweep)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, sw = res["config"], res["sweeps"]
    d, L, k, R = cfg["width"], cfg["depth"], cfg["exit_layer"], cfg["samples"]
    panels = [
        ("vs_k", "k", f"exit layer k (L={L}, d={d}, R={R})", False),
        ("vs_L", "L", f"depth L (k=1, d={d}, R={R})", False),
        ("vs_d", "d", f"width d (L={L}, k={k}, R={R})", True),
        ("vs_R", "R", f"samples R (L={L}, k={k}, d={d})", True),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(17, 7.5))
    for col, (key, xk, xlabel, logx) in enumerate(panels):
        pts = sw[key]
        x = np.array([p[xk] for p in pts], dtype=float)
        for row, (yk, model_k, chance_k, ylab) in enumerate(
            [
                ("p_argmax", "p_chi2_model", "chance_argmax", "P[argmax exit = argmax true]"),
                ("topk_overlap", "topk_chi2_model", "chance_topk", "top-K overlap (K = R/4)"),
            ]
        ):
            ax = axes[row, col]
            y = np.array([p[yk] for p in pts])
            err = np.array([p["p_argmax_se"] for p in pts]) if row == 0 else None
            ax.errorbar(x, y, yerr=err, fmt="o-", color="C0", lw=2, ms=4, capsize=2, label="Monte Carlo (network)")
            m = [(xi, p[model_k]) for xi, p in zip(x, pts, strict=True) if model_k in p]
            if m:
                ax.plot(*zip(*m, strict=True), "s--", color="C2", ms=3, label="indep. log-chi2 model")
            if row == 0:
                g = [(xi, p["p_gauss_closed_form"]) for xi, p in zip(x, pts, strict=True) if "p_gauss_closed_form" in p]
                if g:
                    ax.plot(*zip(*g, strict=True), "^:", color="C3", ms=4, label="Gaussian closed form")
            ax.plot(x, [p[chance_k] for p in pts], "k:", lw=1.2, label="chance (1/R or K/R)")
            if logx:
                ax.set_xscale("log", base=2)
            ax.set_ylim(0, 1.03)
            ax.grid(alpha=0.3)
            ax.set_xlabel(xlabel)
            if col == 0:
                ax.set_ylabel(ylab)
            if col == 0 or (row == 0 and col == 3):
                ax.legend(fontsize=8)
    fig.suptitle(
        "Random linear network f = W_L...W_1 x, loss ||f(x)||^2, exit loss ||W_k...W_1 x||^2 "
        f"({cfg['trials']} trials per point)",
        fontsize=11,
    )
    fig.tight_layout()
    save_figure(fig, outdir / "argmax_preservation.png")
    plt.close(fig)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5))
    Lmax = cfg["max_depth"]
    Z = np.full((Lmax + 1, Lmax), np.nan)
    for p in sw["k_L_grid"]:
        Z[p["k"], p["L"] - 1] = p["p_argmax"]
    im = a1.imshow(
        Z,
        origin="lower",
        aspect="auto",
        vmin=0,
        vmax=1,
        cmap="viridis",
        extent=(0.5, Lmax + 0.5, -0.5, Lmax + 0.5),
    )
    fig.colorbar(im, ax=a1, label="P[argmax preserved]")
    a1.set_xlabel("depth L")
    a1.set_ylabel("exit layer k")
    a1.set_title(f"MC argmax preservation, d={d}, R={R} (chance {1 / R:.3f})")
    taus = [p["tau"] for p in sw["vs_tau"]]
    a2.plot(taus, [p["p_argmax"] for p in sw["vs_tau"]], "o-", label="P[argmax preserved]")
    a2.plot(taus, [p["topk_overlap"] for p in sw["vs_tau"]], "s-", label=f"top-{_topk(R)} overlap")
    a2.axhline(1 / R, color="k", ls=":", lw=1, label="chance 1/R")
    a2.set_ylim(0, 1.03)
    a2.set_xlabel("target scale tau  (y ~ N(0, tau^2 I); exit loss ||h_k||^2 + ||y||^2)")
    a2.set_title(f"random targets, L={L}, k={k}, d={d}, R={R}")
    a2.grid(alpha=0.3)
    a2.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, outdir / "argmax_grid.png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer trials and sweep points (~10 s)")
    ap.add_argument("--out", type=Path, default=None, help="default: results/ (results/quick/ with --quick)")
    args = ap.parse_args(argv)
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    run(Config.quick() if args.quick else Config(), out)


if __name__ == "__main__":
    main()
