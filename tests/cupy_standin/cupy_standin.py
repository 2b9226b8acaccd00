"""The core of the CuPy stand-in: an array type backed by NumPy that behaves like CuPy where CuPy
differs from NumPy, and counts what a GPU would pay for.

It exists so that every "cuda" code path of minitl runs on every commit, on machines without a
GPU. `tests/conftest.py` puts this folder first on `sys.path` when MINITL_CUPY_STANDIN=1, so
`import cupy` finds the `cupy/` package beside this file. Never installed, never imported by
minitl itself.

What it imitates (CuPy's "Differences between CuPy and NumPy", and its host/device split):
- `ndarray` wraps a NumPy array; it is not an ndarray subclass. Implicit conversion to NumPy
  (`numpy.asarray(a)`, a NumPy function on it) raises TypeError, as CuPy's `__array__` does.
- NumPy arrays as operands of an op are refused (TypeError), as are lists in ufuncs. NumPy
  scalars and Python numbers are fine. (Stricter than CuPy in one place: a NumPy array as the
  value of `a[i] = v` is refused too; move it with `cupy.asarray` first.)
- Reductions and scalar indexing give 0-d arrays, never NumPy scalars.
- Integer-array indices out of range wrap around (in `[]`, `[]=` and `add.at`), they do not raise.
- Only names that CuPy has exist (`cupy_names.py`, generated from CuPy's own namespace).

What it counts, in COUNTS: `syncs` (the host waits for the device: `.item()`, `int/float/bool`,
`.get()`, `asnumpy`, `tobytes`, `tolist`, printing, boolean-mask indexing, `nonzero`,
`Device().synchronize()`), `ops` (array operations that would launch a GPU kernel; views such
as reshape, transpose and basic slicing cost none) and `transfers` (host-to-device copies).
`forbid_sync()` makes any sync raise DeviceSynchronized.

Which CuPy: 14 (its names are CuPy 14.2.0's; minitl refuses an older CuPy, backend.MIN_CUPY). Inside
`cupy.fuse` the stand-in computes what NumPy computes, which is CuPy 14's rule for Python-float
scalars (the array's dtype is kept); CuPy 13 computed them in float64, which no stand-in run shows.

What it cannot show: numerics of CUDA kernels, kernel compilation, memory limits or speed.
Only a run on a real GPU shows those (`benchmarks/gpu_check.sh`).
"""

import contextlib
import operator

import numpy
from cupy_names import CUPY_VERSION, MODULE, NDARRAY, UFUNCS

# ---------------------------------------------------------------- counting and syncs


class Counts:
    """Running totals; `counting()` gives the difference over a block."""

    def __init__(self, ops=0, syncs=0, transfers=0):
        self.ops, self.syncs, self.transfers = ops, syncs, transfers

    def __repr__(self):
        return f"Counts(ops={self.ops}, syncs={self.syncs}, transfers={self.transfers})"


COUNTS = Counts()
_forbidden = [0]  # depth of forbid_sync() blocks (a list, so the cupyx module can share it)
_paused = [0]     # inside a fused function: its ops count as one kernel


class DeviceSynchronized(RuntimeError):
    """A host sync happened where none is allowed (cupyx's name for it)."""


def sync(what):
    if _forbidden[0]:
        raise DeviceSynchronized(f"{what} waits for the GPU (a device-to-host sync) where none is allowed")
    COUNTS.syncs += 1


def op(n=1):
    if not _paused[0]:
        COUNTS.ops += n


def transfer():
    COUNTS.transfers += 1


@contextlib.contextmanager
def forbid_sync():
    """Inside this block every host sync raises DeviceSynchronized."""
    _forbidden[0] += 1
    try:
        yield
    finally:
        _forbidden[0] -= 1


