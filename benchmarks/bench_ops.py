"""Where conv2d's time goes, and the LeNet training step against PyTorch and DeZero.

    python -m benchmarks.bench_ops [--device cpu|cuda] [--quick]     (from the repository root)

Every figure is a ratio measured in this one run (the machine is shared and
noisy), printed next to its target. Peers run in processes of their own
(benchmarks/peers.py) and are skipped when not installed.
"""

import argparse
import os
import resource
import tracemalloc

import minitl as mt
import minitl.functional as F
from benchmarks.common import device_sync, lenet_step, matmul_gflops, run_peer, timeit, verdict, write_results
from minitl import backend

CONV_SHAPES = [(1, 16, 28), (16, 32, 14), (32, 64, 7), (3, 32, 32), (64, 64, 16)]  # (Cin, Cout, H=W), 3x3, pad 1


def conv_case(n, cin, cout, size, device, repeat):
    """(conv forward+backward seconds, the same matrix products alone, FLOPs of those products)."""
    rng = backend.host_rng(0)

    def as_in_a_network(c):  # (n, c, h, w) stored as conv2d stores its outputs: how activations flow
        return F.conv.to_nchw(backend.to_device(rng.random((c, size, size, n), dtype="float32"), device))

    if cin >= 16:  # a hidden layer: its input is the previous layer's output
        x = mt.Tensor(as_in_a_network(cin), requires_grad=True)
    else:          # a first layer: images as the data loader gives them, no input gradient needed
        x = mt.tensor(rng.random((n, cin, size, size), dtype="float32"), device=device)
    w = mt.tensor(rng.random((cout, cin, 3, 3), dtype="float32"), device=device, requires_grad=True)
    b = mt.tensor(rng.random(cout, dtype="float32"), device=device, requires_grad=True)
    gy = as_in_a_network(cout)

    def conv():
        w.grad = b.grad = x.grad = None
        F.conv2d(x, w, b, 1, 1).backward(gy)
    t_conv, _ = timeit(conv, device_sync(device), repeat=repeat)

    col = F.im2col(x.data, 3, 3, (1, 1), (1, 1))
    w_mat, gy_mat = w.data.reshape(cout, -1), backend.to_device(rng.random((cout, col.shape[1]), dtype="float32"),
                                                               device)

    def products():
        w_mat @ col
        gy_mat @ col.T
        if x.requires_grad:
            w_mat.T @ gy_mat
    t_mm, _ = timeit(products, device_sync(device), repeat=repeat)
    flops = 2 * cout * col.shape[0] * col.shape[1] * (3 if x.requires_grad else 2)
    return t_conv, t_mm, flops


def peak_memory(step):
    """Peak bytes allocated during one step (tracemalloc sees NumPy's buffers), with minitl's workspace
    off: with it on, a step reuses what the previous one allocated, and tracemalloc would see nothing."""
    os.environ["MINITL_REUSE_MEMORY"] = "0"
    try:
        step()
        tracemalloc.start()
        step()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    finally:
        del os.environ["MINITL_REUSE_MEMORY"]
    return peak


