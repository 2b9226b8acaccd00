"""`cupy` for tests without a GPU: NumPy underneath, CuPy's rules on top (see cupy_standin.py)."""

from cupy_names import CUPY_VERSION
from cupy_standin import asnumpy, function, fuse, get_array_module, module_attribute, ndarray, ufunc  # noqa: F401

from cupy import cuda, lib  # noqa: F401  (CuPy's submodules)

__version__ = f"{CUPY_VERSION} (NumPy stand-in)"
_IS_STANDIN = True

asarray = function("asarray")
array = function("array")
asanyarray = function("asanyarray")


def __getattr__(name):
    """Every other name CuPy has: NumPy's function under CuPy's rules, made on first use."""
    value = module_attribute(name)
    globals()[name] = value
    return value
