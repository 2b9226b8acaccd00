"""What only a real GPU can show, in one short run (about a minute on an H200).

    python -m benchmarks.gpu_probe [--out DIR]        (benchmarks/gpu_check.sh runs it with a cold
                                                      kernel cache: CUPY_CACHE_DIR set to a new folder)

Each probe prints one line and its numbers go to DIR/probe.json; a probe that fails says why and
the others still run (exit status 1 if any failed). The questions, and what settles them:

1. compile: the first three TransferCNN Adam steps at batch 32 (the first compiles every kernel).
2. fused Adam: `optim._adam_update` through `cupy.fuse` against the same function line by line on
   the host: the dtype it keeps and the largest difference (CuPy 13 computed it in float64).
3. fit: 200 steps of fit's loop under `cupyx.allow_synchronize(False)` (no host sync), then a
   3200-step `fit` with its one read-back at the end.
4. memory: CuPy's memory pool after each of six fine-tune runs; it must level off, not grow.
5. batch norm: a batch-norm TransferCNN after 5 Adam steps on the CPU and on the GPU: weights
   and running statistics (max difference) and the batch count (5 on both).
6. dtypes: BatchNorm with a NumPy float64 eps keeps float32 on the GPU.
7. add.at: distinct results over 20 runs of `cupy.add.at` with repeated indices (GPU atomics add
   in any order; if not one, gradcheck's "identical backward" rule needs a tolerance on cuda).

Under the CuPy stand-in (PYTHONPATH=tests/cupy_standin) it runs too: that checks the script, not
the GPU (its numbers are NumPy's).
"""

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

import minitl as mt
import minitl.functional as F
from minitl import backend, data, nn, optim, training, transfer

RNG = np.random.default_rng(0)


def seconds_of(fn):
    start = time.perf_counter()
    fn()
    backend.synchronize("cuda")
    return time.perf_counter() - start


def cnn_step(model, opt):
    """A training step of `model` on a fixed batch of 32 on the GPU, as a function of no arguments."""
    x = mt.tensor(RNG.random((32, 1, 16, 16), dtype=np.float32), device="cuda")
    y = backend.to_device(np.arange(32) % 5, "cuda")
    return lambda: training.train_step(lambda x, y: F.cross_entropy(model(x), y), opt, x, y)


def probe_compile():
    model = transfer.TransferCNN(5, device="cuda")
    step = cnn_step(model, optim.Adam(model.parameters()))
    ms = [round(1e3 * seconds_of(step), 1) for _ in range(3)]
    return {"first_three_steps_ms": ms}, f"first three steps {ms} ms (the first compiles the kernels)"


def probe_fused_adam():
    host = [RNG.standard_normal((64, 32)).astype(np.float32) for _ in range(4)]
    host[3] = np.abs(host[3])  # exp_avg_sq is never negative
    gpu = [backend.to_device(a, "cuda") for a in host]
    scalars = (0.1, 0.001, 3e-4, 1e-8)
    first = seconds_of(lambda: optim._adam_update(*gpu, *scalars))
    optim._adam_update.__wrapped__(*host, *scalars)  # the same function, line by line, in NumPy
    dtypes = sorted({str(a.dtype) for a in gpu})
    diff = max(float(np.abs(backend.to_host(a) - b).max()) for a, b in zip(gpu, host))
    return ({"dtypes": dtypes, "max_abs_diff": diff, "first_call_s": round(first, 3)},
            f"dtypes {dtypes}, max |gpu - cpu| {diff:.2e}, first call {first:.2f} s")


def probe_fit():
    import cupyx
    head = nn.Linear(64, 5, device="cuda")
    opt = optim.Adam(head.parameters(), lr=1e-2)
    x = backend.to_device(RNG.standard_normal((320, 64)).astype(np.float32), "cuda")
    loader = data.DataLoader(x, backend.to_device(RNG.integers(0, 5, 320), "cuda"), 32, shuffle=True, seed=0)
    loss_fn = lambda x, y: F.cross_entropy(head(x), y)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*allow_synchronize.*")
        with cupyx.allow_synchronize(False):  # any host sync inside raises
            training._steps(loss_fn, opt, loader, 200, "cosine", None, 50, [1e-2])
    start = time.perf_counter()
    losses = training.fit(loss_fn, opt, loader, 3200, "cosine")
    took = time.perf_counter() - start
    return ({"guarded_steps": 200, "fit_steps": len(losses), "fit_s": round(took, 2), "last_loss": losses[-1]},
            f"200 steps without a sync; fit of 3200 steps in {took:.1f} s, last loss {losses[-1]:.3f}")


