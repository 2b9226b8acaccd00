"""The checks every module shares, written once: each names what was wrong and where.

This module imports nothing of minitl's (any module may import it).
"""

import math
import numbers


def is_int(value):
    """A Python or NumPy integer, not a bool (True is not an axis or a size)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value):
    """A Python or NumPy real number, not a bool (True is not a rate)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def positive_int(where, name, value):
    """value as a Python int when it is an integer >= 1 (np.int64(3) is welcome), else a ValueError."""
    if not is_int(value) or value < 1:
        raise ValueError(f"{where}: {name} must be a positive integer, got {value!r}")
    return int(value)


def check_number(where, what, value, high=None):
    """A finite real number >= 0 (and < high when given), or a ValueError in PyTorch's words."""
    ok = is_real(value) and math.isfinite(value) and value >= 0
    if not ok or (high is not None and value >= high):
        bound = f"in [0, {high})" if high is not None else "a finite number >= 0"
        raise ValueError(f"{where}: Invalid {what}: {value!r} (expected {bound})")


def probability(where, p):
    """p as a Python float when it is a number in [0, 1] (a dropout rate), else a ValueError."""
    if not is_real(p) or not 0 <= p <= 1:
        raise ValueError(f"{where}: p must be a number in [0, 1], got {p!r}")
    return float(p)


def check_float_input(x, op):
    """minitl computes layers and losses in floating point: an integer input would silently promote the
    output (or overflow). A TypeError that names the fix."""
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: the input is {x.dtype}; minitl computes this in floating point: convert it "
                        f"first with x.float(), x.to(mt.float32) or, for an array, astype('float32')")