@contextlib.contextmanager
def counting():
    """with counting() as c: ...  then c.ops, c.syncs, c.transfers are what the block did."""
    start = Counts(COUNTS.ops, COUNTS.syncs, COUNTS.transfers)
    delta = Counts()
    try:
        yield delta
    finally:
        delta.ops = COUNTS.ops - start.ops
        delta.syncs = COUNTS.syncs - start.syncs
        delta.transfers = COUNTS.transfers - start.transfers


# ---------------------------------------------------------------- operands and results

_SCALARS = (bool, int, float, complex, numpy.generic)


def unwrap(x, where="an operand"):
    """The NumPy array inside a stand-in array; scalars pass; NumPy arrays are refused like CuPy."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, _SCALARS) or x is None:
        return x
    if isinstance(x, numpy.ndarray):
        raise TypeError(f"Unsupported type {type(x)}: a NumPy array as {where} of a CuPy op "
                        f"(move it with cupy.asarray first)")
    return NotImplemented


def unwrap_deep(x, where, lists_ok=True):
    """unwrap() through lists and tuples (for concatenate([a, b]) and friends)."""
    if isinstance(x, (list, tuple)):
        if not lists_ok:
            raise TypeError(f"Unsupported type {type(x)}: CuPy's ufuncs take CuPy arrays and scalars only")
        return type(x)(unwrap_deep(v, where) for v in x)
    if isinstance(x, (str, slice, type, numpy.dtype)) or x is Ellipsis:
        return x
    v = unwrap(x, where)
    if v is NotImplemented:
        raise TypeError(f"Unsupported type {type(x)} as {where}")
    return v


def wrap(r):
    """A stand-in array for a NumPy result; NumPy scalars become 0-d arrays, as CuPy returns them."""
    if isinstance(r, numpy.ndarray):
        return _new(r)
    if isinstance(r, numpy.generic):
        return _new(numpy.asarray(r))
    if isinstance(r, tuple):
        return tuple(wrap(v) for v in r)
    if isinstance(r, list):
        return [wrap(v) for v in r]
    return r


def _new(a):
    out = object.__new__(ndarray)
    out._a = a
    return out


def _is_int_array(p):
    return isinstance(p, numpy.ndarray) and p.dtype.kind in "iu"


def _is_bool_array(p):
    return isinstance(p, numpy.ndarray) and p.dtype.kind == "b"


def convert_index(index, shape):
    """An index for the NumPy array underneath: stand-in arrays unwrapped, lists and NumPy arrays
    taken as CuPy takes them (copied to the device), integer arrays wrapped into range as CuPy
    does. Returns (index, kind) with kind "basic", "advanced" or "mask"."""
    parts = list(index) if isinstance(index, tuple) else [index]
    out, kind = [], "basic"
    for p in parts:
        if isinstance(p, ndarray):
            p = p._a
        elif isinstance(p, (list, numpy.ndarray)):
            transfer()
            p = numpy.asarray(p)
        if _is_bool_array(p):
            kind = "mask"
        elif _is_int_array(p) and kind == "basic":
            kind = "advanced"
        out.append(p)
    # Which axis does each part index? None adds one, Ellipsis fills the rest, a mask takes its ndim.
    used = sum(0 if p is None or p is Ellipsis else (p.ndim if _is_bool_array(p) else 1) for p in out)
    axis = 0
    for i, p in enumerate(out):
        if p is Ellipsis:
            axis += len(shape) - used
        elif p is None:
            continue
        elif _is_bool_array(p):
            axis += p.ndim
        else:
            if _is_int_array(p) and axis < len(shape) and shape[axis] > 0:
                out[i] = p % shape[axis]  # CuPy wraps out-of-range indices instead of raising
            axis += 1
    if kind == "basic" and Ellipsis not in out:
        out.append(Ellipsis)  # x[0, ...] is a 0-d view where x[0] would be a NumPy scalar
    return tuple(out), kind


# ---------------------------------------------------------------- the array type


class ndarray:
    """A CuPy array that lives in host memory: NumPy underneath, CuPy's rules on top."""

    __slots__ = ("_a",)
    __array_ufunc__ = None   # NumPy defers to us, so `numpy_array + a` reaches __radd__ (which refuses it)
    __array_priority__ = 100
    __hash__ = None

    def __init__(self, shape, dtype=float):
        self._a = numpy.empty(shape, dtype=dtype)

    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    # ---- attributes (no device work)
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: _new(self._a.T))

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    # ---- host syncs
    def get(self):
        sync("ndarray.get()")
        return self._a.copy()

    def item(self):
        sync("ndarray.item()")
        return self._a.item()

    def tolist(self):
        sync("ndarray.tolist()")
        return self._a.tolist()

    def tobytes(self, order="C"):
        sync("ndarray.tobytes()")
        return self._a.tobytes(order)

    def __bool__(self):
        sync("bool(array)")
        return bool(self._a)

    def __int__(self):
        sync("int(array)")
        return int(self._a)

    def __float__(self):
        sync("float(array)")
        return float(self._a)

    def __complex__(self):
        sync("complex(array)")
        return complex(self._a)

    def __index__(self):
        sync("using an array as an index")
        return operator.index(self._a.item()) if self._a.ndim == 0 else operator.index(self._a)

    def __repr__(self):
        sync("printing an array")
        return repr(self._a)

    def __str__(self):
        sync("printing an array")
        return str(self._a)

    def set(self, host):
        if not isinstance(host, numpy.ndarray):
            raise TypeError(f"ndarray.set needs a NumPy array, got {type(host)}")
        transfer()
        self._a[...] = host

    # ---- indexing
    def __getitem__(self, index):
        index, kind = convert_index(index, self._a.shape)
        if kind == "mask":
            sync("boolean-mask indexing (the result's size depends on the data)")
        if kind != "basic":
            op()
        return wrap(self._a[index])

    def __setitem__(self, index, value):
        index, kind = convert_index(index, self._a.shape)
        if kind == "mask":
            sync("boolean-mask assignment")
        v = unwrap(value, "the value of a[...] = v")
        if v is NotImplemented:
            raise TypeError(f"Unsupported type {type(value)} as the value of a[...] = v")
        op()
        self._a[index] = v

    # ---- methods
    def reshape(self, *shape, order="C"):
        r = self._a.reshape(*shape, order=order)
        if not numpy.may_share_memory(r, self._a):
            op()  # a reshape that has to copy runs a copy kernel
        return _new(r)

    def ravel(self, order="C"):
        return self.reshape(-1, order=order)

    def astype(self, dtype, copy=True, **kwargs):
        if not copy and numpy.dtype(dtype) == self._a.dtype:
            return self
        op()
        return _new(self._a.astype(dtype, copy=True, **kwargs))

    def __neg__(self):
        op()
        return _new(-self._a)

    def __pos__(self):
        op()
        return _new(+self._a)

    def __abs__(self):
        op()
        return _new(abs(self._a))

    def __invert__(self):
        op()
        return _new(~self._a)

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    def __reduce__(self):
        raise TypeError("the CuPy stand-in does not pickle arrays (CuPy does, through the host: move "
                        "the array to the host first)")


