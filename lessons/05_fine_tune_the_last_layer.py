"""Lesson 5: fine-tune only the last layer (the seed's algorithm).

What you will learn: the seed's recipe for reusing a source model on a new task:
load the source weights, crop the source output layer and put a new one with the
target's classes in its place (`replace_head`), freeze every other parameter, and
train only that last layer, theta_y.

Run it:  python lessons/05_fine_tune_the_last_layer.py [--quick] [--device cpu|cuda]

What to look for: the frozen parameters are bit-identical after training; a
frozen step records no graph for the backbone, so it is faster and holds far less
memory than a step that trains every layer.
"""

import copy
import time
import tracemalloc

import minitl as mt
import minitl.functional as F
from minitl import data, training, transfer
from minitl.report import lesson_arguments, table

args = lesson_arguments(__doc__)

# ---- constants
K = 10                                  # labelled target examples per class
STEPS = 60 if args.quick else 200       # the head's training budget, fixed in advance
BATCH = 32
HEAD_LR = 1e-2
SEED = 0

# ---- 1. the source model: lesson 4's weights from the cache folder, or trained now (seconds)
glyphs = data.glyphs(seed=0)
source = transfer.source_model(glyphs, args.device)
print("source classes", glyphs.source_classes, "-> target classes", glyphs.target_classes)

# ---- 2. the target model: a copy of the source with a new head, everything else frozen
model = copy.deepcopy(source)
transfer.replace_head(model, num_classes=len(glyphs.target_classes), seed=SEED)
transfer.freeze(model.features)
model.features.eval()                 # inference mode for the frozen part (matters once it has dropout)
trainable = [name for name, p in model.named_parameters() if p.requires_grad]
print("trainable:", trainable)
before = {k: v.copy() for k, v in model.features.state_dict().items()}

# ---- 3. train theta_y on K examples per class
train = data.k_shot(glyphs.target_pool, K, seed=SEED)
opt = mt.optim.Adam(model.head.parameters(), lr=HEAD_LR)
loader = data.DataLoader(train.x, train.y, BATCH, shuffle=True, seed=SEED, device=args.device)
step, start = 0, time.perf_counter()
while step < STEPS:
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step == STEPS:
            break
train_seconds = time.perf_counter() - start
acc = training.accuracy(model, glyphs.target_test, args.device)
print(f"target test accuracy after {STEPS} steps on {len(train)} examples: {acc:.3f}")

# ---- 4. the freeze contract: frozen parameters did not move by a single bit
unchanged = all((before[k] == v).all() for k, v in model.features.state_dict().items())
print("frozen parameters bit-identical:", unchanged)


# ---- 5. what freezing saves: time and peak memory of one step, frozen backbone vs every layer training
def one_step(m, optimizer, x, y):
    loss = F.cross_entropy(m(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def measure(m, optimizer, x, y, repeat):
    one_step(m, optimizer, x, y)                    # warm up
    start = time.perf_counter()
    for _ in range(repeat):
        one_step(m, optimizer, x, y)
    mt.backend.synchronize(x.device)
    seconds = (time.perf_counter() - start) / repeat
    tracemalloc.start()                             # sees NumPy's buffers (host memory only)
    one_step(m, optimizer, x, y)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak


everything = transfer.unfreeze(copy.deepcopy(model))
x_big = mt.tensor(glyphs.target_pool.x[:256], device=args.device)
y_big = glyphs.target_pool.y[:256]
repeat = 3 if args.quick else 10
t_frozen, m_frozen = measure(model, opt, x_big, y_big, repeat)
t_full, m_full = measure(everything, mt.optim.Adam(everything.parameters(), lr=1e-3), x_big, y_big, repeat)

print()
print(table(["", "frozen backbone", "every layer", "frozen / every"], [
    ["ms per step (batch 256)", f"{t_frozen * 1e3:.1f}", f"{t_full * 1e3:.1f}", f"{t_frozen / t_full:.2f}"],
    ["peak host memory (MiB)", f"{m_frozen / 2**20:.1f}", f"{m_full / 2**20:.1f}", f"{m_frozen / m_full:.2f}"],
    ["trainable parameters", sum(p.numel() for p in model.parameters() if p.requires_grad),
     sum(p.numel() for p in everything.parameters()), ""],
    ["target test accuracy", f"{acc:.3f}", "", ""],
    ["frozen weights unchanged", str(unchanged), "", ""],
]))
