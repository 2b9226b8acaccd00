"""Time the training steps of commit REV and of the working tree, interleaved in one run.

    python -m benchmarks.against REV [NEW] [--rounds 5] [--repeat 20] [--steps lenet-sgd-64 ...]

Run it before committing any change to an op, the engine, a layer or an optimizer, and quote
its table in the commit message. NEW, when given, is a second commit to time instead of the
working tree (to find which commit moved a number). A commit's `minitl/` is unpacked into a
temporary folder (git archive: nothing in the checkout changes), and every step
(benchmarks/steps.py: the README's loop, nothing else called) runs in a fresh process per tree,
per round, the two trees alternating, so that load on this shared machine hits both alike. A
step's time shown is the best of its rounds' medians; the ratio is the median over rounds of the
ratio within each round. A step more than 5% slower than at REV is flagged, and the exit code is 1.
"""

import argparse
import os
import subprocess
import sys
import tempfile

from benchmarks.common import interleaved, paired_ratio, print_environment, write_results
from benchmarks.steps import STEPS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_STEPS = ["lenet-sgd-64", "lenet-sgd-256", "lenet-frozen-64", "transfercnn-adam-32", "transfercnn-adam-256",
                 "mlp-sgd-128"]


def unpack(rev, folder):
    """REV's minitl package into folder; its full commit name."""
    commit = subprocess.run(["git", "rev-parse", "--verify", rev + "^{commit}"], cwd=ROOT, capture_output=True,
                            text=True)
    if commit.returncode != 0:
        sys.exit(f"against: {rev!r} is not a commit of this repository ({commit.stderr.strip()})")
    archive = subprocess.run(["git", "archive", "--format=tar", commit.stdout.strip(), "minitl"], cwd=ROOT,
                             capture_output=True)
    if archive.returncode != 0:
        sys.exit(f"against: commit {rev} has no minitl/ ({archive.stderr.decode().strip()})")
    subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
    return commit.stdout.strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev", help="the commit to compare with (a hash, a branch, HEAD~1, ...)")
    parser.add_argument("new", nargs="?", help="a commit to time instead of the working tree")
    parser.add_argument("--rounds", type=int, default=5, help="fresh processes per step and tree (default 5)")
    parser.add_argument("--repeat", type=int, default=20, help="timed steps per process (default 20)")
    parser.add_argument("--steps", nargs="+", default=DEFAULT_STEPS, choices=sorted(STEPS), metavar="STEP",
                        help=f"which steps (default: {' '.join(DEFAULT_STEPS)}; all: {' '.join(STEPS)})")
    parser.add_argument("--threshold", type=float, default=0.05, help="flag a step slower by more than this")
    parser.add_argument("--out", default=None, help="folder for the results JSON (default benchmarks/results)")
    args = parser.parse_args()
    for name in ("rounds", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not args.threshold >= 0:
        parser.error(f"--threshold must be a number >= 0, got {args.threshold}")
    if args.out and os.path.exists(args.out) and not os.path.isdir(args.out):
        parser.error(f"--out must be a folder, {args.out!r} is a file")
    new_name = f"at {args.new}" if args.new else "working tree"
    with tempfile.TemporaryDirectory(prefix="minitl-against-") as old_tree, \
            tempfile.TemporaryDirectory(prefix="minitl-against-") as new_tree:
        commit = unpack(args.rev, old_tree)
        new_commit = unpack(args.new, new_tree) if args.new else None
        trees = {"old": ("minitl", old_tree), "new": ("minitl", new_tree if args.new else ROOT)}
        print(f"the training steps at {args.rev} ({commit[:12]}) and {new_name}"
              f"{f' ({new_commit[:12]})' if new_commit else ''}, {args.rounds} rounds of {args.repeat} steps, "
              f"one process per step and tree, alternating")
        environment = print_environment()
        times = interleaved(trees, args.steps, args.rounds, args.repeat)
    old, new = times["old"], times["new"]
    print(f"\n{'step':<22} {'at ' + args.rev[:10]:>13} {new_name[:13]:>13} {'new / old':>10}  "
          f"{'faults/step old, new':>21}")
    slower, rows = [], {}
    for step in args.steps:
        ratio = paired_ratio(new[step], old[step])
        flag = "  SLOWER" if ratio > 1 + args.threshold else ""
        if flag:
            slower.append(step)
        print(f"{step:<22} {old[step]['median'] * 1e3:10.2f} ms {new[step]['median'] * 1e3:10.2f} ms "
              f"{ratio:9.2f}x  {old[step]['faults_per_step']:9.0f} {new[step]['faults_per_step']:9.0f}{flag}")
        rows[step] = {"old": old[step], "new": new[step], "new_over_old": ratio}
    path = write_results("against", {"rev": args.rev, "commit": commit, "new": new_commit, "rounds": args.rounds,
                                     "repeat": args.repeat, "environment": environment, "steps": rows}, args.out)
    print(f"\n{'no step' if not slower else ', '.join(slower)} more than {args.threshold:.0%} slower than at "
          f"{args.rev}; results: {path}")
    sys.exit(1 if slower else 0)


if __name__ == "__main__":
    main()
