"""Tables and plots of a comparison: time / samples to each target accuracy, ratios to the baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sift_fast.io import atomic_savefig


def _targets(report: dict[str, Any]) -> list[str]:
    return [f"{t:g}" for t in report["config"]["train"]["targets"]]


def rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per arm: final accuracy/loss, and per target the time/samples and the time ratio."""
    base = report["results"].get("baseline", {}).get("summary", {}).get("time_to_target", {})
    out = []
    for arm in report["arms"]:
        s = report["results"][arm]["summary"]
        final = s.get("final_eval") or {}
        row = {"arm": arm, "steps": s["steps"], "train_time_s": s["train_time_s"], "samples": s["samples"],
               "backprop_samples": s["backprop_samples"], "final_acc": final.get("val_mlm_acc"),
               "final_loss": final.get("val_loss"), "targets": {}}
        for t in _targets(report):
            hit = s["time_to_target"].get(t)
            ratio = None
            if hit and base.get(t):
                ratio = hit["wall_s"] / max(base[t]["wall_s"], 1e-9)
            row["targets"][t] = {"hit": hit, "time_ratio": ratio}
        out.append(row)
    return out


def _cells(row: dict[str, Any], targets: list[str], times: str) -> list[str]:
    cells = [row["arm"], str(row["steps"]), f"{row['train_time_s']:.0f}",
             f"{row['final_acc']:.4f}" if row["final_acc"] is not None else "-",
             f"{row['final_loss']:.3f}" if row["final_loss"] is not None else "-"]
    for t in targets:
        hit, ratio = row["targets"][t]["hit"], row["targets"][t]["time_ratio"]
        cell = "-" if not hit else f"{hit['wall_s']:.0f}s"
        if hit and ratio is not None:
            cell += f" ({ratio:.2f}{times})"
        cells.append(cell)
    return cells


HEAD = ["arm", "steps", "train s", "final acc", "final loss"]


def render_table(report: dict[str, Any]) -> str:
    """Plain-text table: per target ``time s (ratio)``; ``-`` where the arm never reached it."""
    targets = _targets(report)
    lines = [HEAD + [f"t@{t}" for t in targets]] + [_cells(r, targets, "x") for r in rows(report)]
    widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in lines)


def render_markdown(report: dict[str, Any]) -> str:
    targets = _targets(report)
    cfg = report["config"]
    out = ["# sift-compare", "",
           f"preset `{cfg['preset']}`, data `{cfg['data']['corpus']}`, candidates {cfg['sift']['candidates']}, "
           f"keep {cfg['sift']['keep']}, exit layer {cfg['sift']['exit_layer']}, seed {cfg['train']['seed']}, "
           f"budget {cfg['train']['time_budget_s']:.0f}s / {cfg['train']['max_steps']} steps per arm.", "",
           f"Time to each validation MLM accuracy target (training time, clock `{cfg['train']['clock']}`, "
           f"{cfg['train']['num_threads'] or 'default'} thread(s), eval excluded; ratio to baseline).",
           "", "| " + " | ".join(HEAD + [f"t@{t}" for t in targets]) + " |", "|" + "---|" * (5 + len(targets))]
    out += ["| " + " | ".join(_cells(r, targets, "×")) + " |" for r in rows(report)]
    out.append("")
    return "\n".join(out)


def render_plot(report: dict[str, Any], path: Path) -> None:
    """Validation accuracy vs training time (the clock the run used), candidate and backprop samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for arm in report["arms"]:
        evals = report["results"][arm]["evals"]
        acc = [e["val_mlm_acc"] for e in evals]
        for ax, key in zip(axes, ("wall_s", "samples", "backprop_samples")):
            ax.plot([e[key] for e in evals], acc, marker=".", label=arm)
    clock = report["config"]["train"]["clock"]
    xlabel = "training CPU time, s (process clock)" if clock == "process" else "training wall-clock, s"
    for ax, label in zip(axes, (xlabel, "candidate samples", "backprop samples")):
        ax.set_xlabel(label)
        ax.set_ylabel("val MLM accuracy")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
