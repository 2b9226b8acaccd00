"""The only module that knows which array library is underneath.

Devices are named as in PyTorch: "cpu" is NumPy, "cuda" is CuPy. Every other
module asks this one for `xp`, the array module that matches its data, so one
piece of array code runs on both. Random numbers are always drawn on the host
(NumPy) and then moved, so one seed gives the same numbers on every device.
"""

import contextlib
import ctypes
import functools
import math
import os
import sys
import threading

import numpy

try:  # CuPy is optional: the "gpu" extra
    import cupy
except ImportError:  # pragma: no cover - depends on the machine
    cupy = None

_malloc_tuned = False


def tune_malloc():
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the OS.

    By default a large array (over 128 KiB) gets fresh pages from the kernel each time and
    gives them back when freed, so every training step pays thousands of page faults for its
    temporaries; keeping freed memory makes steady-state steps fault-free, as a caching
    allocator would. It changes malloc for the whole process (memory freed by any library is
    then kept, not returned), so minitl never calls it: its ops reuse their large arrays through
    the workspace instead (below), which covers a training step. A script whose own code makes
    large temporaries may call it once at its start. Returns whether it took effect.
    """
    global _malloc_tuned
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, ...): nothing to tune
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    _malloc_tuned = bool(libc.mallopt(m_trim_threshold, ctypes.c_int(2**31 - 1))
                         and libc.mallopt(m_mmap_threshold, ctypes.c_int(2**30)))
    return _malloc_tuned


def blas_threads():
    """A context in which NumPy's BLAS uses MINITL_BLAS_THREADS threads (default 1; 0 leaves the BLAS
    library's own choice). minitl's training loops run in it: a small-batch step gains little from a
    second thread on a quiet machine and loses up to tenfold when other processes want the cores
    (benchmarks/README.md has the measurements). Outside the block nothing changes."""
    from threadpoolctl import threadpool_limits
    n = blas_thread_count()
    return threadpool_limits(limits=n if n > 0 else None, user_api="blas")


def blas_thread_count():
    """MINITL_BLAS_THREADS as a number (default 1; 0: the BLAS library's own choice), or a clear error."""
    text = os.environ.get("MINITL_BLAS_THREADS", "1").strip()
    # isdecimal, not isdigit: "²" is a digit that int() refuses; and a thread count has at most 4 digits
    if not (text.isascii() and text.isdecimal() and int(text) <= 1024):
        raise ValueError(f"MINITL_BLAS_THREADS must be an integer from 0 to 1024 (0 leaves the BLAS library's "
                         f"choice), got {text!r}")
    return int(text)


def malloc_tuned():
    """Whether tune_malloc() has changed malloc in this process."""
    return _malloc_tuned


numpy_host = numpy  # the host array module, for code that must run on the CPU (data, io)

float32 = numpy.dtype("float32")
float64 = numpy.dtype("float64")
int64 = numpy.dtype("int64")

DEVICES = ("cpu", "cuda")


# ---------------------------------------------------------------- devices

MIN_CUPY = 14  # the CuPy major version minitl's GPU path follows (pyproject's gpu extras pin it too)


@functools.lru_cache(maxsize=None)
def cuda_status():
    """(True, GPU name) when CuPy sees a GPU, else (False, the reason why not)."""
    if cupy is None:
        return False, "CuPy is not installed (pip install 'minitl[gpu]')"
    major = cupy.__version__.split(".")[0]
    if not (major.isdecimal() and int(major) >= MIN_CUPY):
        # CuPy 13 computes cupy.fuse's Python-float scalars in float64 (the fused Adam), among other rules
        return False, (f"CuPy {cupy.__version__} is installed; minitl needs CuPy {MIN_CUPY} or later, whose rules "
                       f"it is tested against (pip install 'minitl[gpu]', or 'minitl[gpu-cuda13]' for CUDA 13)")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDA driver missing or broken
        return False, f"CuPy is installed but CUDA is not usable: {e}"
    if count == 0:
        return False, "CuPy is installed but no GPU was found"
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"]
    return True, name.decode() if isinstance(name, bytes) else str(name)


def default_device():
    """The device named by MINITL_DEVICE, else "cpu"."""
    name = os.environ.get("MINITL_DEVICE", "cpu")
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r} (from the environment variable MINITL_DEVICE): expected one of "
                         f"{DEVICES}")
    return check_device(name)


