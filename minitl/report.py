"""Small helpers the lessons and the main command share: arguments, tables, plots."""

import argparse
import os
import statistics

from minitl import backend


def lesson_arguments(doc, argv=None):
    """Every lesson's command line: --device and --quick. A device that cannot be used (cuda
    without CuPy or a GPU) ends the lesson at once with one line and exit code 2."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: MINITL_DEVICE, else cpu)")
    parser.add_argument("--quick", action="store_true", help="a smaller run (seconds), as CI runs it")
    args = parser.parse_args(argv)
    try:
        args.device = backend.check_device(args.device)
    except (ValueError, RuntimeError) as e:
        parser.exit(2, f"error: {e}\n")
    backend.tune_malloc()  # a program of minitl's own: keep freed memory for the next step (see backend)
    return args


def table(headers, rows):
    """Rows of values as aligned text columns; floats get 3 decimals."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = lambda values: "  ".join(str(v).rjust(w) if i else str(v).ljust(w)
                                    for i, (v, w) in enumerate(zip(values, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


def mean_std(values):
    """"0.912 ± 0.013": the mean and the sample standard deviation (0 for one value)."""
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {std:.3f}"


def pyplot():
    """matplotlib.pyplot drawing to files, or None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def out_path(lesson_file, name):
    """A path in the out/ folder beside a lesson (created if needed)."""
    folder = os.path.join(os.path.dirname(os.path.abspath(lesson_file)), "out")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, name)


def save_figure(fig, folder, name):
    """Save a figure as folder/name (the folder is created); returns the path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    fig.savefig(path, dpi=100)
    return path


def save_plot(fig, lesson_file, name):
    """Save a figure to the out/ folder beside the lesson; returns the path."""
    path = out_path(lesson_file, name)
    fig.savefig(path, dpi=100)
    return path
