"""python -m minitl [check]"""

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minitl", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("check", help="versions, devices, and a gradient check of every op on every device")
    args = parser.parse_args(argv)
    if args.command in (None, "check"):
        from minitl.check import run_check
        return 1 if run_check() else 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
