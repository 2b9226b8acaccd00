"""Activations: relu, softmax, log_softmax (last axis, stable) and dropout."""

from minitl import backend
from minitl.autograd import Function
from minitl.checks import check_float_input, probability
from minitl.tensors import Tensor, require_tensor


class ReLUFunction(Function):
    """y = max(x, 0);  gx = gy * (x > 0)"""
    new_grads = True
    reads_inputs = False
    saves_output = True
    def forward(self, x):
        self.y = backend.get_array_module(x).maximum(x, 0, out=backend.empty_like(x, any(self.needs_grad)))
        return self.y

    def backward(self, gy):
        return backend.get_array_module(gy).multiply(gy, self.y > 0, out=backend.empty_like(gy, reuse=True))


def relu(x):
    if isinstance(x, Tensor) and x.dtype.kind == "b":
        raise TypeError("relu: the input is bool; convert it first with x.float() or x.to(mt.float32)")
    return ReLUFunction()(x)


class Softmax(Function):
    """y = exp(x - max x) / sum exp(x - max x) over the last axis;  gx = y * (gy - sum(gy * y))"""
    new_grads = True
    reads_inputs = False
    saves_output = True
    def forward(self, x):
        xp = backend.get_array_module(x)
        e = xp.exp(x - x.max(axis=-1, keepdims=True))  # shifting by the max cannot overflow
        self.y = e / e.sum(axis=-1, keepdims=True)
        return self.y

    def backward(self, gy):
        return self.y * (gy - (gy * self.y).sum(axis=-1, keepdims=True))


def softmax(x):
    return Softmax()(x)


def logsumexp(x):
    """log sum exp over the last axis (kept), on a raw array, computed stably."""
    xp = backend.get_array_module(x)
    m = x.max(axis=-1, keepdims=True)
    return m + xp.log(xp.exp(x - m).sum(axis=-1, keepdims=True))


class LogSoftmax(Function):
    """y = x - logsumexp(x) over the last axis;  gx = gy - softmax(x) * sum(gy)"""
    new_grads = True
    reads_inputs = False
    def forward(self, x):
        y = x - logsumexp(x)
        self.p = backend.get_array_module(x).exp(y)
        return y

    def backward(self, gy):
        return gy - self.p * gy.sum(axis=-1, keepdims=True)


def log_softmax(x):
    return LogSoftmax()(x)


def dropout(x, p=0.5, training=True):
    """Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p).

    Composed from mul, so it needs no backward of its own. The mask is drawn on
    the host (one seed, same mask on every device). In eval mode it is the identity.
    """
    require_tensor(x, "dropout")
    check_float_input(x, "dropout")  # an integer tensor cannot be rescaled by 1/(1-p)
    p = probability("dropout", p)
    if not training or p == 0:
        return x
    keep = backend.host_rng().random(x.shape) >= p
    scale = 0.0 if p == 1 else 1.0 / (1.0 - p)
    mask = backend.to_device((keep * scale).astype(x.dtype), x.device)
    laid = backend.empty_like(x.data, reuse=False)  # laid out like x (a flattened conv output is batch innermost), so
    laid[...] = mask                   # the product and its gradient keep x's layout (the layout rule)
    return x * Tensor(laid)
