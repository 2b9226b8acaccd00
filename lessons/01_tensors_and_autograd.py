"""Lesson 1: tensors and autograd.

What you will learn: how minitl records the ops applied to tensors, how `backward()`
walks that record in reverse to give every input its gradient, and how to check a
gradient by hand with a finite difference.

Run it:  python lessons/01_tensors_and_autograd.py [--quick] [--device cpu|cuda]
(or open it as a notebook: every `# %%` line starts a cell)

What to look for: the graph printed in the order backward visits it; every gradient
from backward matches its finite difference to about 1e-9 (float64); an input used
twice gets the sum of both uses' gradients; where ReLU is off, gradients are exactly 0.
"""

# %%
import numpy as np

import minitl as mt
import minitl.functional as F
from minitl import autograd
from minitl.report import lesson_arguments, table

args = lesson_arguments(__doc__, globals().get("__file__"))

# ---- constants
EPS = 1e-6        # the finite-difference step
SEED = 0          # fixes the inputs

# %% [markdown]
# ## 1. Three small tensors that require gradients
#
# A tensor holds an array (`.data`) and, when an op made it, that op. NumPy float64
# arrays stay float64 (Python lists would become float32): finite differences need
# the precision.

# %%
rng = np.random.default_rng(SEED)
a = mt.tensor(rng.standard_normal((2, 3)), requires_grad=True, device=args.device)
b = mt.tensor(rng.standard_normal((3, 2)), requires_grad=True, device=args.device)
c = mt.tensor(rng.standard_normal(2), requires_grad=True, device=args.device)
print("a", a.shape, "b", b.shape, "c", c.shape, "dtype", a.dtype, "device", a.device)

# %% [markdown]
# ## 2. An expression: every op records itself because an input requires grad
#
# `h = a @ b + c` is a (2, 2) matrix (c is added to every row). `y` uses `a` twice:
# once through `h`, once in `(a * a).mean()`.

# %%
h = a @ b + c
y = (F.relu(h) * h).sum() + (a * a).mean()
print("h =\n", h.numpy())
off = [j for j in range(h.shape[1]) if (h.numpy()[:, j] < 0).all()]
print(f"y = {y.item():.6f}; columns of h that are negative in every row (ReLU is off there): {off}")

# %% [markdown]
# ## 3. The graph, in the order backward visits it
#
# Backward starts at `y` and hands each op the gradient of its output; an op sends
# gradients on to its inputs. Leaves (a, b, c) collect them in `.grad`.

# %%
names = {id(a): "a", id(b): "b", id(c): "c", id(h): "h", id(y): "y"}
order = list(reversed(autograd.graph_order(y)))
for i, t in enumerate(order):
    names.setdefault(id(t), f"t{i}")
for t in order:
    if t.grad_fn is None:
        print(f"  {names[id(t)]:<3} {str(t.shape):<8} a leaf: its gradient is kept in .grad")
    else:
        inputs = ", ".join(names.get(id(x), "a constant") for x in t.grad_fn.inputs)
        print(f"  {names[id(t)]:<3} {str(t.shape):<8} made by {type(t.grad_fn).__name__}({inputs})")

# %% [markdown]
# ## 4. Backward: one pass from y to a, b and c

# %%
y.backward()
print("a.grad has the shape of a:", a.grad.shape)

# %% [markdown]
# ## 5. An input used twice: its gradient is the sum of both paths
#
# Backward adds the contributions of every path that reaches a tensor. The same two
# paths, each alone:

# %%
path_h = mt.tensor(a.data, requires_grad=True)   # a fresh leaf with a's values
h_alone = path_h @ b.detach() + c.detach()
(F.relu(h_alone) * h_alone).sum().backward()
path_square = mt.tensor(a.data, requires_grad=True)
(path_square * path_square).mean().backward()
both = mt.backend.to_host(path_h.grad + path_square.grad)
print("largest difference between a.grad and the sum of the two paths:",
      f"{np.abs(mt.backend.to_host(a.grad) - both).max():.1e}")


# %% [markdown]
# ## 6. The same gradients by finite differences, one element at a time
#
# (y(x + eps) - y(x - eps)) / (2 eps) for each element. Where ReLU is off (the
# columns of h found above), y does not depend on that part of b and c near this
# point: backward and finite differences both give exactly 0.

# %%
def f():
    """y as a plain number, with no graph recorded."""
    with mt.no_grad():
        return ((F.relu(a @ b + c) * (a @ b + c)).sum() + (a * a).mean()).item()


rows, errors = [], []
for name, t in (("a", a), ("b", b), ("c", c)):
    host_grad = mt.backend.to_host(t.grad)
    for index in list(np.ndindex(*t.shape))[:3 if args.quick else None]:
        old = float(t.data[index])
        t.data[index] = old + EPS
        up = f()
        t.data[index] = old - EPS
        down = f()
        t.data[index] = old
        numeric = (up - down) / (2 * EPS)
        analytic = float(host_grad[index])
        errors.append(abs(analytic - numeric))
        rows.append([f"{name}{list(index)}", analytic, numeric, f"{errors[-1]:.1e}"])
worst = max(errors)

# %% [markdown]
# ## 7. no_grad: evaluation records nothing, so nothing is kept for backward

# %%
with mt.no_grad():
    z = a @ b
print("inside no_grad, z.requires_grad =", z.requires_grad, "and z.grad_fn =", z.grad_fn)

print()
print(table(["element", "backward", "finite difference", "difference"], rows))
print(f"\nlargest difference: {worst:.1e}")
assert worst < 1e-6, "backward and the finite differences disagree"

# %% [markdown]
# ## Try this
#
# 1. Replace `(a * a).mean()` by `(a * a).sum()` in section 2 and in section 6's `f`, and
#    `(path_square * path_square).mean()` by `(path_square * path_square).sum()` in section 5.
#    That path's gradient is now `2a` instead of `2a / 6`: `a.grad` changes, section 5 still
#    finds it is the exact sum of the two paths (0.0e+00), and the table still agrees (the
#    assert still passes).
# 2. Add 10 to `c` (`c = mt.tensor(rng.standard_normal(2) + 10, ...)`): h becomes positive
#    everywhere, the list of columns where ReLU is off is empty (`[]`), and no gradient is 0
#    any more. The differences grow, to 4.0e-08 here: y is now 334 instead of 0.48, and the
#    rounding of a difference of two large values grows with them; the assert still passes.
# 3. Set `EPS = 1e-2`: the differences do not grow, they fall (2.2e-11 at 1e-6, 3.1e-15
#    here): y is made of products and ReLUs, piecewise quadratic, and a central difference
#    is exact for a quadratic (its error needs a third derivative). Then try `1e-12`:
#    rounding error takes over (3.6e-05 here) and the lesson's assert stops it, as it
#    should: that is the disagreement it guards against.
