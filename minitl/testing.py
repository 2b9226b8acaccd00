"""Property tests for your own op: Hypothesis draws the shapes and values, gradcheck judges each.

    from minitl.testing import check_op, shape
    check_op(softplus, shapes=[(3, 4)])               # fixed shapes, values drawn
    check_op(softplus, shapes=shape())                # one input, its shape drawn too
    check_op(leaky_relu, shapes=shape(), domains="nonzero")   # values kept away from the kink at 0

Every example runs minitl.gradcheck on it: float64, central differences, a random upstream
gradient (an all-ones one hides a backward that forgets to multiply by it), a zero upstream
gradient, and two backward passes that must agree. Each example runs on one device drawn from
`on` (by default every device there is: the CPU, and CUDA when CuPy sees a GPU). A failure is
shrunk by Hypothesis to the smallest shapes and simplest values that still fail, and raised; its
draws (device, shapes, params, each input) are attached to the error (`error.__notes__`, which
Python prints under the traceback). Every input requires grad. check_op runs Hypothesis itself:
call it from a plain test, not from inside another @given.

Hypothesis is optional for minitl itself: it comes with the `test` and `lessons` extras.
"""

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError("minitl.testing needs Hypothesis: pip install 'minitl[test]' (or pip install hypothesis)") \
        from None

from minitl import backend
from minitl.checks import is_int
from minitl.gradcheck import gradcheck
from minitl.tensors import Tensor

# Where the values of an input are drawn from, away from where an op has no derivative.
DOMAINS = {
    "real": "any value in [-2, 2]",
    "positive": "values in [0.5, 2] (log, a divisor, a fractional power)",
    "nonzero": "values in [-1, -0.1] or [0.1, 1] (ReLU's kink at 0 is out of reach of gradcheck's eps)",
    "distinct": "values in [-10, 10] at least 0.1 apart (max and max-pooling: a tie has no derivative)",
}