def device_for(device, array=None):
    """The device an operation should use: the one named, else where `array` already is,
    else the default. `device=None` never moves data that is already on a device; only new
    things made from host data go to MINITL_DEVICE."""
    if device is not None:
        return check_device(device)
    if array is not None and device_of(array) == "cuda":
        return "cuda"
    return default_device()


def check_device(device):
    """Validate a device name; None means the default. Never falls back silently."""
    if device is None:
        return default_device()
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}: expected one of {DEVICES}")
    if device == "cuda":
        ok, why = cuda_status()
        if not ok:
            raise RuntimeError(f"device 'cuda' was asked for, but {why}")
    return device


def get_array_module(x):
    """numpy or cupy, for an array or a device name."""
    if isinstance(x, str):
        return cupy if check_device(x) == "cuda" else numpy
    if cupy is not None and isinstance(x, cupy.ndarray):
        return cupy
    return numpy


def device_of(array):
    return "cuda" if cupy is not None and isinstance(array, cupy.ndarray) else "cpu"


def is_array(x):
    """True for NumPy and CuPy arrays and NumPy scalars (they carry a dtype)."""
    if isinstance(x, (numpy.ndarray, numpy.generic)):
        return True
    return cupy is not None and isinstance(x, cupy.ndarray)


def is_scalar(x):
    """A Python number or a NumPy scalar (np.float64(2.0)): in an op it takes the tensor's dtype."""
    return isinstance(x, (bool, int, float, numpy.generic))


def to_device(array, device):
    """Move (or keep) an array on a device; a no-op when it is already there."""
    device = check_device(device)
    if device == "cuda":
        return cupy.asarray(array)
    if cupy is not None and isinstance(array, cupy.ndarray):
        return cupy.asnumpy(array)
    return numpy.asarray(array)


def from_foreign(value):
    """An array from another library's tensor (a PyTorch state dict's values): through DLPack, on
    its own device and without a copy where it can (a CUDA tensor becomes a CuPy array); else
    through __array__ on the host. None for anything else (lists stay lists)."""
    if hasattr(value, "__dlpack__") and hasattr(value, "__dlpack_device__"):
        if hasattr(value, "detach"):  # a PyTorch tensor that requires grad will not export itself
            value = value.detach()
        kind = int(value.__dlpack_device__()[0])  # DLPack's device types: 1 CPU, 2 CUDA
        if kind == 1:
            return numpy.from_dlpack(value)
        if kind == 2 and cupy is not None:
            return cupy.from_dlpack(value)
    if hasattr(value, "__array__"):
        return numpy.asarray(value)
    return None


def array_of(value):
    """value itself if it is an array (or a plain Python value, for the caller to refuse by its
    type); another library's tensor as an array (from_foreign). A tensor that cannot become one
    (bfloat16 through DLPack) is a TypeError naming its type. What mt.save and load_state_dict
    accept, in one place."""
    if is_array(value) or value is None or isinstance(value, (int, float, complex, str, bytes, list, tuple, dict)):
        return value
    try:
        array = from_foreign(value)
    except Exception as e:  # a dtype DLPack or NumPy cannot carry, a device CuPy is not on
        raise TypeError(f"a {type(value).__name__} that cannot become an array ({type(e).__name__}: {e})") from None
    return value if array is None else array


def to_host(array):
    """A NumPy array, wherever the data lives."""
    return to_device(array, "cpu")


def synchronize(device):
    """Wait until the device has finished its queued work (GPU timing needs it)."""
    if device == "cuda":
        cupy.cuda.Device().synchronize()


# ---------------------------------------------------------------- dtypes

def as_dtype(dtype):
    return numpy.dtype(dtype)


