"""How many steps each method needs to converge, measured on development data (never a test set).

    python -m benchmarks.budgets [--dataset glyphs|digits] [--k 2,10,all] [--steps 100,200,400,800,1600]
    python -m benchmarks.budgets --check [--dataset ...]     each chosen budget against twice its steps

For every method, k and candidate step count, one run with that budget (cosine schedule)
on minitl.data.development_data: its development accuracy and its training loss (mean of
the last tenth of its steps). A budget has converged when a longer one no longer changes
the accuracy beyond noise and the loss has flattened. The linear probe's budget is measured
through the proxy (the same computation from cached features, a hundred times cheaper).
The chosen budgets live in minitl/transfer.py (BUDGETS); the results go to
benchmarks/results/budgets-DATASET.json.
"""

import argparse
import dataclasses
import statistics
import time

from benchmarks.common import write_results
from minitl import backend, data, transfer

METHODS = ("scratch", "proxy", "fine_tune", "fine_tune+feature_mse", "fine_tune+l2sp")


def measure(dataset, ks, candidates, seeds, log=print):
    dev = data.development_data(dataset)
    source = transfer.source_model(dev, log=log)
    cache = transfer.FeatureCache(log=lambda *a: None)
    rows = []
    for method in METHODS:
        base = transfer.budgets_for(dataset)[method]
        for k in ks:
            for steps in candidates:
                budget = dataclasses.replace(base, steps=steps, epochs=0.0, max_steps=0)
                accs, tails, secs = [], [], []
                for seed in range(seeds):
                    train = data.k_shot(dev.target_pool, k, seed)
                    start = time.perf_counter()
                    r = transfer.run_method(method, source, dev, train, cache, budget, seed)
                    secs.append(time.perf_counter() - start)
                    accs.append(r.accuracy)
                    tails.append(statistics.fmean(r.losses[-max(1, steps // 10):]))
                row = dict(method=method, k=str(k), steps=steps, accuracy=statistics.fmean(accs),
                           final_loss=statistics.fmean(tails), seconds=statistics.fmean(secs))
                rows.append(row)
                log(f"  {method:<22} k={str(k):<4} steps={steps:<5} dev accuracy {row['accuracy']:.3f}  "
                    f"final loss {row['final_loss']:.4f}  ({row['seconds']:.2f} s/run)")
    return rows


def check(dataset, ks, seeds, log=print):
    """Each method's chosen budget against twice its steps: converged when neither the development
    accuracy nor the training loss moves much."""
    dev = data.development_data(dataset)
    source = transfer.source_model(dev, log=log)
    cache = transfer.FeatureCache(log=lambda *a: None)
    rows = []
    for method in METHODS:
        chosen = transfer.budgets_for(dataset)[method]
        for k in ks:
            out = {}
            for label, factor in (("chosen", 1), ("double", 2)):
                accs, tails, steps = [], [], 0
                for seed in range(seeds):
                    train = data.k_shot(dev.target_pool, k, seed)
                    steps = chosen.steps_for(len(train)) * factor
                    budget = dataclasses.replace(chosen, steps=steps, epochs=0.0, max_steps=0)
                    r = transfer.run_method(method, source, dev, train, cache, budget, seed)
                    accs.append(r.accuracy)
                    tails.append(statistics.fmean(r.losses[-max(1, steps // 10):]))
                out[label] = dict(steps=steps, accuracy=statistics.fmean(accs), final_loss=statistics.fmean(tails))
            row = dict(method=method, k=str(k), **{f"{a}_{b}": v for a, d in out.items() for b, v in d.items()})
            rows.append(row)
            log(f"  {method:<22} k={str(k):<4} {out['chosen']['steps']:>5} steps: dev {out['chosen']['accuracy']:.3f} "
                f"loss {out['chosen']['final_loss']:.4f} | {out['double']['steps']:>5} steps: dev "
                f"{out['double']['accuracy']:.3f} loss {out['double']['final_loss']:.4f} | change "
                f"{100 * (out['double']['accuracy'] - out['chosen']['accuracy']):+.1f} points")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="glyphs")
    parser.add_argument("--k", default="2,10,all")
    parser.add_argument("--steps", default="100,200,400,800,1600")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--check", action="store_true", help="each chosen budget (transfer.BUDGETS) against twice it")
    args = parser.parse_args()
    backend.tune_malloc()
    from minitl.compare import parse_k
    ks, candidates = parse_k(args.k), [int(s) for s in args.steps.split(",")]
    if args.check:
        rows = check(args.dataset, ks, args.seeds)
        print(f"results: {write_results('budgets-check-' + args.dataset, rows)}")
    else:
        rows = measure(args.dataset, ks, candidates, args.seeds)
        print(f"results: {write_results('budgets-' + args.dataset, rows)}")


if __name__ == "__main__":
    main()
