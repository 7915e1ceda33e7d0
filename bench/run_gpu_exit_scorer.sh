#!/usr/bin/env bash
# One device call: GPU tests + benchmark of the fused exit scorer; results copied into $OUT when set.
#   bash bench/run_gpu_exit_scorer.sh        (QUICK=1 for fewer shapes; extra args go to the bench)
# Runs from /tmp with absolute paths so that the repo's ./sift_fast (which lacks kernels/) cannot shadow an
# installed sift_fast or the shim below.
set -uo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd /tmp
if compgen -G "$REPO/.whl/*.whl" >/dev/null; then  # carried wheels (liger-kernel, cut-cross-entropy, ...)
    python3 -m pip install -q --no-index --no-deps --target /tmp/site "$REPO"/.whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! python3 -c "import sift_fast.kernels.exit_scorer" 2>/dev/null; then
    # sift_fast not installed here: expose kernels/ as sift_fast.kernels through a symlinked shim package.
    shim=/tmp/sift_shim/sift_fast
    mkdir -p "$shim"
    for f in "$REPO"/sift_fast/*; do ln -sfn "$f" "$shim/"; done
    ln -sfn "$REPO/kernels" "$shim/kernels"
    export PYTHONPATH=/tmp/sift_shim${PYTHONPATH:+:$PYTHONPATH}
fi
unset TRITON_INTERPRET
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
python3 -c "import torch, triton, sift_fast.kernels as k; print('torch', torch.__version__, 'triton', triton.__version__, k.__file__)"
results="$REPO/bench/results"
mkdir -p "$results"
t0=$SECONDS
python3 -m pytest -q -m gpu -p no:cacheprovider --rootdir "$REPO" -c "$REPO/pyproject.toml" \
    "$REPO/tests/test_exit_scorer.py" "$REPO/tests/test_topk.py" 2>&1 | tee "$results/exit_scorer_gpu_tests.log"
test_rc=${PIPESTATUS[0]}
echo "gpu tests rc=$test_rc in $((SECONDS - t0)) s"
t1=$SECONDS
python3 "$REPO/bench/bench_exit_scorer.py" --out "$results" ${QUICK:+--quick} "$@" 2>&1 \
    | tee "$results/exit_scorer_bench.log"
bench_rc=${PIPESTATUS[0]}
echo "bench rc=$bench_rc in $((SECONDS - t1)) s"
if [ -n "${OUT:-}" ]; then
    cp "$results"/exit_scorer_* "$OUT"/ 2>/dev/null || true
fi
exit $((test_rc != 0 ? test_rc : bench_rc))
