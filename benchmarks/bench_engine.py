"""What the autograd machinery costs: one MLP training step in minitl vs the same step by hand.

    python -m benchmarks.bench_engine [--device cpu|cuda]     (from the repository root)

A 784-256-256-10 MLP (relu, softmax cross-entropy) on random data at batch 128,
SGD. The hand-written step does the same forward and backward in raw arrays. The
ratio is minitl's time over the hand-written time (target: at most 1.3x).
"""

import argparse

import minitl as mt
import minitl.functional as F
from benchmarks.common import device_sync, timeit, write_results
from minitl import backend

BATCH, SIZES, LR = 128, (784, 256, 256, 10), 0.01


def make_data(device):
    rng = backend.host_rng(0)
    x = backend.to_device(rng.standard_normal((BATCH, SIZES[0])).astype("float32"), device)
    y = backend.to_device(rng.integers(0, SIZES[-1], BATCH), device)
    return x, y


def minitl_step(device):
    mt.manual_seed(0)
    layers = [mt.nn.Linear(a, b, device=device) for a, b in zip(SIZES[:-1], SIZES[1:])]
    params = [p for layer in layers for p in layer.parameters()]
    opt = mt.optim.SGD(params, lr=LR)
    x, y = make_data(device)
    x = mt.Tensor(x)

    def step():
        h = x
        for layer in layers[:-1]:
            h = F.relu(layer(h))
        loss = F.cross_entropy(layers[-1](h), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def numpy_step(device):
    """Forward and backward by hand, on the same array module."""
    xp = backend.get_array_module(device)
    mt.manual_seed(0)
    layers = [mt.nn.Linear(a, b, device=device) for a, b in zip(SIZES[:-1], SIZES[1:])]
    ws = [(layer.weight.data, layer.bias.data) for layer in layers]
    x, y = make_data(device)
    rows = xp.arange(BATCH)

    def step():
        hs, h = [x], x
        for i, (w, b) in enumerate(ws):
            h = h @ w.T + b
            if i < len(ws) - 1:
                h = xp.maximum(h, 0)
            hs.append(h)
        z = hs[-1]
        z = z - z.max(axis=1, keepdims=True)
        p = xp.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        g = p
        g[rows, y] -= 1
        g /= BATCH
        for i in reversed(range(len(ws))):
            w, b = ws[i]
            gw, gb = g.T @ hs[i], g.sum(axis=0)
            if i:
                g = (g @ w) * (hs[i] > 0)
            w -= LR * gw
            b -= LR * gb
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    # Interleave the two so that machine noise hits both alike.
    t_hand, s_hand = timeit(numpy_step(args.device), device_sync(args.device), repeat=args.repeat)
    t_mt, s_mt = timeit(minitl_step(args.device), device_sync(args.device), repeat=args.repeat)
    t_hand2, _ = timeit(numpy_step(args.device), device_sync(args.device), repeat=args.repeat)
    t_hand = min(t_hand, t_hand2)
    ratio = t_mt / t_hand
    print(f"MLP {'-'.join(map(str, SIZES))}, batch {BATCH}, device {args.device}")
    print(f"  hand-written step: {t_hand * 1e3:8.3f} ms (IQR {s_hand * 1e3:.3f})")
    print(f"  minitl step:       {t_mt * 1e3:8.3f} ms (IQR {s_mt * 1e3:.3f})")
    print(f"  ratio minitl / hand-written: {ratio:.2f}x (target <= 1.3x: {'met' if ratio <= 1.3 else 'NOT met'})")
    path = write_results(f"engine-{args.device}", {"hand_ms": t_hand * 1e3, "minitl_ms": t_mt * 1e3,
                                                   "ratio": ratio, "target": 1.3})
    print(f"  results: {path}")


if __name__ == "__main__":
    main()
