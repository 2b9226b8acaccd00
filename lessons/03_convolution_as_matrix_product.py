"""Lesson 3: a convolution is one matrix product.

What you will learn: how im2col lays every patch of an image out as a column, so
that a convolution with all its filters becomes a single matrix product; how it does
so with a strided view (`as_strided`) of images stored batch innermost, (C, H, W, N);
how col2im sends gradients back to the pixels; and how max pooling picks and routes.

Run it:  python lessons/03_convolution_as_matrix_product.py [--quick] [--device cpu|cuda]

What to look for: the shapes at every step; the matrix-product result equals the
four-loop definition to rounding; the gradient check passes; and im2col + one
product is many times faster than the loops.
"""

# %%
import numpy as np

import minitl as mt
import minitl.functional as F
from minitl.report import lesson_arguments, median_seconds, table

args = lesson_arguments(__doc__, globals().get("__file__"))

# ---- constants
N, C, H, W = (2, 3, 8, 8) if args.quick else (8, 3, 16, 16)   # a batch of images
OC, KH, KW = 4, 3, 3                                           # 4 filters of 3x3
STRIDE, PAD = 1, 1
SEED = 0

# %% [markdown]
# ## 0. im2col on something small enough to read
#
# One image, one channel, 3x3 pixels numbered 1 to 9, a 2x2 kernel, no padding: the
# output is 2x2, so im2col makes 4 columns, one per output pixel, each holding the 4
# pixels under the kernel there.

# %%
tiny = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
print("image\n", tiny[0, 0])
print("im2col(image, 2x2): one column per output pixel (top-left, top-right, bottom-left, bottom-right)\n",
      F.im2col(tiny, 2, 2, (1, 1), (0, 0)))

# %% [markdown]
# ## 1. im2col on a batch: one column per output pixel of each image
#
# One row per (channel, kernel row, kernel column).

# %%
rng = np.random.default_rng(SEED)
x = rng.standard_normal((N, C, H, W))
w = rng.standard_normal((OC, C, KH, KW))
b = rng.standard_normal(OC)
cols = F.im2col(x, KH, KW, (STRIDE, STRIDE), (PAD, PAD))
OH, OW = (H + 2 * PAD - KH) // STRIDE + 1, (W + 2 * PAD - KW) // STRIDE + 1
print(f"x            {x.shape}   (N, C, H, W)")
print(f"im2col(x)    {cols.shape}   (C*KH*KW, OH*OW*N) = ({C}*{KH}*{KW}, {OH}*{OW}*{N})")

# %% [markdown]
# ## 2. Inside im2col: the batch innermost, a strided view, one copy
#
# An array is a block of memory and, for each axis, a stride: how many bytes to step to
# reach the next index along it. minitl's convolution stores its arrays (C, H, W, N):
# channel, row, column, and the batch last, innermost in memory. You still see (N, C, H, W),
# as in PyTorch, through a transposed view (`.transpose(3, 0, 1, 2)`; `.transpose(1, 2, 3, 0)`
# goes back): a transpose only reorders the strides, nothing is copied. With the batch
# innermost, one pixel of all N images is one contiguous run of memory, so every copy
# im2col makes moves runs N times longer than in (N, C, H, W), and the product's result,
# (OC, OH*OW*N), is already the output in that layout: section 3 reshapes and transposes it,
# views again (docs/design-notes.md says more).
#
# `as_strided(a, shape, strides)` (NumPy's `np.lib.stride_tricks`, CuPy's too) makes a view
# of a's memory with any shape and strides you give it: no copy, and no check, so strides
# that reach past the array read whatever memory lies there. im2col asks for a view of six
# axes (C, KH, KW, OH, OW, N) whose element (c, i, j, oy, ox, n) is the padded pixel
# xpad[c, oy*STRIDE + i, ox*STRIDE + j, n]: along c, i, j and n it steps as xpad does,
# along oy and ox STRIDE rows or columns at a time. Every window, overlapping, is in that
# view without a byte copied; one copy then lays the view out as the (C*KH*KW, OH*OW*N)
# matrix of columns.

