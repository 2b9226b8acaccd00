"""Tensor: a raw array (`.data`, NumPy or CuPy) that can record the ops applied to it, and the
rules that turn user data and operands into tensors (dtypes, devices, overflow).

The ops (minitl/ops.py) and the backward pass (minitl/autograd.py) build on this module; it
reaches them through their modules, imported at its end.
"""

import builtins
import contextlib

from minitl import backend
from minitl.checks import is_int


def manual_seed(seed):
    """Seed every random draw minitl makes; draws happen on the host, so CPU and GPU agree."""
    backend.manual_seed(seed)


# ---------------------------------------------------------------- Tensor

def _checked_cast(array, dtype):
    """array as dtype, or an OverflowError where a value would not survive the cast: a finite
    number that becomes inf, NaN or infinity made an integer, an integer or float out of the
    integer dtype's range (NumPy wraps, saturates or only warns). A cast to bool, or to a wider
    type, cannot lose a value this way and is not checked."""
    xp = backend.get_array_module(array)
    with _quiet(xp):
        out = array.astype(dtype)
    source = array.dtype
    if dtype.kind == "f" and (source.kind == "f" and dtype.itemsize < source.itemsize or
                              source.kind in "iu" and dtype.itemsize == 2):  # narrower floats; ints into float16
        bad = xp.isinf(out) & xp.isfinite(array)
    elif dtype.kind in "iu" and source.kind == "f":
        info = backend.numpy_host.iinfo(dtype)
        bad = ~xp.isfinite(array) | (array < info.min) | (array >= float(info.max) + 1)
    elif dtype.kind in "iu" and source.kind in "iu" and not backend.numpy_host.can_cast(source, dtype):
        info = backend.numpy_host.iinfo(dtype)
        bad = (array < info.min) | (array > info.max)
    else:
        return out
    if bool(bad.any()):  # on a GPU this reads one flag back (a sync): such a cast belongs outside a training step
        first = array[bad][:1].tolist() if xp is backend.numpy_host else backend.to_host(array[bad][:1]).tolist()
        raise OverflowError(f"cannot make {dtype} values of these {source} values: {first[0]!r} (and maybe others) "
                            f"does not fit in {dtype}")
    return out


def would_overflow(array, dtype):
    """Whether a finite value of the array becomes inf as the float dtype (a float64 1e300 as
    float32): what load_state_dict and optimizer state refuse."""
    xp = backend.get_array_module(array)
    finite = array[xp.isfinite(array)] if array.dtype.kind == "f" else array
    return bool(finite.size) and float(abs(finite).max()) >= _FLOAT_OVERFLOW.get(backend.as_dtype(dtype), _INF)


def _quiet(xp):
    """NumPy's cast warnings off (the caller reports what they would have said, as an error); CuPy never warns."""
    if xp is backend.numpy_host:
        return backend.numpy_host.errstate(over="ignore", invalid="ignore")
    return contextlib.nullcontext()


def _as_array(data, dtype=None, device=None):
    """Turn user data into a raw array: Python numbers and lists become float32.

    An array keeps its device unless a device is named; Python data goes to the
    default device (MINITL_DEVICE, else "cpu").
    """
    if isinstance(data, Tensor):
        data = data.data
    if backend.is_array(data):
        xp = backend.get_array_module(data)
        array = xp.asarray(data)
        if dtype is not None and backend.as_dtype(dtype) != array.dtype:
            array = _checked_cast(array, backend.as_dtype(dtype))
        device = backend.device_of(array) if device is None else device
    else:
        if isinstance(data, str) or data is None:
            raise TypeError(f"cannot make a tensor from {type(data).__name__}: expected a number, a list or an array")
        target = backend.float32 if dtype is None else backend.as_dtype(dtype)
        try:
            with backend.numpy_host.errstate(over="ignore"):  # an overflow is reported below, as an error
                array = backend.numpy_host.asarray(data, dtype=target)
        except (OverflowError, ValueError) as e:  # NumPy's words: "Python int too large to convert to C long"
            raise OverflowError(f"cannot make a {target} tensor from {data!r}: {e}") from None
        if array.dtype.kind == "f" and not backend.numpy_host.isfinite(array).all() and \
                backend.numpy_host.isfinite(backend.numpy_host.asarray(data, dtype=float)).all():
            # mt.tensor(2**200) would silently be inf in float32 (PyTorch raises too)
            raise OverflowError(f"cannot make a {array.dtype} tensor from {data!r}: a value does not fit in "
                                f"{array.dtype} (its largest is {backend.numpy_host.finfo(array.dtype).max:.3g})")
    if array.dtype.kind not in "biuf":
        raise TypeError(f"cannot make a tensor of {array.dtype} values: minitl computes with real numbers, integers "
                        f"and bools")
    return backend.to_device(array, device)