def probe_memory():
    import cupy
    pool = getattr(cupy, "get_default_memory_pool", None)
    if pool is None:
        return {"skipped": "no memory pool (the stand-in)"}, "skipped: this cupy has no memory pool"
    glyphs = data.glyphs(seed=0)
    source = transfer.source_model(glyphs, "cuda", log=lambda *a: None)
    mib = []
    for seed in range(6):
        transfer.fine_tune(source, glyphs, data.k_shot(glyphs.target_pool, 10, seed), transfer.Budget(steps=100),
                           seed, "cuda")
        mib.append(pool().total_bytes() >> 20)
    level = max(mib[3:]) <= mib[2]  # the last three runs needed no more than the first three had
    said = "levels off" if level else "GROWS"
    return {"pool_mib": mib, "levels_off": level}, f"pool MiB after each run {mib}: {said}"


def probe_batch_norm():
    glyphs = data.glyphs(seed=0)

    def train(device):
        mt.manual_seed(0)
        model = transfer.TransferCNN(5, norm="batch", device=device)
        opt = optim.Adam(model.parameters(), lr=1e-3)
        x = mt.tensor(glyphs.source_train.x[:64], device=device)
        for _ in range(5):
            training.train_step(lambda x, y: F.cross_entropy(model(x), y), opt, x, glyphs.source_train.y[:64])
        return {k: backend.to_host(v) for k, v in model.state_dict().items()}
    cpu, gpu = train("cpu"), train("cuda")
    diff = max(float(np.abs(cpu[k].astype(np.float64) - gpu[k]).max()) for k in cpu)
    counts = sorted({int(v) for k, v in gpu.items() if k.endswith("num_batches_tracked")})
    return {"max_abs_diff": diff, "batch_counts": counts}, f"cpu vs cuda max diff {diff:.2e}, batch counts {counts}"


def probe_dtypes():
    x = mt.tensor(RNG.standard_normal((4, 3)).astype(np.float32), device="cuda")
    dtype = str(nn.BatchNorm1d(3, eps=np.float64(1e-5), device="cuda")(x).dtype)
    return {"batch_norm_float64_eps": dtype}, f"BatchNorm1d(eps=np.float64(1e-5)) on float32 -> {dtype}"


def probe_add_at():
    import cupy
    values = backend.to_device(RNG.standard_normal(4096).astype(np.float32), "cuda")
    index = cupy.zeros(4096, dtype=cupy.int64)  # every value into one slot: the order of the adds matters
    results = set()
    for _ in range(20):
        z = cupy.zeros(2, dtype=cupy.float32)
        cupy.add.at(z, index, values)
        results.add(backend.to_host(z).tobytes())
    return {"distinct_results": len(results)}, f"{len(results)} distinct result(s) in 20 runs"


PROBES = {"compile": probe_compile, "fused_adam": probe_fused_adam, "fit": probe_fit, "memory": probe_memory,
          "batch_norm": probe_batch_norm, "dtypes": probe_dtypes, "add_at": probe_add_at}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="a folder for probe.json")
    parser.add_argument("--probes", default=",".join(PROBES), help="comma-separated: " + ", ".join(PROBES))
    args = parser.parse_args(argv)
    ok, why = backend.cuda_status()
    if not ok:
        print(f"no GPU: {why}", file=sys.stderr)
        return 2
    print("cuda:", why, "| cupy", backend.cupy.__version__, "| numpy", np.__version__)
    results, failed = {}, False
    for name in args.probes.split(","):
        try:
            results[name], line = PROBES[name]()
        except Exception as e:  # one probe's failure is a finding; the others still run
            results[name], line, failed = {"error": f"{type(e).__name__}: {e}"}, f"FAILED {type(e).__name__}: {e}", True
        print(f"{name:<11} {line}", flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "probe.json"), "w") as f:
            json.dump({"gpu": why, "cupy": backend.cupy.__version__, "probes": results}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
