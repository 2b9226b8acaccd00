"""`python -m minitl`: the transfer-learning comparison, the project's main job.

Trains (or loads) the source model, then runs every method for every k (labelled
target examples per class) and several seeds, and prints one table: accuracy
mean +- std over seeds, and seconds per run. Each method trains with its own budget,
fixed in advance on development data (transfer.BUDGETS); the test set is only ever used
to report accuracy.
"""

import contextlib
import dataclasses
import json
import math
import os
import statistics
import tempfile
import time

from minitl import backend, parallel, report, transfer
from minitl.checks import positive_int
from minitl.data import k_shot, load_dataset
from minitl.io import atomic_write
from minitl.training import NonFiniteLoss

DEFAULT_K = (2, 5, 10, 20, "all")
QUICK = dict(k=(2, 10, "all"), seeds=2, steps=100)  # a first look: every method gets 100 steps


def parse_k(text):
    """"2,5,all" -> (2, 5, "all"); empty entries and repeats are errors."""
    if not text.strip():
        raise ValueError("--k is empty: give examples per class like 2,5,all")
    digits = set("0123456789")
    out = []
    for part in text.split(","):
        part = part.strip()
        if part == "all":
            value = "all"
        elif part and set(part) <= digits and int(part) > 0:
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


MAX_SEEDS, MAX_STEPS = 1000, 1_000_000


def check_run_options(dataset, ks, seeds, steps, out):
    """Everything a table's options can get wrong, checked before any work; returns the dataset."""
    seeds = positive_int("the run options", "seeds", seeds)
    steps = None if steps is None else positive_int("the run options", "steps", steps)
    # Each seed runs every cell again, each step is a training step of every run: beyond these a table
    # takes days, and a list of 10**20 runs fills memory before the first one starts.
    for name, value, most in (("seeds", seeds, MAX_SEEDS), ("steps", steps or 1, MAX_STEPS)):
        if value > most:
            raise ValueError(f"{name}={value} is more than {most}: a table of that size would take days")
    if out is not None:
        check_out_folder(out)
    data = load_dataset(dataset)
    for k in ks:
        k_shot(data.target_pool, k)
    return data


OUTPUTS = ("results.json", "accuracy-vs-k.png", "loss-curves.png", "accuracy-vs-depth.png")


def check_out_folder(folder):
    """The --out folder exists or can be made, files can be written in it, and no output name is taken by a
    folder: checked before any training."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(f"--out {folder} is a file, not a folder")
    for name in OUTPUTS:
        if os.path.isdir(os.path.join(folder, name)):
            raise ValueError(f"--out {folder}: {name} there is a folder; the results would have nowhere to go")
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")  # a unique name: runs may share --out
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise OSError(f"--out {folder} cannot be written ({e.strerror or e})") from None


def budgets_for(dataset, methods, steps=None):
    """Each method's budget (transfer.budgets_for); `steps` replaces every step count (quick runs)."""
    budgets = {m: transfer.budgets_for(dataset)[m] for m in methods}
    if steps is not None:
        budgets = {m: dataclasses.replace(b, steps=steps, epochs=0.0, max_steps=0) for m, b in budgets.items()}
    return budgets


def curve(losses, points=200):
    """A loss curve short enough to keep: the mean of each of at most `points` equal windows."""
    width = max(1, math.ceil(len(losses) / points))
    return [statistics.fmean(losses[i:i + width]) for i in range(0, len(losses), width)], width


_RUN = {}  # what every run shares: set before the runs start (worker processes inherit it)


def _one_run(run):
    """One (method, k, seed) of the table: (accuracy, seconds, losses)."""
    method, k, seed = run
    data = _RUN["data"]
    train = k_shot(data.target_pool, k, seed)
    try:
        result = transfer.run_method(method, _RUN["source"], data, train, _RUN["cache"], _RUN["budgets"][method],
                                     seed, _RUN["device"])
    except NonFiniteLoss as e:  # no table of NaN-trained models: stop and say where
        raise NonFiniteLoss(f"{method}, k={k}, seed={seed}: {e}") from None
    return result.accuracy, result.seconds, result.losses