class Tensor:
    """An n-dimensional array that can record the ops applied to it."""

    __slots__ = ("data", "grad", "_requires_grad", "_creator", "_retain_grad", "_versions", "__weakref__")
    __array_ufunc__ = None     # NumPy defers `array * tensor` to Tensor.__rmul__
    __array_priority__ = 1000  # and so does CuPy

    def __array__(self, dtype=None, copy=None):
        """np.asarray(tensor): the values on the CPU; a CUDA tensor must be copied explicitly (as in
        CuPy and PyTorch), not behind the caller's back."""
        if self.device != "cpu":
            raise TypeError("a CUDA tensor cannot become a NumPy array implicitly: use tensor.numpy() or "
                            "backend.to_host(tensor.data), which copy it to the host")
        a = backend.numpy_host.asarray(self.data) if dtype is None else self.data.astype(dtype, copy=False)
        return a.copy() if copy else a

    def __dlpack__(self, **kwargs):
        """DLPack export, so torch.from_dlpack(t) and cupy.from_dlpack(t) share this tensor's data
        (a view with a negative stride, t[::-1], goes as a copy: PyTorch aborts the process on one)."""
        data = self.data
        if any(step < 0 for step in data.strides):
            data = backend.get_array_module(data).ascontiguousarray(data)
        return data.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.data.__dlpack_device__()

    def __bool__(self):
        """The truth of a one-element tensor, as in PyTorch; more elements are ambiguous (an error,
        never the True that len() would give)."""
        if self.data.size != 1:
            raise RuntimeError(f"the truth value of a tensor of shape {self.shape} is ambiguous: use "
                               f"(t != 0).any() or (t != 0).all() on the data, or t.item() for one element")
        return bool(self.data.item())

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __format__(self, spec):
        """f"{loss:.3f}" formats a one-element tensor's value, as in PyTorch."""
        if spec and self.data.size != 1:
            raise TypeError(f"format spec {spec!r} needs a one-element tensor, this one has shape {self.shape}")
        return format(self.item(), spec) if spec else repr(self)

    def __init__(self, data, requires_grad=False, device=None, dtype=None):
        self.data = _as_array(data, dtype, device)
        self.grad = None
        self._creator = None
        self._retain_grad = False
        self._requires_grad = False
        self._versions = [0]  # see bump_version; a view shares its base's list
        self.requires_grad = requires_grad

    # ---- attributes
    @property
    def requires_grad(self):
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag):
        if flag and not backend.is_float(self.data.dtype):
            raise TypeError(f"only floating-point tensors can require gradients, this one is {self.data.dtype}")
        self._requires_grad = bool(flag)

    shape = property(lambda self: tuple(self.data.shape))
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    device = property(lambda self: backend.device_of(self.data))
    T = property(lambda self: self.transpose())
    is_leaf = property(lambda self: self._creator is None)
    grad_fn = property(lambda self: self._creator, doc="The Function that made this tensor (None for a leaf).")

    def numel(self):
        return int(self.data.size)

    def __len__(self):
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return len(self.data)

    def __iter__(self):
        """The rows, as in PyTorch; a 0-d tensor has none (iterating it is an error, not an empty loop)."""
        if self.data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(len(self.data)))

    def __repr__(self):
        body = repr(backend.to_host(self.data)).replace("array(", "tensor(", 1)
        extras = []
        if self.device != "cpu":
            extras.append(f"device='{self.device}'")
        if self._requires_grad:
            extras.append("requires_grad=True")
        if extras:
            body = body[:-1] + ", " + ", ".join(extras) + ")"
        return body

    # ---- conversion
    def detach(self):
        """The same data with no history: gradients stop here. It shares this tensor's version, as in
        PyTorch: an in-place change through it is seen by a graph that saved the data."""
        t = _new_tensor(self.data)
        t._versions = self._versions
        return t

    def numpy(self):
        """The data as a NumPy array (copied from the GPU when it lives there)."""
        return backend.to_host(self.data)

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, this one has shape {self.shape}")
        return self.data.item()

    def to(self, device_or_dtype):
        """This tensor on another device ("cpu", "cuda") or as another dtype (mt.float32, "float64");
        gradients flow back across the move or the cast, in the source's own dtype."""
        if device_or_dtype is None:  # device=None: where it already is
            return self
        if isinstance(device_or_dtype, str) and device_or_dtype in backend.DEVICES:
            if backend.check_device(device_or_dtype) == self.device:
                return self
            return ops.ToDevice(device_or_dtype)(self)
        try:
            dtype = backend.as_dtype(device_or_dtype)
        except TypeError:
            backend.check_device(device_or_dtype)  # raises: neither a device nor a dtype
            raise
        if dtype.kind not in "biuf":
            raise TypeError(f"to: {dtype} is not a number type minitl computes with")
        return self if dtype == self.dtype else ops.Cast(dtype)(self)

    def float(self):
        """This tensor as float32 (gradients come back as the source's dtype)."""
        return self.to(backend.float32)

    def double(self):
        """This tensor as float64 (gradients come back as the source's dtype)."""
        return self.to(backend.float64)

    def retain_grad(self):
        """Keep `.grad` on this intermediate tensor after backward (leaves always keep it)."""
        self._retain_grad = True

    def argmax(self, axis=None):
        """Index of the largest value (no gradient): predictions from logits."""
        return _new_tensor(self.data.argmax(axis=axis))

    def bump_version(self):
        """Say that this tensor's data was changed in place (minitl's optimizers and
        load_state_dict call it): a graph that saved the old values refuses to backward.
        Views (transpose, reshape, indexing, flatten) share their base's version, as in
        PyTorch: a step on w also changes the w.T that a matmul saved."""
        self._versions[0] += 1

    _version = property(lambda self: self._versions[0])

    # ---- in place, without a graph (running statistics, counters): the version moves, so a graph that
    # saved these values (as an input, or as an op's output) refuses to backward, as in PyTorch
    def mul_(self, value):
        """self *= value, in place; returns self."""
        value = self._in_place_operand(value, "mul_")
        self.data *= value
        self.bump_version()
        return self

    def add_(self, other, alpha=1):
        """self += alpha * other, in place; returns self."""
        other = self._in_place_operand(other, "add_")
        self.data += other if alpha == 1 else self._in_place_operand(alpha, "add_") * other
        self.bump_version()
        return self

    def _in_place_operand(self, other, op):
        """other's array, after the rules every op keeps (one device and float dtype, numbers that fit), and
        a refusal where autograd would lose track: minitl does not record in-place ops in a graph."""
        if self._requires_grad and autograd.is_grad_enabled():
            raise RuntimeError(f"{op}: this tensor requires grad, and an in-place change would not be recorded "
                               f"in the graph: wrap it in `with mt.no_grad():`, or use the out-of-place op")
        other = _lift(other, self)
        check_compatible(op, self, other)
        if broadcast_shape(self.shape, other.shape, op) != self.shape:
            raise ValueError(f"{op}: an operand of shape {other.shape} does not fit in place in a tensor of shape "
                             f"{self.shape}")
        if other.dtype.kind == "f" and self.dtype.kind != "f":
            raise TypeError(f"{op}: a {other.dtype} operand would make this {self.dtype} tensor float: the result "
                            f"cannot stay in place (convert it first with .float())")
        return other.data

    # ---- autograd
    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into `.grad` of every leaf that requires grad.

        The graph is freed as backward goes (its saved arrays and links), unless
        retain_graph=True: a second backward through it is an error, as in PyTorch.
        """
        if not self._requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad: "
                               "no input of the ops that made it requires grad, or grad mode was off")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a one-element tensor, this one has "
                                   f"shape {self.shape}: pass grad= of that shape")
            grad = backend.get_array_module(self.data).ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else grad
            grad = _as_array(grad, self.dtype, self.device)
            if grad.shape != self.data.shape:
                raise ValueError(f"backward(): grad has shape {tuple(grad.shape)}, expected {self.shape}")
        autograd.run_backward(self, grad, retain_graph)

    # ---- operators (the ops are in minitl/ops.py)
    def __add__(self, other): return ops.add(self, other)
    def __radd__(self, other): return ops.add(other, self)
    def __sub__(self, other): return ops.sub(self, other)
    def __rsub__(self, other): return ops.sub(other, self)
    def __mul__(self, other): return ops.mul(self, other)
    def __rmul__(self, other): return ops.mul(other, self)
    def __truediv__(self, other): return ops.div(self, other)
    def __rtruediv__(self, other): return ops.div(other, self)
    def __matmul__(self, other): return ops.matmul(self, other)
    def __rmatmul__(self, other): return ops.matmul(other, self)
    def __pow__(self, exponent): return ops.pow(self, exponent)
    def __neg__(self): return ops.neg(self)
    def __getitem__(self, index): return ops.getitem(self, index)

    def exp(self): return ops.exp(self)
    def log(self): return ops.log(self)
    def sum(self, axis=None, keepdims=False): return ops.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return ops.mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return ops.max(self, axis, keepdims)

    def reshape(self, *shape):
        return ops.reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape)

    def transpose(self, *axes):
        """NumPy's meaning: no axes reverses them all, else a permutation."""
        return ops.transpose(self, axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes or None)


