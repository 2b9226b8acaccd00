"""The primitive ops: elementwise arithmetic, the matrix product, reductions, shape ops, indexing,
casts and moves. Each is a Function with its forward and backward side by side (minitl/autograd.py),
and a function that checks its operands and calls it; Tensor's operators call these functions.
"""

import builtins

from minitl import backend
from minitl.autograd import Function
from minitl.checks import is_int
from minitl.tensors import Tensor, _checked_cast, _new_tensor, _operands, broadcast_shape


def unbroadcast(g, shape):
    """Sum g over the axes that broadcasting added or stretched, back to `shape`."""
    if g.shape == tuple(shape):
        return g
    extra = g.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(extra + i for i, n in enumerate(shape) if n == 1 and g.shape[extra + i] != 1)
    g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape) if extra else g


def _binary(fn_class, a, b, op):
    a, b = _operands(a, b, op)
    broadcast_shape(a.shape, b.shape, op)
    return fn_class()(a, b)


# ---------------------------------------------------------------- elementwise ops

class Add(Function):
    """y = a + b;  ga = gy, gb = gy (summed over broadcast axes)"""
    reads_inputs = False
    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        return a + b

    def backward(self, gy):
        ga = unbroadcast(gy, self.a_shape) if self.needs_grad[0] else None
        gb = unbroadcast(gy, self.b_shape) if self.needs_grad[1] else None
        return ga, gb


def add(a, b):
    return _binary(Add, a, b, "add")


class Sub(Function):
    """y = a - b;  ga = gy, gb = -gy"""
    reads_inputs = False
    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        return a - b

    def backward(self, gy):
        ga = unbroadcast(gy, self.a_shape) if self.needs_grad[0] else None
        gb = -unbroadcast(gy, self.b_shape) if self.needs_grad[1] else None
        return ga, gb


def sub(a, b):
    return _binary(Sub, a, b, "sub")


class Mul(Function):
    """y = a * b;  ga = gy * b, gb = gy * a"""
    new_grads = True
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, gy):
        ga = unbroadcast(gy * self.b, self.a.shape) if self.needs_grad[0] else None
        gb = unbroadcast(gy * self.a, self.b.shape) if self.needs_grad[1] else None
        return ga, gb


def mul(a, b):
    return _binary(Mul, a, b, "mul")


class Div(Function):
    """y = a / b;  ga = gy / b, gb = -gy * a / b**2"""
    new_grads = True
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, gy):
        ga = unbroadcast(gy / self.b, self.a.shape) if self.needs_grad[0] else None
        gb = unbroadcast(-gy * self.a / (self.b * self.b), self.b.shape) if self.needs_grad[1] else None
        return ga, gb


def div(a, b):
    """True division. Of two integer tensors it is float32, as in PyTorch (NumPy would give float64,
    and minitl never goes to float64 unasked): an integer tensor divided by 2, or averaged."""
    a, b = _operands(a, b, "div")
    if backend.is_integer(a.dtype) and backend.is_integer(b.dtype):
        a, b = _new_tensor(a.data.astype(backend.float32)), _new_tensor(b.data.astype(backend.float32))
    broadcast_shape(a.shape, b.shape, "div")
    return Div()(a, b)


class Neg(Function):
    """y = -x;  gx = -gy"""
    new_grads = True
    reads_inputs = False
    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy


def neg(x):
    return Neg()(x)


class Pow(Function):
    """y = x ** c for a constant c;  gx = gy * c * x ** (c - 1)"""
    new_grads = True
    def __init__(self, c):
        self.c = c

    def forward(self, x):
        self.x = x
        return x ** self.c

    def backward(self, gy):
        return gy * self.c * self.x ** (self.c - 1)


def pow(x, c):
    if isinstance(c, Tensor) or isinstance(c, bool) or not isinstance(c, (int, float)):
        raise TypeError(f"pow: the exponent must be a Python number, got {type(c).__name__}")
    c = float(c) if isinstance(c, float) else int(c)  # np.float64(2) would make a float32 tensor float64
    if isinstance(c, float) and not backend.is_float(x.dtype):
        x = x.float()  # an integer tensor to a float power: float32, as in PyTorch (NumPy gives float64)
    return Pow(c)(x)


