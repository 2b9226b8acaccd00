"""Lesson 10: the GPU path, checked without a GPU.

What you will learn: what changes when the arrays are CuPy's instead of NumPy's: no
silent conversion to host arrays, reductions that return 0-d device arrays, index arrays
that wrap around instead of raising, host syncs that stall the GPU, and kernel launches
that bound a small training step. minitl is written so that the same code is right on
both; a CuPy stand-in (NumPy underneath, CuPy's rules on top, tests/cupy_standin) checks
it on every commit, on machines without a GPU.

Run it:  python lessons/10_the_gpu_path_without_a_gpu.py [--quick]
Without a GPU the lesson runs itself again with the stand-in answering `import cupy`;
with one, it runs on the real CuPy.

What to look for: each difference shown on the device arrays, and minitl's answer to it;
zero host syncs in a training step; about 110 array operations (kernel launches) per step (113 under
the stand-in on 2026-12-06, counted by section 5 when it runs).
"""

# %%
import os
import pathlib
import subprocess
import sys
import warnings

import numpy as np

import minitl as mt
import minitl.functional as F
from minitl import backend, data, training, transfer
from minitl.report import lesson_arguments, table

args = lesson_arguments(__doc__, globals().get("__file__"))

# ---- constants
BATCH = 32
REPO = pathlib.Path(globals().get("__file__", "lessons/x.py")).resolve().parent.parent
STANDIN = REPO / "tests" / "cupy_standin"

# %% [markdown]
# ## 0. A GPU, or the stand-in
#
# The stand-in must answer `import cupy` before minitl imports it, so it cannot be
# switched on inside a running program: the lesson starts itself again with the
# stand-in's folder first on PYTHONPATH.

