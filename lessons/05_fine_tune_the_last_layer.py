"""Lesson 5: train only the last layer (the seed's algorithm).

What you will learn: the seed's recipe for reusing a source model on a new task: load
the source weights, crop the source output layer and put a new one with the target's
classes in its place (`replace_head`), freeze every other parameter, and train only
that last layer, theta_y. Then what freezing saves, against training every layer.

Words: the seed calls training theta_y with the source frozen "微调" (fine-tuning), and this
file's name follows it. minitl, like most of the literature since, calls that a *linear
probe* (`transfer.linear_probe`), and keeps *fine-tuning* (`transfer.fine_tune`) for
training every layer, the backbone at a smaller learning rate than the new head.

Run it:  python lessons/05_fine_tune_the_last_layer.py [--quick] [--device cpu|cuda]

What to look for: the frozen parameters are bit-identical after training; the learning
curves (training loss and target test accuracy against the step, from step 0) of the
frozen head and of full fine-tuning, and why the head's loss jumps above 10 in its first
steps; a frozen step records no graph for the backbone, so it is faster and holds far
less memory than a step that trains every layer; and, with PyTorch installed, a source
model trained in PyTorch going through a .safetensors file into minitl's recipe and back
into PyTorch with the same logits.
"""

# %%
import copy
import dataclasses
import os
import tracemalloc

import minitl as mt
import minitl.functional as F
from minitl import backend, data, training, transfer
from minitl.report import lesson_arguments, median_seconds, picture, save_picture, table

args = lesson_arguments(__doc__, globals().get("__file__"))

# ---- constants
K = 10                                              # labelled target examples per class
SEED = 0
PROBE = transfer.BUDGETS["linear_probe"]            # the head's budget, fixed in advance (see below)
FINE_TUNE = transfer.BUDGETS["fine_tune"]
if args.quick:
    PROBE, FINE_TUNE = (dataclasses.replace(b, steps=60, epochs=0.0) for b in (PROBE, FINE_TUNE))
EVERY = 20 if args.quick else 50                    # steps between two looks at the test accuracy

# %% [markdown]
# ## 1. The source model
#
# Lesson 4's weights from the cache folder, or trained now (seconds). It says which file
# it loaded and how well that model does on its own task.

# %%
glyphs = data.glyphs(seed=0)
source = transfer.source_model(glyphs, args.device, verbose=True)
print("source classes", glyphs.source_classes, "-> target classes", glyphs.target_classes)

# %% [markdown]
# ## 2. The target model, by hand
#
# A copy of the source with a new head, everything else frozen and in eval mode.

# %%
model = copy.deepcopy(source)
transfer.replace_head(model, num_classes=len(glyphs.target_classes), seed=SEED)
transfer.freeze(model.features)
model.features.eval()
print("trainable:", [name for name, p in model.named_parameters() if p.requires_grad])

# %% [markdown]
# ## 3. Train theta_y on K examples per class, watching it learn
#
# The article trains "until the target accuracy is good enough". minitl trains for a
# budget fixed in advance instead (`transfer.BUDGETS`, chosen on development data that
# is never reported): deciding when to stop by looking at the test accuracy would make
# the test accuracy a number we tuned, not one we measured. Here we only look, before the
# first step and then every EVERY steps, to draw the learning curves.
#
# `training.fit` is minitl's training loop: a number of Adam steps over shuffled batches,
# the learning rate decayed along a cosine, and `callback(step)` after every `every` steps.
# Section 2's model trains through it with only its head in the optimizer. Next to it,
# fine-tuning: a copy of the source with a new head, nothing frozen, the backbone at a tenth
# of the head's learning rate. `transfer.linear_probe` and `transfer.fine_tune` are these
# two recipes, packaged; with the same seed they end with the same accuracy (checked below).

# %%
train = data.k_shot(glyphs.target_pool, K, seed=SEED)
curves = {}