# %%
xpad = np.pad(x, ((0, 0), (0, 0), (PAD, PAD), (PAD, PAD))).transpose(1, 2, 3, 0).copy()  # stored (C, H, W, N)
s_c, s_h, s_w, s_n = xpad.strides
print(f"xpad         {xpad.shape}   (C, H+2*PAD, W+2*PAD, N); strides in bytes {xpad.strides}: the same pixel "
      f"of the next image is {s_n} bytes on, the next pixel of a row {s_w}")
print(f"seen as (N, C, H, W): shape {xpad.transpose(3, 0, 1, 2).shape}, strides {xpad.transpose(3, 0, 1, 2).strides}, "
      f"the same memory: {np.shares_memory(xpad, xpad.transpose(3, 0, 1, 2))}")
windows = np.lib.stride_tricks.as_strided(xpad, (C, KH, KW, OH, OW, N),
                                          (s_c, s_h, s_w, STRIDE * s_h, STRIDE * s_w, s_n))
print(f"windows      {windows.shape}   (C, KH, KW, OH, OW, N), a view of xpad's memory: "
      f"{np.shares_memory(windows, xpad)}")
cols_by_hand = windows.reshape(C * KH * KW, OH * OW * N)   # a reshape of this view cannot be a view: the one copy
print(f"as_strided and one copy against F.im2col: largest difference {np.abs(cols_by_hand - cols).max():.1e}")

# %% [markdown]
# ## 3. Every filter as a row: W_mat @ cols computes all filters at all positions at once

# %%
w_mat = w.reshape(OC, -1)
print(f"W as rows    {w_mat.shape}   (OC, C*KH*KW)")
y_mat = w_mat @ cols + b[:, None]
print(f"W_mat @ cols {y_mat.shape}   (OC, OH*OW*N)")
# the columns run over (output row, output column, image), so the batch axis comes last: move it first
y = y_mat.reshape(OC, OH, OW, N).transpose(3, 0, 1, 2)
print(f"y            {y.shape}   (N, OC, OH, OW)")


# %% [markdown]
# ## 4. The definition, by loops: each output is a patch times a filter, summed
#
# Timed after a warm-up, with the device synchronised before each clock read
# (a GPU runs ahead of Python), as the median of a few runs.

# %%
def conv_loops(x, w, b):
    xp = np.pad(x, ((0, 0), (0, 0), (PAD, PAD), (PAD, PAD)))
    out = np.zeros((N, OC, OH, OW))
    for n in range(N):
        for o in range(OC):
            for i in range(OH):
                for j in range(OW):
                    patch = xp[n, :, i * STRIDE:i * STRIDE + KH, j * STRIDE:j * STRIDE + KW]
                    out[n, o, i, j] = (patch * w[o]).sum() + b[o]
    return out


xt, wt_, bt = (mt.tensor(a, device=args.device) for a in (x, w, b))
y_loops = conv_loops(x, w, b)
y_conv = F.conv2d(xt, wt_, bt, STRIDE, PAD).numpy()
t_loops = median_seconds(lambda: conv_loops(x, w, b), args.device, 1 if args.quick else 3)
t_conv = median_seconds(lambda: F.conv2d(xt, wt_, bt, STRIDE, PAD), args.device, 5 if args.quick else 20)
print(f"\nlargest difference, product vs loops: {np.abs(y - y_loops).max():.1e}; "
      f"conv2d vs loops: {np.abs(y_conv - y_loops).max():.1e}")

# %% [markdown]
# ## 5. Backward
#
# With gy_mat the upstream gradient laid out like y_mat: gW = gy_mat @ cols^T, and
# gx = col2im(W_mat^T @ gy_mat): each column goes back to the pixels of its patch,
# adding where patches overlap.

