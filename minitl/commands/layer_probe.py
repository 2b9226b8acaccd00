"""`python -m minitl layers`: which layer of the source network transfers?

A linear probe from every cut point of the source backbone (the raw pixels, then the end
of every conv, pool and linear stage), for several k and seeds. The seed's features are
"a convolution layer's output", not only the last layer's; Yosinski et al. (2014, "How
transferable are features in deep neural networks?") asked which layers carry over to a
new task: the low ones are general, the top ones specific to the source task. Each cut's
features of the whole target pool are computed once and cached; every (k, seed) head then
trains on the rows it draws, so the whole table takes seconds.
"""

import contextlib
import statistics
import time

from minitl import backend, parallel, report, transfer
from minitl.commands import compare
from minitl.commands.compare import DEFAULT_K, save_json
from minitl.data import k_shot_indices

QUICK = dict(k=(2, "all"), seeds=2, steps=100)  # a first look: every head gets 100 steps


_RUN = {}  # what every head shares: set before the runs start (worker processes inherit it)


def _one_head(run):
    """The test accuracy of one head: a cut point's features, k examples per class drawn with a seed."""
    at, k, seed = run
    data, (pool, test) = _RUN["data"], _RUN["features"][at]
    idx = k_shot_indices(data.target_pool, k, seed)
    accuracy, _, _ = transfer.train_head(pool[idx], data.target_pool.y[idx], test, data.target_test.y,
                                         _RUN["num_classes"], _RUN["budget"], seed, _RUN["device"])
    return accuracy


def run_layers(dataset="glyphs", ks=DEFAULT_K, seeds=3, device=None, out=None, log=print, steps=None):
    """The table {cut name: {k: {"accuracy": [one per seed]}}}, printed and (with out) saved. Every head
    trains with the proxy's budget (transfer.budgets_for), unless `steps` gives each that many steps."""
    device = backend.check_device(device)
    data = compare.check_run_options(dataset, ks, seeds, steps, out)
    start = time.perf_counter()
    source = transfer.source_model(data, device, log=log)
    cache = transfer.FeatureCache(log=log)
    budget = compare.budgets_for(dataset, ("proxy",), steps)["proxy"]
    num_classes = len(data.target_classes)
    log(f"{data.name}: a linear probe at every cut point of the source backbone, {seeds} seeds")
    features, sizes = {}, {}
    for at in transfer.cut_points(source):  # each layer's features of the pool and the test set, once
        trunk = transfer.cut(source, at)
        tag = f"{data.name}-{at}-{transfer.weights_hash(trunk)[:8]}"
        features[at] = transfer.cached_features(cache, trunk, tag, data.target_pool, data.target_test, at, device)
        sizes[at] = features[at][0].shape[1]
    _RUN.update(data=data, features=features, budget=budget, num_classes=num_classes, device=device)
    runs = [(at, k, seed) for at in features for k in ks for seed in range(seeds)]
    table = {}
    with contextlib.closing(parallel.map_runs(_one_head, runs, parallel.default_jobs(device))) as accuracies:
        for at in features:  # each row is printed as soon as its runs are done
            row = table[at] = {str(k): {"accuracy": [next(accuracies) for _ in range(seeds)]} for k in ks}
            log(f"  {at:<12} {sizes[at]:>5} features  " + "  ".join(
                f"k={k}: {statistics.fmean(row[str(k)]['accuracy']):.3f}" for k in ks))
    total = time.perf_counter() - start
    headers = ["cut point", "features"] + [f"k={k}" for k in ks]
    log("\nlinear probe accuracy on the held-out target test set, by the layer it reads (mean ± std over seeds)")
    log(report.table(headers, [[at, sizes[at]] + [report.mean_std(row[str(k)]["accuracy"]) for k in ks]
                               for at, row in table.items()]))
    log(f"\ntotal {total:.1f} s")
    if out:
        config = dict(dataset=dataset, k=[str(k) for k in ks], seeds=seeds, device=device, seconds=total,
                      feature_size=sizes, budget=budget.__dict__)
        save_json(out, "results.json", {"config": config, "table": table}, log)
        plot_depth(out, table, ks, sizes, dataset, log)
    return table


def plot_depth(folder, table, ks, sizes, dataset, log=print):
    """accuracy-vs-depth.png: one line per k, the cut points along the x axis."""
    plt = report.pyplot()
    if plt is None:
        log("(no plot: matplotlib is not installed; pip install 'minitl[lessons]')")
        return
    cuts = list(table)
    fig, ax = plt.subplots(figsize=(7, 4))
    for k in ks:
        ax.plot(range(len(cuts)), [statistics.fmean(table[c][str(k)]["accuracy"]) for c in cuts], marker="o",
                label=f"k={k}")
    ax.set_xticks(range(len(cuts)), [f"{c}\n({sizes[c]})" for c in cuts], fontsize=7)
    ax.set_xlabel("cut point (features)")
    ax.set_ylabel("target test accuracy")
    ax.set_title(f"{dataset}: a linear probe on each layer of the source network")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = report.save_figure(fig, folder, "accuracy-vs-depth.png")
    plt.close(fig)
    log(f"plot: {path}")