def train_watching(name, net, param_groups, budget):
    """fit() as the packaged recipes call it, with the test accuracy at step 0 and every EVERY steps;
    returns the losses: losses[s] is the loss of the model after s updates, computed before the next."""
    opt = mt.optim.Adam(param_groups, lr=budget.head_lr)
    loader = data.DataLoader(train.x, train.y, min(budget.batch_size, len(train)), shuffle=True, seed=SEED,
                             device=args.device)
    curves[name] = [(0, training.accuracy(net, glyphs.target_test, args.device))]   # the new head, untrained

    def watch(step):
        curves[name].append((step, training.accuracy(net, glyphs.target_test, args.device)))
    return training.fit(lambda x, y: F.cross_entropy(net(x), y), opt, loader, budget.steps_for(len(train)),
                        budget.schedule, callback=watch, every=EVERY)


every_layer = transfer.unfreeze(transfer.replace_head(copy.deepcopy(source), len(glyphs.target_classes), seed=SEED))
backbone_lr = FINE_TUNE.head_lr * FINE_TUNE.backbone_lr_scale
losses = {"last layer only": train_watching("last layer only", model, model.head.parameters(), PROBE),
          "every layer": train_watching("every layer", every_layer,
                                        [{"params": list(every_layer.features.parameters()), "lr": backbone_lr},
                                         {"params": list(every_layer.head.parameters())}], FINE_TUNE)}
probe = transfer.linear_probe(source, glyphs, train, PROBE, SEED, args.device)
full = transfer.fine_tune(source, glyphs, train, FINE_TUNE, SEED, args.device)
for name, packaged in (("last layer only", probe), ("every layer", full)):
    print(f"{name:<16} target test accuracy {curves[name][-1][1]:.3f} after {len(losses[name])} steps on "
          f"{len(train)} examples, {curves[name][0][1]:.3f} at step 0 (transfer.{packaged.method}: "
          f"{packaged.accuracy:.3f})")
    assert curves[name][-1][1] == packaged.accuracy, "the hand-made run and the packaged recipe should agree"

# %% [markdown]
# ## 4. The freeze contract: the frozen parameters did not move by a single bit

# %%
unchanged = all((mt.backend.to_host(v) == mt.backend.to_host(source.state_dict()["features." + k])).all()
                for m in (model, probe.model) for k, v in m.features.state_dict().items())
print("frozen parameters bit-identical:", unchanged)
assert unchanged

# %% [markdown]
# ## 5. The learning curves, and the head's first steps
#
# Both curves start at step 0: the new head, untrained, is near chance (1 in 5). The
# last layer's loss does not fall from the start: it jumps above 10 within its first steps,
# then falls. Adam's first update moves every weight by about its learning rate, whatever
# the size of its gradient (the update is m / sqrt(v), which at step 1 is g / |g|). The
# head reads 64 features that are all >= 0 (they come out of a ReLU) and large, so when a
# class's 64 weights move by 0.1 mostly in one direction, its logit moves by up to 0.1
# times the sum of the features, for every image at once: far past where it should be.
# Below, one such step on section 2's model with its head new again, and what it does to
# the logits of the K x 5 training images. Adam's later steps shrink as its second moment v
# fills in and the cosine lowers the rate, and the loss settles. Fine-tuning's head starts
# at 0.02, five times smaller, and its loss never rises above where it started.

# %%
x_train = mt.tensor(train.x, device=args.device)
first = transfer.replace_head(copy.deepcopy(model), len(glyphs.target_classes), seed=SEED)  # the untrained head again
with mt.no_grad():
    before = first(x_train).numpy()
    feature_sum = float(first.features(x_train).numpy().sum(axis=1).mean())
x, y = next(iter(data.DataLoader(train.x, train.y, min(PROBE.batch_size, len(train)), shuffle=True, seed=SEED,
                                 device=args.device)))
training.train_step(lambda x, y: F.cross_entropy(first(x), y), mt.optim.Adam(first.head.parameters(),
                                                                              lr=PROBE.head_lr), x, y)
with mt.no_grad():
    moved = first(x_train).numpy() - before
print(f"one Adam step of the head at lr {PROBE.head_lr}: each class's logit moved by "
      f"{' '.join(f'{v:+.1f}' for v in moved.mean(axis=0))} on average over the {len(train)} images; "
      f"lr x the features' mean sum: {PROBE.head_lr * feature_sum:.1f}")
