"""Lesson 8: when does transfer help, and which layer transfers?

What you will learn: to read transfer from evidence. On two pairs of tasks (glyphs to
other glyphs built from the same strokes; handwritten digits 0-4 to 5-9), the main
methods at few and many examples, and a linear probe on every layer of the source
network (`python -m minitl layers`): the question of Yosinski et al. (2014, "How
transferable are features in deep neural networks?"). Then CS231n's rule of thumb
(small or large target data, similar or different task) filled in with these numbers.

Run it:  python lessons/08_which_layer_transfers.py [--quick] [--device cpu|cuda]

What to look for: the layer tables (accuracy of a probe by depth), where the top
layer helps and where it hurts, whether the rule of thumb agrees with what the numbers
say, and what they say of the seed's reason for proxy collection. Every sentence this
lesson prints is computed from its own numbers.
"""

# %%
import statistics

from minitl.commands import compare
from minitl.commands.layer_probe import run_layers
from minitl.report import lesson_arguments, picture, save_picture, table

args = lesson_arguments(__doc__, globals().get("__file__"))

# ---- constants
DATASETS = ("glyphs", "digits")          # similar tasks (shared strokes), and a more different pair
SMALL, LARGE = 2, "all"                  # labelled target examples per class
SEEDS = 1 if args.quick else 3
STEPS = 30 if args.quick else None       # None: every method's converged budget (transfer.BUDGETS)
METHODS = ("scratch", "fine_tune")      # the linear probe is section 2's top layer


try:
    import sklearn  # noqa: F401  (the digits come from scikit-learn)
except ImportError:
    DATASETS = tuple(d for d in DATASETS if d != "digits")
    print("(the digits are skipped: scikit-learn is not installed; pip install 'minitl[lessons]')")


def mean(cell):
    return statistics.fmean(cell["accuracy"])


# %% [markdown]
# ## 1. The methods, at few and at many examples
#
# Training from scratch and fine-tuning every layer. The linear probe is the top row of
# section 2's layer table: a head on the source network's last features, trained from the
# cache (lesson 6), with the same budget, examples and seeds the comparison would use.

# %%
methods, layers = {}, {}
for dataset in DATASETS:
    methods[dataset] = compare.run_comparison(dataset, METHODS, (SMALL, LARGE), SEEDS, STEPS, args.device,
                                              log=lambda *line: None)
    for method, row in methods[dataset].items():
        print(f"  {dataset:<11} {method:<12} k={SMALL}: {mean(row[str(SMALL)]):.3f}  k={LARGE}: "
              f"{mean(row[str(LARGE)]):.3f}")

# %% [markdown]
# ## 2. A linear probe on every layer
#
# `input` is the raw pixels; then the end of every stage of the source backbone: conv1
# (after its ReLU), pool1, conv2, pool2, and the last hidden layer, whose 64 features
# the head reads.

# %%
for dataset in DATASETS:
    print(f"\n{dataset}:")
    layers[dataset] = run_layers(dataset, (SMALL, LARGE), SEEDS, args.device, steps=STEPS,
                                 log=lambda line: print(line) if line.startswith("  ") else None)
cuts = list(layers[DATASETS[0]])

plt = picture(args, "probe accuracy by layer, for both tasks")
if plt is not None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, dataset in zip(axes, DATASETS):
        for k in (SMALL, LARGE):
            ax.plot(range(len(cuts)), [mean(layers[dataset][c][str(k)]) for c in cuts], "o-", label=f"k={k}")
        ax.set_xticks(range(len(cuts)), cuts, rotation=30, fontsize=7)
        ax.set_title(dataset)
        ax.set_xlabel("layer read by the probe (input = raw pixels)")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("linear probe accuracy (target test)")   # the panels share their y axis
    save_picture(plt, fig, args, "accuracy_by_layer.png")


# %% [markdown]
# ## 3. What the layers say
#
# If the source network's top layer is the best layer to read, the source task taught
# features the target needs. If a lower layer (or the raw pixels) is better, the top
# layers are specific to the source task.

# %%
def best(table_, k):
    return max(table_, key=lambda c: mean(table_[c][str(k)]))


for dataset in DATASETS:
    t = layers[dataset]
    for k in (SMALL, LARGE):
        top, pixels, b = mean(t[cuts[-1]][str(k)]), mean(t["input"][str(k)]), best(t, k)
        if b == cuts[-1]:
            verdict = f"the top layer is the best one to read ({top:.3f}; raw pixels {pixels:.3f})"
        elif b == "input":
            verdict = f"the raw pixels ({pixels:.3f}) beat every layer of the source network (the top: {top:.3f})"
        else:
            verdict = f"{b} is the best layer ({mean(t[b][str(k)]):.3f}); the top gives {top:.3f}, pixels {pixels:.3f}"
        print(f"{dataset}, k={k}: {verdict}")

