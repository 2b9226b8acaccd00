#!/usr/bin/env bash
# The GPU run: every check that needs an NVIDIA GPU, in time-boxed stages, at most 8 minutes.
#
#   bash benchmarks/gpu_check.sh RESULTS_DIR          (PYTHON=/path/to/python to choose the interpreter)
#   STANDIN=1 LIMIT_SCALE=3 bash benchmarks/gpu_check.sh DIR
#        the same stages on the CuPy stand-in, each limit times 3 (a 2-core CPU is no H200): checks the
#        script on a machine without a GPU, not the GPU
#
# For a machine with NumPy, CuPy, pytest and Hypothesis already installed (PyTorch too, for the
# peer timings) and no network: it runs from the checkout with PYTHONPATH=., installs nothing,
# and writes each stage's log into RESULTS_DIR as the stage ends (stages.tsv lists them), so a
# run cut short still leaves the stages before. It stops at once where CuPy or a GPU is missing.
#
# Order: what only a GPU can show first, the suite's cuda cases last. Limits from the H200 runs of
# 2026-11-28 (first run: suite 91 s, lessons 1-9 33 s, main 17 s, bench_train 57 s alone), with
# room to spare; together 480 s:
#   versions 15, check 40, probe 75, lessons 8-11 75, main 40, layers 30, main --norm batch 30,
#   count_ops 20, bench_train 90, suite 65 (test_devices.py, and every other test's cuda case but
#   the op table's gradchecks, which `check` runs, and the lessons and commands, run above).
set -u
out=${1:?usage: benchmarks/gpu_check.sh RESULTS_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH=. MINITL_CACHE="$out/cache" MINITL_BENCH_RESULTS="$out" HYPOTHESIS_PROFILE=ci CI=true \
    PYTHONUNBUFFERED=1
if [ "${STANDIN:-0}" = 1 ]; then
    export PYTHONPATH="$PWD/tests/cupy_standin:$PWD"
fi
failed=0
printf "stage\tlimit_s\texit\tseconds\n" >"$out/stages.tsv"

stage() {  # stage NAME SECONDS COMMAND...: run with a time limit, log to $out/NAME.log
    local name=$1 limit=$(($2 * ${LIMIT_SCALE:-1}))
    shift 2
    echo "=== $name (limit ${limit}s)"
    local start=$SECONDS
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local code=$?
    echo "=== $name: exit $code in $((SECONDS - start))s" | tee -a "$out/$name.log"
    printf "%s\t%s\t%s\t%s\n" "$name" "$limit" "$code" "$((SECONDS - start))" >>"$out/stages.tsv"
    tail -n 5 "$out/$name.log"
    [ "$code" -eq 0 ] || failed=1
}

"$PY" - <<'PY' || { echo "FATAL: $PY cannot use CuPy and a GPU (set PYTHON to an interpreter that has NumPy and CuPy)" >&2; exit 2; }
from minitl import backend
ok, why = backend.cuda_status()
print("cuda:", why)
raise SystemExit(0 if ok else 1)
PY

stage versions 15 bash -c "nvidia-smi || echo 'no nvidia-smi'; git log -1 --format='commit %h %cs' || true; $PY -c 'import sys, numpy, cupy; print(sys.version); print(\"numpy\", numpy.__version__, \"cupy\", cupy.__version__)'; $PY -c 'import torch; print(\"torch\", torch.__version__, torch.cuda.is_available())' || echo 'torch: not installed (peer timings are skipped)'"
stage check 40 "$PY" -m minitl check
# a cold kernel cache, so that the probe's first step shows what compiling costs
stage probe 75 env CUPY_CACHE_DIR="$(mktemp -d)" "$PY" -m benchmarks.gpu_probe --out "$out"
stage lessons_8_11 75 bash -c "for l in lessons/08_*.py lessons/09_*.py lessons/10_*.py lessons/11_*.py; do echo \"=== \$l\"; $PY \"\$l\" --quick --device cuda || exit 1; done"
stage main 40 "$PY" -m minitl --quick --device cuda --out "$out/main"
stage layers 30 "$PY" -m minitl layers --quick --device cuda --out "$out/layers"
# k=13 leaves a last batch of one, which batch norm cannot normalise (it is left out)
stage main_norm_batch 30 "$PY" -m minitl --quick --device cuda --norm batch --k 2,13 --methods scratch,proxy,fine_tune
stage count_ops 20 "$PY" -m benchmarks.count_ops --batch 32
stage bench_train 90 "$PY" -m benchmarks.bench_train --quick --crossover
xdist=$("$PY" -c "import xdist" 2>/dev/null && echo "-n 4")
stage tests 65 env MINITL_DEVICE=cuda "$PY" -m pytest -q -p no:cacheprovider $xdist tests \
    -k "(cuda or test_devices) and not lesson and not test_ops_gradcheck and not end_to_end and not layers_quick"
echo "=== done: $([ $failed -eq 0 ] && echo 'every stage passed' || echo 'SOME STAGES FAILED')"
exit $failed
