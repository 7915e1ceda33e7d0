"""Every Triton kernel compiles for A100 (sm_80) and H100 (sm_90) on the CPU, without spills, within shared
memory, the 16-bit scorer on tensor cores; the occupancy and wave model against hand-computed cases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import kernel_resources as kr  # noqa: E402

MISSING = kr.nvidia_backend_missing()
needs_backend = pytest.mark.skipif(MISSING is not None, reason=f"{MISSING}: cannot compile for sm_80/sm_90")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The default configs of every kernel, compiled once for both targets by the script itself.

    A subprocess without ``TRITON_INTERPRET``: the suite sets it, and with it Triton jits its own library
    functions (``tl.sort``, ...) for the interpreter at import, so nothing could be compiled for a GPU here.
    """
    out = tmp_path_factory.mktemp("kernel_resources")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "kernel_resources.py"), "--default-only", "--out",
                           str(out)], env=env, capture_output=True, text=True, timeout=900)
    assert (out / "kernel_resources.json").is_file(), proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads((out / "kernel_resources.json").read_text()), out, proc


@needs_backend
def test_every_kernel_compiles_for_both_targets(report):
    from sift_fast.kernels import exit_scorer, masked_compaction, topk
    from sift_fast.kernels._jit import LazyKernel

    res, out, _ = report
    errors = [(r["kernel"], r["cc"], r["error"]) for r in res["kernels"] if "error" in r]
    assert not errors
    # every LazyKernel of kernels/ has a compile spec (a new kernel must be added to kernel_specs)
    fns = {k.fn.__name__ for mod in (exit_scorer, masked_compaction, topk) for k in vars(mod).values()
           if isinstance(k, LazyKernel)}
    assert len(fns) == 5 and fns <= {r["function"] for r in res["kernels"]}
    for name in {r["kernel"] for r in res["kernels"]}:
        assert sorted(r["cc"] for r in res["kernels"] if r["kernel"] == name) == sorted(kr.TARGETS)
    assert len(res["predictions"]) == len(kr.N_PREDICT)
    assert "| stats_bfloat16_128x128x64_w8s3 * | 90 |" in (out / "kernel_resources.md").read_text()


@needs_backend
def test_default_configs_do_not_spill_and_fit(report):
    res, _, proc = report
    assert proc.returncode == 0, proc.stderr[-2000:]  # the script's own verdict on the default configs
    for r in res["kernels"]:
        assert r["default"]
        assert r["local"] == 0 and r["stack"] == 0 and r["sass_ldl"] == 0 and r["sass_stl"] == 0, r
        assert r["total_shared"] <= kr.CARDS[r["cc"]].smem_per_block and r["blocks_per_sm"] >= 1, r
        assert r["reg"] <= 255


@needs_backend
def test_16bit_scorer_uses_tensor_cores_fp32_stays_ieee(report):
    res, _, _ = report
    stats = {(r["kernel"].split("_")[1], r["cc"]): r for r in res["kernels"] if r["kernel"].startswith("stats_")}
    assert set(stats) == {(d, cc) for d in ("float32", "float16", "bfloat16") for cc in kr.TARGETS}
    for dtype in ("float16", "bfloat16"):
        hopper, ampere = stats[(dtype, 90)], stats[(dtype, 80)]
        assert hopper["ptx_wgmma"] and hopper["sass_hgmma"] > 0
        assert ampere["ptx_mma"] and ampere["sass_hmma"] > 0 and not ampere["ptx_wgmma"]
    for cc in kr.TARGETS:  # input_precision="ieee": no tensor-core instruction at all
        r = stats[("float32", cc)]
        assert not (r["ptx_wgmma"] or r["ptx_mma"] or r["sass_hgmma"] or r["sass_hmma"])


def test_occupancy_hand_computed():
    h100, a100 = kr.CARDS[90], kr.CARDS[80]
    # 204 regs -> 208 per thread -> 6656 per warp -> 9 warps of 64 Ki registers -> one 8-warp block
    occ = kr.occupancy(h100, 204, 99328, 8)
    assert occ["blocks_per_sm"] == 1 and occ["limited_by"] == "registers" and occ["limits"]["shared"] == 2
    # 64 regs x 4 warps = 8 Ki registers per block -> 8 by registers; A100: 167936 // (98304 + 1024) = 1 by shared
    occ = kr.occupancy(a100, 64, 98304, 4)
    assert occ["limits"]["registers"] == 8 and occ["blocks_per_sm"] == 1 and occ["limited_by"] == "shared"
    assert kr.occupancy(h100, 32, 1032, 4)["blocks_per_sm"] == 16  # 64 warps / 4
    assert kr.occupancy(a100, 32, 200_000, 4)["blocks_per_sm"] == 0  # over the per-block maximum


def test_persistent_schedule_hand_computed():
    # N 8192: 64 row blocks, 264 programs -> 5 splits of 48 vocab blocks (the last 47) -> 320 tiles.
    # Programs 0..55 own 2 tiles (48 + 47 units), the rest one. On 132 SMs one block each: 0..131 start at 0;
    # 56..131 end at 48 and 132..207 run 48..96; 0..55 end at 95 and 208..263 run 95..143 (256..263: 47).
    s = kr.persistent_schedule(8192, 30522, (128, 128, 64, 8, 3), kr.CARDS[90], blocks_per_sm=1)
    assert (s["row_blocks"], s["splits"], s["tiles"], s["programs"]) == (64, 5, 320, 264)
    assert s["work_units"] == 64 * 239 and s["makespan_units"] == 143
    assert s["wave_efficiency"] == pytest.approx(64 * 239 / (132 * 143))
    p = kr.predict(8192, (128, 128, 64, 8, 3), kr.CARDS[90], 1)
    assert p["useful_gflop"] == pytest.approx(2 * 8192 * 768 * 30522 / 1e9)
    assert p["executed_gflop"] == pytest.approx(2 * 8192 * 768 * 239 * 128 / 1e9)
    assert p["hbm_mb_min"] > 30522 * 768 * 2 / 1e6 and p["w_fits_l2"]
    lo, hi = p["predicted_ms"]
    assert p["t_peak_ms"] < lo < hi
