#!/usr/bin/env bash
# The GPU run: every check that needs an NVIDIA GPU, in time-boxed stages.
#
#   bash benchmarks/gpu_check.sh RESULTS_DIR
#
# For a machine with NumPy, CuPy, PyTorch, pytest and Hypothesis already installed
# and no network: it runs from the checkout with PYTHONPATH=., installs nothing,
# and writes each stage's log into RESULTS_DIR as it goes, so a stage that
# overruns still leaves the earlier ones. Under 5 minutes in all.
# It fails loudly, at once, where CuPy or a GPU is missing.
set -u
out=${1:?usage: benchmarks/gpu_check.sh RESULTS_DIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH=. MINITL_CACHE="$out/cache" HYPOTHESIS_PROFILE=ci CI=true
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

python - <<'PY' || { echo "FATAL: CuPy or a GPU is missing: this script is for a GPU machine" >&2; exit 2; }
from minitl import backend
ok, why = backend.cuda_status()
print("cuda:", why)
raise SystemExit(0 if ok else 1)
PY

stage versions 20 bash -c 'nvidia-smi; python -c "import sys, numpy, cupy; print(sys.version); print(\"numpy\", numpy.__version__, \"cupy\", cupy.__version__)"; python -c "import torch; print(\"torch\", torch.__version__, torch.cuda.is_available())"'
stage check 40 python -m minitl check
stage tests_cuda 120 env MINITL_DEVICE=cuda python -m pytest -q -x -p no:cacheprovider tests
stage lessons_cuda 45 python lessons/run_all.py --quick --device cuda
stage main_cuda 30 python -m minitl --quick --device cuda
stage bench_train 45 python -m benchmarks.bench_train --quick --crossover
stage bench_ops 20 python -m benchmarks.bench_ops --quick --device cuda
if command -v nsys >/dev/null; then  # kernel launches per training step, counted by the CUDA profiler
    stage kernels 30 nsys profile -o "$out/step" --force-overwrite true --stats=true \
        python -c "from benchmarks.common import lenet_step; s = lenet_step(64, 'cuda', 'full'); [s() for _ in range(10)]"
else
    echo "nsys not found: kernel launches not counted" | tee "$out/kernels.log"
fi
cp benchmarks/results/*.json "$out/" 2>/dev/null
echo "=== done: $([ $failed -eq 0 ] && echo 'every stage passed' || echo 'SOME STAGES FAILED')"
exit $failed
