"""Lesson 2: gradient checking.

What you will learn: how `minitl.gradcheck` proves a backward right, why it uses a
random upstream gradient, and how it catches a backward that is wrong.

Run it:  python lessons/02_gradient_checking.py [--quick] [--device cpu|cuda]

What to look for: every op of minitl passes; a backward that forgets to multiply
by the upstream gradient passes a check with an all-ones upstream gradient (the
mistake is invisible there) but fails minitl's check, which names the input,
the index and both values.
"""

import time

import numpy as np

import minitl as mt
from minitl.autograd import Function
from minitl.opspecs import OP_SPECS, make_inputs
from minitl.report import lesson_arguments, table

args = lesson_arguments(__doc__)

# ---- constants
SEED = 0
QUICK_OPS = ("add", "mul", "matmul", "sum", "max", "relu", "softmax", "conv2d", "max_pool2d", "cross_entropy")

# ---- 1. every op in minitl's op table, on inputs drawn away from its kinks
rows = []
for spec in OP_SPECS:
    if args.quick and spec.name not in QUICK_OPS:
        continue
    inputs = make_inputs(spec, np.random.default_rng(SEED), device=args.device or "cpu")
    start = time.perf_counter()
    ok = mt.gradcheck(lambda *xs: spec.fn(*xs, **spec.params), inputs)
    rows.append([spec.name, " x ".join(str(s) for s in spec.shapes), "pass" if ok else "FAIL",
                 f"{(time.perf_counter() - start) * 1e3:.1f}"])


# ---- 2. a deliberately broken op: y = x^2 whose backward forgets gy
class BrokenSquare(Function):
    """y = x^2;  gx = 2x  (wrong: should be gy * 2x)"""
    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, gy):
        return 2 * self.x


x = mt.tensor(np.random.default_rng(SEED).uniform(0.5, 1.5, (3, 4)), requires_grad=True, device=args.device)

# With an all-ones upstream gradient (what y.sum().backward() sends), gy * 2x == 2x: the bug hides.
x.grad = None
BrokenSquare()(x).sum().backward()
hidden = np.allclose(mt.backend.to_host(x.grad), 2 * x.numpy())
print("with an all-ones upstream gradient the broken backward looks right:", hidden)

# ---- 3. gradcheck draws a random upstream gradient, and the bug shows
try:
    mt.gradcheck(lambda t: BrokenSquare()(t), [x])
    caught = "not caught"
except mt.GradcheckError as e:
    caught = "caught"
    print("gradcheck says:", e)
rows.append(["BrokenSquare (forgets gy)", "(3, 4)", caught, ""])

print()
print(table(["op", "input shapes", "gradcheck", "ms"], rows))
