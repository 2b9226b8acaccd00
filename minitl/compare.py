"""`python -m minitl`: the transfer-learning comparison, the project's main job.

Trains (or loads) the source model, then runs every method for every k (labelled
target examples per class) and several seeds, and prints one table: accuracy
mean +- std over seeds, and seconds per run. Every method gets the same fixed
step budget; the test set is only ever used to report accuracy.
"""

import json
import os
import statistics
import time

from minitl import backend, report, transfer
from minitl.data import k_shot, load_dataset
from minitl.io import atomic_write
from minitl.training import NonFiniteLoss

DEFAULT_K = (2, 5, 10, 20, "all")
QUICK = dict(k=(2, 10, "all"), seeds=2, steps=100)


def parse_k(text):
    """"2,5,all" -> (2, 5, "all"); empty entries and repeats are errors."""
    if not text.strip():
        raise ValueError("--k is empty: give examples per class like 2,5,all")
    out = []
    for part in text.split(","):
        part = part.strip()
        if part == "all":
            value = "all"
        elif part.isdigit() and int(part) > 0:
            value = int(part)
        else:
            raise ValueError(f"--k: {part!r} is not a positive integer or 'all'")
        if value in out:
            raise ValueError(f"--k: {part!r} is given twice")
        out.append(value)
    return tuple(out)


def parse_methods(text):
    """"scratch,proxy" -> ("scratch", "proxy"), each a known method, none twice."""
    methods = tuple(m.strip() for m in text.split(","))
    unknown = [m for m in methods if m not in transfer.METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}: choose from {', '.join(transfer.METHODS)}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"--methods: a method is given twice ({text})")
    return methods


def check_out_folder(folder):
    """The --out folder exists or can be made, and files can be written in it: checked before any training."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(f"--out {folder} is a file, not a folder")
    try:
        os.makedirs(folder, exist_ok=True)
        with atomic_write(os.path.join(folder, ".write-test"), "w") as f:
            f.write("ok")
        os.remove(os.path.join(folder, ".write-test"))
    except OSError as e:
        raise OSError(f"--out {folder} cannot be written ({e.strerror or e})") from None


def _fmt(values):
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {std:.3f}"


def run_comparison(dataset="glyphs", methods=transfer.METHODS, ks=DEFAULT_K, seeds=3, steps=200, device=None,
                   out=None, log=print, norm=None):
    """Run the table; returns {method: {k: {"accuracy": [...], "seconds": [...]}}}."""
    device = backend.check_device(device)
    parse_methods(",".join(methods))
    if norm not in transfer.NORMS:
        raise ValueError(f"norm must be one of {transfer.NORMS}, got {norm!r}")
    for name, value in (("seeds", seeds), ("steps", steps)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if out is not None:
        check_out_folder(out)
    data = load_dataset(dataset)
    for k in ks:  # every k is checked before any training starts
        k_shot(data.target_pool, k)
    budget = transfer.Budget(steps=steps)
    log(f"{data.name}{' (batch norm)' if norm else ''}: {len(data.source_classes)} source classes, "
        f"{len(data.target_classes)} target classes, "
        f"images {data.image_shape}; {steps} steps per run (batch {budget.batch_size}), {seeds} seeds, "
        f"device {device}")
    start = time.perf_counter()
    source = transfer.source_model(data, device, log=log, norm=norm)
    cache = transfer.FeatureCache(log=log)
    table = {m: {} for m in methods}
    cells, done = len(methods) * len(ks), 0
    for method in methods:
        for k in ks:
            accs, secs = [], []
            for seed in range(seeds):
                train = k_shot(data.target_pool, k, seed)
                try:
                    result = transfer.run_method(method, source, data, train, cache, budget, seed, device)
                except NonFiniteLoss as e:  # no table of NaN-trained models: stop and say where
                    raise NonFiniteLoss(f"{method}, k={k}, seed={seed}: {e}") from None
                accs.append(result.accuracy)
                secs.append(result.seconds)
            table[method][str(k)] = {"accuracy": accs, "seconds": secs}
            done += 1
            log(f"  [{done:>2}/{cells}] {method:<22} k={str(k):<4} {_fmt(accs)}  ({statistics.fmean(secs):.2f} s/run)")
    total = time.perf_counter() - start
    print_table(table, ks, log)
    log(f"\ntotal {total:.1f} s")
    if out:
        write_outputs(out, table, ks, dict(dataset=dataset, methods=list(methods), k=[str(k) for k in ks],
                                           seeds=seeds, steps=steps, device=device, norm=norm, seconds=total), log)
    return table


def print_table(table, ks, log=print):
    headers = ["method"] + [f"k={k}" for k in ks]
    log("\naccuracy on the held-out target test set, mean ± std over seeds")
    log(report.table(headers, [[m] + [_fmt(row[str(k)]["accuracy"]) for k in ks] for m, row in table.items()]))
    log("\nseconds per run")
    log(report.table(headers, [[m] + [statistics.fmean(row[str(k)]["seconds"]) for k in ks]
                               for m, row in table.items()]))


def write_outputs(folder, table, ks, config, log=print):
    """results.json, and accuracy-vs-k.png when matplotlib is installed."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "results.json")
    with atomic_write(path, "w") as f:  # a unique temporary name: two runs sharing --out never collide
        json.dump({"config": config, "table": table}, f, indent=1)
    log(f"results: {path}")
    plt = report.pyplot()
    if plt is None:
        log("(no plot: matplotlib is not installed; pip install 'minitl[lessons]')")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    labels = [str(k) for k in ks]
    for method, row in table.items():
        means = [statistics.fmean(row[k]["accuracy"]) for k in labels]
        ax.plot(labels, means, marker="o", label=method)
    ax.set_xlabel("labelled target examples per class (k)")
    ax.set_ylabel("target test accuracy")
    ax.set_title(config["dataset"])
    ax.legend(fontsize=8)
    fig.tight_layout()
    plot = os.path.join(folder, "accuracy-vs-k.png")
    fig.savefig(plot, dpi=100)
    plt.close(fig)
    log(f"plot: {plot}")