def is_float(dtype):
    return numpy.dtype(dtype).kind == "f"


def is_integer(dtype):
    return numpy.dtype(dtype).kind in "iu"


# ---------------------------------------------------------------- host randomness

_rng = numpy.random.default_rng()


def manual_seed(seed):
    """Seed every random draw minitl makes (weights, dropout masks, shuffles)."""
    global _rng
    _rng = numpy.random.default_rng(seed)


@contextlib.contextmanager
def fork_rng(seed):
    """Inside the block every draw comes from a private generator seeded with `seed`; the global
    generator is left exactly as it was (a helper that needs fixed weights never reseeds it)."""
    global _rng
    saved, _rng = _rng, numpy.random.default_rng(seed)
    try:
        yield
    finally:
        _rng = saved


def host_rng(seed=None):
    """The global generator, or a private one when a seed is given."""
    return _rng if seed is None else numpy.random.default_rng(seed)


def uniform(low, high, shape, dtype, device, rng=None):
    a = (rng or host_rng()).uniform(low, high, size=shape)
    return to_device(a.astype(dtype), device)


def randn(shape, dtype, device, rng=None):
    a = (rng or host_rng()).standard_normal(size=shape)
    return to_device(a.astype(dtype), device)


# ---------------------------------------------------------------- the workspace: host memory reused across steps

# A training step makes the same large arrays every time (im2col columns, padded inputs, pooling and
# ReLU outputs, their gradients), and keeps many of them until backward frees the graph, all at once.
# malloc then hands those pages back to the kernel, and the next step pays a page fault per 4 KiB for
# them: thousands a step (benchmarks/README.md). NumPy has no caching allocator (CuPy has one on the
# GPU), so minitl's ops take the large arrays of a recorded step from this workspace: buffers an earlier
# step used, handed out again once nothing refers to them. "Nothing refers to it" is Python's own
# reference count: every array, view or saved graph that uses a buffer holds a reference to it (a
# view's `.base`), so a buffer still saved for a backward (retain_graph=True, a second forward alive)
# is never handed out. Arrays of an op that records no graph (no_grad, a frozen backbone) are freed
# as soon as the next op has read them, and malloc gives their memory straight back, still in the CPU's
# cache: they do not use the workspace. Nothing outside minitl's own arrays changes (as tuning malloc would).

WORKSPACE_MIN_BYTES = 256 * 1024    # smaller arrays come from malloc's own free lists, fault-free (measured)
WORKSPACE_MAX_BYTES = 1024 * 2**20  # what the workspace may hold in all; past it, unused buffers are dropped

_workspace = {}  # nbytes -> list of uint8 buffers, the most recently handed out last
_workspace_bytes = 0
_workspace_lock = threading.Lock()


def _references(buffers, i):
    return sys.getrefcount(buffers[i])


def _unused_references():
    """How many references a buffer that nothing uses has when _references looks at it (the list's,
    and what the interpreter holds during the call: measured, not assumed, as it differs by version)."""
    probe = [numpy.empty(1, numpy.uint8)]
    return _references(probe, 0)


_UNUSED = _unused_references()


def _in_use(buffers, i):
    return _references(buffers, i) > _UNUSED


def empty(shape, dtype, xp, reuse):
    """An uninitialised array for an op's result or temporary. reuse=True (an op that records a graph,
    and every backward): on the CPU a large one comes from the workspace (see above); on the GPU,
    CuPy's memory pool does this by itself."""
    dtype = numpy.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if not reuse or xp is not numpy or nbytes < WORKSPACE_MIN_BYTES or not _reuse_memory():
        return xp.empty(shape, dtype)
    global _workspace_bytes
    with _workspace_lock:
        buffers = _workspace.get(nbytes, [])
        for i in reversed(range(len(buffers))):  # the most recently used first: likelier to be in the cache
            if not _in_use(buffers, i):
                buffers.append(buffers.pop(i))
                return buffers[-1].view(dtype).reshape(shape)
        if _workspace_bytes + nbytes > WORKSPACE_MAX_BYTES:
            _drop_unused(_workspace_bytes + nbytes - WORKSPACE_MAX_BYTES)
        if _workspace_bytes + nbytes > WORKSPACE_MAX_BYTES:  # everything held is in use: don't keep this one
            return numpy.empty(shape, dtype)
        buffers = _workspace.setdefault(nbytes, [])  # after dropping, which may have removed this size
        buffers.append(numpy.empty(nbytes, numpy.uint8))
        _workspace_bytes += nbytes
        return buffers[-1].view(dtype).reshape(shape)


