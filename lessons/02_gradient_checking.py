"""Lesson 2: gradient checking.

What you will learn: how `minitl.gradcheck` proves a backward right, why it uses a
random upstream gradient, and how it catches a backward that is wrong.

Run it:  python lessons/02_gradient_checking.py [--quick] [--device cpu|cuda]

What to look for: every op of minitl passes; a backward that forgets to multiply by
the upstream gradient passes a check with an all-ones upstream gradient (the mistake
is invisible there) but fails minitl's check, which names the input, the index and
both values. Batch normalisation shows why: with sum() as the loss its input gradient
is exactly zero, whatever its backward does. Last, an op of your own, property-tested:
Hypothesis finds a broken backward and shrinks it to one element.
"""

# %%
import time

import numpy as np

import minitl as mt
import minitl.functional as F
from minitl.autograd import Function
from minitl.opspecs import OP_SPECS, make_inputs
from minitl.report import lesson_arguments, table

args = lesson_arguments(__doc__, globals().get("__file__"))

# ---- constants
SEED = 0
QUICK_OPS = ("add", "mul", "matmul", "sum", "max", "relu", "softmax", "conv2d", "max_pool2d", "cross_entropy",
             "batch_norm_training")

# %% [markdown]
# ## 1. Every op in minitl's op table, on inputs drawn away from its kinks
#
# For f(inputs) and a random upstream gradient g, backward gives d<g, f>/dx; central
# differences give the same number one element at a time. Float64, or rounding would
# swamp the comparison.

# %%
rows = []
for spec in OP_SPECS:
    if args.quick and spec.name not in QUICK_OPS:
        continue
    inputs = make_inputs(spec, np.random.default_rng(SEED), device=args.device)
    start = time.perf_counter()
    ok = mt.gradcheck(lambda *xs: spec.fn(*xs, **spec.params), inputs)
    rows.append([spec.name, " x ".join(str(s) for s in spec.shapes), "pass" if ok else "FAIL",
                 f"{(time.perf_counter() - start) * 1e3:.1f}"])


# %% [markdown]
# ## 2. A deliberately broken op: y = x^2 whose backward forgets gy

# %%
class BrokenSquare(Function):
    """y = x^2;  gx = 2x  (wrong: should be gy * 2x)"""
    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, gy):
        return 2 * self.x


x = mt.tensor(np.random.default_rng(SEED).uniform(0.5, 1.5, (3, 4)), requires_grad=True, device=args.device)

# With an all-ones upstream gradient (what y.sum().backward() sends), gy * 2x == 2x: the bug hides.
BrokenSquare()(x).sum().backward()
hidden = np.allclose(mt.backend.to_host(x.grad), 2 * x.numpy())
print("with an all-ones upstream gradient the broken backward looks right:", hidden)

# %% [markdown]
# ## 3. gradcheck draws a random upstream gradient, and the bug shows

# %%
try:
    mt.gradcheck(lambda t: BrokenSquare()(t), [x])
    caught = "not caught"
except mt.GradcheckError as e:
    caught = "caught"
    print("gradcheck says:", e)
rows.append(["BrokenSquare (forgets gy)", "(3, 4)", caught, ""])

# %% [markdown]
# ## 4. Why the upstream gradient must be random: batch normalisation
#
# In training mode batch norm subtracts each channel's mean, so the outputs of a
# channel always sum to zero. With sum() as the loss, the input gradient is therefore
# zero for ANY backward that keeps that property, right or wrong. A check built on
# sum() would prove nothing.

# %%
xb = mt.tensor(np.random.default_rng(SEED).standard_normal((4, 3)), requires_grad=True, device=args.device)
F.batch_norm(xb, None, None, training=True).sum().backward()
flat = np.abs(mt.backend.to_host(xb.grad)).max()
print(f"batch norm, sum() as the loss: largest input gradient {flat:.1e}")
bn_ok = mt.gradcheck(lambda t: F.batch_norm(t, None, None, training=True), [xb])
rows.append(["batch_norm, random upstream", "(4, 3)", "pass" if bn_ok else "FAIL", ""])

# %% [markdown]
# ## 5. Your own op, property-tested
#
# A check on one hand-made input tests one case. `minitl.testing.check_op` lets Hypothesis
# draw the shapes and the values (kept away from the kink at 0 with `domains="nonzero"`),
# runs gradcheck on each example, and when one fails it shrinks it to the smallest example
# that still fails. Here is a leaky ReLU with a mistake in its backward: the slope of the
# negative side is forgotten, so those elements get no gradient at all.

# %%
from minitl.testing import check_op, shape  # noqa: E402  (needs Hypothesis: it comes with the lessons extra)

SLOPE = 0.01


class LeakyReLU(Function):
    """y = x where x > 0, else SLOPE * x;  gx = gy where x > 0, else SLOPE * gy"""
    def forward(self, x):
        self.positive = x > 0
        return mt.backend.get_array_module(x).where(self.positive, x, SLOPE * x)

    def backward(self, gy):
        return gy * self.positive  # the mistake: the negative side should get SLOPE * gy, not 0


try:
    check_op(lambda t: LeakyReLU()(t), shapes=shape(), domains="nonzero", on=[args.device])
    leaky = "pass"
except mt.GradcheckError as e:
    leaky = "caught"
    print("check_op says:", e)
    print("the smallest example Hypothesis found that still fails:")
    print("\n".join("  " + note for note in e.__notes__ if note.startswith("Draw")))
rows.append(["LeakyReLU (forgets its slope), drawn", "drawn", leaky, ""])

print()
print(table(["op", "input shapes", "gradcheck", "ms"], rows))
assert all(r[2] in ("pass", "caught") for r in rows), "a gradient check failed"

# %% [markdown]
# ## Try this
#
# 1. In `BrokenSquare.backward`, return `gy * 2 * self.x`: gradcheck passes, the row says
#    "not caught" (there is nothing left to catch), and the lesson's last assert stops it
#    with "a gradient check failed": it was written to prove that the bug is caught.
# 2. Make it subtly wrong instead: `gy * 2.01 * self.x` (0.5% off) is caught, but
#    `gy * 2.001 * self.x` (0.05% off) passes, and the last assert stops the lesson as in
#    Try 1. A check has a resolution: here rtol=1e-3 of the value plus atol=1e-5,
#    PyTorch's tolerances.
# 3. Run `python -m minitl check`: the install doctor runs the same gradient check on every
#    op of the table, on every device found, one line per op, and ends with "all ops passed".
# 4. Fix `LeakyReLU.backward`: `return gy * mt.backend.get_array_module(gy).where(self.positive,
#    1.0, SLOPE)`. check_op now passes its 50 drawn examples, and the row says "pass". Then,
#    with the fix in place, set `domains="real"`: Hypothesis draws 0.0, where leaky ReLU has
#    no derivative, gradcheck fails there, the row says "caught" and the smallest failing
#    example printed is `tensor([0.])` (the reason for domains).
