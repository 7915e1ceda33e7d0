"""Plot selection telemetry (``selection_telemetry`` records of metrics.jsonl) of one or more runs.

Panels: Spearman of the exit score with the full-depth loss per exit layer; top-k overlap with the
full-depth loss ranking; top-k overlap with the full-depth ranking of the run's own criterion; and,
over training steps, the kept-loss / mean-loss ratio at the current exit layer with the exit layer
(changes by ``--exit-layer auto``) on a second axis. Per-layer curves are the mean over the
measurements after ``--skip`` steps, with a ± sd band. Also writes a markdown table next to the PNG.

    python bench/plot_telemetry.py runs/tta/<group>/entropy_s0 runs/tta/<group>/auto_s0 \\
        --out bench/results/tta_telemetry_wiki_proxy-12_c32_k0.5.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from sift_fast.io import atomic_savefig, atomic_write_text


def load(run: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The run's telemetry records and exit-layer changes, in step order."""
    recs = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    tele = sorted((r for r in recs if r.get("type") == "selection_telemetry"), key=lambda r: r["step"])
    changes = [r for r in recs if r.get("type") == "exit_layer_change"]
    return tele, changes


def per_layer(tele: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """Mean and sd over measurements of a per-layer list, NaNs skipped."""
    layers = len(tele[0][key])
    cols = [[r[key][i] for r in tele if r[key][i] == r[key][i]] for i in range(layers)]
    mean = [statistics.mean(c) if c else float("nan") for c in cols]
    sd = [statistics.stdev(c) if len(c) > 1 else 0.0 for c in cols]
    return mean, sd




def render(runs: list[Path], out: Path, skip: int) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    keys = (("spearman", "Spearman vs full-depth loss"), ("topk_overlap", "top-k overlap vs full-depth loss"),
            ("topk_overlap_self", "top-k overlap vs full-depth own criterion"))
    rows, ax2 = [], None
    for i, run in enumerate(runs):
        tele, changes = load(run)
        tele = [r for r in tele if r["step"] > skip] or tele
        if not tele:
            print(f"no selection_telemetry records in {run}", file=sys.stderr)
            continue
        color, name = f"C{i}", f"{run.name} ({tele[0]['criterion']})"
        layers = list(range(1, len(tele[0]["spearman"]) + 1))
        stats = {}
        for ax, (key, title) in zip(axes.flat, keys):
            mean, sd = per_layer(tele, key)
            stats[key] = mean
            ax.plot(layers, mean, marker="o", color=color, label=name)
            ax.fill_between(layers, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)],
                            color=color, alpha=0.15)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("exit layer")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        ax = axes[1, 1]
        steps = [r["step"] for r in tele]
        ax.plot(steps, [r["kept_full_loss_ratio"] for r in tele], color=color, label=name)
        ax2 = ax2 or ax.twinx()
        xs, ys = [0], [tele[0]["exit_layer"] if not changes else changes[0]["from"]]
        for c in changes:
            xs.append(c["step"])
            ys.append(c["to"])
        xs.append(steps[-1])
        ys.append(ys[-1])
        ax2.step(xs, ys, where="post", color=color, ls="--", alpha=0.6)
        ax2.set_ylabel("exit layer (dashed)")
        rows.append((name, len(tele), stats, statistics.mean(r["kept_full_loss_ratio"] for r in tele),
                     len(changes), tele[-1]["exit_layer"]))
    axes[1, 1].set_title("kept / mean full-depth loss at the exit layer", fontsize=10)
    axes[1, 1].set_xlabel("step")
    axes[1, 1].grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, out, dpi=100)
    return table(rows)


def table(rows: list[tuple]) -> str:
    if not rows:
        return ""
    n = len(rows[0][2]["spearman"])
    show = sorted({1, 2, 3, n // 2, n - 1, n} & set(range(1, n + 1)))
    head = "| run | measurements | " + " | ".join(f"ρ@{k}" for k in show) + " | " + \
        " | ".join(f"ov@{k}" for k in show) + " | ov-self@1 | kept/mean loss | exit changes | final exit |"
    out = [head, "|---" * (head.count("|") - 1) + "|"]
    for name, m, st, kept, nchg, last in rows:
        out.append(f"| {name} | {m} | " + " | ".join(f"{st['spearman'][k - 1]:.2f}" for k in show) + " | "
                   + " | ".join(f"{st['topk_overlap'][k - 1]:.2f}" for k in show)
                   + f" | {st['topk_overlap_self'][0]:.2f} | {kept:.3f} | {nchg} | {last} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run directories holding metrics.jsonl")
    p.add_argument("--out", type=Path, required=True, help="PNG path; the table goes next to it as .md")
    p.add_argument("--skip", type=int, default=0, help="ignore measurements at or before this step")
    args = p.parse_args(argv)
    md = render(args.runs, args.out, args.skip)
    cmd = "python bench/plot_telemetry.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = f"# Selection telemetry\n\n`{cmd}`\n\nMeans over measurements after step {args.skip}.\n\n{md}"
    md_path = args.out.with_name(args.out.name.removesuffix(".png") + ".md")
    atomic_write_text(md_path, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
