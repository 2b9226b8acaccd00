"""Convolution and pooling on NCHW tensors, through im2col and one matrix product.

im2col and col2im are plain array functions (no autograd), written once for
NumPy and CuPy with slices and slice-adds. Columns are laid out
(C*kh*kw, oh*ow*N), so a convolution is one large product W_mat @ col.

Memory layout: tensors are (N, C, H, W) to the user, as in PyTorch, but the
arrays conv2d makes are stored (C, H, W, N), batch innermost (`to_nchw` gives the
user's view, `to_chwn` takes it back, free of copies). Then every slice that
im2col copies or col2im adds is made of long contiguous runs (a row of pixels
times the whole batch), and the transposes around the matrix products cost nothing.
"""

from minitl import backend
from minitl.autograd import Function
from minitl.checks import check_float_input, is_int
from minitl.tensors import check_compatible, require_tensor


def _pair(value, name, op):
    pair = (value, value) if is_int(value) else tuple(value) if isinstance(value, (tuple, list)) else None
    if pair is None or len(pair) != 2 or not all(is_int(v) for v in pair):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def matmul(a, b, reuse):
    """a @ b of two matrices, written into a workspace array when reuse=True (see backend.empty)."""
    xp = backend.get_array_module(a)
    return xp.matmul(a, b, out=backend.empty((a.shape[0], b.shape[1]), a.dtype, xp, reuse))


def output_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def to_chwn(x):
    """The (C, H, W, N) view of an (N, C, H, W) array."""
    return x.transpose(1, 2, 3, 0)


def to_nchw(a):
    """The (N, C, H, W) view of a (C, H, W, N) array."""
    return a.transpose(3, 0, 1, 2)


def chwn_laid(a):
    """a (n, c, h, w) array stored batch innermost, as conv2d stores its outputs: itself when it
    already is (views included), else one copy. Pooling's backward takes its gradient through this,
    so its window loop never walks two layouts at once (docs/design-notes.md, the layout rule)."""
    n_stride = a.strides[0]
    if a.shape[0] == 1 or all(n_stride <= s for s, size in zip(a.strides, a.shape) if size > 1):
        return a
    return to_nchw(backend.get_array_module(a).ascontiguousarray(to_chwn(a)))


def zeros_nchw(shape, dtype, xp, reuse):
    """Zeros of shape (N, C, H, W), stored (C, H, W, N) like everything conv2d makes."""
    n, c, h, w = shape
    return to_nchw(backend.zeros((c, h, w, n), dtype, xp, reuse))


def _pad_chwn(x, ph, pw, reuse):
    """x (n, c, h, w) as a (c, h + 2ph, w + 2pw, n) array with a border of zeros (a view when no padding)."""
    if not (ph or pw):
        return to_chwn(x)
    xp = backend.get_array_module(x)
    n, c, h, w = x.shape
    xpad = backend.zeros((c, h + 2 * ph, w + 2 * pw, n), x.dtype, xp, reuse)
    xpad[:, ph:ph + h, pw:pw + w] = to_chwn(x)
    return xpad


def im2col(x, kh, kw, stride, padding, reuse=False):
    """(n, c, h, w) -> (c*kh*kw, oh*ow*n): column (oy, ox, i) holds the patch under output pixel
    (oy, ox) of image i, one row per (channel, kernel row, kernel column). reuse: take the arrays
    from the workspace (backend.empty)."""
    xp = backend.get_array_module(x)
    n, c, h, w = x.shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)
    xpad = _pad_chwn(x, ph, pw, reuse)  # (c, h + 2ph, w + 2pw, n)
    s_c, s_h, s_w, s_n = xpad.strides
    # Every window as a view, no copy yet: element (ch, i, j, oy, ox, b) is xpad[ch, oy*sh + i, ox*sw + j, b].
    windows = backend.as_strided(xpad, (c, kh, kw, oh, ow, n), (s_c, s_h, s_w, sh * s_h, sw * s_w, s_n))
    # One copy lays them out as columns (one kernel on a GPU, not one per kernel offset).
    col = backend.empty(windows.shape, x.dtype, xp, reuse)
    xp.copyto(col, windows)
    return col.reshape(c * kh * kw, oh * ow * n)


