"""Small helpers the lessons and the main command share: arguments, tables, plots."""

import argparse
import os
import statistics
import sys
import time

from minitl import backend
from minitl.checks import positive_int


def lesson_arguments(doc, file=None, argv=None):
    """Every lesson's command line: --device and --quick. A device that cannot be used (cuda
    without CuPy or a GPU) ends the lesson at once with one line and exit code 2.

    `args.out` is the folder for the lesson's pictures: lessons/out/<lesson>/, or
    lessons/out/quick/<lesson>/ in quick mode, so a quick run never overwrites a full run's.
    In a notebook (the lessons open as notebooks through jupytext) the kernel's own
    arguments are ignored; MINITL_QUICK=1 in the kernel's environment gives quick mode.
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: MINITL_DEVICE, else cpu)")
    parser.add_argument("--quick", action="store_true", help="a smaller run (seconds), as CI runs it")
    args = parser.parse_known_args(argv)[0] if in_notebook() else parser.parse_args(argv)
    if in_notebook() and os.environ.get("MINITL_QUICK") == "1":  # a kernel has no command line of its own
        args.quick = True
    try:
        args.device = backend.check_device(args.device)
        backend.blas_thread_count()
    except (ValueError, RuntimeError) as e:
        parser.exit(2, f"error: {e}\n")
    if file is None and in_notebook():
        # Jupyter Server tells its kernel the notebook's path (here the lesson file): each lesson keeps its own
        # picture folder in a notebook too (lessons 5 and 7 both draw learning_curves.png)
        file = os.environ.get("JPY_SESSION_NAME")
    name = os.path.splitext(os.path.basename(file))[0] if file else "notebook"
    root = os.path.join(os.path.dirname(os.path.abspath(file)) if file else os.getcwd(), "out")
    args.out = os.path.join(root, "quick", name) if args.quick else os.path.join(root, name)
    return args


def picture(args, what):
    """matplotlib.pyplot for a lesson's picture, or None after printing one line saying it was skipped."""
    plt = pyplot()
    if plt is None:
        print(f"(picture skipped, matplotlib is not installed: {what}; pip install 'minitl[lessons]')")
    return plt


def save_picture(plt, fig, args, name):
    """Save a lesson's picture into args.out, close it and print its path; returns the path."""
    fig.tight_layout()
    path = save_figure(fig, args.out, name)
    if not in_notebook():  # a notebook shows the figures still open when the cell ends
        plt.close(fig)
    print(f"picture: {path}")
    return path


def wall_times(fn, sync, repeat, warmup=1):
    """fn()'s wall time in seconds, `repeat` times, after `warmup` calls (the first pays for
    allocations and, on a GPU, for compiling kernels). `sync()` waits for the device and runs
    around every clock read: a GPU call returns before its work is done (lesson 11)."""
    repeat = positive_int("wall_times", "repeat", repeat)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def median_seconds(fn, device, repeat):
    """The median wall time of fn() on a device, in seconds, over `repeat` calls after one warm-up."""
    return statistics.median(wall_times(fn, lambda: backend.synchronize(device), repeat))


def table(headers, rows):
    """Rows of values as aligned text columns; floats get 3 decimals."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = lambda values: "  ".join(str(v).rjust(w) if i else str(v).ljust(w)
                                    for i, (v, w) in enumerate(zip(values, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


def mean_std(values):
    """"0.912 ± 0.013": the mean and the sample standard deviation; "0.912 (1 seed)" for one value,
    whose spread is not zero but unknown."""
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.3f} (1 seed)"
    return f"{mean:.3f} ± {statistics.stdev(values):.3f}"


def in_notebook():
    """Whether this runs under a Jupyter kernel (its figures are shown inline)."""
    return "ipykernel" in sys.modules


def pyplot():
    """matplotlib.pyplot, or None when matplotlib is not installed. A script draws to files (Agg, which
    needs no display); under a notebook kernel the backend is left alone, so figures show inline."""
    try:
        import matplotlib
    except ImportError:
        return None
    if not in_notebook() and not _backend_chosen(matplotlib):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _backend_chosen(matplotlib):
    """Whether a backend was already picked (MPLBACKEND, matplotlib.use, pyplot imported): then it is the user's."""
    if os.environ.get("MPLBACKEND"):
        return True
    chosen = getattr(matplotlib.rcParams, "_get_backend_or_none", None)  # (matplotlib >= 3.5)
    return chosen is not None and chosen() is not None


def save_figure(fig, folder, name):
    """Save a figure as folder/name (the folder is created); returns the path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    fig.savefig(path, dpi=100)
    return path
