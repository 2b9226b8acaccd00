"""Lesson 7: regularised fine-tuning, L = CE + lambda * R.

What you will learn: fine-tuning every layer lets the backbone adapt, but with
few examples it can also drift away from what made it useful. A regulariser R
measures how far the target model has moved from the source model and lambda
sets how hard it is pulled back:
  - feature MSE (DELTA-style): R = mean (f_hat(x) - f(x))^2, the fine-tuned and the
    frozen source backbone's features of the same batch (a mean: lambda ~ 0.1 to 10);
  - L2-SP: R = 1/2 sum ||w - w_source||^2 over the backbone's weights (a sum over
    ~38k weights: lambda ~ 1e-3 to 1).

Run it:  python lessons/07_regularized_fine_tuning.py [--quick] [--device cpu|cuda]

What to look for: lambda = 0 is plain fine-tuning; a very large lambda freezes the
backbone in effect (the linear probe); in between is the trade-off, at small k
and at large k. Read the table, not the hopes: the best lambda may be 0.
"""

import statistics

from minitl import data, transfer
from minitl.report import lesson_arguments, table

args = lesson_arguments(__doc__)

# ---- constants
KS = (2, "all")                                      # few labelled examples, and all of them
SEEDS = 1 if args.quick else 3
BUDGET = transfer.Budget(steps=60 if args.quick else 200)
LAMBDAS = {
    "feature_mse": (0.0, 1.0) if args.quick else (0.0, 0.1, 1.0, 10.0, 100.0),
    "l2sp": (0.0, 0.01) if args.quick else (0.0, 0.001, 0.01, 0.1, 1.0),
}

# ---- 1. the source model
glyphs = data.glyphs(seed=0)
source = transfer.source_model(glyphs, args.device)

# ---- 2. the sweep: every regulariser, every lambda, every k, several seeds
rows = []
for regularizer, lambdas in LAMBDAS.items():
    for lam in lambdas:
        row = [regularizer, lam]
        for k in KS:
            accs = []
            for seed in range(SEEDS):
                train = data.k_shot(glyphs.target_pool, k, seed)
                result = transfer.fine_tune(source, glyphs, train, BUDGET, seed, args.device, regularizer, lam)
                accs.append(result.accuracy)
            spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
            row.append(f"{statistics.fmean(accs):.3f} ± {spread:.3f}")
        rows.append(row)
        print(f"  {regularizer:<12} lambda={lam:<6} " + "  ".join(f"k={k}: {r}" for k, r in zip(KS, row[2:])))

# ---- 3. the reference points: the linear probe (the backbone cannot move at all)
probe_row = ["linear probe", "-"]
for k in KS:
    accs = [transfer.linear_probe(source, glyphs, data.k_shot(glyphs.target_pool, k, seed), BUDGET, seed,
                                  args.device).accuracy for seed in range(SEEDS)]
    probe_row.append(f"{statistics.fmean(accs):.3f}")
rows.append(probe_row)

print()
print(table(["regulariser", "lambda"] + [f"k={k}" for k in KS], rows))
