"""cupyx for the stand-in: scatter_add (out-of-range indices wrap, as in CuPy) and the sync guard."""

import contextlib

from cupy_standin import DeviceSynchronized, _forbidden  # noqa: F401
from cupy_standin import ufunc as _ufunc

_add = _ufunc("add")


def scatter_add(a, slices, value):
    """a[slices] += value with repeated indices adding up (numpy.add.at); indices wrap around."""
    _add.at(a, slices, value)


@contextlib.contextmanager
def allow_synchronize(allow):
    """With allow=False, any host sync inside the block raises DeviceSynchronized."""
    _forbidden[0] += 0 if allow else 1
    try:
        yield
    finally:
        _forbidden[0] -= 0 if allow else 1
