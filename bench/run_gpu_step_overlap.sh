#!/usr/bin/env bash
# One device call on a lent GPU (H100): the overlap GPU tests, bench_step and bench_overlap on bert-base
# shapes, and an nsys capture of training steps 10-12 (overlap=on) with its `nsys stats` summary.
#   bash bench/run_gpu_step_overlap.sh            (about 5 minutes; results and logs land in $OUT when set)
# Env: SKIP_TESTS=1, SKIP_BENCH=1, SKIP_NSYS=1 to leave a part out; NSYS_OVERLAP=off|sequential-stale|on.
set -uo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${OUT:-$REPO/bench/results/gpu_step_overlap}"
mkdir -p "$OUT"
export CUBLAS_WORKSPACE_CONFIG=:4096:8   # bitwise-reproducible cuBLAS for the overlapped == stale test
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET
cd "$REPO"
BACKEND=auto   # the fused Triton scorer when it imports, else the torch backend
python3 -c "import triton, sift_fast.kernels.exit_scorer" 2>/dev/null || BACKEND=torch
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"
echo "scoring backend: $BACKEND" | tee -a "$OUT/gpu.txt"
rc=0

if [ -z "${SKIP_TESTS:-}" ]; then
    t0=$SECONDS
    timeout 240 python3 -m pytest -q -rs -p no:cacheprovider tests/test_overlap.py tests/test_train.py \
        tests/test_telemetry.py 2>&1 | tee "$OUT/gpu_tests.log"
    r=${PIPESTATUS[0]}; echo "tests rc=$r in $((SECONDS - t0)) s"; [ "$r" -ne 0 ] && rc=$r
fi

if [ -z "${SKIP_BENCH:-}" ]; then
    t0=$SECONDS
    timeout 240 python3 bench/bench_step.py --device cuda --shapes tiny-cpu,bert-base --backend "$BACKEND" \
        --out "$OUT" 2>&1 | tee "$OUT/bench_step.log"
    r=${PIPESTATUS[0]}; echo "bench_step rc=$r in $((SECONDS - t0)) s"; [ "$r" -ne 0 ] && rc=$r
    t0=$SECONDS
    timeout 240 python3 bench/bench_overlap.py --device cuda --backend "$BACKEND" --out "$OUT" 2>&1 \
        | tee "$OUT/bench_overlap.log"
    r=${PIPESTATUS[0]}; echo "bench_overlap rc=$r in $((SECONDS - t0)) s"; [ "$r" -ne 0 ] && rc=$r
fi

if [ -z "${SKIP_NSYS:-}" ]; then
    if command -v nsys >/dev/null; then
        t0=$SECONDS
        rep="$OUT/nsys/sift_steps10-12"
        mkdir -p "$OUT/nsys"
        # bert-base shapes, C = 64 (micro 32), keep 0.5, exit 1; cudaProfilerStart/Stop bracket steps 10..12
        timeout 300 nsys profile --capture-range=cudaProfilerApi --capture-range-end=stop -t cuda,nvtx \
            --force-overwrite true -o "$rep" \
            python3 -m sift_fast.cli.pretrain --preset bert-base --candidates 64 --keep 0.5 --exit-layer 1 \
            --selection entropy --overlap "${NSYS_OVERLAP:-on}" --backend "$BACKEND" --profile-steps 10:12 \
            --max-steps 13 --eval-every 100000 --log-every 1 --max-valid-sequences 64 \
            --out /tmp/sift_nsys_run 2>&1 | tee "$OUT/nsys/profile.log"
        r=${PIPESTATUS[0]}; echo "nsys profile rc=$r in $((SECONDS - t0)) s"; [ "$r" -ne 0 ] && rc=$r
        cp /tmp/sift_nsys_run/metrics.jsonl "$OUT/nsys/metrics.jsonl" 2>/dev/null || true
        if [ -f "$rep.nsys-rep" ]; then
            # one report per call, so a report name this nsys lacks does not take the others with it
            for report in nvtx_gpu_proj_sum nvtx_gpu_proj_trace nvtx_sum cuda_gpu_kern_sum cuda_api_sum \
                          cuda_gpu_mem_time_sum; do
                timeout 120 nsys stats --report "$report" --format csv --force-export=true \
                    --output "$OUT/nsys/stats" "$rep.nsys-rep" >/dev/null 2>>"$OUT/nsys/stats.err" \
                    || echo "nsys stats $report failed (see stats.err)"
            done
            timeout 120 nsys stats --report nvtx_gpu_proj_sum,cuda_gpu_kern_sum "$rep.nsys-rep" \
                > "$OUT/nsys/stats.txt" 2>>"$OUT/nsys/stats.err" || true
            python3 bench/bench_overlap.py --summarize-nsys "$OUT/nsys" || true
            rm -f "$rep.sqlite"  # large; the .nsys-rep is kept
        fi
    else
        echo "nsys not found: no capture" | tee "$OUT/nsys_missing.txt"
    fi
fi
ls -la "$OUT" "$OUT/nsys" 2>/dev/null
exit $rc
