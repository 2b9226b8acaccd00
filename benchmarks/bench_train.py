"""Per-op and whole-training-step speed over batch sizes, on every device, against the hardware.

    python -m benchmarks.bench_train [--device cpu|cuda|all] [--quick] [--crossover]

1. the limits of the device, measured in this run: float32 matmul rate and copy bandwidth;
2. forward+backward of matmul, conv2d, max_pool2d and cross_entropy at batch 16 to 1024,
   each as a fraction of the limit that bounds it;
3. the LeNet-style training step three ways (every layer, frozen backbone, head from
   cached features); on the CPU minitl and PyTorch run the README's loop (benchmarks/steps.py:
   SGD with momentum) in fresh processes, interleaved; DeZero (plain SGD) and PyTorch CUDA
   are peers when installed (each in a process
   of its own), and each figure next to its target;
4. --crossover: the batch size at which CuPy overtakes NumPy for the training step;
5. array ops per TransferCNN training step on the GPU path (benchmarks/count_ops.py): the
   CuPy stand-in's count on a machine without a GPU, the CUDA profiler's where there is one.
"""

import argparse
import os

import minitl as mt
import minitl.functional as F
from benchmarks.common import (
    device_sync,
    interleaved,
    lenet_step,
    matmul_gflops,
    paired_ratio,
    run_peer,
    timeit,
    verdict,
    write_results,
)
from benchmarks.count_ops import counts_in_subprocess, print_counts
from minitl import backend

BATCHES = (16, 64, 256, 1024)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUNDS = 3  # CPU steps: fresh processes per framework, interleaved; the best round's median
CONV_SHAPES = [(16, 32, 14), (32, 64, 7), (64, 64, 16)]  # Cin >= 16: where the products should dominate


def limits(device, repeat):
    """(float32 matmul GFLOP/s, copy GB/s) of this device, now."""
    big = backend.to_device(backend.host_rng(0).random(32 * 2**20, dtype="float32"), device)  # 128 MiB
    t_copy, _ = timeit(lambda: big.copy(), device_sync(device), repeat=repeat)
    return matmul_gflops(device, 2048 if device == "cpu" else 8192, repeat), 2 * big.nbytes / t_copy / 1e9


def op_cases(n, device):
    """(name, function of no arguments, FLOPs or None, bytes moved or None) for one batch size."""
    rng = backend.host_rng(0)

    def leaf(*shape):
        return mt.tensor(rng.standard_normal(shape).astype("float32"), requires_grad=True, device=device)

    def fwd_bwd(fn, *inputs):
        def run():
            for t in inputs:
                t.grad = None
            out = fn(*inputs)
            out.backward(backend.get_array_module(out.data).ones_like(out.data))
        return run

    cases = [("matmul (N,512)@(512,512)", fwd_bwd(lambda a, b: a @ b, leaf(n, 512), leaf(512, 512)),
              3 * 2 * n * 512 * 512, None)]
    for cin, cout, size in CONV_SHAPES:
        flops = 3 * 2 * n * cout * cin * 9 * size * size
        cases.append((f"conv2d {cin}->{cout} {size}x{size}",
                      fwd_bwd(lambda x, w: F.conv2d(x, w, padding=1), leaf(n, cin, size, size), leaf(cout, cin, 3, 3)),
                      flops, None))
    x = leaf(n, 16, 28, 28)
    cases.append(("max_pool2d (N,16,28,28)", fwd_bwd(lambda x: F.max_pool2d(x, 2), x), None,
                  4 * x.data.nbytes))  # forward reads x, writes x/4; backward writes gx and reads gy (roughly 4x)
    labels = backend.to_device(rng.integers(0, 10, n), device)
    cases.append(("cross_entropy (N,10)", fwd_bwd(lambda z: F.cross_entropy(z, labels), leaf(n, 10)), None,
                  3 * n * 10 * 4))
    return cases