_VIEW_METHODS = ("transpose", "swapaxes", "squeeze", "view", "diagonal")
_OP_METHODS = ("copy", "flatten", "fill", "sum", "mean", "max", "min", "argmax", "argmin", "any", "all", "prod",
               "cumsum", "cumprod", "clip", "round", "dot", "take", "repeat", "std", "var", "conj", "conjugate",
               "sort", "argsort", "put", "ptp", "trace", "choose", "compress", "searchsorted", "partition",
               "argpartition")
_SYNC_METHODS = ("nonzero",)


def _method(name, kernels, syncs):
    def method(self, *args, **kwargs):
        args = unwrap_deep(args, f"an argument of ndarray.{name}")
        out = kwargs.get("out")
        kwargs = {k: unwrap_deep(v, f"argument {k} of ndarray.{name}") for k, v in kwargs.items()}
        if syncs:
            sync(f"ndarray.{name}()")
        op(kernels)
        r = getattr(self._a, name)(*args, **kwargs)
        if name == "fill":
            return None
        return out if out is not None else wrap(r)
    method.__name__ = name
    return method


for _name in _VIEW_METHODS:
    setattr(ndarray, _name, _method(_name, 0, False))
for _name in _OP_METHODS:
    setattr(ndarray, _name, _method(_name, 1, False))