def _new_tensor(array, requires_grad=False):
    """A Tensor around an array that is already right (every op's output): no checks, no copy."""
    t = object.__new__(Tensor)
    t.data, t.grad, t._creator, t._retain_grad, t._requires_grad = array, None, None, False, requires_grad
    t._versions = [0]
    return t


def _filled(fill, size, dtype, device, requires_grad):
    """A new tensor made by NumPy's or CuPy's `fill` (zeros, ones, empty) on its device."""
    shape = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else size
    if not all(is_int(n) and n >= 0 for n in shape):
        raise ValueError(f"{fill}: the size must be integers >= 0, given as mt.{fill}(2, 3) or mt.{fill}((2, 3)); "
                         f"got {size}")
    dtype = backend.float32 if dtype is None else backend.as_dtype(dtype)
    device = backend.default_device() if device is None else backend.check_device(device)
    array = getattr(backend.get_array_module(device), fill)(tuple(int(n) for n in shape), dtype)
    return Tensor(array, requires_grad=requires_grad)


def zeros(*size, dtype=None, device=None, requires_grad=False):
    """A tensor of zeros: mt.zeros(2, 3) or mt.zeros((2, 3)); float32 unless a dtype is given, as in PyTorch."""
    return _filled("zeros", size, dtype, device, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False):
    """A tensor of ones, shaped as zeros' is."""
    return _filled("ones", size, dtype, device, requires_grad)


