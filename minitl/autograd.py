"""Tensor, Function and reverse-mode autograd, with the primitive ops.

A Tensor wraps a raw array (`.data`, NumPy or CuPy) and, when it was made by an
op that needs gradients, remembers that op (`_creator`). Each op is a Function:
`forward` and `backward` on raw arrays, side by side. `Tensor.backward` visits
the recorded graph once, in a fixed order, and hands every Function the
gradient of its output.
"""

import builtins
import contextlib
import functools
import inspect
import threading

from minitl import backend
from minitl.checks import is_int, is_real  # noqa: F401 (is_int, is_real: also imported from here by older code)

# ---------------------------------------------------------------- grad mode

class _GradMode(threading.local):
    """Per thread, as in PyTorch: a thread evaluating under no_grad leaves another one's training alone."""
    enabled = True

    def __init__(self):
        self.entered = []  # the modes that the no_grad blocks this thread is inside replaced


_grad_mode = _GradMode()


class no_grad:
    """Inside `with no_grad():` no op records a graph (evaluation, feature extraction), in this
    thread. As in PyTorch, one object can be entered again and again, and it decorates a
    function with or without parentheses (`@no_grad()`, `@no_grad`)."""

    def __new__(cls, fn=None):
        if fn is None:
            return super().__new__(cls)
        if not callable(fn):
            raise TypeError(f"no_grad takes no arguments (or decorates a function), got {fn!r}")
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):  # its body runs later, elsewhere
            raise TypeError(f"no_grad cannot decorate the async function {fn.__qualname__}: use `with no_grad():` "
                            f"inside it")

        if inspect.isgeneratorfunction(fn):  # its body runs at each next(), after the call returned
            @functools.wraps(fn)
            def generator_without_grad(*args, **kwargs):
                gen = fn(*args, **kwargs)
                resume = functools.partial(gen.send, None)
                while True:
                    try:
                        with cls():
                            item = resume()
                    except StopIteration as stop:
                        return stop.value
                    try:
                        resume = functools.partial(gen.send, (yield item))
                    except GeneratorExit:
                        with cls():
                            gen.close()
                        raise
                    except BaseException as e:  # thrown in: the body sees it, under no_grad
                        resume = functools.partial(gen.throw, e)
            return generator_without_grad

        @functools.wraps(fn)
        def without_grad(*args, **kwargs):
            with cls():
                return fn(*args, **kwargs)
        return without_grad

    def __enter__(self):
        _grad_mode.entered.append(_grad_mode.enabled)  # per thread, so one object serves every thread
        _grad_mode.enabled = False

    def __exit__(self, *exc):
        _grad_mode.enabled = _grad_mode.entered.pop()

    def __call__(self, fn):
        return no_grad(fn)


def is_grad_enabled():
    return _grad_mode.enabled


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

    @classmethod
    def _make(cls, array, requires_grad=False):
        """The fast path for op outputs: the array is already right."""
        return _new_tensor(array, requires_grad)

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
        """The same data with no history: gradients stop here."""
        return Tensor._make(self.data)

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
            return ToDevice(device_or_dtype)(self)
        try:
            dtype = backend.as_dtype(device_or_dtype)
        except TypeError:
            backend.check_device(device_or_dtype)  # raises: neither a device nor a dtype
            raise
        if dtype.kind not in "biuf":
            raise TypeError(f"to: {dtype} is not a number type minitl computes with")
        return self if dtype == self.dtype else Cast(dtype)(self)

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
        return Tensor._make(self.data.argmax(axis=axis))

    def bump_version(self):
        """Say that this tensor's data was changed in place (minitl's optimizers and
        load_state_dict call it): a graph that saved the old values refuses to backward.
        Views (transpose, reshape, indexing, flatten) share their base's version, as in
        PyTorch: a step on w also changes the w.T that a matmul saved."""
        self._versions[0] += 1

    _version = property(lambda self: self._versions[0])

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
        _run_backward(self, grad, retain_graph)

    # ---- operators (the ops are defined below)
    def __add__(self, other): return add(self, other)
    def __radd__(self, other): return add(other, self)
    def __sub__(self, other): return sub(self, other)
    def __rsub__(self, other): return sub(other, self)
    def __mul__(self, other): return mul(self, other)
    def __rmul__(self, other): return mul(other, self)
    def __truediv__(self, other): return div(self, other)
    def __rtruediv__(self, other): return div(other, self)
    def __matmul__(self, other): return matmul(self, other)
    def __rmatmul__(self, other): return matmul(other, self)
    def __pow__(self, exponent): return pow(self, exponent)
    def __neg__(self): return neg(self)
    def __getitem__(self, index): return getitem(self, index)

    def exp(self): return exp(self)
    def log(self): return log(self)
    def sum(self, axis=None, keepdims=False): return sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return max(self, axis, keepdims)

    def reshape(self, *shape):
        return reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape)

    def transpose(self, *axes):
        """NumPy's meaning: no axes reverses them all, else a permutation."""
        return transpose(self, axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes or None)