def zeros(shape, dtype, xp, reuse):
    """Zeros, from the workspace when reuse=True (see `empty`)."""
    if not reuse:
        return xp.zeros(shape, dtype)
    a = empty(shape, dtype, xp, reuse)
    a.fill(0)
    return a


def empty_like(a, reuse, dtype=None):
    """An uninitialised array shaped and laid out in memory like `a` (a (C, H, W, N)-stored view gives
    one stored the same way), of a's dtype unless one is given; from the workspace when reuse=True."""
    xp = get_array_module(a)
    if not reuse or xp is not numpy or a.nbytes < WORKSPACE_MIN_BYTES:
        return xp.empty_like(a, dtype=dtype)  # order "K": a's layout
    order = sorted(range(a.ndim), key=lambda i: -a.strides[i])  # outermost axis first
    stored = empty(tuple(a.shape[i] for i in order), a.dtype if dtype is None else dtype, xp, reuse)
    return stored.transpose(tuple(order.index(i) for i in range(a.ndim)))


def _drop_unused(needed):
    """Forget unused buffers until `needed` bytes are freed."""
    global _workspace_bytes
    for nbytes in list(_workspace):
        buffers = _workspace[nbytes]
        for i in reversed(range(len(buffers))):
            if needed > 0 and not _in_use(buffers, i):
                del buffers[i]
                _workspace_bytes -= nbytes
                needed -= nbytes
        if not buffers:
            del _workspace[nbytes]


def free_workspace():
    """Give back every workspace buffer that nothing uses (as torch.cuda.empty_cache does on a GPU);
    the bytes the workspace still holds after it."""
    with _workspace_lock:
        _drop_unused(_workspace_bytes)
        return _workspace_bytes


def workspace_bytes():
    """The bytes the workspace holds now, in use or not."""
    return _workspace_bytes


def _reuse_memory():
    return os.environ.get("MINITL_REUSE_MEMORY", "1") != "0"


# ---------------------------------------------------------------- array helpers with no common spelling

def scatter_add(a, index, values):
    """a[index] += values, adding repeated indices (`add.at`, spelled the same in NumPy and CuPy)."""
    get_array_module(a).add.at(a, index, values)


def as_strided(x, shape, strides):
    """A view of x's memory with the given shape and strides in bytes (no copy, no check: the
    caller's strides must stay inside x). NumPy's and CuPy's stride_tricks.as_strided; CuPy's
    sliding_window_view is not used because it reads its arguments back from the GPU."""
    return get_array_module(x).lib.stride_tricks.as_strided(x, shape, strides)


def fuse(fn):
    """Run an elementwise function of arrays and numbers as one GPU kernel (`cupy.fuse`).

    On the CPU it is the function itself, line by line. On the GPU every `+`, `*` or `**`
    would otherwise launch a kernel of its own, and a small model's training step is bound
    by how many kernels it launches, not by arithmetic. The function may update its array
    arguments in place (`m += ...`) and use operators only (no xp calls: `v ** 0.5`).
    """
    fused = cupy.fuse(fn) if cupy is not None else None

    @functools.wraps(fn)
    def run(*args):
        return fused(*args) if fused is not None and isinstance(args[0], cupy.ndarray) else fn(*args)
    return run


def blas_name():
    """The BLAS NumPy was built with, for the install doctor and benchmark tags."""
    try:
        config = numpy.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:
        return "unknown"


def versions():
    out = {"numpy": numpy.__version__}
    if cupy is not None:
        out["cupy"] = cupy.__version__
    return out
