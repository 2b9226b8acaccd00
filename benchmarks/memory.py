"""How a training step reuses memory, three ways, interleaved in one run.

    python -m benchmarks.memory [--rounds 5] [--repeat 20]

"default" is what a plain script gets: minitl's ops take their large arrays from the workspace
(minitl/backend.py). "no-workspace" turns it off (MINITL_REUSE_MEMORY=0): every large temporary
comes from malloc, which returns it to the kernel when freed, so the next step pays a page fault
per 4 KiB. "tune-malloc" keeps the workspace off and tells glibc's malloc to keep freed memory
(backend.tune_malloc(), a change for the whole process). Each step runs in a fresh process per
way and round (benchmarks/steps.py); a step's time is the best of its rounds' medians.
"""

import argparse
import os

from benchmarks.common import interleaved, paired_ratio, print_environment, write_results
from benchmarks.steps import SETUPS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = ["lenet-sgd-64", "lenet-sgd-256", "lenet-frozen-64", "transfercnn-adam-32", "transfercnn-adam-256"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    if args.rounds < 1 or args.repeat < 1:
        parser.error("--rounds and --repeat must be >= 1")
    print(f"a training step with each way of reusing memory, {args.rounds} rounds of {args.repeat} steps")
    environment = print_environment()
    runs = {setup: ("minitl", ROOT, setup) for setup in SETUPS}
    times = interleaved(runs, STEPS, args.rounds, args.repeat)
    print(f"\n{'step':<22}" + "".join(f"{s:>16}" for s in SETUPS) + "   faults/step, " + ", ".join(SETUPS))
    for step in STEPS:
        base = times["default"][step]
        cells = "".join(f"{times[s][step]['median'] * 1e3:8.2f} ms {paired_ratio(times[s][step], base):4.2f}x"
                        for s in SETUPS)
        faults = ", ".join(f"{times[s][step]['faults_per_step']:.0f}" for s in SETUPS)
        print(f"{step:<22}{cells}   {faults}")
    print(f"\nresults: {write_results('memory', {'environment': environment, 'steps': times})}")


if __name__ == "__main__":
    main()