def empty(*size, dtype=None, device=None, requires_grad=False):
    """A tensor whose values are whatever the memory held: for a buffer that is written before it is read."""
    return _filled("empty", size, dtype, device, requires_grad)


def tensor(data, requires_grad=False, device=None, dtype=None):
    """A new tensor holding a copy of `data` (numbers and lists become float32)."""
    t = Tensor(data, requires_grad=requires_grad, device=device, dtype=dtype)
    if backend.is_array(data) or isinstance(data, Tensor):
        t.data = t.data.copy()
    return t


# ---------------------------------------------------------------- operands

_INF = float("inf")
def _overflow_threshold(dtype):
    """The smallest magnitude that rounds to inf in the float dtype: its largest value plus half its last step."""
    info = backend.numpy_host.finfo(dtype)
    largest = float(info.max)
    below = float(backend.numpy_host.nextafter(info.max, info.dtype.type(0)))
    return largest + 0.5 * (largest - below)


_FLOAT_OVERFLOW = {backend.as_dtype(t): _overflow_threshold(t) for t in ("float16", "float32")}
_NUMBERS = (int, float)  # Python's own (not bool, whose type is not in it)
_FLOAT_MAX = {backend.as_dtype(t): float(backend.numpy_host.finfo(t).max) for t in ("float16", "float32", "float64")}