for _name in _SYNC_METHODS:
    setattr(ndarray, _name, _method(_name, 1, True))


def _binary(name):
    fn = getattr(operator, name + "_" if name in ("and", "or") else name)
    ifn = getattr(operator, "i" + name, None)

    def forward(self, other):
        b = unwrap(other)
        if b is NotImplemented:
            return NotImplemented
        op()
        return wrap(fn(self._a, b))

    def reflected(self, other):
        b = unwrap(other)
        if b is NotImplemented:
            return NotImplemented
        op()
        return wrap(fn(b, self._a))

    def inplace(self, other):
        b = unwrap(other)
        if b is NotImplemented:
            return NotImplemented
        op()
        ifn(self._a, b)
        return self

    setattr(ndarray, f"__{name}__", forward)
    if name not in ("eq", "ne", "lt", "le", "gt", "ge"):
        setattr(ndarray, f"__r{name}__", reflected)
        setattr(ndarray, f"__i{name}__", inplace)


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
              "lshift", "rshift", "eq", "ne", "lt", "le", "gt", "ge"):
    _binary(_name)
ndarray.__eq__.__doc__ = "Elementwise, as in CuPy (an array, not a bool)."


# ---------------------------------------------------------------- module-level functions

_HOST_OK = {"asarray", "array", "asanyarray"}          # the ways to copy host data to the device
_VIEW_FUNCTIONS = {"broadcast_to", "expand_dims", "moveaxis", "swapaxes", "transpose", "squeeze", "atleast_1d",
                   "atleast_2d", "atleast_3d", "broadcast_arrays", "rollaxis", "permute_dims", "matrix_transpose",
                   "shape", "ndim", "size", "result_type", "can_cast", "promote_types", "may_share_memory",
                   "shares_memory", "isscalar", "iscomplexobj", "isrealobj", "empty", "empty_like",
                   "broadcast_shapes", "dtype", "finfo", "iinfo", "issubdtype", "isdtype"}
_SYNC_FUNCTIONS = {"nonzero", "flatnonzero", "argwhere", "unique", "unique_values", "unique_counts",
                   "unique_inverse", "unique_all", "extract", "compress", "array_str", "array_repr",
                   "array2string", "save", "savez", "savez_compressed", "savetxt"}


class ufunc:
    """A CuPy ufunc: CuPy arrays and scalars only (lists and NumPy arrays are refused), with .at."""

    def __init__(self, name):
        self.__name__ = name
        self._np = getattr(numpy, name)

    def __call__(self, *args, out=None, **kwargs):
        xs = tuple(unwrap_deep(x, f"an input of cupy.{self.__name__}", lists_ok=False) for x in args)
        kw = {k: unwrap_deep(v, f"argument {k} of cupy.{self.__name__}") for k, v in kwargs.items()}
        if out is not None:
            kw["out"] = unwrap_deep(out, f"the out= of cupy.{self.__name__}")
        op()
        r = self._np(*xs, **kw)
        return out if out is not None else wrap(r)

    def at(self, a, index, values=None):
        """In place, repeated indices accumulate (numpy.ufunc.at); out-of-range indices wrap."""
        if not isinstance(a, ndarray):
            raise TypeError(f"cupy.{self.__name__}.at needs a CuPy array, got {type(a)}")
        index, _ = convert_index(index, a._a.shape)
        if index and index[-1] is Ellipsis:
            index = index[:-1] or Ellipsis
        op()
        if values is None:
            self._np.at(a._a, index)
        else:
            self._np.at(a._a, index, unwrap_deep(values, f"the values of cupy.{self.__name__}.at"))

    def reduce(self, a, *args, **kwargs):
        op()
        return wrap(self._np.reduce(unwrap_deep(a, "the input of a reduce"), *args, **kwargs))

    def __repr__(self):
        return f"<ufunc '{self.__name__}'>"


