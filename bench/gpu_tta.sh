#!/usr/bin/env bash
# Time to accuracy on the GPU (issue 10), <= 10 minutes: baseline (--selection none) vs the trainer's default
# SIFT configuration (no selection flags), bert-base shapes, real text, 280 s of wall-clock training each (2 x 300 s
# plus start-up does not fit the 600 s call limit),
# an eval every 100 steps; both curves into $OUT as gpu_tta.json / gpu_tta.md (+ gpu_tta_logs.tgz).
#
#   bash bench/gpu_tta.sh            on the GPU machine;   bash bench/gpu_tta.sh --dry-run   on the CPU
# Data: linux-docs prose copied into the carried, git-ignored .gpu_data/ first (the bundled corpus otherwise):
#   mkdir -p .gpu_data && cp /work/shared/data/linux-docs-prose.txt .gpu_data/
# Device call:  run(command="bash bench/gpu_tta.sh", carry=[".gpu_data"], timeout_s=600)
set -uo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
DRY=0; [ "${1:-}" = "--dry-run" ] && DRY=1
OUT="${OUT:-$REPO/bench/results/gpu_tta}"; mkdir -p "$OUT"
PY="${PYTHON:-python3}"
WORK="$(mktemp -d /tmp/gpu_tta.XXXX)"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
cd "$REPO"
if [ "$DRY" = 0 ] && ! "$PY" -c "import sift_fast.kernels" 2>/dev/null; then ln -sfn ../kernels sift_fast/kernels; fi
DATA=bundled; [ -f .gpu_data/linux-docs-prose.txt ] && DATA=.gpu_data/linux-docs-prose.txt
echo "data: $DATA"
COMMON=(--preset bert-base --data "$DATA" --vocab bundled --time-budget-s 280 --clock wall --eval-every 100
        --max-valid-sequences 512 --log-every 50 --max-steps 1000000)
arms=("baseline:--selection none" "sift:")
for arm in "${arms[@]}"; do
    name="${arm%%:*}"; extra=(${arm#*:})
    cmd=("$PY" -m sift_fast.cli.pretrain "${COMMON[@]}" "${extra[@]}" --out "$WORK/$name")
    if [ "$DRY" = 1 ]; then
        help="$("$PY" -m sift_fast.cli.pretrain --help 2>&1)" || { echo "FAIL --help"; exit 1; }
        for a in "${cmd[@]}"; do case "$a" in --*) grep -q -- "$a\b" <<<"$help" || { echo "FAIL unknown flag $a"; exit 1; } ;; esac; done
        echo "ok   $name (295 s): ${cmd[*]}"
        continue
    fi
    timeout -k 10 295 "${cmd[@]}" > "$WORK/$name.log" 2>&1; echo "$name rc=$?"
    "$PY" bench/gpu_summary.py --tta "$WORK" --out "$OUT" || true
done
[ "$DRY" = 1 ] && { "$PY" -c "import bench.gpu_summary" && rm -rf "$WORK" && echo "dry-run ok"; exit $?; }
tar -czf "$OUT/gpu_tta_logs.tgz" -C "$WORK" --exclude='*.pt' --exclude='checkpoints' .
cat "$OUT/gpu_tta.md"
