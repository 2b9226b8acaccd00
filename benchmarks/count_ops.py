"""Array operations per training step on the GPU path, and where they go.

    python -m benchmarks.count_ops [--batch 32] [--json]

A GPU step at small batch sizes is bound by how many kernels it launches, not by
arithmetic, and that count can be measured without a GPU: under the CuPy stand-in
(tests/cupy_standin, NumPy underneath) every array operation that would launch a kernel
is counted. On a machine with a real GPU, CUDA's profiler (through PyTorch's, when it is
installed) counts the kernels CuPy really launched. `bench_train` runs this in a process
of its own, with the stand-in when there is no GPU.

The step is the TransferCNN's (two conv-relu-pool blocks, a hidden linear layer, a head)
with Adam and cross-entropy, as every fine-tuning recipe runs it.
"""

import argparse
import contextlib
import json
import os
import sys

STANDIN_FOLDER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "cupy_standin")


class _Counter:
    """Counts one block: the stand-in's array ops, or the kernels a CUDA profiler saw."""

    def __init__(self):
        import cupy
        self.standin = getattr(cupy, "_IS_STANDIN", False)
        self.source = "CuPy stand-in: array ops" if self.standin else "CUDA profiler: kernels launched"
        if not self.standin:
            import torch  # noqa: F401  (its profiler reads CUDA's activity records, whoever launched the kernels)

    @contextlib.contextmanager
    def count(self, into, key):
        if self.standin:
            from cupy_standin import counting
            with counting() as c:
                yield
            into[key] = c.ops
            return
        import cupy
        from torch.profiler import ProfilerActivity, profile
        cupy.cuda.Device().synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            yield
            cupy.cuda.Device().synchronize()
        into[key] = sum(1 for e in prof.events() if e.device_type.name == "CUDA" and "memcpy" not in e.name.lower()
                        and "memset" not in e.name.lower())


def count_step(batch):
    import numpy as np

    import minitl as mt
    import minitl.functional as F
    from minitl import backend, data, training, transfer
    from minitl.autograd import graph_order

    counter = _Counter()
    mt.manual_seed(0)
    model = transfer.TransferCNN(5, device="cuda")
    opt = mt.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    # A batch as every recipe gets it: from a DataLoader, whose labels were checked on the host.
    loader = data.DataLoader(rng.random((batch, 1, 16, 16), dtype=np.float32), rng.integers(0, 5, batch),
                             batch_size=batch, device="cuda")
    x, y = next(iter(loader))
    loss_fn = lambda x, y: F.cross_entropy(model(x), y)
    for _ in range(3):  # Adam's state exists and every kernel is compiled before counting
        training.train_step(loss_fn, opt, x, y)

    # Each count covers one block and never contains another (CUDA's profiler cannot nest).
    total, phases, forward, backward = {}, {}, {}, {}
    with counter.count(total, "step"):
        training.train_step(loss_fn, opt, x, y)
    with counter.count(phases, "forward"):
        loss = loss_fn(x, y)
    opt.zero_grad()
    with counter.count(phases, "backward"):
        loss.backward()
    with counter.count(phases, "optimizer (Adam)"):
        opt.step()
    h = x
    for name, layer in [("features." + n, m) for n, m in model.features.named_children()] + [("head", model.head)]:
        with counter.count(forward, f"{name} {type(layer).__name__}"):
            h = layer(h)
    with counter.count(forward, "cross_entropy"):
        loss = F.cross_entropy(h, y)
    # Each Function's backward alone (its count does not depend on the gradient's values); what the
    # backward pass adds beyond them is the engine's: leaf gradients copied, gradients summed.
    xp = backend.get_array_module(loss.data)
    for t in graph_order(loss):
        if t._creator is not None:
            gy = xp.ones_like(t.data)
            with counter.count(backward, f"{type(t._creator).__name__} {t.shape}"):
                t._creator.backward(gy)
    backward["engine (leaf copies, sums)"] = phases["backward"] - sum(backward.values())
    return dict(source=counter.source, batch=batch, step=total["step"], phases=phases, forward=forward,
                backward=backward)


def print_counts(c):
    print(f"ops per TransferCNN Adam training step at batch {c['batch']} ({c['source']}): {c['step']}")
    for phase, n in c["phases"].items():
        print(f"  {phase:<40} {n:>4}")
    print("forward, layer by layer:")
    for name, n in c["forward"].items():
        print(f"  {name:<40} {n:>4}")
    print("backward, Function by Function (last applied first):")
    for name, n in reversed(list(c["backward"].items())[:-1]):
        print(f"  {name:<40} {n:>4}")
    name, n = list(c["backward"].items())[-1]
    print(f"  {name:<40} {n:>4}")


def counts_in_subprocess(batch=32):
    """count_step in a fresh process: with the stand-in unless a real GPU is there; None if it fails."""
    import subprocess

    from minitl import backend
    env = dict(os.environ)
    ok, _ = backend.cuda_status()
    if not ok or getattr(backend.cupy, "_IS_STANDIN", False):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (STANDIN_FOLDER, env.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, "-m", "benchmarks.count_ops", "--batch", str(batch), "--json"],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        print(f"  (ops per step not counted: {done.stderr.strip().splitlines()[-1:]})")
        return None
    return json.loads(done.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    args = parser.parse_args()
    if args.batch < 1:
        parser.error(f"--batch must be >= 1, got {args.batch}")
    from minitl import backend
    ok, why = backend.cuda_status()
    if not ok:
        sys.exit(f"needs CuPy or its stand-in (PYTHONPATH={STANDIN_FOLDER}): {why}")
    counts = count_step(args.batch)
    if args.json:
        print(json.dumps(counts))
    else:
        print_counts(counts)


if __name__ == "__main__":
    main()