for name, run_losses in losses.items():
    top = max(range(len(run_losses)), key=run_losses.__getitem__)
    print(f"{name:<16} loss at steps 0-5: {' '.join(f'{v:.2f}' for v in run_losses[:6])}; "
          f"largest {run_losses[top]:.2f} at step {top}")

plt = picture(args, "learning curves of the two methods")
if plt is not None:
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    for name, color in zip(losses, ("C0", "C1")):
        ax_loss.plot(range(len(losses[name])), losses[name], color=color, linewidth=0.8, label=name)
        steps, accs = zip(*curves[name])
        ax_acc.plot(steps, accs, "o-", color=color, label=name)
    ax_loss.set_yscale("log"), ax_loss.set_xlabel("step"), ax_loss.set_ylabel("training loss"), ax_loss.legend()
    ax_acc.set_xlabel("step"), ax_acc.set_ylabel("target test accuracy"), ax_acc.legend()
    save_picture(plt, fig, args, "learning_curves.png")


# %% [markdown]
# ## 6. What freezing saves: time and memory of one step, frozen backbone vs every layer
#
# A frozen backbone records no graph, so none of its activations are kept for a
# backward. Memory is measured with tracemalloc, which sees NumPy's buffers: on the
# CPU only (on a GPU the arrays live in the GPU's memory). A step that records a graph
# keeps its large arrays in minitl's workspace for the next step (no page faults then:
# see `backend.empty`), so the workspace is emptied first and tracemalloc sees all that
# one step needs.

