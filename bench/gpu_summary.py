"""Pack the GPU suite's results: ``gpu_suite.json`` (every part's status + its result JSONs) and a summary
``gpu_suite.md`` (part table, fused scorer % of matmul beside the roofline prediction, the 200-step loss).

Called by ``bench/gpu_suite.sh`` after every part, so a run cut off early still returns what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _jsons(folder: Path) -> dict:
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def loss_curve(metrics: Path) -> list[tuple[int, float]]:
    """(step, loss) of a run's metrics.jsonl step records."""
    if not metrics.is_file():
        return []
    recs = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return [(r["step"], r["loss"]) for r in recs if r.get("type") == "step" and "loss" in r]


def falling(curve: list[tuple[int, float]]) -> bool | None:
    """Mean loss of the last fifth below that of the first fifth (None without enough steps)."""
    if len(curve) < 10:
        return None
    k = max(1, len(curve) // 5)
    return sum(v for _, v in curve[-k:]) / k < sum(v for _, v in curve[:k]) / k


def tta(work: Path, out: Path) -> int:
    """gpu_tta.json / .md: each arm's eval curve (wall s, step, validation MLM accuracy and loss)."""
    arms = {}
    for name in ("baseline", "sift"):
        m = work / name / "metrics.jsonl"
        recs = [json.loads(x) for x in m.read_text().splitlines() if x.strip()] if m.is_file() else []
        arms[name] = [{k: r.get(k) for k in ("wall_s", "step", "val_mlm_acc", "val_loss")}
                      for r in recs if r.get("type") == "eval"]
    _atomic(out / "gpu_tta.json", json.dumps(arms, indent=1))
    lines = ["# Time to accuracy on the GPU: baseline vs default SIFT (bert-base shapes)", "",
             "| arm | evals | last wall s | last step | last val acc | best val acc |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, c in arms.items():
        accs = [e["val_mlm_acc"] for e in c if e["val_mlm_acc"] is not None]
        last = c[-1] if c else {}
        lines.append(f"| {name} | {len(c)} | {last.get('wall_s', '')} | {last.get('step', '')} | "
                     f"{last.get('val_mlm_acc', '')} | {max(accs) if accs else ''} |")
    _atomic(out / "gpu_tta.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--status", type=Path, help="gpu_suite.sh's part table")
    ap.add_argument("--work", type=Path, help="gpu_suite.sh's work folder")
    ap.add_argument("--tta", type=Path, help="gpu_tta.sh's work folder: pack the two eval curves instead")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    if a.tta is not None:
        return tta(a.tta, a.out)
    if a.status is None or a.work is None:
        ap.error("--status and --work are needed without --tta")
    parts = [dict(zip(("part", "rc", "s", "limit_s"), line.split("\t"))) for line in
             a.status.read_text().splitlines() if line.strip()]
    gpu = (a.work / "gpu.txt").read_text().strip() if (a.work / "gpu.txt").is_file() else "unknown"
    pred = json.loads((ROOT / "bench" / "results" / "kernel_resources.json").read_text()).get("predictions", [])
    curve = loss_curve(a.work / "sift_200" / "metrics.jsonl")
    res = {"gpu": gpu, "parts": parts, "prediction": pred, "sift_200_loss": curve, "loss_falls": falling(curve),
           "results": {d: _jsons(a.work / d) for d in ("scorer", "step", "overlap")}}
    _atomic(a.out / "gpu_suite.json", json.dumps(res, indent=1, default=str))
    lines = [f"# GPU suite on {gpu}", "", "| part | rc | s | limit s |", "|---|---:|---:|---:|"]
    lines += [f"| {p['part']} | {p['rc']} | {p['s']} | {p['limit_s']} |" for p in parts]
    lines += ["", "## Fused scorer: measured % of the bf16 matmul vs the roofline prediction", "",
              "| N | measured % of matmul (triton_rows_sorted) | predicted % (H100 roofline) |", "|---:|---:|---:|"]
    measured = {}
    for blob in res["results"]["scorer"].values():
        for row in blob.get("exit_scorer", []) if isinstance(blob, dict) else []:
            pct = row.get("methods", {}).get("triton_rows_sorted", {}).get("pct_of_matmul")
            if pct is not None:
                measured[row.get("N")] = pct
    for p in pred:
        lo, hi = p.get("predicted_pct_of_matmul") or (None, None)
        m = measured.get(p.get("N"))
        lines.append(f"| {p.get('N')} | {'' if m is None else f'{m:.0f}'} | "
                     f"{'' if lo is None else f'{lo:.0f}–{hi:.0f}'} |")
    if curve:
        lines += ["", f"200-step bert-base SIFT run: loss {curve[0][1]:.3f} (step {curve[0][0]}) → {curve[-1][1]:.3f} "
                  f"(step {curve[-1][0]}); falling: {res['loss_falls']}"]
    _atomic(a.out / "gpu_suite.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
