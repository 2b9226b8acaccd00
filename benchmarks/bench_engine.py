"""What the autograd machinery costs: one MLP training step in minitl vs the same step by hand.

    python -m benchmarks.bench_engine [--device cpu|cuda] [--rounds 7] [--repeat 30]

A 784-256-256-10 MLP (relu, softmax cross-entropy) on random data at batch 128, SGD. The
hand-written step does the same forward and backward in raw arrays. minitl's step runs twice:
with the fused `F.cross_entropy` (one op, its closed-form gradient) and with the composed one
(`-log_softmax(z)[rows, labels].mean()`, each op with its own backward). The three are timed in
rounds, interleaved; a ratio is the median over rounds of the ratio within each round (the steps ran
side by side, so load that comes and goes cancels out). Targets: fused <= 1.1x the
hand-written step, composed <= 1.15x.
"""

import argparse
import statistics

import minitl as mt
import minitl.functional as F
from benchmarks.common import device_sync, timeit, verdict, write_results
from minitl import backend

BATCH, SIZES, LR = 128, (784, 256, 256, 10), 0.01


def make_data(device):
    rng = backend.host_rng(0)
    x = backend.to_device(rng.standard_normal((BATCH, SIZES[0])).astype("float32"), device)
    y = backend.to_device(rng.integers(0, SIZES[-1], BATCH), device)
    return x, y


def minitl_step(device, loss=F.cross_entropy):
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
        opt.zero_grad()
        loss(layers[-1](h), y).backward()
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
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    if args.rounds < 1 or args.repeat < 1:
        parser.error("--rounds and --repeat must be >= 1")
    steps = {"hand-written": numpy_step(args.device), "minitl, fused cross_entropy": minitl_step(args.device),
             "minitl, composed cross_entropy": minitl_step(args.device, F.cross_entropy_composed)}
    rounds = {name: [] for name in steps}
    for _ in range(args.rounds):  # interleaved: machine noise hits all three alike
        for name, step in steps.items():
            rounds[name].append(timeit(step, device_sync(args.device), repeat=args.repeat)[0])
    hand = rounds["hand-written"]
    print(f"MLP {'-'.join(map(str, SIZES))}, batch {BATCH}, device {args.device}, {args.rounds} rounds; "
          f"best round's median, and the median over rounds of the ratio within each round")
    results = {}
    for (name, times), target in zip(rounds.items(), (None, 1.1, 1.15)):
        ratio = statistics.median(t / h for t, h in zip(times, hand))
        goal = "" if target is None else \
            f"  {ratio:.2f}x hand-written (target <= {target}x: {verdict(ratio, target, False)})"
        print(f"  {name:<32} {min(times) * 1e3:8.3f} ms{goal}")
        results[name] = {"ms": min(times) * 1e3, "over_hand_written": ratio, "target": target,
                         "rounds_ms": [t * 1e3 for t in times]}
    print(f"  results: {write_results(f'engine-{args.device}', results)}")


if __name__ == "__main__":
    main()