class Exp(Function):
    """y = exp(x);  gx = gy * y"""
    new_grads = True
    reads_inputs = False
    saves_output = True
    def forward(self, x):
        self.y = backend.get_array_module(x).exp(x)
        return self.y

    def backward(self, gy):
        return gy * self.y


def exp(x):
    return Exp()(x)


class Log(Function):
    """y = log(x);  gx = gy / x"""
    new_grads = True
    def forward(self, x):
        self.x = x
        return backend.get_array_module(x).log(x)

    def backward(self, gy):
        return gy / self.x


def log(x):
    return Log()(x)


# ---------------------------------------------------------------- matrix product

class MatMul(Function):
    """y = a @ b;  ga = gy @ b^T, gb = a^T @ gy (batch axes broadcast)"""
    new_grads = True
    def forward(self, a, b):
        self.a, self.b = a, b
        return a @ b

    def backward(self, gy):
        ga = unbroadcast(gy @ self.b.swapaxes(-1, -2), self.a.shape) if self.needs_grad[0] else None
        gb = unbroadcast(self.a.swapaxes(-1, -2) @ gy, self.b.shape) if self.needs_grad[1] else None
        return ga, gb


def matmul(a, b):
    a, b = _operands(a, b, "matmul")
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"matmul: both operands need at least 2 dimensions, got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not match "
                         f"({a.shape[-1]} columns against {b.shape[-2]} rows)")
    broadcast_shape(a.shape[:-2], b.shape[:-2], "matmul (batch axes)")
    return MatMul()(a, b)


# ---------------------------------------------------------------- reductions

def _normalize_axes(axis, ndim, op):
    """axis (None, int or tuple) as a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if not isinstance(axis, (tuple, list)) else tuple(axis)
    for a in axes:
        if not is_int(a):
            raise TypeError(f"{op}: axis must be an integer or a tuple of integers, got {axis!r}")
        if not -ndim <= a < builtins.max(ndim, 1):
            raise ValueError(f"{op}: axis {a} is out of range for a tensor with {ndim} dimensions")
    normalized = tuple(sorted(a % builtins.max(ndim, 1) for a in axes))
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"{op}: axis {axis!r} names an axis twice")
    return normalized


def _keepdims_shape(shape, axes):
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _spread(gy, shape, row_major, axes):
    """A reduction's gradient: gy (reduced over axes) at every position of the input's shape. Written
    into a new row-major array when the input was one (NumPy's broadcast_to alone costs 5 us); a
    broadcast view otherwise, which the next elementwise op reads in the input's own layout. (Sum and
    Mean do not promise new gradients, new_grads, as the view is not one: a leaf copies either.)"""
    gy = gy.reshape(_keepdims_shape(shape, axes))
    xp = backend.get_array_module(gy)
    if not row_major:
        return xp.broadcast_to(gy, shape)
    gx = xp.empty(shape, gy.dtype)
    gx[...] = gy
    return gx


class Sum(Function):
    """y = sum of x over axes;  gx = gy at every position of x"""
    reads_inputs = False
    def __init__(self, axes, keepdims):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x):
        self.x_shape, self.x_row_major = x.shape, x.flags.c_contiguous
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        return _spread(gy, self.x_shape, self.x_row_major, self.axes)


def sum(x, axis=None, keepdims=False):
    return Sum(_normalize_axes(axis, x.ndim, "sum"), keepdims)(x)


class Mean(Function):
    """y = sum of x over axes / count;  gx = gy / count at every position of x"""
    reads_inputs = False
    def __init__(self, axes, keepdims):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x):
        self.x_shape, self.x_row_major = x.shape, x.flags.c_contiguous
        self.count = 1
        for a in self.axes:
            self.count *= x.shape[a]
        if x.dtype.kind == "f" and x.dtype.itemsize < 4:  # float16: its sum may pass 65504 where its mean does not
            return (x.sum(axis=self.axes, keepdims=self.keepdims, dtype=backend.float32) / self.count).astype(x.dtype)
        total = x.sum(axis=self.axes, keepdims=self.keepdims)
        if total.dtype.kind != "f":  # an integer tensor's mean is float32, as its true division is (see div)
            total = total.astype(backend.float32)
        return _divided(total, self.count)

    def backward(self, gy):
        return _spread(_divided(gy, self.count), self.x_shape, self.x_row_major, self.axes)


def _divided(a, count):
    """a / count in a's float dtype. float16 divides in float32 and rounds back, as PyTorch does: the
    count itself may not fit in float16 (65520 and up round to inf, and a / inf is a silent 0)."""
    if a.dtype.itemsize >= 4:
        return a / count
    return (a.astype(backend.float32) / count).astype(a.dtype)


def mean(x, axis=None, keepdims=False):
    return Mean(_normalize_axes(axis, x.ndim, "mean"), keepdims)(x)


class Max(Function):
    """y = max of x over axes;  gx = gy at the first maximum, 0 elsewhere (PyTorch's max(dim))"""
    new_grads = True
    reads_inputs = False
    def __init__(self, axes, keepdims):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x):
        xp = backend.get_array_module(x)
        kept = [i for i in range(x.ndim) if i not in self.axes]
        # Move the reduced axes last and flatten them: argmax then finds the first maximum.
        self.perm = tuple(kept) + self.axes
        self.x_shape = x.shape
        self.kept_shape = tuple(x.shape[i] for i in kept)
        xt = x.transpose(self.perm).reshape(self.kept_shape + (-1,))
        self.index = xt.argmax(axis=-1)
        y = xp.take_along_axis(xt, self.index[..., None], axis=-1)[..., 0]
        return y.reshape(_keepdims_shape(x.shape, self.axes)) if self.keepdims else y

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        m = 1
        for a in self.axes:
            m *= self.x_shape[a]
        hit = xp.arange(m) == self.index[..., None]  # one-hot of the first maximum
        gxt = hit * gy.reshape(self.kept_shape + (1,))
        gxt = gxt.reshape(self.kept_shape + tuple(self.x_shape[a] for a in self.axes))
        inverse = tuple(self.perm.index(i) for i in range(len(self.perm)))
        return gxt.transpose(inverse)


