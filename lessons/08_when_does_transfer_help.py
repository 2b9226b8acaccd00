"""Lesson 8: when does transfer help?

What you will learn: transfer pays when labelled target data is scarce and the
source task taught features the target needs. Here: accuracy against k (labelled
examples per class) for training from scratch, the linear probe and fine-tuning,
on the generated glyphs and on real handwritten digits (scikit-learn's, source
digits 0-4, target digits 5-9).

Run it:  python lessons/08_when_does_transfer_help.py [--quick] [--device cpu|cuda]

What to look for: the gap between transfer and scratch at small k, and the k
where scratch catches up. The conclusion printed at the end is computed from
the numbers above it, on this run: it says what happened, even where transfer
does not help.
"""

import statistics

from minitl import data, transfer
from minitl.report import lesson_arguments, pyplot, save_plot, table

args = lesson_arguments(__doc__)

# ---- constants
KS = (2, "all") if args.quick else (2, 5, 10, 20, "all")
SEEDS = 1 if args.quick else 3
BUDGET = transfer.Budget(steps=60 if args.quick else 200)
METHODS = ("scratch", "linear_probe", "fine_tune")

# ---- 1. the datasets (the digits need scikit-learn)
datasets = [data.glyphs(seed=0)]
try:
    datasets.append(data.digits())
except ImportError as e:
    print(f"skipping the digits half: {e}")

# ---- 2. every method, every k, several seeds
results = {}   # (dataset, method) -> [mean accuracy per k]
rows = []
for d in datasets:
    source = transfer.source_model(d, args.device)
    for method in METHODS:
        means = []
        for k in KS:
            accs = [transfer.run_method(method, source, d, data.k_shot(d.target_pool, k, seed), None, BUDGET, seed,
                                        args.device).accuracy for seed in range(SEEDS)]
            means.append(statistics.fmean(accs))
        results[d.name, method] = means
        rows.append([d.name, method] + means)
        print(f"  {d.name:<7} {method:<13} " + "  ".join(f"k={k}: {m:.3f}" for k, m in zip(KS, means)))

# ---- 3. the plot: one panel per dataset
plt = pyplot()
if plt is not None:
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.5), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        for method in METHODS:
            ax.plot([str(k) for k in KS], results[d.name, method], marker="o", label=method)
        ax.set_title(d.name)
        ax.set_xlabel("labelled examples per class (k)")
        ax.set_ylabel("target test accuracy")
        ax.legend()
    fig.tight_layout()
    print("plot:", save_plot(fig, __file__, "08_accuracy_vs_k.png"))

# ---- 4. the conclusion, from the numbers
print()
print(table(["dataset", "method"] + [f"k={k}" for k in KS], rows))
print()
for d in datasets:
    scratch = results[d.name, "scratch"]
    best = [max(results[d.name, "linear_probe"][i], results[d.name, "fine_tune"][i]) for i in range(len(KS))]
    gain = [(b - s) * 100 for b, s in zip(best, scratch)]
    if gain[0] > 2:
        caught = next((k for k, g in zip(KS, gain) if g <= 1), None)
        later = f"scratch comes within a point of it at k={caught}" if caught else "scratch never catches up here"
        print(f"{d.name}: transfer helps: +{gain[0]:.0f} points over scratch at k={KS[0]}, "
              f"{gain[-1]:+.0f} at k={KS[-1]}; {later}.")
    else:
        print(f"{d.name}: transfer does not help: the best transfer method is {gain[0]:+.0f} points against "
              f"scratch at k={KS[0]} and {gain[-1]:+.0f} at k={KS[-1]}. The source task did not teach features "
              f"this target needs (or the target is easy enough to learn from scratch).")
