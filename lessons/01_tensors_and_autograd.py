"""Lesson 1: tensors and autograd.

What you will learn: how minitl records the ops applied to tensors, how
`backward()` walks that record in reverse to give every input its gradient, and
how to check a gradient by hand with a finite difference.

Run it:  python lessons/01_tensors_and_autograd.py [--quick] [--device cpu|cuda]

What to look for: every gradient from backward matches its finite difference to
about 1e-9 (float64), and the gradient of an input used twice is the sum of both uses.
"""

import numpy as np

import minitl as mt
import minitl.functional as F
from minitl.report import lesson_arguments, table

args = lesson_arguments(__doc__)

# ---- constants
EPS = 1e-6        # the finite-difference step
SEED = 0          # fixes the inputs

# ---- 1. three small tensors that require gradients
# float64 arrays stay float64 (Python lists would become float32): finite differences need the precision.
rng = np.random.default_rng(SEED)
a = mt.tensor(rng.standard_normal((2, 3)), requires_grad=True, device=args.device)
b = mt.tensor(rng.standard_normal((3, 2)), requires_grad=True, device=args.device)
c = mt.tensor(rng.standard_normal(2), requires_grad=True, device=args.device)
print("a", a.shape, "b", b.shape, "c", c.shape, "dtype", a.dtype, "device", a.device)

# ---- 2. an expression: every op records itself because an input requires grad
h = a @ b + c                   # (2, 2); c is broadcast over the rows
y = (F.relu(h) * h).sum() + (a * a).mean()   # `a` is used twice: its gradient adds both paths
print("h was made by", type(h._creator).__name__, "; y =", round(y.item(), 6))

# ---- 3. backward: one pass from y back to a, b and c
y.backward()
print("a.grad has the shape of a:", a.grad.shape)


# ---- 4. the same gradients by finite differences, one element at a time
def f():
    """y as a plain number, with no graph recorded."""
    with mt.no_grad():
        return ((F.relu(a @ b + c) * (a @ b + c)).sum() + (a * a).mean()).item()


rows = []
for name, t in (("a", a), ("b", b), ("c", c)):
    for index in list(np.ndindex(*t.shape))[:3 if args.quick else None]:
        old = float(t.data[index])
        t.data[index] = old + EPS
        up = f()
        t.data[index] = old - EPS
        down = f()
        t.data[index] = old
        numeric = (up - down) / (2 * EPS)
        analytic = float(t.grad[index])
        rows.append([f"{name}{list(index)}", analytic, numeric, f"{abs(analytic - numeric):.1e}"])

# ---- 5. no_grad: evaluation records nothing, so nothing is kept for backward
with mt.no_grad():
    z = a @ b
print("inside no_grad, z.requires_grad =", z.requires_grad)

print()
print(table(["element", "backward", "finite difference", "difference"], rows))
