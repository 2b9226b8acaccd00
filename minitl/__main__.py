"""python -m minitl [options]   the transfer-learning comparison (the main job)
python -m minitl check        the install doctor: versions, devices, a gradcheck of every op"""

import argparse
import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check"]:
        from minitl.check import run_check
        return 1 if run_check() else 0

    from minitl import data, transfer
    from minitl.compare import DEFAULT_K, QUICK, parse_k, run_comparison
    parser = argparse.ArgumentParser(prog="python -m minitl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: MINITL_DEVICE, else cpu)")
    parser.add_argument("--dataset", default="glyphs", help=f"one of {', '.join(sorted(data.DATASETS))}")
    parser.add_argument("--methods", default=",".join(transfer.METHODS), help="comma-separated method names")
    parser.add_argument("--k", default=None,
                        help="comma-separated examples per class, or 'all' (default 2,5,10,20,all)")
    parser.add_argument("--seeds", type=int, default=None, help="runs per cell (default 3)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default 200)")
    parser.add_argument("--quick", action="store_true", help="a reduced run for a first look and for CI")
    parser.add_argument("--out", default=None, help="folder for results.json and the accuracy-vs-k plot")
    args = parser.parse_args(argv)
    quick = QUICK if args.quick else {}
    try:
        run_comparison(dataset=args.dataset, methods=tuple(m.strip() for m in args.methods.split(",")),
                       ks=parse_k(args.k) if args.k else quick.get("k", DEFAULT_K),
                       seeds=args.seeds or quick.get("seeds", 3), steps=args.steps or quick.get("steps", 200),
                       device=args.device, out=args.out)
    except (ValueError, ImportError, OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
