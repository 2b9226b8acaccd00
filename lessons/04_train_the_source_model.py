"""Lesson 4: train the source model.

What you will learn: the training loop (forward, loss, zero_grad, backward, step)
on the source task of the glyph dataset: five glyph classes (cross, ring,
triangle, tee, square). The network is the one every later lesson reuses: conv,
pool, conv, pool, linear (`features`) and a last Linear (`head`).

Run it:  python lessons/04_train_the_source_model.py [--quick] [--device cpu|cuda]

What to look for: the loss falls from log(5) = 1.61 towards 0 and the source test
accuracy passes 95%. The weights are saved with mt.save where
`transfer.source_model` looks for them, so lesson 5 loads them instead of training.
"""

import time

import minitl as mt
import minitl.functional as F
from minitl import data, training, transfer
from minitl.report import lesson_arguments, out_path, pyplot, save_plot, table

args = lesson_arguments(__doc__)

# ---- constants: the same recipe transfer.source_model uses, so the saved file is the one it expects
STEPS = 100 if args.quick else transfer.SOURCE_STEPS
BATCH = transfer.SOURCE_BATCH
LR = transfer.SOURCE_LR
SEED = 0
EVAL_EVERY = 25 if args.quick else 100

# ---- 1. the data: generated on the fly, deterministic from the seed
glyphs = data.glyphs(seed=SEED)
print(f"source train {glyphs.source_train.x.shape}, test {glyphs.source_test.x.shape}, "
      f"classes {glyphs.source_classes}")

# ---- 2. the model and the optimizer
mt.manual_seed(SEED)
model = transfer.model_for(glyphs, args.device)
print(model)
opt = mt.optim.Adam(model.parameters(), lr=LR)
loader = data.DataLoader(glyphs.source_train.x, glyphs.source_train.y, BATCH, shuffle=True, seed=SEED,
                         device=args.device)

# ---- 3. the training loop: a fixed number of steps, cycling through shuffled epochs
losses, checkpoints = [], []
start = time.perf_counter()
batches = iter(loader)
for step in range(1, STEPS + 1):
    try:
        x, y = next(batches)
    except StopIteration:        # an epoch is over: reshuffle
        batches = iter(loader)
        x, y = next(batches)
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    losses.append(loss.item())
    if step % EVAL_EVERY == 0 or step == STEPS:
        acc = training.accuracy(model, glyphs.source_test, args.device)
        checkpoints.append([step, sum(losses[-EVAL_EVERY:]) / len(losses[-EVAL_EVERY:]), acc,
                            f"{time.perf_counter() - start:.1f}"])
        print(f"step {step:4d}  loss {checkpoints[-1][1]:.3f}  source test accuracy {acc:.3f}")

# ---- 4. save the weights (a temp file renamed into place: a crash never leaves half a file)
if args.quick:  # a shorter recipe than source_model's: keep it out of the shared cache
    path = out_path(__file__, "source-quick.npz")
else:
    path = transfer.source_model_path(glyphs, SEED)
mt.save(model.state_dict(), path)
print(f"saved {len(model.state_dict())} arrays to {path}")

# ---- 5. the loss curve
plt = pyplot()
if plt is not None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(losses, linewidth=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.set_title("source model: training loss")
    fig.tight_layout()
    print("plot:", save_plot(fig, __file__, "04_loss_curve.png"))

print()
print(table(["step", "mean loss", "test accuracy", "seconds"], checkpoints))