def max(x, axis=None, keepdims=False):
    if x.numel() == 0:
        raise ValueError(f"max: the tensor is empty (shape {x.shape})")
    return Max(_normalize_axes(axis, x.ndim, "max"), keepdims)(x)


# ---------------------------------------------------------------- shape ops

class Reshape(Function):
    """y = x viewed with a new shape;  gx = gy reshaped back"""
    makes_view = True
    reads_inputs = False
    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.x_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, gy):
        return gy.reshape(self.x_shape)


def reshape(x, shape):
    if not all(is_int(n) for n in shape):
        raise TypeError(f"reshape: the shape must be integers, got {tuple(shape)}")
    shape = tuple(int(n) for n in shape)
    known = 1
    for n in shape:
        known *= n if n != -1 else 1
    if shape.count(-1) > 1 or any(n < -1 for n in shape) or (
            x.numel() != known if -1 not in shape else known == 0 or x.numel() % known):
        raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} ({x.numel()} elements) into {shape}")
    return Reshape(shape)(x)


class Transpose(Function):
    """y = x with its axes permuted;  gx = gy with the inverse permutation"""
    makes_view = True
    reads_inputs = False
    def __init__(self, axes):
        self.axes = axes

    def forward(self, x):
        return x.transpose(self.axes)

    def backward(self, gy):
        inverse = tuple(self.axes.index(i) for i in range(len(self.axes)))
        return gy.transpose(inverse)


def transpose(x, axes=None):
    if axes is None:
        axes = tuple(reversed(range(x.ndim)))
    given = tuple(axes)
    if not all(is_int(a) and -x.ndim <= a < x.ndim for a in given):  # NumPy integers are axes too
        raise ValueError(f"transpose: axes {given} are out of range for a tensor of shape {x.shape} "
                         f"(each must be in {-x.ndim}..{x.ndim - 1})")
    axes = tuple(int(a) % x.ndim for a in given) if x.ndim else ()
    if sorted(axes) != list(range(x.ndim)):
        raise ValueError(f"transpose: {given} is not a permutation of the {x.ndim} axes of a tensor of shape {x.shape}")
    return Transpose(axes)(x)


