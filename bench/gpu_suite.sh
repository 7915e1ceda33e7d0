#!/usr/bin/env bash
# The GPU suite: one device call on an H100/H200, <= 8 minutes, every part under its own `timeout`,
# results written into $OUT as they come and packed at the end into 3 files (summary .md, .json, logs .tgz).
#
#   bash bench/gpu_suite.sh             on the GPU machine (OUT set by the device tool; else bench/results/gpu)
#   bash bench/gpu_suite.sh --dry-run   on the CPU: every command line's flags against its --help, imports,
#                                       carried wheels (Requires-Dist), nothing heavy (tests/test_gpu_scripts.py)
#
# Wheels, fetched on the CPU machine before the device call (pure-Python; deps are torch/triton, present there):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 liger-kernel -d .whl
#   pip download --no-deps --only-binary=:all: --python-version 3.12 cut-cross-entropy -d .whl
# Device call (the carried folders are git-ignored):
#   run(command="bash bench/gpu_suite.sh", carry=[".whl"], timeout_s=540)
# Parts (limits sum to 480 s): gpu-marked tests 90 s, fused-scorer bench N 8192/16384 bf16 90 s, bench_step
# and bench_overlap at bert-base 60 s + 60 s, 20-step nsys capture 60 s + nsys stats 30 s, 200-step SIFT run 90 s.
set -uo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
DRY=0; [ "${1:-}" = "--dry-run" ] && DRY=1
OUT="${OUT:-$REPO/bench/results/gpu}"
WORK="$(mktemp -d /tmp/gpu_suite.XXXX)"; LOGS="$WORK/logs"; mkdir -p "$LOGS" "$OUT" "$WORK"/{scorer,step,overlap,nsys}
PY="${PYTHON:-python3}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export CUBLAS_WORKSPACE_CONFIG=:4096:8
unset TRITON_INTERPRET
cd "$REPO"
# No install on the device: kernels/ is the subpackage sift_fast.kernels only when installed (setup.py's
# package_dir), so a bare copy of the tree gets it through a link (untracked, on the device's copy only).
if [ "$DRY" = 0 ] && ! "$PY" -c "import sift_fast.kernels" 2>/dev/null; then ln -sfn ../kernels sift_fast/kernels; fi
STATUS="$WORK/status.tsv"; : > "$STATUS"
if compgen -G "$REPO/.whl/*.whl" >/dev/null; then
    if [ "$DRY" = 1 ]; then
        "$PY" - "$REPO"/.whl/*.whl <<'PYEOF' || exit 1
import sys, zipfile
for p in sys.argv[1:]:
    z = zipfile.ZipFile(p)
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    req = [l.split(":", 1)[1].strip() for l in z.read(meta).decode().splitlines() if l.startswith("Requires-Dist:")]
    print(f"wheel {p.rsplit('/', 1)[-1]}: Requires-Dist {req or 'none'}")
PYEOF
    else
        "$PY" -m pip install -q --no-index --no-deps --target /tmp/site "$REPO"/.whl/*.whl \
            && export PYTHONPATH="$PYTHONPATH:/tmp/site"
    fi
else
    echo "no .whl/ carried: Liger and CCE columns stay empty"
fi

check_flags() {  # every --flag of a python command line must appear in its --help
    local n=1; [ "$1" = "-m" ] && n=2
    local help; help="$("$PY" "${@:1:$n}" --help 2>&1)" || { echo "FAIL --help: $*"; return 1; }
    local bad=0
    for a in "$@"; do
        case "$a" in --*) f="${a%%=*}"; grep -q -- "$f\b" <<<"$help" || { echo "FAIL unknown flag $f in: $*"; bad=1; } ;; esac
    done
    return $bad
}

part() {  # part NAME TIMEOUT_S CMD...: run under timeout into $LOGS/NAME.log; record rc and seconds
    local name="$1" limit="$2"; shift 2
    if [ "$DRY" = 1 ]; then
        local py=("$@"); while [ "${#py[@]}" -gt 0 ] && [ "${py[0]}" != "$PY" ]; do py=("${py[@]:1}"); done
        [ "${#py[@]}" -eq 0 ] && py=("$@")
        if [ "${py[0]}" = "$PY" ]; then check_flags "${py[@]:1}" && echo "ok   $name (${limit}s): $*" || DRY_FAIL=1
        else echo "ok   $name (${limit}s): $*"; fi
        return
    fi
    local t0=$SECONDS
    timeout -k 10 "$limit" "$@" > "$LOGS/$name.log" 2>&1; local rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$limit" >> "$STATUS"
    echo "part $name rc=$rc in $((SECONDS - t0)) s (limit $limit)"; tail -5 "$LOGS/$name.log"
    pack
}

pack() {  # the 3 files of $OUT, rewritten after every part so a cut-off run still returns what it has
    "$PY" "$REPO/bench/gpu_summary.py" --status "$STATUS" --work "$WORK" --out "$OUT" >/dev/null 2>&1 || true
    tar -czf "$OUT/.logs.tgz.tmp" -C "$WORK" . 2>/dev/null && mv "$OUT/.logs.tgz.tmp" "$OUT/gpu_suite_logs.tgz"
}

DRY_FAIL=0
if [ "$DRY" = 1 ]; then
    "$PY" -c "import torch, triton, sift_fast.kernels.exit_scorer, sift_fast.train.loop, bench.gpu_summary; print('imports ok: torch', torch.__version__, 'triton', triton.__version__)" || exit 1
else
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv,noheader > "$WORK/gpu.txt" 2>&1
    "$PY" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" >> "$WORK/gpu.txt" 2>&1
    cat "$WORK/gpu.txt"
fi
BACKEND=auto
RUN=(--preset bert-base --data bundled --vocab bundled --eval-every 100000 --log-every 10 --max-valid-sequences 64)

part gpu_tests 90 "$PY" -m pytest -q -rs -m gpu -p no:cacheprovider tests/
part scorer_bench 90 "$PY" bench/bench_exit_scorer.py --ns 8192,16384 --hs 768 --vocab 30522 --target-s 0.5 --out "$WORK/scorer"
part bench_step 60 "$PY" bench/bench_step.py --device cuda --shapes bert-base --precision bf16 --backend "$BACKEND" --out "$WORK/step"
part bench_overlap 60 "$PY" bench/bench_overlap.py --device cuda --preset bert-base --precision bf16 --backend "$BACKEND" --out "$WORK/overlap"
if command -v nsys >/dev/null || [ "$DRY" = 1 ]; then
    part nsys 60 nsys profile --capture-range=cudaProfilerApi --capture-range-end=stop -t cuda,nvtx --force-overwrite true -o "$WORK/nsys/steps" \
        "$PY" -m sift_fast.cli.pretrain "${RUN[@]}" --selection entropy --overlap on --profile-steps 5:25 --max-steps 26 --out "$WORK/nsys_run"
    [ "$DRY" = 1 ] || { [ -f "$WORK/nsys/steps.nsys-rep" ] && part nsys_stats 30 nsys stats --report nvtx_gpu_proj_sum,cuda_gpu_kern_sum,cuda_api_sum \
        --output "$WORK/nsys/stats" --format csv --force-export=true "$WORK/nsys/steps.nsys-rep"; rm -f "$WORK/nsys/steps.sqlite"; }
else
    echo "nsys not found: no capture" | tee "$WORK/nsys_missing.txt"
fi
part sift_200 90 "$PY" -m sift_fast.cli.pretrain "${RUN[@]}" --max-steps 200 --out "$WORK/sift_200"

if [ "$DRY" = 1 ]; then
    rm -rf "$WORK"
    [ "$DRY_FAIL" = 0 ] && echo "dry-run ok" || echo "dry-run FAILED"
    exit "$DRY_FAIL"
fi
pack
cat "$OUT/gpu_suite.md"