def run_comparison(dataset="glyphs", methods=transfer.METHODS, ks=DEFAULT_K, seeds=3, steps=None, device=None,
                   out=None, log=print, norm=None, jobs=None):
    """Run the table; returns {method: {k: {"accuracy": [...], "seconds": [...], "steps": [...], "loss_curve":
    [...], "loss_curve_step": n}}}. Each method trains with its own budget (transfer.BUDGETS), unless
    `steps` gives every method that many steps. The runs are independent and seeded, so `jobs`
    processes (default: one per core, on the CPU) give the same table as one, sooner."""
    device = backend.check_device(device)
    jobs = parallel.default_jobs(device) if jobs is None else parallel.check_jobs(jobs, device)
    parse_methods(",".join(methods))
    if norm not in transfer.NORMS:
        raise ValueError(f"norm must be one of {transfer.NORMS}, got {norm!r}")
    data = check_run_options(dataset, ks, seeds, steps, out)
    budgets = budgets_for(dataset, methods, steps)
    log(f"{data.name}{' (batch norm)' if norm else ''}: {len(data.source_classes)} source classes, "
        f"{len(data.target_classes)} target classes, images {data.image_shape}; {seeds} seeds, device {device}; "
        + ("each method with its own budget (minitl.transfer.BUDGETS)" if steps is None else f"{steps} steps per run"))
    start = time.perf_counter()
    source = transfer.source_model(data, device, log=log, norm=norm)
    cache = transfer.FeatureCache(log=log)
    head_acc, source_acc = transfer.check_cache_on_source_task(source, data, cache, device=device)
    log(f"feature cache check (the seed's section 3 read literally): a head trained on the cached source features "
        f"scores {head_acc:.3f} on the source test set, the source model {source_acc:.3f}")
    table = {m: {} for m in methods}
    cells = [(method, k) for method in methods for k in ks]
    runs = [(method, k, seed) for method, k in cells for seed in range(seeds)]
    _RUN.update(source=source, data=data, cache=cache, budgets=budgets, device=device)
    if device == "cuda":  # untimed: the first call of each kernel compiles it, which is no method's time
        warm_up = k_shot(data.target_pool, 2, seeds)  # a split no cell of the table uses
        for method in methods:
            transfer.run_method(method, source, data, warm_up, cache,
                                dataclasses.replace(budgets[method], steps=2, epochs=0, max_steps=0), 0, device)
    log(f"{len(runs)} runs in {jobs} process{'es' if jobs > 1 else ''}")
    # in order, each as soon as it is done; closed on an error, so the workers end at once, not when collected
    with contextlib.closing(parallel.map_runs(_one_run, runs, jobs)) as results:
        for done, (method, k) in enumerate(cells, start=1):
            cell = {"accuracy": [], "seconds": [], "steps": [], "loss_curve": []}
            for _ in range(seeds):
                accuracy, seconds, losses = next(results)
                cell["accuracy"].append(accuracy)
                cell["seconds"].append(seconds)
                cell["steps"].append(len(losses))
                points, cell["loss_curve_step"] = curve(losses)
                cell["loss_curve"].append(points)
            table[method][str(k)] = cell
            log(f"  [{done:>2}/{len(cells)}] {method:<22} k={str(k):<4} {report.mean_std(cell['accuracy'])}  "
                f"({statistics.fmean(cell['seconds']):.2f} s/run, {cell['steps'][0]} steps)")
    total = time.perf_counter() - start
    print_table(table, ks, log)
    log(f"\ntotal {total:.1f} s")
    if out:
        config = dict(dataset=dataset, methods=list(methods), k=[str(k) for k in ks], seeds=seeds, device=device,
                      norm=norm, seconds=total, jobs=jobs, budgets={m: b.__dict__ for m, b in budgets.items()},
                      source_cache_check=dict(head=head_acc, source=source_acc))
        write_outputs(out, table, ks, config, log)
    return table


def print_table(table, ks, log=print):
    headers = ["method"] + [f"k={k}" for k in ks]
    log("\naccuracy on the held-out target test set, mean ± std over seeds")
    log(report.table(headers, [[m] + [report.mean_std(row[str(k)]["accuracy"]) for k in ks]
                               for m, row in table.items()]))
    log("\nseconds per run (steps)")
    log(report.table(headers, [[m] + [f"{statistics.fmean(row[str(k)]['seconds']):.2f} ({row[str(k)]['steps'][0]})"
                                      for k in ks] for m, row in table.items()]))


def save_json(folder, name, obj, log=print):
    """folder/name as JSON, written atomically under a unique temporary name (runs sharing --out never collide)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=1)
    log(f"results: {path}")
    return path


def write_outputs(folder, table, ks, config, log=print):
    """results.json, and accuracy-vs-k.png and loss-curves.png when matplotlib is installed."""
    save_json(folder, "results.json", {"config": config, "table": table}, log)
    plt = report.pyplot()
    if plt is None:
        log("(no plots: matplotlib is not installed; pip install 'minitl[lessons]')")
        return
    labels = [str(k) for k in ks]
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, row in table.items():
        ax.plot(labels, [statistics.fmean(row[k]["accuracy"]) for k in labels], marker="o", label=method)
    ax.set_xlabel("labelled target examples per class (k)")
    ax.set_ylabel("target test accuracy")
    ax.set_title(config["dataset"])
    ax.legend(fontsize=8)
    fig.tight_layout()
    log(f"plot: {report.save_figure(fig, folder, 'accuracy-vs-k.png')}")
    plt.close(fig)
    # One panel per method: the training loss of every k (mean over seeds) against the step, so
    # convergence can be seen: a flat tail is a converged run.
    fig, axes = plt.subplots(2, math.ceil(len(table) / 2), figsize=(4 * math.ceil(len(table) / 2), 6), squeeze=False)
    for ax, (method, row) in zip(axes.flat, table.items()):
        for k in labels:
            curves, every = row[k]["loss_curve"], row[k]["loss_curve_step"]
            mean = [statistics.fmean(c[i] for c in curves) for i in range(min(map(len, curves)))]
            ax.plot([every * (i + 1) for i in range(len(mean))], mean, label=f"k={k}")
        ax.set_yscale("log")
        ax.set_title(method, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    for ax in axes.flat[len(table):]:
        ax.axis("off")
    axes.flat[0].set_ylabel("training loss")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    log(f"plot: {report.save_figure(fig, folder, 'loss-curves.png')}")
    plt.close(fig)
