"""Hypothesis strategies for the op table only: for each op kind in minitl.opspecs, draw (input
shapes, params). What a learner's own op needs (shapes, broadcastable shapes, tensors of a
domain) is public, in minitl.testing, and used from there."""

from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

from minitl.testing import broadcastable_shapes, shape

side = st.integers(1, 4)


@st.composite
def unary(draw, spec):
    return (draw(shape()),), {}


@st.composite
def pow_(draw, spec):
    return (draw(shape()),), {"c": draw(st.sampled_from([-1.5, 0.5, 2, 3, 2.5]))}


@st.composite
def broadcast(draw, spec):
    return draw(broadcastable_shapes(2)), {}


@st.composite
def matmul(draw, spec):
    batch = draw(mutually_broadcastable_shapes(num_shapes=2, max_dims=2, min_side=1, max_side=3))
    n, k, m = draw(side), draw(side), draw(side)
    a, b = batch.input_shapes
    return (a + (n, k), b + (k, m)), {}


@st.composite
def reduce(draw, spec):
    s = draw(shape(min_dims=1))
    axes = draw(st.lists(st.integers(0, len(s) - 1), unique=True, max_size=len(s)))
    axis = draw(st.sampled_from([None, tuple(axes), axes[0] if axes else None, -1]))
    return (s,), {"axis": axis, "keepdims": draw(st.booleans())}


@st.composite
def reshape(draw, spec):
    s = draw(shape())
    size = 1
    for n in s:
        size *= n
    new = draw(st.sampled_from([(-1,), (size, 1), tuple(reversed(s)), (1, -1)]))
    return (s,), {"shape": new}


@st.composite
def transpose(draw, spec):
    s = draw(shape(min_dims=1))
    return (s,), {"axes": tuple(draw(st.permutations(range(len(s)))))}


@st.composite
def getitem(draw, spec):
    s = draw(shape(min_dims=1))
    kind = draw(st.sampled_from(["int", "slice", "array", "mixed"]))
    n = s[0]
    if kind == "int":
        index = draw(st.integers(-n, n - 1))
    elif kind == "slice":
        index = slice(draw(st.integers(0, n - 1)), None, draw(st.integers(1, 2)))
    elif kind == "array":  # repeated indices must add up in backward
        index = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=5))
    else:
        index = (slice(None), draw(st.lists(st.integers(0, s[1] - 1), min_size=1, max_size=4))) if len(s) > 1 else 0
    return (s,), {"index": index}


@st.composite
def linear(draw, spec):
    n, i, o = draw(side), draw(side), draw(side)
    shapes = ((n, i), (o, i), (o,))
    return (shapes if draw(st.booleans()) else shapes[:2]), {}


@st.composite
def conv2d(draw, spec):
    n, c, oc = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 6))
    w = draw(st.integers(max(1, kw - 2 * pw), 6))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    shapes = ((n, c, h, w), (oc, c, kh, kw), (oc,))
    return (shapes if draw(st.booleans()) else shapes[:2]), {"stride": stride, "padding": (ph, pw)}


@st.composite
def pool(draw, spec):
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    kernel = (draw(st.integers(1, min(3, h))), draw(st.integers(1, min(3, w))))
    stride = draw(st.sampled_from([None, (draw(st.integers(1, 3)), draw(st.integers(1, 3)))]))
    return ((n, c, h, w),), {"kernel_size": kernel, "stride": stride}


@st.composite
def logits(draw, spec):
    return ((draw(st.integers(1, 5)), draw(st.integers(1, 5))),), {}


@st.composite
def pair(draw, spec):
    s = draw(shape())
    return (s, s), {}


@st.composite
def batchnorm(draw, spec):
    """(N, C) or (N, C, H, W) with at least 2 values per channel (training needs a variance), and (C,) twice."""
    c = draw(st.integers(1, 3))
    if draw(st.booleans()):
        x = (draw(st.integers(2, 5)), c)
    else:
        x = (draw(st.integers(1, 3)), c, draw(st.integers(1, 3)), draw(st.integers(2, 3)))
    return (x, (c,), (c,)), {}


KINDS = {"unary": unary, "pow": pow_, "broadcast": broadcast, "matmul": matmul, "reduce": reduce,
         "reshape": reshape, "transpose": transpose, "getitem": getitem, "linear": linear, "conv2d": conv2d,
         "pool": pool, "logits": logits, "pair": pair, "batchnorm": batchnorm}


def shapes_and_params(spec):
    """The strategy for one op spec: (input shapes, keyword params)."""
    return KINDS[spec.kind](spec)
