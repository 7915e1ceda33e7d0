"""bench/gpu_suite.sh and bench/gpu_tta.sh --dry-run on the CPU: every command line's flags exist, imports work;
bench/gpu_summary.py packs a (fake) cut-off run into the summary files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import gpu_summary  # noqa: E402


@pytest.mark.parametrize("script, parts", [("gpu_suite.sh", ["gpu_tests", "scorer_bench", "bench_step",
                                                              "bench_overlap", "nsys", "sift_200"]),
                                            ("gpu_tta.sh", ["baseline", "sift"])])
def test_dry_run(script, parts, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(PYTHON=sys.executable, OUT=str(tmp_path), OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", str(ROOT / "bench" / script), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "dry-run ok" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "FAIL" not in proc.stdout
    for name in parts:
        assert f"ok   {name} " in proc.stdout
    assert not list(tmp_path.iterdir())  # nothing heavy ran, nothing was written


def test_summary_of_a_cut_off_run(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    (work / "sift_200").mkdir(parents=True)
    out.mkdir()
    (work / "status.tsv").write_text("gpu_tests\t0\t40\t90\nscorer_bench\t124\t90\t90\n")
    losses = [10.0 - 0.02 * s for s in range(0, 200, 10)]
    (work / "sift_200" / "metrics.jsonl").write_text("\n".join(
        json.dumps({"type": "step", "step": s, "loss": v}) for s, v in zip(range(0, 200, 10), losses)))
    (work / "scorer").mkdir()
    (work / "scorer" / "exit_scorer_h100.json").write_text(json.dumps({"exit_scorer": [
        {"N": 16384, "methods": {"triton_rows_sorted": {"pct_of_matmul": 71.4}}}]}))
    assert gpu_summary.main(["--status", str(work / "status.tsv"), "--work", str(work), "--out", str(out)]) == 0
    res = json.loads((out / "gpu_suite.json").read_text())
    assert [p["rc"] for p in res["parts"]] == ["0", "124"] and res["loss_falls"] is True
    md = (out / "gpu_suite.md").read_text()
    assert "| scorer_bench | 124 | 90 | 90 |" in md and "| 8192 |  | 68–81 |" in md and "| 16384 | 71 | 82–97 |" in md
    assert gpu_summary.falling([(s, 1.0 + 0.01 * s) for s in range(20)]) is False
    assert gpu_summary.falling([(0, 1.0)]) is None