# %%
def one_step(m, optimizer, x, y):
    loss = F.cross_entropy(m(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def measure(m, optimizer, x, y, repeat):
    """(median seconds per step, peak host memory of one step in bytes, None on a GPU)."""
    seconds = median_seconds(lambda: one_step(m, optimizer, x, y), args.device, repeat)
    if args.device != "cpu":
        return seconds, None
    backend.free_workspace()
    tracemalloc.start()
    one_step(m, optimizer, x, y)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak


everything = transfer.unfreeze(copy.deepcopy(model))
x_big = mt.tensor(glyphs.target_pool.x[:256], device=args.device)
y_big = glyphs.target_pool.y[:256]
repeat = 3 if args.quick else 15
t_frozen, m_frozen = measure(model, mt.optim.Adam(model.head.parameters()), x_big, y_big, repeat)
t_full, m_full = measure(everything, mt.optim.Adam(everything.parameters()), x_big, y_big, repeat)
memory = (["peak host memory (MiB)", f"{m_frozen / 2**20:.1f}", f"{m_full / 2**20:.1f}", f"{m_frozen / m_full:.2f}"]
          if m_full else ["peak memory", "not measured on a GPU", "", ""])
print()
print(table(["", "frozen backbone", "every layer", "frozen / every"], [
    ["ms per step (batch 256, median)", f"{t_frozen * 1e3:.1f}", f"{t_full * 1e3:.1f}", f"{t_frozen / t_full:.2f}"],
    memory,
    ["trainable parameters", sum(p.numel() for p in model.parameters() if p.requires_grad),
     sum(p.numel() for p in everything.parameters()), ""],
    [f"target test accuracy (k={K})", f"{probe.accuracy:.3f}", f"{full.accuracy:.3f}", ""],
    ["frozen weights unchanged", str(unchanged), "", ""],
]))
if m_full:
    assert m_frozen < m_full

# %% [markdown]
# ## 7. A model trained elsewhere: PyTorch in, the seed's recipe, PyTorch out
#
# The source model needs not come from minitl. Here PyTorch trains the same network (the
# same layer and state-dict names) on the source task; its weights go through a
# `.safetensors` file, the format model hubs use, into minitl; minitl runs the seed's recipe
# (new head, frozen backbone, train theta_y); and the result goes back into PyTorch, whose
# logits then match minitl's. Skipped, with one line, when PyTorch is not installed.

# %%
try:
    import torch
except ImportError:
    torch = None
    print("(section 7 skipped: PyTorch is not installed; pip install torch==2.13.0 gives the CPU build)")


if torch is not None:
    class TorchTwin(torch.nn.Module):
        """transfer.TransferCNN in PyTorch: the same layers under the same state-dict names."""

        def __init__(self, num_classes):
            super().__init__()
            tnn = torch.nn
            self.features = tnn.Sequential(tnn.Conv2d(1, 16, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
                                           tnn.Conv2d(16, 32, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
                                           tnn.Flatten(), tnn.Linear(32 * 4 * 4, 64), tnn.ReLU())
            self.head = tnn.Linear(64, num_classes)

        def forward(self, x):
            return self.head(self.features(x))


    torch.set_num_threads(1)  # PyTorch's thread pool and OpenBLAS's fight on a small machine
    torch.manual_seed(SEED)
    theirs = TorchTwin(len(glyphs.source_classes))
    torch_opt = torch.optim.Adam(theirs.parameters(), lr=transfer.SOURCE_LR)
    xs, ys = torch.from_numpy(glyphs.source_train.x), torch.from_numpy(glyphs.source_train.y)
    for _ in range(100 if args.quick else 300):  # PyTorch's own training loop, on the source task
        batch = torch.randint(0, len(ys), (transfer.SOURCE_BATCH,))
        loss = torch.nn.functional.cross_entropy(theirs(xs[batch]), ys[batch])
        torch_opt.zero_grad()
        loss.backward()
        torch_opt.step()
    path = os.path.join(args.out, "source_from_pytorch.safetensors")
    os.makedirs(args.out, exist_ok=True)
    mt.save(theirs.state_dict(), path)  # PyTorch's tensors, written as safetensors

    brought = transfer.model_for(glyphs, args.device)
    brought.load_state_dict(mt.load(path))
    print(f"PyTorch's model in minitl: source test accuracy {training.accuracy(brought, glyphs.source_test):.3f}")
    result = transfer.linear_probe(brought, glyphs, train, PROBE, SEED, args.device)  # the seed's recipe
    print(f"its new head, trained in minitl on k={K}: target test accuracy {result.accuracy:.3f}")

    back = TorchTwin(len(glyphs.target_classes))
    back.load_state_dict({k: torch.from_dlpack(backend.to_host(v)) for k, v in result.model.state_dict().items()})
    back.eval()
    x = glyphs.target_test.x[:64]
    gap = abs(back(torch.from_numpy(x)).detach().numpy() - backend.to_host(result.model(mt.tensor(
        x, device=args.device)).data)).max()
    print(f"back in PyTorch: the largest logit difference from minitl's is {gap:.1e}")
    assert gap < 1e-4

# %% [markdown]
# ## Try this
#
# 1. Set `K = 2`: ten training examples. Both methods drop, to 0.583 (last layer) and 0.604
#    (every layer) with seed 0; fine-tuning every layer still leads. (Two full runs on this
#    machine, OpenBLAS's SkylakeX kernel, gave the same numbers; with
#    `OPENBLAS_CORETYPE=Haswell` and a source model trained under it, 0.581 and 0.606. Quick
#    mode: 0.569 and 0.597.)
# 2. Delete the line `transfer.freeze(model.features)` in section 2: `trainable:` lists every
#    layer, and the table counts 37957 trainable parameters instead of 325. The head still
#    trains alone (its optimizer holds only the head's parameters) and the backbone's
#    weights are still bit-identical after it, but every step now records the backbone's
#    graph and computes its gradients for nothing: in section 6 the "frozen backbone" column
#    costs what "every layer" costs (both ratios about 1.0).
# 3. Give fine-tuning 20 steps instead of its budget: add the line `FINE_TUNE =
#    transfer.Budget(steps=20, head_lr=2e-2, schedule="cosine")` just above `EVERY = ...`
#    (below the quick-mode line, so that quick mode keeps it too): 0.787 instead of 0.899.
#    Its learning rate has decayed to zero by step 20, where the 200-step run's loss is
#    still falling steeply (section 5's picture).