def _new_tensor(array, requires_grad):
    """A Tensor around an array that is already right (every op's output): no checks, no copy."""
    t = object.__new__(Tensor)
    t.data, t.grad, t._creator, t._retain_grad, t._requires_grad = array, None, None, False, requires_grad
    t._versions = [0]
    return t


_numpy_scalar = backend.numpy_host.generic


def tensor(data, requires_grad=False, device=None, dtype=None):
    """A new tensor holding a copy of `data` (numbers and lists become float32)."""
    t = Tensor(data, requires_grad=requires_grad, device=device, dtype=dtype)
    if backend.is_array(data) or isinstance(data, Tensor):
        t.data = t.data.copy()
    return t


# ---------------------------------------------------------------- Function and the backward pass

class Function:
    """One op: `forward` and `backward` on raw arrays.

    Calling a Function on tensors runs forward; if grad mode is on and some input
    requires grad, the output remembers this Function and its inputs. Before
    forward runs, `self.needs_grad[i]` says whether input i needs a gradient, so
    forward can skip saving what backward will not use, and backward computes
    only those gradients (returning None for the others).

    `reads_inputs`: backward uses the values of the inputs (or views of them), so an
    in-place change of an input between forward and backward would give a wrong
    gradient; the inputs' versions are recorded and checked. Ops whose backward needs
    only shapes, or arrays they made themselves, set it to False.
    """

    reads_inputs = True
    makes_view = False  # the output may be a view of input 0: then it shares its version (see bump_version)
    released = False  # set once backward has freed what this op saved
    # new_grads: every array backward returns is made by this call and returned once (no view of gy,
    # no array shared by two inputs), so a leaf may keep it as its .grad without a copy.
    new_grads = False

    def __call__(self, *inputs):
        record = False
        for t in inputs:
            if not isinstance(t, Tensor):
                raise TypeError(f"{type(self).__name__}: input {inputs.index(t)} is a {type(t).__name__}, not a "
                                f"Tensor; wrap it with mt.tensor(...)")
            record = record or t._requires_grad
        record = record and _grad_mode.enabled
        self.needs_grad = tuple([t._requires_grad for t in inputs]) if record else (False,) * len(inputs)
        data = self.forward(*[t.data for t in inputs])
        if isinstance(data, _numpy_scalar):  # NumPy reduces to a scalar, CuPy to a 0-d array:
            data = backend.numpy_host.asarray(data)  # a 0-d array on both devices
        out = _new_tensor(data, record)
        if self.makes_view and backend.is_array(data) and data.ndim and \
                backend.get_array_module(data).may_share_memory(data, inputs[0].data):
            out._versions = inputs[0]._versions
        if record:
            self.inputs = inputs
            if self.reads_inputs:
                self.versions = [t._versions[0] for t in inputs]
            out._creator = self
        return out

    def release(self):
        """Free everything this op saved for backward (arrays, links to its inputs)."""
        self.__dict__.clear()
        self.released = True

    def check_versions(self):
        """A RuntimeError if an input this op reads was changed in place since the forward."""
        if not self.reads_inputs or [t._versions[0] for t in self.inputs] == self.versions:
            return
        for i, (t, seen) in enumerate(zip(self.inputs, self.versions)):
            if t._version != seen:
                raise RuntimeError(
                    f"one of the tensors needed for gradient computation has been modified by an inplace "
                    f"operation: input {i} of {type(self).__name__} (shape {t.shape}) is at version {t._version}; "
                    f"expected version {seen}. Was there an optimizer step (or load_state_dict) between the "
                    f"forward and this backward? Step after backward.")

    def forward(self, *xs):
        raise TypeError(f"{type(self).__name__} must define forward")

    def backward(self, gy):
        raise TypeError(f"{type(self).__name__} must define backward")


def _inputs_of(t):
    fn = t._creator
    if fn is None:
        return ()
    if fn.released:
        raise RuntimeError("Trying to backward through the graph a second time (or directly access saved tensors "
                           "after they have already been freed): the first backward freed it. Specify "
                           "retain_graph=True if you need to backward through the graph a second time.")
    return fn.inputs


def graph_order(root):
    """Every tensor that root depends on and that requires grad, inputs before outputs: backward
    visits them in the reverse of this order.

    Iterative depth-first search (no recursion limit) that follows inputs in their
    order, so the order is the same on every run.
    """
    order, seen = [], {id(root)}
    stack = [(root, iter(_inputs_of(root)))]
    while stack:
        t, pending = stack[-1]
        for parent in pending:
            key = id(parent)
            if parent._requires_grad and key not in seen:
                seen.add(key)
                if parent._creator is None:  # a leaf has no inputs: it is finished as soon as it is found
                    order.append(parent)
                    continue
                stack.append((parent, iter(_inputs_of(parent))))
                break
        else:
            stack.pop()
            order.append(t)
    return order