def shape(min_dims=1, max_dims=3, min_side=1, max_side=4):
    """A strategy of one array shape."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=1, max_side=4):
    """A strategy of `num_shapes` shapes that broadcast together, as a tuple of shapes."""
    return hnp.mutually_broadcastable_shapes(num_shapes=num_shapes, min_dims=min_dims, max_dims=max_dims,
                                             min_side=min_side, max_side=max_side).map(
        lambda drawn: tuple(drawn.input_shapes))


def devices():
    """The devices an op can be checked on here: "cpu", and "cuda" when CuPy sees a GPU."""
    return ["cpu"] + (["cuda"] if backend.cuda_status()[0] else [])


def tensors(shape, domain="real", device="cpu", requires_grad=True, low=None, high=None):
    """A strategy of float64 tensors of `shape` (a tuple, or a strategy of one) with values from
    `domain` (see DOMAINS), or from [low, high] when both are given, on `device`, requiring grad."""
    if domain not in DOMAINS:
        raise ValueError(f"tensors: domain must be one of {sorted(DOMAINS)}, got {domain!r}")
    if (low is None) != (high is None) or (low is not None and not low <= high):
        raise ValueError(f"tensors: give both low and high, with low <= high, got {low!r} and {high!r}")
    if low is not None and domain not in ("real",):
        raise ValueError(f"tensors: low and high replace the 'real' domain's range; {domain!r} has its own")
    shapes = shape if isinstance(shape, st.SearchStrategy) else st.just(_check_shape(shape, "tensors"))
    return shapes.flatmap(lambda s: _arrays(s, domain, low, high)).map(
        lambda a: Tensor(backend.to_device(a, device), requires_grad=requires_grad))


def _arrays(s, domain, low=None, high=None):
    if low is not None:
        elements = st.floats(low, high, allow_nan=False, allow_infinity=False)
    elif domain == "distinct":  # multiples of 0.1, each once: ties are impossible, and gaps far above eps
        return hnp.arrays("float64", s, elements=st.integers(-100, 100).map(lambda i: i / 10), unique=True)
    elif domain == "nonzero":
        elements = st.floats(0.1, 1.0) | st.floats(-1.0, -0.1)
    elif domain == "positive":
        elements = st.floats(0.5, 2.0)
    else:
        elements = st.floats(-2.0, 2.0)
    return hnp.arrays("float64", s, elements=elements)


def _check_shape(s, where):
    s = tuple(s)
    if not all(is_int(n) and n >= 0 for n in s):
        raise ValueError(f"{where}: a shape is a tuple of sizes >= 0, got {s!r}")
    return s


def check_op(fn, shapes, params=None, domains="real", on=None, max_examples=50, low=None, high=None, eps=1e-6,
             atol=1e-5, rtol=1e-3):
    """Property-test fn's backward against central differences; returns None, or raises the failure
    of the smallest example Hypothesis found, with its draws attached.

    fn(*tensors, **params) -> Tensor. shapes: one shape per input (a list of tuples, or of strategies
    of one shape), or a strategy drawing such a tuple (a strategy of one shape means one input).
    params: keyword arguments for fn: a dict (its values may be strategies), a strategy drawing a
    dict, or a function of the drawn shapes returning either (for an axis or a size that must fit
    them). domains: one name from DOMAINS for every input, or one per input; low and high, when
    given, replace a domain's range. on: a device or a list of them (default: devices()).
    """
    shape_list = _shape_list(shapes)
    on = devices() if on is None else [on] if isinstance(on, str) else list(on)
    on = [backend.check_device(d) for d in on]
    if not on:
        raise ValueError("check_op: no device to check on")
    for d in ([domains] if isinstance(domains, str) else domains):
        if d not in DOMAINS:
            raise ValueError(f"check_op: domain must be one of {sorted(DOMAINS)}, got {d!r}")
    if not isinstance(shapes, st.SearchStrategy) and not isinstance(domains, str) and len(domains) != len(shapes):
        raise ValueError(f"check_op: {len(domains)} domains for {len(shapes)} inputs")

    # One failure, the smallest: several kinds of the same bug (a wrong value at one point, a non-zero
    # gradient for a zero upstream one at another) would otherwise come back as a group of errors.
    @settings(max_examples=max_examples, deadline=None, report_multiple_bugs=False, database=None)
    @given(data=st.data())
    def check_one_example(data):
        device = data.draw(st.sampled_from(on), label="device")
        drawn = data.draw(shape_list, label="shapes")
        if drawn and all(is_int(n) for n in drawn):  # a strategy of one shape: one input
            drawn = (drawn,)
        each = [domains] * len(drawn) if isinstance(domains, str) else list(domains)
        if len(each) != len(drawn):
            raise ValueError(f"check_op: {len(each)} domains for {len(drawn)} inputs")
        kwargs = data.draw(_params(params, drawn), label="params")
        inputs = [data.draw(tensors(s, d, device, low=low, high=high), label=f"input {i}")
                  for i, (s, d) in enumerate(zip(drawn, each))]
        gradcheck(lambda *xs: fn(*xs, **kwargs), inputs, eps=eps, atol=atol, rtol=rtol)

    check_one_example()


def _shape_list(shapes):
    """A strategy of a tuple of shapes, from what check_op was given, or a clear error."""
    if isinstance(shapes, st.SearchStrategy):
        return shapes
    if not isinstance(shapes, (list, tuple)) or not shapes or all(is_int(n) for n in shapes):
        raise ValueError(f"check_op: shapes must be a list with one shape per input (e.g. [(3, 4)]), or a "
                         f"strategy (e.g. shape()); got {shapes!r}")
    return st.tuples(*(s if isinstance(s, st.SearchStrategy) else st.just(_check_shape(s, "check_op"))
                       for s in shapes))


def _params(params, drawn_shapes):
    """A strategy of fn's keyword arguments."""
    if callable(params) and not isinstance(params, st.SearchStrategy):
        params = params(drawn_shapes)
    if isinstance(params, st.SearchStrategy):
        return params
    return st.fixed_dictionaries({k: v if isinstance(v, st.SearchStrategy) else st.just(v)
                                  for k, v in dict(params or {}).items()})


__all__ = ["check_op", "tensors", "shape", "broadcastable_shapes", "devices", "DOMAINS"]