def _is_basic_index(index):
    """Slices, integers, None and Ellipsis only: no element is picked twice."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (int, slice)) for p in parts)


class GetItem(Function):
    """y = x[index];  gx = zeros with gy added at index (repeated indices add up)"""
    makes_view = True
    new_grads = True
    reads_inputs = False
    def __init__(self, index):
        self.index = index

    def forward(self, x):
        self.x_shape, self.x_dtype = x.shape, x.dtype
        return x[self.index]

    def backward(self, gy):
        gx = backend.get_array_module(gy).zeros(self.x_shape, dtype=self.x_dtype)
        if _is_basic_index(self.index):
            gx[self.index] = gy  # each element at most once: a plain assignment is enough
        else:
            backend.scatter_add(gx, self.index, gy)
        return gx


def _check_index_ranges(parts, shape):
    """Every integer-array index in range for its axis, or an IndexError naming it.

    NumPy raises for an out-of-range index array but CuPy wraps it around (index 7 of an
    axis of 4 reads element 3), so for a GPU tensor minitl checks first. Index arrays given as
    lists or NumPy arrays are checked on the host before they move; an index array already on
    the GPU is read back once to be checked (a sync). For a host tensor NumPy's own check runs,
    and this one only gives its error minitl's words, the same on every device.
    """
    is_mask = lambda p: backend.is_array(p) and p.dtype.kind == "b"
    used = builtins.sum(0 if p is None or p is Ellipsis else (p.ndim if is_mask(p) else 1) for p in parts)
    axis = 0
    for p in parts:
        if p is Ellipsis:
            axis += len(shape) - used
            continue
        if p is None:
            continue
        if backend.is_array(p) and backend.is_integer(p.dtype) and p.size and axis < len(shape):
            n = shape[axis]
            low, high = int(p.min()), int(p.max())
            if low < -n or high >= n:
                bad = low if low < -n else high
                raise IndexError(f"index {bad} is out of range for axis {axis} of size {n} "
                                 f"(a tensor of shape {tuple(shape)})")
        axis += p.ndim if is_mask(p) else 1


def getitem(x, index):
    parts = index if isinstance(index, tuple) else (index,)
    parts = [p.data if isinstance(p, Tensor) else p for p in parts]
    parts = [backend.numpy_host.asarray(p) if isinstance(p, list) else p for p in parts]
    on_host = type(x.data) is backend.numpy_host.ndarray
    if not on_host:  # CuPy would wrap a bad index around: check before
        _check_index_ranges(parts, x.shape)
    parts = tuple(backend.to_device(p, x.device) if backend.is_array(p) and not backend.is_scalar(p) else p
                  for p in parts)
    try:
        return GetItem(parts if isinstance(index, tuple) else parts[0])(x)
    except IndexError as e:
        refused = e
    if on_host:  # NumPy found a bad index: name it as on the GPU (outside the except: one traceback)
        _check_index_ranges(parts, x.shape)
    raise IndexError(f"indexing a tensor of shape {x.shape}: {refused}") from None


class Cast(Function):
    """y = x as another dtype;  gx = gy cast back to x's dtype
    (a cast that could lose a value is checked: on a GPU, one read-back)"""
    new_grads = True
    reads_inputs = False

    def __init__(self, dtype):
        self.dtype = dtype

    def forward(self, x):
        self.source = x.dtype
        return _checked_cast(x, self.dtype)

    def backward(self, gy):
        return gy.astype(self.source)


class ToDevice(Function):
    """y = x on another device;  gx = gy moved back"""
    reads_inputs = False
    def __init__(self, device):
        self.device = device

    def forward(self, x):
        self.source = backend.device_of(x)
        return backend.to_device(x, self.device)

    def backward(self, gy):
        return backend.to_device(gy, self.source)