def _run_backward(root, grad, retain_graph=False):
    order = graph_order(root)
    for t in order:  # every check before any gradient is touched
        fn = t._creator
        if fn is not None and fn.reads_inputs:
            fn.check_versions()
    grads = {id(root): grad}
    owned = set()  # ids whose pending gradient is a new array that nothing else holds
    for t in reversed(order):
        key = id(t)
        gy = grads.pop(key, None)
        if gy is None:
            continue
        fn = t._creator
        if fn is None or t._retain_grad:
            if t.grad is None:
                t.grad = _own_gradient(t, gy, fn is None and key in owned)
            else:
                t.grad += gy
        if fn is None:
            continue
        gxs = fn.backward(gy)
        if not isinstance(gxs, tuple):
            gxs = (gxs,)
        for i, (x, gx) in enumerate(zip(fn.inputs, gxs)):
            if gx is None or not x._requires_grad:
                continue
            if gx.shape != x.data.shape:  # a user's backward that forgot to undo a broadcast, say
                raise RuntimeError(f"{type(fn).__name__}.backward returned a gradient of shape {tuple(gx.shape)} "
                                   f"for input {i} of shape {x.shape}")
            key = id(x)
            if key in grads:  # out of place: gx may be a view of gy, which belongs to someone else
                grads[key] = grads[key] + gx
                owned.add(key)
            else:
                grads[key] = gx
                if fn.new_grads:
                    owned.add(key)
        if not retain_graph:
            fn.release()  # its saved arrays (im2col columns and all) are freed now, not at the next step


def _own_gradient(t, gy, owned):
    """gy as t's .grad: t's alone (so += into it is safe) and laid out like t's data, as in PyTorch.
    A new array that nothing else holds, already in t's layout, is kept as it is; else it is copied."""
    if owned and type(gy) is type(t.data) and gy.strides == t.data.strides:  # (NumPy's 0-d results are scalars)
        return gy
    g = backend.get_array_module(gy).empty_like(t.data, dtype=gy.dtype)  # t's layout ("K" order)
    g[...] = gy
    return g


def unbroadcast(g, shape):
    """Sum g over the axes that broadcasting added or stretched, back to `shape`."""
    if g.shape == tuple(shape):
        return g
    extra = g.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(extra + i for i, n in enumerate(shape) if n == 1 and g.shape[extra + i] != 1)
    g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape) if extra else g


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
    dtype = like.data.dtype
    if type(x) in _NUMBERS and dtype.kind == "f" and abs(x) < _FLOAT_OVERFLOW.get(dtype, 1e308):
        return _new_tensor(dtype.type(x), False)  # the common case (x * 0.5, x / n) of the rule below, at once
    if backend.is_scalar(x) or (backend.is_array(x) and x.ndim == 0):
        kind = backend.as_dtype(x.dtype if hasattr(x, "dtype") else type(x)).kind
        dtype = like.dtype if backend.is_float(like.dtype) or kind != "f" else backend.float32
        if dtype.kind == "b" and kind != "b":  # True + 1 is 2, as in NumPy and PyTorch: not True
            dtype = backend.float32 if kind == "f" else backend.int64
        if backend.device_of(x) == "cuda":
            return Tensor._make(x.astype(dtype, copy=False))
        value = x[()] if hasattr(x, "ndim") else x
        if dtype.kind in "iu" and kind in "biu":
            value = int(value)  # np.int32(np.int64(2**40)) wraps to 0; np.int32(2**40) raises, below
        size = abs(value if isinstance(value, int) else float(value))  # (a NumPy float32 would compare in float32)
        if dtype.kind == "f" and _FLOAT_OVERFLOW.get(dtype, _INF) <= size < _INF:  # inf and nan are values too
            raise OverflowError(f"the number {value!r} does not fit in {dtype}, the dtype of the tensor beside it "
                                f"(its largest is {_FLOAT_MAX[dtype]:.8g}): it would become inf")
        try:
            return Tensor._make(dtype.type(value))
        except OverflowError:
            raise OverflowError(f"the number {value!r} does not fit in {dtype}, the dtype of the tensor beside "
                                f"it") from None
    return Tensor(x, device=like.device) if not backend.is_array(x) else Tensor._make(x)


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
        b = Tensor._make(b.data.astype(a.dtype))
    elif fb and not fa:
        a = Tensor._make(a.data.astype(b.dtype))
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
        a, b = Tensor._make(a.data.astype(backend.float32)), Tensor._make(b.data.astype(backend.float32))
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
    broadcast view otherwise, which the next elementwise op reads in the input's own layout."""
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
        total = x.sum(axis=self.axes, keepdims=self.keepdims)
        if total.dtype.kind != "f":  # an integer tensor's mean is float32, as its true division is (see div)
            total = total.astype(backend.float32)
        return total / self.count  # the sum in x's dtype, then one division: as sum(x) / count would be

    def backward(self, gy):
        return _spread(gy / self.count, self.x_shape, self.x_row_major, self.axes)


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
        if on_host:  # NumPy found a bad index: name it as on the GPU
            _check_index_ranges(parts, x.shape)
        raise IndexError(f"indexing a tensor of shape {x.shape}: {e}") from None


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