def col2im(col, x_shape, kh, kw, stride, padding, reuse=False):
    """The adjoint of im2col: add every column entry back onto the pixel it came from."""
    xp = backend.get_array_module(col)
    n, c, h, w = x_shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)
    col = col.reshape(c, kh, kw, oh, ow, n)
    gpad = backend.zeros((c, h + 2 * ph, w + 2 * pw, n), col.dtype, xp, reuse)
    for i in range(kh):
        for j in range(kw):
            # Windows overlap, so each offset adds its share (into a view: one op, no copy back).
            target = gpad[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
            target += col[:, i, j]
    return to_nchw(gpad[:, ph:ph + h, pw:pw + w])


class Conv2dFunction(Function):
    """y = W_mat @ im2col(x) + b;  gW = gy_mat @ col^T, gx = col2im(W_mat^T @ gy_mat), gb = sum of gy"""
    new_grads = True
    def __init__(self, stride, padding):
        self.stride, self.padding = stride, padding

    def forward(self, x, w, *b):
        n, _, h, wd = x.shape
        oc, _, kh, kw = w.shape
        self.x_shape, self.w_shape = x.shape, w.shape
        (sh, sw), (ph, pw) = self.stride, self.padding
        oh, ow = output_size(h, kh, sh, ph), output_size(wd, kw, sw, pw)
        reuse = any(self.needs_grad)  # recording a graph: its arrays live until backward (see backend.empty)
        col = im2col(x, kh, kw, self.stride, self.padding, reuse)
        w_mat = w.reshape(oc, -1)
        # Keep only what backward needs: col for the weight gradient, W for the input gradient.
        self.col = col if self.needs_grad[1] else None
        self.w_mat = w_mat if self.needs_grad[0] else None
        y = matmul(w_mat, col, reuse)
        if b:
            y += b[0][:, None]
        return to_nchw(y.reshape(oc, oh, ow, n))

    def backward(self, gy):
        oc, _, kh, kw = self.w_shape
        gy_mat = to_chwn(gy).reshape(oc, -1)  # no copy when gy is laid out like conv2d's output
        gx = gw = gb = None
        if self.needs_grad[0]:
            gcol = matmul(self.w_mat.T, gy_mat, reuse=True)
            gx = col2im(gcol, self.x_shape, kh, kw, self.stride, self.padding, reuse=True)
        if self.needs_grad[1]:
            # The same product either way round; OpenBLAS is up to 1.5x faster with the longer side
            # on the left (measured: 32x144 weights, 1.2 ms against 0.8 ms).
            gw = gy_mat @ self.col.T if oc >= self.col.shape[0] else (self.col @ gy_mat.T).T
            gw = gw.reshape(self.w_shape)
        if len(self.needs_grad) > 2 and self.needs_grad[2]:
            gb = gy_mat.sum(axis=1)
        return gx, gw, gb


def _check_4d(x, op):
    if x.ndim != 4:
        raise ValueError(f"{op}: expected a 4-D input (N, C, H, W), got shape {x.shape}")


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """2-D cross-correlation as in PyTorch: weight (out, in, kh, kw), NCHW input."""
    op = "conv2d"
    stride, padding = _pair(stride, "stride", op), _pair(padding, "padding", op)
    inputs = (x, weight) if bias is None else (x, weight, bias)
    check_compatible(op, *inputs)
    check_float_input(x, op)
    _check_4d(x, op)
    if weight.ndim != 4 or 0 in weight.shape:
        raise ValueError(f"{op}: weight must be 4-D (out, in, kh, kw) with no empty axis, got shape {weight.shape}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"{op}: input has {x.shape[1]} channels (shape {x.shape}) but weight of shape "
                         f"{weight.shape} expects {weight.shape[1]}")
    if min(stride) <= 0:
        raise ValueError(f"{op}: stride must be positive, got {stride}")
    if min(padding) < 0:
        raise ValueError(f"{op}: padding must be >= 0, got {padding}")
    kh, kw = weight.shape[2:]
    ph, pw = x.shape[2] + 2 * padding[0], x.shape[3] + 2 * padding[1]
    if kh > ph or kw > pw:
        raise ValueError(f"{op}: kernel {kh}x{kw} is larger than the padded input {ph}x{pw} "
                         f"(input shape {x.shape}, padding {padding})")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"{op}: bias has shape {bias.shape}, expected ({weight.shape[0]},)")
    return Conv2dFunction(stride, padding)(*inputs)


def _windows(kh, kw, stride, oh, ow):
    """The (row slice, column slice) of every offset (i, j) inside a pooling window."""
    sh, sw = stride
    for i in range(kh):
        for j in range(kw):
            yield slice(i, i + sh * (oh - 1) + 1, sh), slice(j, j + sw * (ow - 1) + 1, sw)