def bench_device(device, batches, repeat, results):
    gflops, gbps = limits(device, repeat)
    print(f"\n=== {device}: float32 matmul {gflops:.0f} GFLOP/s, copy {gbps:.1f} GB/s ===")
    results[device] = {"matmul_gflops": gflops, "copy_gbps": gbps, "ops": [], "steps": {}}

    print("\nforward+backward per op (fraction of the matmul rate for products, of copy bandwidth otherwise)")
    print(f"{'op':<28} {'N':>5} {'ms':>9} {'rate':>14} {'of limit':>9}")
    for n in batches:
        for name, fn, flops, nbytes in op_cases(n, device):
            t, _ = timeit(fn, device_sync(device), repeat=repeat)
            if flops:
                rate, frac = f"{flops / t / 1e9:.1f} GFLOP/s", flops / t / 1e9 / gflops
            else:
                rate, frac = f"{nbytes / t / 1e9:.2f} GB/s", nbytes / t / 1e9 / gbps
            print(f"{name:<28} {n:>5} {t * 1e3:9.3f} {rate:>14} {frac:9.0%}")
            results[device]["ops"].append(dict(op=name, n=n, seconds=t, fraction_of_limit=frac))

    print("\ntraining step, images/s")
    peers, timed = {}, None
    if device == "cpu":  # minitl and PyTorch in fresh processes, interleaved (benchmarks/steps.py, the README loop)
        names = [f"lenet-{mode}-{n}" for n in batches for mode in ("sgd", "frozen", "cached")]
        timed = interleaved({"minitl": ("minitl", ROOT), "torch": ("torch", ROOT)}, names, ROUNDS, repeat)
        peers["dezero"] = run_peer("dezero", "step", batches=list(batches), repeat=max(3, repeat // 3))
    else:
        peers["torch"] = run_peer("torch", "step", batches=list(batches), repeat=repeat, device="cuda")
    print(f"{'N':>5} {'full':>9} {'frozen':>9} {'cached':>9} {'cached/frozen':>14} {'vs torch':>9} "
          f"{'frozen vs torch':>16} {'vs DeZero':>10}")
    for i, n in enumerate(batches):
        if timed:  # PyTorch's time as minitl's times the ratio within each round (paired_ratio)
            step = lambda who, mode: timed[who][f"lenet-{mode}-{n}"]
            t = {"full": step("minitl", "sgd")["median"], "frozen": step("minitl", "frozen")["median"],
                 "cached": step("minitl", "cached")["median"]}
            if timed["torch"]:
                ratio = lambda mode: paired_ratio(step("torch", mode), step("minitl", mode))
                peers["torch"] = {"seconds": {i: t["full"] * ratio("sgd")}}
                peers["torch_frozen"] = {"seconds": {i: t["frozen"] * ratio("frozen")}}
        else:
            t = {mode: timeit(lenet_step(n, device, mode), device_sync(device), repeat=repeat)[0]
                 for mode in ("full", "frozen", "cached")}
        ratio = lambda peer: peers.get(peer) and peers[peer]["seconds"][i] / t["frozen" if "frozen" in peer else "full"]
        vs_torch, vs_torch_frozen, vs_dezero = ratio("torch"), ratio("torch_frozen"), ratio("dezero")
        fmt = lambda r: "-" if r is None else f"{r:.2f}x"
        print(f"{n:>5} {n / t['full']:9.0f} {n / t['frozen']:9.0f} {n / t['cached']:9.0f} "
              f"{t['frozen'] / t['cached']:13.1f}x {fmt(vs_torch):>9} {fmt(vs_torch_frozen):>16} {fmt(vs_dezero):>10}")
        results[device]["steps"][n] = dict(seconds=t, vs_torch=vs_torch, vs_torch_frozen=vs_torch_frozen,
                                           vs_dezero=vs_dezero, cached_over_frozen=t["frozen"] / t["cached"])
    return results


def targets(results, batches):
    """Each target with what this run measured."""
    print("\ntargets")
    rows = []
    if results.get("ops_per_step"):
        rows.append(("array ops per TransferCNN Adam step, batch 32 (at most)", results["ops_per_step"]["step"], 120))
    cpu = results.get("cpu")
    if cpu:
        for n in batches:
            s = cpu["steps"][n]
            if n in (64, 256):  # the user's script at the batch sizes it runs
                rows.append((f"cpu step vs PyTorch CPU, batch {n}", s["vs_torch"], 0.8))
            rows.append((f"cpu frozen step vs PyTorch's frozen step, batch {n}", s["vs_torch_frozen"], 1.2))
            rows.append((f"cpu step vs DeZero, batch {n}", s["vs_dezero"], 2.5))
            if n == 16:
                rows.append((f"cpu head from cache vs frozen step, batch {n}", s["cached_over_frozen"], 20))
    gpu = results.get("cuda")
    if gpu:
        if cpu and 256 in gpu["steps"] and 256 in cpu["steps"]:
            rows.append(("cuda step vs NumPy step, batch 256",
                         cpu["steps"][256]["seconds"]["full"] / gpu["steps"][256]["seconds"]["full"], 10))
        if 256 in gpu["steps"]:
            rows.append(("cuda step vs PyTorch CUDA, batch 256", gpu["steps"][256]["vs_torch"], 0.3))
        for op in gpu["ops"]:
            if op["n"] == 1024 and op["op"].startswith("conv2d"):
                rows.append((f"cuda {op['op']} at batch 1024, of the matmul rate", op["fraction_of_limit"], 0.25))
    for name, value, goal in rows:
        shown = "n/a" if value is None else str(value) if isinstance(value, int) else f"{value:.2f}"
        at_most = name.endswith("(at most)")
        print(f"  {name:<56} {shown:>7}  (target {'<=' if at_most else '>='} {goal}: "
              f"{verdict(value, goal, higher_is_better=not at_most)})")


def crossover(repeat):
    """The smallest batch at which the CuPy step beats the NumPy step."""
    if not backend.cuda_status()[0]:
        print(f"\ncrossover: needs a GPU ({backend.cuda_status()[1]})")
        return None
    for n in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024):
        t_cpu = timeit(lenet_step(n, "cpu", "full"), repeat=repeat)[0]
        t_gpu = timeit(lenet_step(n, "cuda", "full"), device_sync("cuda"), repeat=repeat)[0]
        if t_gpu < t_cpu:
            print(f"\nCuPy overtakes NumPy for the LeNet training step at batch {n} "
                  f"({t_cpu * 1e3:.2f} ms on the CPU, {t_gpu * 1e3:.2f} ms on the GPU)")
            return n
    print("\nCuPy does not overtake NumPy for the LeNet training step up to batch 1024")
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="all", help="cpu, cuda, or all (every available device)")
    parser.add_argument("--quick", action="store_true", help="batches 16 and 256, fewer repeats")
    parser.add_argument("--crossover", action="store_true", help="also find where CuPy overtakes NumPy")
    args = parser.parse_args()
    devices = ["cpu"] + (["cuda"] if backend.cuda_status()[0] else []) if args.device == "all" else [args.device]
    batches = (16, 256) if args.quick else BATCHES
    repeat = 5 if args.quick else 10
    results = {}
    # Kernel launches bound a GPU step at small batches: counted by the stand-in without a GPU.
    print("\n=== array ops per training step (the GPU path) ===")
    results["ops_per_step"] = counts_in_subprocess(32)
    if results["ops_per_step"]:
        print_counts(results["ops_per_step"])
    for device in devices:
        bench_device(backend.check_device(device), batches, repeat, results)
    targets(results, batches)
    if args.crossover:
        results["crossover_batch"] = crossover(repeat)
    name = "train" + ("-quick" if args.quick else "")
    print(f"\nresults: {write_results(name, results)}")


if __name__ == "__main__":
    main()
