"""How many steps each method needs to converge, measured on development data (never a test set).

    python -m benchmarks.budgets [--dataset glyphs|digits] [--k 2,10,all] [--steps 100,200,400,800,1600]
    python -m benchmarks.budgets --check [--dataset ...]     each chosen budget against twice its steps
    python -m benchmarks.budgets --reference [--dataset ...] the table's probe against logistic regression
    python -m benchmarks.budgets --lambdas [--dataset ...]   the regularisers' lambda, re-checked

For every method, k and candidate step count, one run with that budget (cosine schedule)
on minitl.data.development_data: its development accuracy and its training loss (mean of
the last tenth of its steps). A budget has converged when a longer one no longer changes
the accuracy beyond noise and the loss has flattened. The linear probe's budget is measured
through the proxy (the same computation from cached features, a hundred times cheaper).
The chosen budgets live in minitl/transfer/budgets.py (BUDGETS); the results go to
benchmarks/results/budgets-DATASET.json.
"""

import argparse
import dataclasses
import statistics
import sys
import time

from benchmarks.common import write_results
from minitl import data, transfer

METHODS = ("scratch", "proxy", "fine_tune", "fine_tune+feature_mse", "fine_tune+l2sp")


def development(dataset, log):
    """The development data, its source model and a quiet feature cache."""
    dev = data.development_data(dataset)
    return dev, transfer.source_model(dev, log=log), transfer.FeatureCache(log=lambda *a: None)