# %%
gpu_ok, gpu_name = backend.cuda_status()
if not gpu_ok:
    if os.environ.get("MINITL_LESSON_STANDIN") or "__file__" not in globals():
        sys.exit(f"error: neither a GPU nor the stand-in is usable here ({gpu_name}); run this lesson as a "
                 f"script from a clone of the repository")
    print(f"no GPU here ({gpu_name}): running this lesson again with the CuPy stand-in from {STANDIN}")
    env = dict(os.environ, MINITL_LESSON_STANDIN="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(STANDIN), os.environ.get("PYTHONPATH")) if p))
    sys.exit(subprocess.call([sys.executable, __file__, *sys.argv[1:]], env=env))

import cupy  # noqa: E402  (the real one, or the stand-in)

standin = getattr(cupy, "_IS_STANDIN", False)
print(f"cupy {cupy.__version__}: {gpu_name}")

# %% [markdown]
# ## 1. No silent conversion to the host
#
# NumPy turns almost anything into an array. CuPy refuses to turn a device array into
# a NumPy one behind your back (the copy would stall the GPU): `.get()` or
# `cupy.asnumpy` say it out loud. minitl's `backend.to_host` is the one place it does.

# %%
device_array = cupy.arange(3.0)
try:
    np.asarray(device_array)
    refused = "accepted"
except TypeError as e:
    refused = f"TypeError: {e}"
print("numpy.asarray(a CuPy array):", refused)
print("backend.to_host(it):", backend.to_host(device_array))

# %% [markdown]
# ## 2. Reductions return 0-d device arrays
#
# `numpy_array.sum()` is a NumPy scalar; `cupy_array.sum()` is a 0-d array that stays on
# the GPU. minitl treats both by the scalar rule (they take the tensor's dtype), so
# mixing one into an op works the same on both devices, with no copy to the host.

# %%
total = cupy.ones(3, dtype=cupy.float64).sum()
t32 = mt.tensor(np.ones(2, dtype=np.float32), device="cuda")
print(f"type of a CuPy sum: {type(total).__name__}, ndim {total.ndim}; float32 tensor * it: {(t32 * total).dtype}")

# %% [markdown]
# ## 3. Index arrays wrap around
#
# NumPy raises for index 7 of a 4-element axis; CuPy reads element 7 % 4 = 3 and says
# nothing. A gradient through such an index would land on the wrong element. minitl
# checks index arrays itself, the same way on every device.

# %%
wrapped = cupy.arange(4.0)[cupy.asarray(np.array([0, 7]))]
print("cupy.arange(4.0)[[0, 7]] =", backend.to_host(wrapped))
try:
    mt.tensor(np.arange(4.0), device="cuda")[[0, 7]]
    minitl_says = "no error"
except IndexError as e:
    minitl_says = f"IndexError: {e}"
print("minitl:", minitl_says)

# %% [markdown]
# ## 4. A training step never waits for the GPU
#
# Reading a value back (`.item()`, `float()`, printing) makes the host wait until the
# GPU has finished everything queued: a sync. In a training loop a sync per step
# costs most of the GPU's advantage at small batches. minitl checks labels while they
# are still on the host and reads losses back once, at the end of a loop. Here a
# TransferCNN Adam step runs with syncs forbidden; then one `.item()`.

# %%
glyphs = data.glyphs(seed=0, source_per_class=20, source_test_per_class=1, target_pool_per_class=1,
                      target_test_per_class=1)
mt.manual_seed(0)
model = transfer.model_for(glyphs, "cuda")
opt = mt.optim.Adam(model.parameters(), lr=1e-3)
loader = data.DataLoader(glyphs.source_train.x, glyphs.source_train.y, BATCH, shuffle=True, seed=0, device="cuda")
x, y = next(iter(loader))
step = lambda: training.train_step(lambda x, y: F.cross_entropy(model(x), y), opt, x, y)
step()  # the first step creates Adam's state (and, on a GPU, compiles kernels)
if standin:
    from cupy_standin import counting, forbid_sync
    with forbid_sync(), counting() as during_step:
        loss = step()
    with counting() as reading:
        loss.item()
    syncs = [["a training step", during_step.syncs, during_step.ops], ["loss.item()", reading.syncs, reading.ops]]
    print(table(["", "host syncs", "array ops"], syncs))
else:
    import cupyx
    warnings.filterwarnings("ignore", message=".*allow_synchronize.*")
    with cupyx.allow_synchronize(False):  # CuPy's own guard: any sync it notices raises
        loss = step()
    print("a training step ran with CuPy's sync guard on: no host sync")

# %% [markdown]
# ## 5. Kernel launches: what bounds a small GPU step
#
# Every `+`, every reduction, every copy is a kernel launch, a few microseconds each
# whatever its size. `benchmarks/count_ops.py` counts them layer by layer: under the
# stand-in as array operations, on a GPU with CUDA's profiler, the whole step (the count of
# section 4) and then layer by layer. A TransferCNN Adam step took 258 before minitl fused
# Adam into one kernel per parameter (`backend.fuse`) and im2col's copies into one: that
# count is commit 987494b's, recorded in benchmarks/README.md; the one below is measured now.

# %%
counted = subprocess.run([sys.executable, "-m", "benchmarks.count_ops", "--batch", str(BATCH)], cwd=REPO,
                         capture_output=True, text=True, env=dict(os.environ))
print(counted.stdout if counted.returncode == 0 else f"(not counted: {counted.stderr.strip()[-300:]})")
step_line = next((line for line in counted.stdout.splitlines() if line.startswith("ops per")), "")
ops = int(step_line.rsplit(":", 1)[1]) if step_line else None

print(table(["difference from NumPy", "seen here", "minitl's answer"], [
    ["no implicit conversion to NumPy", refused.split(":")[0], "one explicit place: backend.to_host"],
    ["a reduction is a 0-d device array", f"{type(total).__name__}, ndim {total.ndim}",
     f"the scalar rule: float32 * it is {(t32 * total).dtype}"],
    ["index 7 of an axis of 4 wraps to 3", str(backend.to_host(wrapped)), minitl_says.split(":")[0]],
    ["a read-back stalls the GPU", "loss.item(): one sync" if standin else "-", "no sync in a training step"],
    ["each op is a kernel launch", f"{ops} per step at batch {BATCH}" if ops else "n/a",
     f"a fused Adam, one im2col copy (258 at commit 987494b{f' -> {ops}' if ops else ''})"],
]))
if standin:
    assert during_step.syncs == 0 and reading.syncs == 1 and "IndexError" in minitl_says

# %% [markdown]
# ## What the stand-in cannot show
#
# Numerics of CUDA kernels, kernel compilation (`cupy.fuse`), memory limits, speed, and
# syncs hidden inside CuPy's own Python code: the first real GPU run found one in
# `cupy.lib.stride_tricks.sliding_window_view`, which copies its arguments to the GPU and
# reads them back. Only `bash benchmarks/gpu_check.sh` on a machine with a GPU shows those.
#
# ## Try this
#
# 1. In section 4, put `print(loss.item())` inside the `forbid_sync()` block, under
#    `loss = step()`: it raises DeviceSynchronized ("ndarray.item() waits for the GPU (a
#    device-to-host sync) where none is allowed"), naming the call that waited.
# 2. Run `MINITL_CUPY_STANDIN=1 pytest tests/test_devices.py -q`: every "cuda" case of the
#    device tests, on the stand-in, in under a second.
# 3. Run `PYTHONPATH=tests/cupy_standin python -m benchmarks.count_ops --batch 256`, then with
#    `--batch 32` (on a machine with CuPy and a GPU, without the PYTHONPATH): the same count at
#    both batch sizes. Only the work per kernel grows with the batch, which is why a GPU
#    wins at large batches.
