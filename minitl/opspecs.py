"""The table of every differentiable op, for `python -m minitl check` and the tests.

Each entry says how to call the op, small default input shapes, any extra
arguments, and the domain of each input, which keeps inputs away from the op's
kinks: ReLU at 0, ties for max and max-pooling, log and pow at 0, a divisor near 0.
`kind` names how the tests draw other shapes and arguments (tests/strategies.py).
"""

from dataclasses import dataclass, field
from typing import Callable

from minitl import backend
from minitl import functional as F
from minitl.tensors import Tensor


@dataclass(frozen=True)
class OpSpec:
    name: str
    fn: Callable            # fn(*tensors, **params) -> Tensor
    shapes: tuple           # default input shapes
    domains: tuple          # per input: "real", "positive", "nonzero" or "distinct"
    kind: str               # how the tests draw shapes and params
    params: dict = field(default_factory=dict)


def make_array(rng, shape, domain, dtype=backend.float64):
    """A host array of `shape` drawn from `domain`, away from kinks by a margin far above eps."""
    size = 1
    for n in shape:
        size *= n
    if domain == "real":
        a = rng.standard_normal(shape)
    elif domain == "positive":
        a = rng.uniform(0.5, 2.0, shape)
    elif domain == "nonzero":  # |x| >= 0.1: ReLU's kink at 0 is out of reach of eps = 1e-6
        a = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.1, 1.0, shape)
    elif domain == "distinct":  # all values at least 0.1 apart: no ties for max
        a = (rng.permutation(size) * 0.1 + rng.uniform(0, 0.01, size)).reshape(shape) - 0.05 * size
    else:
        raise ValueError(f"unknown input domain {domain!r}")
    return a.astype(dtype)


def make_inputs(spec, rng, shapes=None, device="cpu", dtype=backend.float64):
    """Tensors that require grad, one per input of spec, on `device`."""
    shapes = spec.shapes if shapes is None else shapes
    return [Tensor(backend.to_device(make_array(rng, s, d, dtype), device), requires_grad=True)
            for s, d in zip(shapes, spec.domains)]


def _labels(logits):
    """Fixed, valid labels for a batch of logits: 0, 1, 2, ... modulo the class count."""
    n, c = logits.shape
    xp = backend.get_array_module(logits.data)
    return xp.arange(n) % c


def _dropout_fixed_mask(x, p=0.3):
    """Dropout with the same mask on every call, so it can be checked: drawn from a private generator,
    so checking it never reseeds or consumes the user's global one."""
    with backend.fork_rng(1234):
        return F.dropout(x, p)


def _batch_norm_training(x, w, b):
    """Batch statistics (no running ones), as in training."""
    return F.batch_norm(x, None, None, w, b, training=True)


def _batch_norm_eval(x, w, b):
    """Fixed running statistics, as in eval mode."""
    stats = backend.numpy_host.linspace(0.5, 1.5, x.shape[1]).astype(x.dtype)
    running_mean, running_var = (Tensor(backend.to_device(a, x.device)) for a in (stats - 1, stats))
    return F.batch_norm(x, running_mean, running_var, w, b, training=False)


def _l2sp_fixed_anchors(*weights):
    """L2-SP with anchors fixed by the weights' shapes (the same on every call)."""
    anchors = [backend.to_device(backend.numpy_host.linspace(-1, 1, w.numel()).reshape(w.shape).astype(w.dtype),
                                 w.device) for w in weights]
    return F.l2sp_penalty(weights, anchors)


R, P, NZ, D = "real", "positive", "nonzero", "distinct"

OP_SPECS = [
    OpSpec("add", lambda a, b: a + b, ((3, 4), (4,)), (R, R), "broadcast"),
    OpSpec("sub", lambda a, b: a - b, ((3, 1), (2, 1, 4)), (R, R), "broadcast"),
    OpSpec("mul", lambda a, b: a * b, ((2, 3), (2, 3)), (R, R), "broadcast"),
    OpSpec("div", lambda a, b: a / b, ((3, 4), (3, 1)), (R, NZ), "broadcast"),
    OpSpec("neg", lambda x: -x, ((3, 4),), (R,), "unary"),
    OpSpec("pow", lambda x, c: x ** c, ((3, 4),), (P,), "pow", {"c": 2.5}),
    OpSpec("exp", lambda x: x.exp(), ((3, 4),), (R,), "unary"),
    OpSpec("log", lambda x: x.log(), ((3, 4),), (P,), "unary"),
    OpSpec("matmul", lambda a, b: a @ b, ((2, 3, 4), (4, 5)), (R, R), "matmul"),
    OpSpec("sum", lambda x, axis, keepdims: x.sum(axis, keepdims), ((3, 4, 2),), (R,), "reduce",
           {"axis": 1, "keepdims": False}),
    OpSpec("mean", lambda x, axis, keepdims: x.mean(axis, keepdims), ((3, 4, 2),), (R,), "reduce",
           {"axis": (0, 2), "keepdims": True}),
    OpSpec("max", lambda x, axis, keepdims: x.max(axis, keepdims), ((3, 4, 2),), (D,), "reduce",
           {"axis": 1, "keepdims": False}),
    OpSpec("reshape", lambda x, shape: x.reshape(shape), ((3, 4),), (R,), "reshape", {"shape": (2, -1)}),
    OpSpec("transpose", lambda x, axes: x.transpose(axes), ((2, 3, 4),), (R,), "transpose", {"axes": (2, 0, 1)}),
    OpSpec("getitem", lambda x, index: x[index], ((4, 5),), (R,), "getitem",
           {"index": (slice(1, None), [0, 2, 2])}),
    OpSpec("relu", F.relu, ((3, 4),), (NZ,), "unary"),
    OpSpec("softmax", F.softmax, ((3, 5),), (R,), "unary"),
    OpSpec("log_softmax", F.log_softmax, ((3, 5),), (R,), "unary"),
    OpSpec("dropout", _dropout_fixed_mask, ((4, 6),), (R,), "unary"),
    OpSpec("linear", F.linear, ((4, 3), (2, 3), (2,)), (R, R, R), "linear"),
    OpSpec("conv2d", F.conv2d, ((2, 3, 5, 5), (4, 3, 3, 3), (4,)), (R, R, R), "conv2d",
           {"stride": 2, "padding": 1}),
    OpSpec("max_pool2d", F.max_pool2d, ((2, 2, 5, 5),), (D,), "pool", {"kernel_size": 2, "stride": 2}),
    OpSpec("avg_pool2d", F.avg_pool2d, ((2, 2, 5, 5),), (R,), "pool", {"kernel_size": 3, "stride": 1}),
    OpSpec("cross_entropy", lambda z: F.cross_entropy(z, _labels(z)), ((4, 3),), (R,), "logits"),
    OpSpec("cross_entropy_composed", lambda z: F.cross_entropy_composed(z, _labels(z)), ((4, 3),), (R,), "logits"),
    OpSpec("mse_loss", F.mse_loss, ((3, 4), (3, 4)), (R, R), "pair"),
    OpSpec("mse_loss_composed", F.mse_loss_composed, ((3, 4), (3, 4)), (R, R), "pair"),
    OpSpec("batch_norm_training", _batch_norm_training, ((3, 2, 3, 3), (2,), (2,)), (R, R, R), "batchnorm"),
    OpSpec("l2sp_penalty", _l2sp_fixed_anchors, ((3, 2), (4,)), (R, R), "pair"),
    OpSpec("batch_norm_eval", _batch_norm_eval, ((3, 2, 3, 3), (2,), (2,)), (R, R, R), "batchnorm"),
]