class MaxPool2dFunction(Function):
    """y = max over each window;  gx = gy sent to the first maximum of its window (PyTorch's rule)"""
    new_grads = True
    reads_inputs = False
    def __init__(self, kernel, stride):
        self.kernel, self.stride = kernel, stride

    def forward(self, x):
        xp = backend.get_array_module(x)
        (kh, kw), (sh, sw) = self.kernel, self.stride
        self.x_shape, self.dtype = x.shape, x.dtype
        self.oh, self.ow = output_size(x.shape[2], kh, sh, 0), output_size(x.shape[3], kw, sw, 0)
        windows = list(_windows(kh, kw, self.stride, self.oh, self.ow))
        # A running maximum over the window offsets k = 0, 1, ...; where a later offset is
        # strictly larger, its k (always larger than the index so far) becomes the index,
        # so ties keep the first maximum. Elementwise only: no argmax over a small axis.
        # Only backward reads the index: without a graph (a frozen backbone) it is not kept.
        first = x[:, :, windows[0][0], windows[0][1]]
        record = any(self.needs_grad)
        y = backend.empty_like(first, record)  # laid out like x
        xp.copyto(y, first)
        if record:  # one byte an index while a window has at most 127 offsets: 25% faster than int32
            index_type = xp.int8 if len(windows) <= 127 else xp.int32
            self.index = backend.empty_like(y, record, index_type)
            self.index.fill(0)
        for k, (r, c) in enumerate(windows[1:], start=1):
            v = x[:, :, r, c]
            if record:
                xp.maximum(self.index, (v > y) * index_type(k), out=self.index)  # (xp.where: 4x slower on NumPy)
            xp.maximum(y, v, out=y)
        return y

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        gy = chwn_laid(gy)
        overlap = self.stride[0] < self.kernel[0] or self.stride[1] < self.kernel[1]
        n, c, h, w = self.x_shape
        if self.stride == self.kernel and self.oh * self.stride[0] == h and self.ow * self.stride[1] == w:
            gx = to_nchw(backend.empty((c, h, w, n), self.dtype, xp, reuse=True))  # the windows write every pixel
        else:
            gx = zeros_nchw(self.x_shape, self.dtype, xp, reuse=True)
        for k, (r, c) in enumerate(_windows(*self.kernel, self.stride, self.oh, self.ow)):
            target = gx[:, :, r, c]
            if overlap:
                target += gy * (self.index == k)
            else:  # windows do not overlap: each pixel is written once, straight into the view
                xp.multiply(gy, self.index == k, out=target)
        return gx


class AvgPool2dFunction(Function):
    """y = mean over each window;  gx = gy / (kh*kw) added to every pixel of its window"""
    new_grads = True
    reads_inputs = False
    def __init__(self, kernel, stride):
        self.kernel, self.stride = kernel, stride

    def forward(self, x):
        xp = backend.get_array_module(x)
        (kh, kw), (sh, sw) = self.kernel, self.stride
        self.x_shape = x.shape
        self.oh, self.ow = output_size(x.shape[2], kh, sh, 0), output_size(x.shape[3], kw, sw, 0)
        windows = list(_windows(kh, kw, self.stride, self.oh, self.ow))
        first = x[:, :, windows[0][0], windows[0][1]]
        y = backend.empty_like(first, any(self.needs_grad))  # laid out like x
        xp.copyto(y, first)
        for r, c in windows[1:]:
            y += x[:, :, r, c]
        return y / (kh * kw)

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        kh, kw = self.kernel
        gx = zeros_nchw(self.x_shape, gy.dtype, xp, reuse=True)
        share = chwn_laid(gy) / (kh * kw)
        for r, c in _windows(kh, kw, self.stride, self.oh, self.ow):
            target = gx[:, :, r, c]
            target += share
        return gx


def _pool(function_class, op, x, kernel_size, stride):
    kernel = _pair(kernel_size, "kernel_size", op)
    stride = kernel if stride is None else _pair(stride, "stride", op)
    require_tensor(x, op)
    check_float_input(x, op)  # an integer image would wrap around in the window sums (uint8 200s -> 8.0)
    _check_4d(x, op)
    if min(kernel) <= 0 or min(stride) <= 0:
        raise ValueError(f"{op}: kernel_size and stride must be positive, got {kernel} and {stride}")
    if kernel[0] > x.shape[2] or kernel[1] > x.shape[3]:
        raise ValueError(f"{op}: window {kernel[0]}x{kernel[1]} is larger than the input "
                         f"{x.shape[2]}x{x.shape[3]} (shape {x.shape})")
    return function_class(kernel, stride)(x)


def max_pool2d(x, kernel_size, stride=None):
    """Max over kernel_size windows; stride defaults to kernel_size, as in PyTorch."""
    return _pool(MaxPool2dFunction, "max_pool2d", x, kernel_size, stride)


def avg_pool2d(x, kernel_size, stride=None):
    """Mean over kernel_size windows; stride defaults to kernel_size, as in PyTorch."""
    return _pool(AvgPool2dFunction, "avg_pool2d", x, kernel_size, stride)
