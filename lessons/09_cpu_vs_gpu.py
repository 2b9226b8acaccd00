"""Lesson 9: NumPy (CPU) against CuPy (GPU), the same code on both.

What you will learn: minitl's ops ask the backend for `xp`, the array module of
their data, so one training step runs on NumPy or on CuPy unchanged. Timing a GPU
needs care: its work is queued, so the clock is read only after
`backend.synchronize` has waited for it, and the first steps (warm-up: memory
pools, compiled kernels) are left out.

Run it:  python lessons/09_cpu_vs_gpu.py [--quick]
(with the gpu extra, pip install -e ".[gpu]", on a machine with an NVIDIA GPU; without
one it times the CPU half and says how to run the rest)

What to look for: the GPU's advantage grows with the batch; at small batches the
fixed cost of launching many small kernels dominates and the CPU can win.
"""

import statistics
import time

import minitl as mt
import minitl.functional as F
from minitl import backend, data, training, transfer
from minitl.report import lesson_arguments, table

args = lesson_arguments(__doc__)

# ---- constants
BATCHES = (64, 512) if args.quick else (16, 64, 256, 1024)
WARMUP, REPEAT = (2, 5) if args.quick else (3, 15)
SEED = 0

# ---- 1. which devices are here
gpu_ok, gpu_name = backend.cuda_status()
devices = ["cpu"] + (["cuda"] if gpu_ok else [])
print("devices:", "cpu" + (f", cuda ({gpu_name})" if gpu_ok else f"   (no cuda: {gpu_name})"))
glyphs = data.glyphs(seed=0, source_per_class=max(BATCHES) // 5 + 1, source_test_per_class=1,
                     target_pool_per_class=1, target_test_per_class=1)


# ---- 2. one training step of the transfer CNN, built the same way on every device
def make_step(device, batch):
    mt.manual_seed(SEED)                       # same weights on every device: drawn on the host
    model = transfer.model_for(glyphs, device)
    opt = mt.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = mt.tensor(glyphs.source_train.x[:batch], device=device)
    y = backend.to_device(glyphs.source_train.y[:batch], device)
    return lambda: training.train_step(lambda x, y: F.cross_entropy(model(x), y), opt, x, y)


# ---- 3. timing: warm up, then synchronise before every clock read, and take the median
def median_seconds(step, device):
    for _ in range(WARMUP):
        step()
    times = []
    for _ in range(REPEAT):
        backend.synchronize(device)
        start = time.perf_counter()
        step()
        backend.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


rows = []
for batch in BATCHES:
    seconds = {device: median_seconds(make_step(device, batch), device) for device in devices}
    row = [batch, f"{seconds['cpu'] * 1e3:.2f}", f"{batch / seconds['cpu']:.0f}"]
    if gpu_ok:
        row += [f"{seconds['cuda'] * 1e3:.2f}", f"{batch / seconds['cuda']:.0f}",
                f"{seconds['cpu'] / seconds['cuda']:.1f}x"]
    rows.append(row)
    print(f"  batch {batch}: " + ", ".join(f"{d} {s * 1e3:.2f} ms" for d, s in seconds.items()))

headers = ["batch", "cpu ms/step", "cpu images/s"]
if gpu_ok:
    headers += ["cuda ms/step", "cuda images/s", "cuda speed-up"]
print()
print(table(headers, rows))
if not gpu_ok:
    print("\nOnly the CPU half ran. On a machine with an NVIDIA GPU: pip install -e \".[gpu]\", then run this "
          "lesson again (or any lesson with --device cuda).")