def rss_growth(step, steps=100):
    """Resident memory growth (KiB) from step 10 to step `steps`: a leak shows here."""
    for _ in range(10):
        step()
    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(steps - 10):
        step()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, batch 64 only")
    args = parser.parse_args()
    device, repeat = args.device, (5 if args.quick else 15)
    batches = [64] if args.quick else [64, 256]
    results = {"device": device, "conv": [], "step": {}}

    gflops = matmul_gflops(device, 1024, repeat)
    print(f"float32 matmul (1024^3) on {device}: {gflops:.1f} GFLOP/s\n")
    results["matmul_gflops"] = gflops

    cases = [(n, cin, cout, size) for n in batches for cin, cout, size in CONV_SHAPES]
    torch_conv = run_peer("torch", "conv", cases=cases, repeat=repeat) if device == "cpu" else None
    print("conv2d 3x3 pad 1, forward+backward (no input gradient for a 1- or 3-channel first layer; hidden\n"
          "layers get their input and upstream gradient laid out as conv2d's own output is)")
    print(f"{'N':>5} {'Cin->Cout':>10} {'HxW':>6} {'ms':>8} {'GFLOP/s':>8} {'products':>9} {'torch ms':>9}  target")
    for i, (n, cin, cout, size) in enumerate(cases):
        t_conv, t_mm, flops = conv_case(n, cin, cout, size, device, repeat)
        t_torch = torch_conv["seconds"][i] if torch_conv else None
        share = t_mm / t_conv
        if cin >= 16:
            target = f"products >= 60% of conv: {verdict(share, 0.6)}"
        elif n == 256:
            target = f"<= PyTorch's time: {verdict(t_torch and t_conv / t_torch, 1.0, higher_is_better=False)}"
        else:
            target = ""
        print(f"{n:>5} {f'{cin}->{cout}':>10} {f'{size}x{size}':>6} {t_conv * 1e3:8.2f} {flops / t_conv / 1e9:8.1f} "
              f"{share:9.0%} {'' if t_torch is None else f'{t_torch * 1e3:9.2f}':>9}  {target}")
        results["conv"].append(dict(n=n, cin=cin, cout=cout, size=size, conv_s=t_conv, products_s=t_mm,
                                    torch_s=t_torch, gflops=flops / t_conv / 1e9))

    print("\nLeNet-style training step (1x28x28 -> conv16 -> pool -> conv32 -> pool -> linear 10, SGD)")
    torch_full = run_peer("torch", "step", batches=batches, repeat=repeat) if device == "cpu" else None
    torch_frozen = run_peer("torch", "step", batches=batches, repeat=repeat, frozen=True) if device == "cpu" else None
    dezero = run_peer("dezero", "step", batches=batches, repeat=max(3, repeat // 3)) if device == "cpu" else None
    for i, n in enumerate(batches):
        full, frozen = lenet_step(n, device, "full"), lenet_step(n, device, "frozen")
        t_full, _ = timeit(full, device_sync(device), repeat=repeat)
        t_frozen, _ = timeit(frozen, device_sync(device), repeat=repeat)
        vs_torch = torch_full and torch_full["seconds"][i] / t_full
        vs_dezero = dezero and dezero["seconds"][i] / t_full
        frozen_vs_torch = torch_frozen and torch_frozen["seconds"][i] / t_frozen
        memory = peak_memory(frozen) / peak_memory(full) if device == "cpu" else None
        growth = rss_growth(full) if n == batches[0] else None
        torch_target = 0.8
        print(f"  batch {n}: minitl {n / t_full:8.0f} images/s ({t_full * 1e3:.2f} ms); frozen backbone "
              f"{n / t_frozen:8.0f} images/s ({t_frozen * 1e3:.2f} ms)")
        fmt = lambda r: "n/a" if r is None else f"{r:.2f}x"
        print(f"    vs PyTorch CPU: {fmt(vs_torch)} (target >= {torch_target}x: {verdict(vs_torch, torch_target)})")
        print(f"    vs DeZero:      {fmt(vs_dezero)} (target >= 2.5x: {verdict(vs_dezero, 2.5)})")
        print(f"    frozen step vs PyTorch's frozen step: {fmt(frozen_vs_torch)} "
              f"(target >= 1.2x: {verdict(frozen_vs_torch, 1.2)})")
        if memory is not None:
            print(f"    frozen step peak memory / full step's: {memory:.2f} (target <= 0.5: "
                  f"{verdict(memory, 0.5, higher_is_better=False)})")
        if growth is not None:
            print(f"    resident memory growth over 100 steps: {growth} KiB")
        results["step"][n] = dict(full_s=t_full, frozen_s=t_frozen, vs_torch=vs_torch, vs_dezero=vs_dezero,
                                  frozen_vs_torch=frozen_vs_torch, frozen_memory_ratio=memory, rss_growth_kib=growth)
    results["peers"] = {"torch": torch_full and torch_full["version"], "dezero": dezero and dezero["version"]}
    print(f"\nresults: {write_results(f'ops-{device}' + ('-quick' if args.quick else ''), results)}")


if __name__ == "__main__":
    main()