# %%
gy = rng.standard_normal((N, OC, OH, OW))
gy_mat = gy.transpose(1, 2, 3, 0).reshape(OC, -1)   # (OC, OH*OW*N), the columns' order
gw_by_hand = (gy_mat @ cols.T).reshape(w.shape)
gx_by_hand = F.col2im(w_mat.T @ gy_mat, x.shape, KH, KW, (STRIDE, STRIDE), (PAD, PAD))
xt = mt.tensor(x, requires_grad=True, device=args.device)
wt = mt.tensor(w, requires_grad=True, device=args.device)
F.conv2d(xt, wt, None, STRIDE, PAD).backward(gy)
print(f"gW by hand vs backward: {np.abs(gw_by_hand - mt.backend.to_host(wt.grad)).max():.1e}; "
      f"gx: {np.abs(gx_by_hand - mt.backend.to_host(xt.grad)).max():.1e}")

# gradcheck perturbs one element at a time, so it runs on a small slice of the batch
small = [mt.tensor(a, requires_grad=True, device=args.device) for a in (x[:1, :, :5, :5].copy(), w, b)]
conv_ok = mt.gradcheck(lambda x, w, b: F.conv2d(x, w, b, STRIDE, PAD), small)

# %% [markdown]
# ## 6. Max pooling: each 2x2 window keeps its largest value; backward sends gy to that one pixel

# %%
pool_in = mt.tensor(rng.permutation(16).reshape(1, 1, 4, 4).astype(float), requires_grad=True, device=args.device)
pooled = F.max_pool2d(pool_in, 2)
pooled.sum().backward()
print("\npool input\n", pool_in.numpy()[0, 0], "\nmax_pool2d(2)\n", pooled.numpy()[0, 0],
      "\ngradient: 1 where each maximum was\n", mt.backend.to_host(pool_in.grad)[0, 0])
distinct = rng.permutation(32).reshape(1, 2, 4, 4) * 0.1  # no ties: max is not differentiable at a tie
pool_ok = mt.gradcheck(lambda t: F.max_pool2d(t, 2), [mt.tensor(distinct, requires_grad=True, device=args.device)])

print()
print(table(["check", "result"], [
    ["conv2d == four loops", f"max difference {np.abs(y_conv - y_loops).max():.1e}"],
    ["conv2d gradcheck", "pass" if conv_ok else "FAIL"],
    ["max_pool2d gradcheck", "pass" if pool_ok else "FAIL"],
    ["time: loops", f"{t_loops * 1e3:.1f} ms"],
    ["time: im2col + one product", f"{t_conv * 1e3:.2f} ms on {args.device} ({t_loops / t_conv:.0f}x faster)"],
]))
assert np.abs(y_conv - y_loops).max() < 1e-9 and conv_ok and pool_ok

# %% [markdown]
# ## Try this
#
# 1. Set `STRIDE, PAD = 2, 0`: the output shrinks to 7x7 at the full size (3x3 quick), and
#    im2col makes 392 columns instead of 2048 (7*7*8 against 16*16*8), about a fifth; in
#    quick mode 18 instead of 128 (3*3*2 against 8*8*2), about a seventh. The loops still
#    agree.
# 2. In section 0, use a 3x3 kernel on the 3x3 image (`F.im2col(tiny, 3, 3, (1, 1), (0, 0))`):
#    one output pixel, one column holding all nine pixels.
# 3. Time the first call of `F.conv2d` on its own: in section 4, put `start = time.perf_counter()`
#    above `y_conv = F.conv2d(xt, wt_, bt, STRIDE, PAD).numpy()` and
#    `print(f"first call of conv2d: {(time.perf_counter() - start) * 1e3:.2f} ms")` below it
#    (with `import time` at the top). On a GPU the first call is far slower than the median
#    (CuPy compiles its kernels then), which is why benchmarks warm up. On this CPU it is
#    slower too, less so: 0.61 to 0.65 ms against a median of 0.07 to 0.11 ms in three full
#    runs here (the first call also sets up the workspace the next calls reuse).
