"""Lesson 11: timing a training step, on the CPU and on a GPU.

What you will learn: how to time code so that the number means something: warm up
first, read the clock only after the device has finished (a GPU runs ahead of Python),
report a median, and know how many threads were working. On the CPU, BLAS's threads
and other processes on the same cores change a small step's time a lot; on a GPU, the
same minitl code runs on CuPy unchanged, and its advantage grows with the batch.

Run it:  python lessons/11_timing_cpu_and_gpu.py [--quick] [--device cpu|cuda]
(with the gpu extra, pip install -e ".[gpu]", on a machine with an NVIDIA GPU, the
GPU half runs too)

What to look for: the first step's cost against the median; the mean pulled up by one
slow step; one BLAS thread against two, on a quiet machine and with a busy process
beside it; and, with a GPU, the batch size at which it overtakes the CPU.
"""

# %%
import statistics
import subprocess
import sys
import time

from threadpoolctl import threadpool_info, threadpool_limits

import minitl as mt
import minitl.functional as F
from minitl import backend, data, training, transfer
from minitl.report import lesson_arguments, table

args = lesson_arguments(__doc__, globals().get("__file__"))

# ---- constants
BATCHES = (32, 256)
GPU_BATCHES = (8, 64, 512) if args.quick else (1, 4, 16, 64, 256, 1024)
REPEAT = 5 if args.quick else 15
BUSY = 1                                  # busy processes beside section 3's second measurement
SEED = 0

gpu_ok, gpu_name = backend.cuda_status()
if gpu_ok and getattr(backend.cupy, "_IS_STANDIN", False):  # NumPy in disguise: its timings say nothing of a GPU
    gpu_ok, gpu_name = False, "the CuPy stand-in is not a GPU"
print("devices: cpu" + (f", cuda ({gpu_name})" if gpu_ok else f"  (no cuda: {gpu_name})"))
print("BLAS:", backend.blas_name(), "threads by default:",
      sorted({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}))
glyphs = data.glyphs(seed=0, source_per_class=max(GPU_BATCHES + BATCHES) // 5 + 1, source_test_per_class=1,
                     target_pool_per_class=1, target_test_per_class=1)


# %% [markdown]
# ## 1. One training step of the transfer CNN, built the same way on every device
#
# The weights are drawn on the host, so one seed gives the same model on every device.

# %%
def make_step(device, batch):
    mt.manual_seed(SEED)
    model = transfer.model_for(glyphs, device)
    opt = mt.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = mt.tensor(glyphs.source_train.x[:batch], device=device)
    y = backend.to_device(glyphs.source_train.y[:batch], device)
    return lambda: training.train_step(lambda x, y: F.cross_entropy(model(x), y), opt, x, y)


def clock(step, device, repeat, sync=True):
    """Seconds of each of `repeat` calls; the device is synchronised before each clock read.
    (What `report.median_seconds`, used by lessons 3 and 5, does, written out here with the
    choice to leave out the syncs: section 4 shows what that measures on a GPU.)"""
    times = []
    for _ in range(repeat):
        if sync:
            backend.synchronize(device)
        start = time.perf_counter()
        step()
        if sync:
            backend.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


# %% [markdown]
# ## 2. Warm-up, and medians rather than means
#
# The first call of a step can pay for things later calls reuse: memory the allocator
# then keeps, and on a GPU the kernels CuPy compiles (seconds, the first time). A single
# slow call pulls a mean up but barely moves a median. So: warm up, then report medians.

# %%
device = args.device if gpu_ok or args.device == "cpu" else "cpu"
step = make_step(device, BATCHES[0])
times = clock(step, device, REPEAT + 1)
first, rest = times[0], times[1:]
print(f"batch {BATCHES[0]} on {device}: first call {first * 1e3:.2f} ms; then median "
      f"{statistics.median(rest) * 1e3:.2f} ms; mean of all {statistics.fmean(times) * 1e3:.2f} ms, "
      f"median of all {statistics.median(times) * 1e3:.2f} ms")


# %% [markdown]
# ## 3. BLAS threads, and a busy neighbour
#
# NumPy's matrix products run in a BLAS library that starts one thread per core. For a
# small step the second thread has little to do; when another process wants the same
# cores, threads wait for each other and a step can take many times longer. Here: one
# thread against the default, on this machine as it is, then with BUSY busy processes
# (one) beside us (they spin for the length of the measurement). minitl's training loops run
# with one BLAS thread (`backend.blas_threads`); `benchmarks/README.md` has the
# measurements of the whole comparison.

