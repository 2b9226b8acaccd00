"""cupy.lib.stride_tricks for the stand-in: views, so they cost no op."""

import numpy
from cupy_standin import ndarray, sync, wrap


def _check(x, name):
    if not isinstance(x, ndarray):
        raise TypeError(f"cupy.lib.stride_tricks.{name} needs a CuPy array, got {type(x)}")
    return x._a


def as_strided(x, shape=None, strides=None):
    return wrap(numpy.lib.stride_tricks.as_strided(_check(x, "as_strided"), shape, strides))


def sliding_window_view(x, window_shape, axis=None, *, subok=False, writeable=False):
    """CuPy's copies window_shape to the GPU and compares it there with Python's `<`: a sync
    (found on the first real GPU run)."""
    sync("cupy.lib.stride_tricks.sliding_window_view() (it reads window_shape back from the GPU)")
    return wrap(numpy.lib.stride_tricks.sliding_window_view(_check(x, "sliding_window_view"), window_shape,
                                                            axis=axis, writeable=writeable))
