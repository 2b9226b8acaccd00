"""A user's own training script, minitl against PyTorch CPU, interleaved in one run.

    python -m benchmarks.bench_user [--rounds 5] [--repeat 20]

The script is the README's loop (build the model, forward, cross_entropy, zero_grad, backward,
step; nothing else called: no malloc tuning, no thread setting) on the LeNet-style CNN
1x28x28 -> conv16-relu-pool-conv32-relu-pool-linear10 with SGD and momentum. Each framework
runs each step in a fresh process of its own per round (benchmarks/steps.py), the two
alternating; both use their libraries' default threads (one per core). A step's time shown is
the best of its rounds' medians; a ratio is the median over rounds of the ratio within each round
(the two ran next to each other). Targets: every layer trained >= 0.8x PyTorch's images/s at batch
64 and 256; the frozen backbone >= 1.2x PyTorch's frozen step; the head trained from cached
features >= 20x minitl's frozen step at batch 16.
"""

import argparse
import os

from benchmarks.common import interleaved, paired_ratio, print_environment, verdict, write_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = ["lenet-sgd-64", "lenet-sgd-256", "lenet-frozen-16", "lenet-frozen-64", "lenet-frozen-256", "lenet-cached-16"]
TARGETS = {"lenet-sgd-64": 0.8, "lenet-sgd-256": 0.8, "lenet-frozen-16": 1.2, "lenet-frozen-64": 1.2,
           "lenet-frozen-256": 1.2}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="fresh processes per step and framework (default 5)")
    parser.add_argument("--repeat", type=int, default=20, help="timed steps per process (default 20)")
    args = parser.parse_args()
    if args.rounds < 1 or args.repeat < 1:
        parser.error("--rounds and --repeat must be >= 1")
    print(f"the README's training loop, minitl and PyTorch CPU, {args.rounds} rounds of {args.repeat} steps")
    environment = print_environment()
    times = interleaved({"minitl": ("minitl", ROOT), "torch": ("torch", ROOT)}, STEPS, args.rounds, args.repeat)
    mine, torch = times["minitl"], times["torch"]
    print(f"\n{'step':<18} {'minitl':>10} {'PyTorch':>10} {'minitl speed':>13}  target")
    rows = {}
    for step in STEPS:
        t, peer = mine[step]["median"], torch and torch[step]["median"]
        ratio = torch and paired_ratio(torch[step], mine[step])
        target = TARGETS.get(step)
        shown = "-" if ratio is None else f"{ratio:.2f}x"
        goal = f">= {target}x PyTorch: {verdict(ratio, target)}" if target else ""
        peer_ms = "-" if peer is None else f"{peer * 1e3:7.2f} ms"
        print(f"{step:<18} {t * 1e3:7.2f} ms {peer_ms:>10} {shown:>13}  {goal}")
        rows[step] = {"minitl": mine[step], "torch": torch and torch[step], "minitl_speed_over_torch": ratio}
    cached = paired_ratio(mine["lenet-frozen-16"], mine["lenet-cached-16"])
    print(f"head from cached features vs minitl's frozen step, batch 16: {cached:.1f}x "
          f"(target >= 20x: {verdict(cached, 20)})")
    rows["cached_over_frozen_16"] = cached
    print(f"\nresults: {write_results('user', {'environment': environment, 'steps': rows})}")


if __name__ == "__main__":
    main()