def function(name):
    """cupy.<name>, made from numpy.<name> with CuPy's rules and counts."""
    np_fn = getattr(numpy, name)
    host_ok = name in _HOST_OK

    def fn(*args, **kwargs):
        if host_ok:
            data = args[0] if args else kwargs.get("a", kwargs.get("obj"))
            if isinstance(data, ndarray):
                dtype = kwargs.get("dtype", args[1] if len(args) > 1 else None)
                if name != "array" and (dtype is None or numpy.dtype(dtype) == data.dtype):
                    return data  # already on the device with that dtype: no copy, as in CuPy
                op()
                return _new(numpy.array(data._a, dtype=dtype))
            transfer()
            return _new(numpy.array(data, dtype=kwargs.get("dtype", args[1] if len(args) > 1 else None)))
        out = kwargs.get("out")
        xs = unwrap_deep(args, f"an argument of cupy.{name}")
        kw = {k: unwrap_deep(v, f"argument {k} of cupy.{name}") for k, v in kwargs.items()}
        if name in _SYNC_FUNCTIONS:
            sync(f"cupy.{name}()")
        if name not in _VIEW_FUNCTIONS:
            op()
        r = np_fn(*xs, **kw)
        return out if out is not None else wrap(r)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"cupy.{name}: numpy.{name} under CuPy's rules (the stand-in)."
    return fn


def asnumpy(a, stream=None, order="C", out=None):
    """Copy an array to the host: a sync."""
    if isinstance(a, ndarray):
        sync("cupy.asnumpy()")
        return numpy.array(a._a, order=order)
    return numpy.asarray(a, order=order)


def get_array_module(*args):
    import cupy
    return cupy if any(isinstance(a, ndarray) for a in args) else numpy


def fuse(*args, **kwargs):
    """cupy.fuse: the decorated elementwise function runs as one kernel (one op here)."""
    def decorate(f):
        def fused(*xs):
            op()
            _paused[0] += 1
            try:
                return f(*xs)
            finally:
                _paused[0] -= 1
        fused.__name__ = getattr(f, "__name__", "fused")
        fused.__wrapped__ = f
        return fused
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return decorate(args[0])
    return decorate


def module_attribute(name):
    """What `cupy.<name>` is in the stand-in, for a name the package does not define itself."""
    if name not in MODULE:
        raise AttributeError(f"module 'cupy' has no attribute {name!r} (CuPy {CUPY_VERSION} has no such name)")
    if not hasattr(numpy, name):
        raise AttributeError(f"cupy.{name} exists in CuPy {CUPY_VERSION}, but the stand-in does not imitate it "
                             f"(add it to tests/cupy_standin)")
    value = getattr(numpy, name)
    if name in UFUNCS and isinstance(value, numpy.ufunc):
        return ufunc(name)
    if isinstance(value, (type, numpy.dtype, int, float)) or value is None:
        return value  # dtypes, scalar types and constants are NumPy's own objects in CuPy too
    if callable(value):
        return function(name)
    raise AttributeError(f"cupy.{name}: the stand-in does not imitate this kind of object ({type(value)})")


def ndarray_names_ok():
    """The stand-in's array exposes only attributes a CuPy array has (tests check this)."""
    own = {n for n in dir(ndarray) if not n.startswith("_")}
    return own - NDARRAY