def over_seeds(method, dev, source, cache, k, seeds, steps_of, base):
    """One method at one k, a run per seed with `steps_of(train)` steps (base's other settings):
    the mean development accuracy, final training loss (the last tenth of the steps) and seconds."""
    accs, tails, secs, steps = [], [], [], 0
    for seed in range(seeds):
        train = data.k_shot(dev.target_pool, k, seed)
        steps = steps_of(train)
        budget = dataclasses.replace(base, steps=steps, epochs=0.0, max_steps=0)
        start = time.perf_counter()
        r = transfer.run_method(method, source, dev, train, cache, budget, seed)
        secs.append(time.perf_counter() - start)
        accs.append(r.accuracy)
        tails.append(statistics.fmean(r.losses[-max(1, steps // 10):]))
    return dict(steps=steps, accuracy=statistics.fmean(accs), final_loss=statistics.fmean(tails),
                seconds=statistics.fmean(secs))


def measure(dataset, ks, candidates, seeds, log=print):
    dev, source, cache = development(dataset, log)
    rows = []
    for method in METHODS:
        base = transfer.budgets_for(dataset)[method]
        for k in ks:
            for steps in candidates:
                row = dict(method=method, k=str(k), **over_seeds(method, dev, source, cache, k, seeds,
                                                                 lambda train: steps, base))
                rows.append(row)
                log(f"  {method:<22} k={str(k):<4} steps={steps:<5} dev accuracy {row['accuracy']:.3f}  "
                    f"final loss {row['final_loss']:.4f}  ({row['seconds']:.2f} s/run)")
    return rows


def check(dataset, ks, seeds, log=print):
    """Each method's chosen budget against twice its steps: converged when neither the development
    accuracy nor the training loss moves much."""
    dev, source, cache = development(dataset, log)
    rows = []
    for method in METHODS:
        chosen = transfer.budgets_for(dataset)[method]
        for k in ks:
            out = {label: over_seeds(method, dev, source, cache, k, seeds,
                                     lambda train: chosen.steps_for(len(train)) * factor, chosen)
                   for label, factor in (("chosen", 1), ("double", 2))}
            row = dict(method=method, k=str(k), **{f"{a}_{b}": v for a, d in out.items() for b, v in d.items()})
            rows.append(row)
            log(f"  {method:<22} k={str(k):<4} {out['chosen']['steps']:>5} steps: dev {out['chosen']['accuracy']:.3f} "
                f"loss {out['chosen']['final_loss']:.4f} | {out['double']['steps']:>5} steps: dev "
                f"{out['double']['accuracy']:.3f} loss {out['double']['final_loss']:.4f} | change "
                f"{100 * (out['double']['accuracy'] - out['chosen']['accuracy']):+.1f} points")
    return rows


def reference(dataset, seeds, log=print):
    """The table's linear probe at k=all (its budget, on the reported data) against a converged reference
    head on the same features: scikit-learn's logistic regression on the whole target pool."""
    from sklearn.linear_model import LogisticRegression
    d = data.load_dataset(dataset)
    source = transfer.source_model(d, log=log)
    cache = transfer.FeatureCache(log=lambda *a: None)
    pool = cache.features(source.features, d.target_pool, f"reference-{d.name}-pool")
    test = cache.features(source.features, d.target_test, f"reference-{d.name}-test")
    row = dict(dataset=dataset)
    for c in (1.0, 1e4):
        fit = LogisticRegression(C=c, max_iter=20000).fit(pool, d.target_pool.y)
        row[f"sklearn_C={c:g}"] = float(fit.score(test, d.target_test.y))
    budget = transfer.budgets_for(dataset)["proxy"]
    row["table_probe"] = statistics.fmean(
        transfer.train_head(pool, d.target_pool.y, test, d.target_test.y, len(d.target_classes), budget, seed)[0]
        for seed in range(seeds))
    log(f"  {dataset}: table's probe at k=all {row['table_probe']:.3f}; logistic regression C=1 "
        f"{row['sklearn_C=1']:.3f}, C=1e4 {row['sklearn_C=10000']:.3f}")
    return [row]


def lambdas(dataset, seeds, log=print):
    """The regularisers' strength, re-checked on the development data with the fine-tuning budget:
    development accuracy at k=2 and 5 for a few values of lambda (0: plain fine-tuning)."""
    dev = data.development_data(dataset)
    source = transfer.source_model(dev, log=log)
    budget = transfer.budgets_for(dataset)["fine_tune"]
    rows = []
    for regularizer, values in (("feature_mse", (0.0, 0.03, 0.1, 0.3, 1.0)), ("l2sp", (0.001, 0.01, 0.1))):
        for lam in values:
            row = dict(regularizer=regularizer, lam=lam)
            for k in (2, 5):
                row[f"k={k}"] = statistics.fmean(
                    transfer.fine_tune(source, dev, data.k_shot(dev.target_pool, k, seed), budget, seed,
                                       regularizer=regularizer, lam=lam).accuracy for seed in range(seeds))
            rows.append(row)
            log(f"  {regularizer:<12} lambda={lam:<6} dev accuracy k=2 {row['k=2']:.3f}, k=5 {row['k=5']:.3f}")
    return rows


def main():
    if hasattr(sys.stdout, "reconfigure"):  # each line reaches a pipe or a log file when it is printed
        sys.stdout.reconfigure(line_buffering=True)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="glyphs")
    parser.add_argument("--k", default="2,10,all")
    parser.add_argument("--steps", default="100,200,400,800,1600")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--check", action="store_true", help="each chosen budget (transfer.BUDGETS) against twice it")
    parser.add_argument("--lambdas", action="store_true", help="the regularisers' lambda on the development data")
    parser.add_argument("--reference", action="store_true",
                        help="the table's probe at k=all against a logistic regression on the same features")
    args = parser.parse_args()
    from minitl.commands.compare import parse_k
    ks, candidates = parse_k(args.k), [int(s) for s in args.steps.split(",")]
    if args.lambdas:
        rows = lambdas(args.dataset, 4)
        print(f"results: {write_results('budgets-lambdas-' + args.dataset, rows)}")
    elif args.reference:
        rows = reference(args.dataset, 3)
        print(f"results: {write_results('budgets-reference-' + args.dataset, rows)}")
    elif args.check:
        rows = check(args.dataset, ks, args.seeds)
        print(f"results: {write_results('budgets-check-' + args.dataset, rows)}")
    else:
        rows = measure(args.dataset, ks, candidates, args.seeds)
        print(f"results: {write_results('budgets-' + args.dataset, rows)}")


if __name__ == "__main__":
    main()