# %% [markdown]
# ## 4. CS231n's rule of thumb, with these numbers
#
# CS231n's transfer-learning notes: with little target data similar to the source,
# train a linear classifier on the top features; with much similar data, fine-tune;
# with little data from a different task, a linear classifier on earlier activations;
# with much different data, fine-tune everything (or train from scratch). Here the
# glyphs are the similar pair and the digits the different one; k=2 is small, all is
# large. For each cell, the best of: scratch, the linear probe on the top layer, the
# linear probe on the best layer, and fine-tuning.

# %%
SIMILAR = ("glyphs", "glyphs-hard")  # the target classes are drawn from the source's strokes; the rest are different
ADVICE = {("similar", SMALL): "linear probe on the top layer", ("similar", LARGE): "fine-tune",
          ("different", SMALL): "linear probe on an earlier layer", ("different", LARGE): "fine-tune or scratch"}
rows = []
for dataset in DATASETS:
    for k in (SMALL, LARGE):
        t, m = layers[dataset], methods[dataset]
        lower = max(cuts[1:-1], key=lambda c: mean(t[c][str(k)]))
        options = {"scratch": mean(m["scratch"][str(k)]),
                   "linear probe on the top layer": mean(t[cuts[-1]][str(k)]),
                   f"linear probe on {lower}": mean(t[lower][str(k)]), "fine-tune": mean(m["fine_tune"][str(k)]),
                   "linear probe on raw pixels": mean(t["input"][str(k)])}
        winner = max(options, key=options.get)
        kind = "similar" if dataset in SIMILAR else "different"
        advice = ADVICE[kind, k]
        advised = {"linear probe on the top layer": options["linear probe on the top layer"],
                   "fine-tune": options["fine-tune"],
                   "linear probe on an earlier layer": options[f"linear probe on {lower}"],
                   "fine-tune or scratch": max(options["fine-tune"], options["scratch"])}[advice]
        gap = options[winner] - advised
        size = "small" if k == SMALL else "large"
        rows.append([f"{size} (k={k}), {kind} ({dataset})", f"{advice} ({advised:.3f})",
                     f"{winner} ({options[winner]:.3f})",
                     "yes" if gap < 0.01 else f"no: {100 * gap:.1f} points behind"])
print()
print(table(["target data", "CS231n says (its number here)", "best here", "does the advice hold?"], rows))

# %% [markdown]
# ## 5. The seed's reason for a proxy, against these numbers
#
# The seed offers proxy collection for when "the source model may not give enough useful
# features": compute the source's features once, and train the head on them. Lesson 6
# showed that a head trained on cached features ends where the linear probe ends; the top
# layer's row of section 2's tables (`features.8`) is that head. So where the source's final
# features are not enough, a proxy of them is not either. Below, for each task and size, what those features
# give against the other features the source network offers (its earlier layers, or no
# network at all: the raw pixels), and against fine-tuning, which changes the features
# instead of reading them. In a full run here the glyphs' final features are the best
# features at k=2 (0.593, the raw pixels 0.289), fine-tuning still does better (0.666), and
# with every example pool2's 512 features beat them (0.982 against 0.968). On the digits
# they are far from enough at k=2 (0.439, the raw pixels 0.811, pool1 0.768): there a proxy
# of the pixels or of pool1 (features.2) does better than a proxy of the final features.

# %%
proxy_rows = []
for dataset in DATASETS:
    t, m = layers[dataset], methods[dataset]
    for k in (SMALL, LARGE):
        top = mean(t[cuts[-1]][str(k)])
        other = max(cuts[:-1], key=lambda c: mean(t[c][str(k)]))   # the best of the pixels and the earlier layers
        gap = mean(t[other][str(k)]) - top
        proxy_rows.append([f"{dataset}, k={k}", f"{top:.3f}", f"{other} ({mean(t[other][str(k)]):.3f})",
                           f"{mean(m['fine_tune'][str(k)]):.3f}",
                           "yes" if gap <= 0 else f"no: {100 * gap:.1f} points behind {other}"])
print()
print(table(["target data", "final features (a proxy of them)", "best other features", "fine-tune",
             "the best features the source gives?"], proxy_rows))
if args.quick:
    print(f"(quick mode: every method and head trained {STEPS} steps, far from converged; read a full run's numbers)")

# %% [markdown]
# ## Try this
#
# 1. Add `"proxy"` and `"linear_probe"` to `METHODS`: their numbers equal the top layer's
#    row of section 2 (`features.8`), seed by seed (the same heads on the same features),
#    and the lesson takes longer (the linear probe runs the backbone at every step).
# 2. Set `DATASETS = ("glyphs", "glyphs-hard")`: a noisier target, the same source strokes.
#    In a full run the probe still prefers the top layer at k=2 (0.437, the raw pixels
#    0.234) and pool2 (`features.5`) with every example (0.822 against the top's 0.781), as
#    on the clean glyphs, with a wider gap; CS231n's advice holds in both rows.
# 3. Run `python -m minitl layers --dataset digits --out out/`: the same table for k = 2
#    to all, with a plot of accuracy against depth in `out/` (`--quick`: k=2 and all, in
#    seconds).
