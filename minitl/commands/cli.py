"""python -m minitl [options]          the transfer-learning comparison (the main job)
python -m minitl layers [options]   a linear probe at every layer of the source network
python -m minitl check              the install doctor: versions, devices, a gradcheck of every op

(`minitl ...` is the same command, installed as a console script.)"""

import argparse
import os
import sys


def positive_int(text):
    """argparse type: an integer >= 1, in ASCII digits (int() also reads '٣' as 3; --k and
    MINITL_BLAS_THREADS do not)."""
    digits = text.strip().lstrip("+-")
    if not (text.isascii() and digits.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def environment():
    """The environment variables minitl reads, checked before any work (a ValueError names a bad one)."""
    from minitl import backend
    backend.blas_thread_count()
    if "MINITL_DEVICE" in os.environ:
        backend.default_device()


def check_main(argv):
    from minitl import backend
    from minitl.commands.check import run_check
    parser = argparse.ArgumentParser(prog="python -m minitl check", description="the install doctor: versions, "
                                     "devices, and a gradient check of every op on every device")
    parser.add_argument("--device", default=None, help="check only this device (cpu or cuda; default: every one found)")
    args = parser.parse_args(argv)
    try:
        devices = None if args.device is None else [backend.check_device(args.device)]
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 1 if run_check(devices=devices) else 0


def table_arguments(parser, runs, quick, plot):
    """The options the comparison and the layer table share."""
    from minitl import data
    parser.add_argument("--device", default=None, help="cpu or cuda (default: MINITL_DEVICE, else cpu)")
    parser.add_argument("--dataset", default="glyphs", help=f"one of {', '.join(sorted(data.DATASETS))}")
    parser.add_argument("--k", default=None,
                        help="comma-separated examples per class, or 'all' (default 2,5,10,20,all)")
    parser.add_argument("--seeds", type=positive_int, default=None, help="runs per cell (default 3)")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help=f"training steps for every {runs} (default: its budget, minitl.transfer.BUDGETS)")
    parser.add_argument("--quick", action="store_true", help=f"a reduced run for a first look and for CI ({quick})")
    parser.add_argument("--out", default=None, help=f"folder for results.json and {plot}")


def layers_main(argv):
    from minitl.commands.compare import DEFAULT_K, parse_k
    from minitl.commands.layer_probe import QUICK, run_layers
    parser = argparse.ArgumentParser(prog="python -m minitl layers", description="a linear probe on every layer "
                                     "of the source network: which layer transfers to the target task?")
    table_arguments(parser, "head", "k=2,all; 2 seeds; 100 steps", "the accuracy-vs-depth plot")
    args = parser.parse_args(argv)
    quick = QUICK if args.quick else {}
    try:
        environment()
        ks = parse_k(args.k) if args.k is not None else quick.get("k", DEFAULT_K)
        run_layers(dataset=args.dataset, ks=ks, seeds=args.seeds or quick.get("seeds", 3), device=args.device,
                   out=args.out, steps=args.steps or quick.get("steps"))
    except (ValueError, ImportError, OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if hasattr(sys.stdout, "reconfigure"):  # each progress line reaches a pipe or a log file when it is printed
        sys.stdout.reconfigure(line_buffering=True)
    if argv[:1] == ["check"]:
        return check_main(argv[1:])
    if argv[:1] == ["layers"]:
        return layers_main(argv[1:])
    if argv and not argv[0].startswith("-"):  # a misspelt command would read as a stray argument
        print(f"python -m minitl: error: unknown command {argv[0]!r}: the commands are 'layers' and 'check' "
              f"(with none, the comparison table; --help lists its options)", file=sys.stderr)
        return 2

    from minitl import transfer
    from minitl.commands.compare import DEFAULT_K, QUICK, check_out_folder, parse_k, parse_methods, run_comparison
    parser = argparse.ArgumentParser(prog="python -m minitl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    table_arguments(parser, "run", "k=2,10,all; 2 seeds; 100 steps", "the accuracy and loss plots")
    parser.add_argument("--methods", default=",".join(transfer.METHODS), help="comma-separated method names")
    parser.add_argument("--norm", choices=["none", "batch"], default="none",
                        help="the transfer CNN's normalisation: none (the default table) or batch (conv-BN-ReLU)")
    parser.add_argument("--jobs", type=positive_int, default=None,
                        help="processes running the table's runs (default: one per core, at most 2; 1 on cuda)")
    args = parser.parse_args(argv)
    quick = QUICK if args.quick else {}
    try:  # every option is checked here, before any training starts
        environment()
        ks = parse_k(args.k) if args.k is not None else quick.get("k", DEFAULT_K)
        methods = parse_methods(args.methods)
        if args.out is not None:
            check_out_folder(args.out)
        run_comparison(dataset=args.dataset, methods=methods, ks=ks, seeds=args.seeds or quick.get("seeds", 3),
                       steps=args.steps or quick.get("steps"), device=args.device, out=args.out,
                       norm=None if args.norm == "none" else args.norm, jobs=args.jobs)
    except (ValueError, ImportError, OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def console():
    """The `minitl` command (pyproject's console script): the same as python -m minitl."""
    try:
        code = main()
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback (the workers end with the parent)
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    console()