# %%
def median_ms(batch, threads):
    step = make_step("cpu", batch)
    with threadpool_limits(limits=threads, user_api="blas"):
        clock(step, "cpu", 2)                                       # warm-up
        return statistics.median(clock(step, "cpu", REPEAT)) * 1e3


thread_rows = []
for load, spinners in (("as it is", 0), (f"{BUSY} busy process{'es' if BUSY > 1 else ''} beside", BUSY)):
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(spinners)]
    try:
        for batch in BATCHES:
            one, default = median_ms(batch, 1), median_ms(batch, None)
            thread_rows.append([load, batch, f"{one:.2f}", f"{default:.2f}", f"{default / one:.2f}"])
            print(f"  {load:<26} batch {batch:>4}: one thread {one:.2f} ms, default threads {default:.2f} ms")
    finally:
        for process in busy:
            process.kill()
            process.wait()

# %% [markdown]
# ## 4. Why a GPU clock needs a sync, and what the GPU buys
#
# A GPU queues the kernels Python launches and runs them later; a clock read right after
# the call measures only the launching. `backend.synchronize` waits for the queue. On
# the CPU NumPy works before returning, so there is nothing to wait for.

# %%
gpu_rows = []
if gpu_ok:
    big = make_step("cuda", GPU_BATCHES[-1])
    clock(big, "cuda", 3)
    no_sync = statistics.median(clock(big, "cuda", REPEAT, sync=False)) * 1e3
    backend.synchronize("cuda")
    with_sync = statistics.median(clock(big, "cuda", REPEAT)) * 1e3
    print(f"batch {GPU_BATCHES[-1]} on the GPU: {no_sync:.2f} ms without a sync (the launches), "
          f"{with_sync:.2f} ms with one (the work)")
    speedups = {}
    for batch in GPU_BATCHES:
        seconds = {}
        for device in ("cpu", "cuda"):
            step = make_step(device, batch)
            clock(step, device, 3)
            seconds[device] = statistics.median(clock(step, device, REPEAT))
        speedups[batch] = seconds["cpu"] / seconds["cuda"]
        gpu_rows.append([batch, f"{seconds['cpu'] * 1e3:.2f}", f"{seconds['cuda'] * 1e3:.2f}",
                         f"{speedups[batch]:.1f}x"])
else:
    print("no GPU here: on a machine with an NVIDIA GPU (pip install -e \".[gpu]\") this section times "
          "the same step on CuPy against NumPy, batch by batch")

print()
print(table(["machine", "batch", "one thread (ms)", "default threads (ms)", "default / one"], thread_rows))
if gpu_rows:
    print()
    print(table(["batch", "cpu ms/step", "cuda ms/step", "cuda speed-up"], gpu_rows))
    faster = [batch for batch, speedup in speedups.items() if speedup > 1]
    print(f"the GPU overtakes the CPU at batch {faster[0]}" if faster else "the CPU won at every batch here")

# %% [markdown]
# ## Try this
#
# 1. Set `BUSY = 2`: two busy processes beside section 3's second measurement. On a 2-core
#    machine the default threads now fight them for both cores; compare the "default / one"
#    column with a run at `BUSY = 1`. (`benchmarks/README.md` timed the whole comparison
#    that way: over 420 s with the default threads against 117 s with one.)
# 2. Measure section 2 again in the same run (in a notebook, run its cell a second time; in
#    the script, repeat its last three statements, `times = ...` to the `print`, below them):
#    the second median is not the first. Three runs here, on a machine shared with other
#    work, gave 10.19 then 8.87 ms, 92.78 then 92.05, and 96.00 then 96.01 (the default BLAS
#    threads and a busy neighbour, as section 3 shows, make a step ten times slower). That is
#    why `benchmarks/` reports ratios measured within one run, never absolute times from
#    different runs.
# 3. With a GPU, set `GPU_BATCHES = (1,)`: a step of one image is all launches, and the
#    CPU wins ("the CPU won at every batch here"). Without one, section 4 says so and is
#    skipped.