def _lift(x, like):
    """A non-tensor operand as a tensor.

    Numbers, NumPy scalars and 0-d arrays follow the scalar rule on every device: they take
    the dtype of the tensor beside them (float32 next to an integer tensor, if they are
    floats). A host number stays a NumPy scalar, which every array library takes as an
    operand as it is: no copy to the GPU. A 0-d GPU array (a CuPy reduction's result)
    stays on the GPU: reading it would stall the device.
    """
    if isinstance(x, Tensor):
        return x
    if type(x) in _NUMBERS:  # the common case (x * 0.5, x / n) of the rule below, at once
        dtype = like.dtype
        if dtype.kind == "f" and abs(x) < _FLOAT_OVERFLOW.get(dtype, 1e308):
            return _new_tensor(dtype.type(x))
    if backend.is_scalar(x) or (backend.is_array(x) and x.ndim == 0):
        kind = backend.as_dtype(x.dtype if hasattr(x, "dtype") else type(x)).kind
        dtype = like.dtype if backend.is_float(like.dtype) or kind != "f" else backend.float32
        if dtype.kind == "b" and kind != "b":  # True + 1 is 2, as in NumPy and PyTorch: not True
            dtype = backend.float32 if kind == "f" else backend.int64
        if backend.device_of(x) == "cuda":
            return _new_tensor(x.astype(dtype, copy=False))
        value = x[()] if hasattr(x, "ndim") else x
        if dtype.kind in "iu" and kind in "biu":
            value = int(value)  # np.int32(np.int64(2**40)) wraps to 0; np.int32(2**40) raises, below
        size = abs(value if isinstance(value, int) else float(value))  # (a NumPy float32 would compare in float32)
        if dtype.kind == "f" and _FLOAT_OVERFLOW.get(dtype, _INF) <= size < _INF:  # inf and nan are values too
            raise OverflowError(f"the number {value!r} does not fit in {dtype}, the dtype of the tensor beside it "
                                f"(its largest is {_FLOAT_MAX[dtype]:.8g}): it would become inf")
        try:
            return _new_tensor(dtype.type(value))
        except OverflowError:
            raise OverflowError(f"the number {value!r} does not fit in {dtype}, the dtype of the tensor beside "
                                f"it") from None
    return Tensor(x, device=like.device) if not backend.is_array(x) else _new_tensor(x)


def require_tensor(x, op, what="input"):
    """x itself, or a TypeError that says how to make a Tensor of it."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: the {what} is a {type(x).__name__}, not a Tensor; wrap it with mt.tensor(...)")
    return x


def check_compatible(op, *tensors):
    """All tensors on one device, and all float ones of one dtype, or a clear error.
    A NumPy scalar (a lifted Python number) goes with any device."""
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            require_tensor(t, op, f"argument {i}")  # raises
    if not tensors:
        return
    kind, dtype = type(tensors[0].data), tensors[0].data.dtype
    for t in tensors:
        if type(t.data) is not kind or t.data.dtype != dtype:
            break
    else:
        return  # every call of a training step: one array type (so one device), one dtype
    # Arrays of one type are on one device: the closer look is for the rest.
    one_type = len({type(t.data) for t in tensors}) == 1
    devices = () if one_type else {t.device for t in tensors if not backend.is_scalar(t.data)}
    if len(devices) > 1:
        raise ValueError(f"{op}: tensors are on different devices ({' and '.join(sorted(devices))}); "
                         f"move them to one with .to(device)")
    floats = {t.data.dtype for t in tensors if t.data.dtype.kind == "f"}
    if len(floats) > 1:
        raise TypeError(f"{op}: tensors have different float dtypes ({' and '.join(sorted(map(str, floats)))}); "
                        f"minitl never promotes silently: convert one with .float(), .double() or .to(dtype)")


def _operands(a, b, op):
    """Two tensors on one device with one float dtype, or a clear error."""
    if type(b) in _NUMBERS and isinstance(a, Tensor):  # x * 0.5: a lifted number is compatible by its rule
        b = _lift(b, a)
    elif type(a) in _NUMBERS and isinstance(b, Tensor):
        a = _lift(a, b)
    else:
        a = _lift(a, b) if not isinstance(a, Tensor) else a
        b = _lift(b, a) if not isinstance(b, Tensor) else b
        check_compatible(op, a, b)
    fa, fb = backend.is_float(a.dtype), backend.is_float(b.dtype)
    if fa and not fb:
        b = _new_tensor(b.data.astype(a.dtype))
    elif fb and not fa:
        a = _new_tensor(a.data.astype(b.dtype))
    return a, b


def broadcast_shape(a, b, op):
    """The broadcast of two shapes, or a ValueError that names both."""
    out = []
    for i in range(1, 1 + builtins.max(len(a), len(b))):
        n = a[-i] if i <= len(a) else 1
        m = b[-i] if i <= len(b) else 1
        if n != m and n != 1 and m != 1:
            raise ValueError(f"{op}: shapes {tuple(a)} and {tuple(b)} cannot be broadcast together")
        out.append(n if m == 1 else m)
    return tuple(reversed(out))


# The ops and the backward pass are built on Tensor, so they are imported after it (minitl/__init__.py
# imports this module first; either of them imported first would find Tensor undefined).
from minitl import autograd, ops  # noqa: E402
