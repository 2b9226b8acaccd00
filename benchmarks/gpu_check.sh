#!/usr/bin/env bash
# The GPU run: every check that needs an NVIDIA GPU, in time-boxed stages.
#
#   bash benchmarks/gpu_check.sh RESULTS_DIR          (PYTHON=/path/to/python to choose the interpreter)
#
# For a machine with NumPy, CuPy, pytest and Hypothesis already installed (PyTorch too, for the
# peer timings and the kernel count) and no network: it runs from the checkout with PYTHONPATH=.,
# installs nothing, and writes each stage's log into RESULTS_DIR as it goes, so a stage that
# overruns still leaves the earlier ones. It fails loudly, at once, where CuPy or a GPU is missing.
#
# Stage limits, from measured times (a 2-core CPU machine, busy: the suite 230 s, the lessons 45 s;
# the first H200 run, 2026-11-28: suite 94 s, lessons 33 s, main 18 s, bench_train 57 s; the second,
# with the suite twice as large: 86% of it in 200 s in one process, lessons 1-7 in 37 s), with room
# to spare; together at most 9 minutes (540 s).
set -u
out=${1:?usage: benchmarks/gpu_check.sh RESULTS_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH=. MINITL_CACHE="$out/cache" HYPOTHESIS_PROFILE=ci CI=true PYTHONUNBUFFERED=1
failed=0

stage() {  # stage NAME SECONDS COMMAND...: run with a time limit, log to $out/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s)"
    local start=$SECONDS
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local code=$?
    echo "=== $name: exit $code in $((SECONDS - start))s" | tee -a "$out/$name.log"
    tail -n 5 "$out/$name.log"
    [ "$code" -eq 0 ] || failed=1
}

"$PY" - <<'PY' || { echo "FATAL: $PY cannot use CuPy and a GPU (set PYTHON to an interpreter that has NumPy and CuPy)" >&2; exit 2; }
from minitl import backend
ok, why = backend.cuda_status()
print("cuda:", why)
raise SystemExit(0 if ok else 1)
PY

stage versions 20 bash -c "nvidia-smi; $PY -c 'import sys, numpy, cupy; print(sys.version); print(\"numpy\", numpy.__version__, \"cupy\", cupy.__version__)'; $PY -c 'import torch; print(\"torch\", torch.__version__, torch.cuda.is_available())' || echo 'torch: not installed (peer timings and the kernel count are skipped)'"
stage check 40 "$PY" -m minitl check
# pytest-xdist, where it is installed, spreads the suite over 4 processes (the suite grew to ~600 tests;
# on the H200 machine 86% of it ran in 200 s in one process)
xdist=$("$PY" -c "import xdist" 2>/dev/null && echo "-n 4")
stage tests_cuda 200 env MINITL_DEVICE=cuda "$PY" -m pytest -q -x -p no:cacheprovider $xdist tests
stage lessons_cuda 75 "$PY" lessons/run_all.py --quick --device cuda
stage main_cuda 45 "$PY" -m minitl --quick --device cuda
stage count_ops 30 "$PY" -m benchmarks.count_ops --batch 32
stage bench_train 100 "$PY" -m benchmarks.bench_train --quick --crossover
stage bench_ops 30 "$PY" -m benchmarks.bench_ops --quick --device cuda
cp benchmarks/results/*.json "$out/" 2>/dev/null
echo "=== done: $([ $failed -eq 0 ] && echo 'every stage passed' || echo 'SOME STAGES FAILED')"
exit $failed
