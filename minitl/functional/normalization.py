"""Batch normalisation: each channel scaled to zero mean and unit variance, then by weight and bias.

In training mode the statistics are the batch's own (the biased variance, as PyTorch),
and the running statistics move towards them (the unbiased variance); in eval mode the
running statistics are used, and nothing moves.
"""

from minitl import backend
from minitl.autograd import Function
from minitl.checks import check_float_input, is_real
from minitl.tensors import check_compatible, require_tensor


class BatchNormFunction(Function):
    """y = xhat * w + b with xhat = (x - mean) / sqrt(var + eps), mean and var per channel over the batch;
    training: gx = w / (m sqrt(var + eps)) * (m gy - sum(gy) - xhat * sum(gy * xhat)), m values per channel;
    eval (fixed statistics): gx = gy * w / sqrt(var + eps);  gw = sum(gy * xhat), gb = sum(gy)"""
    new_grads = True

    def __init__(self, running_mean, running_var, training, eps):
        self.running_mean, self.running_var = running_mean, running_var  # tensors, or None
        self.training, self.eps = training, eps

    def forward(self, x, *affine):
        xp = backend.get_array_module(x)
        self.axes = (0,) + tuple(range(2, x.ndim))      # every axis but the channels
        shape = (1, -1) + (1,) * (x.ndim - 2)           # a per-channel array, broadcast against x
        self.m = x.size // x.shape[1]
        if self.training:
            mean = x.mean(axis=self.axes)
            var = ((x - mean.reshape(shape)) ** 2).mean(axis=self.axes)  # biased: what normalises
            self.batch_mean, self.batch_var = mean, var  # batch_norm moves the running statistics towards them
        else:
            mean, var = self.running_mean.data, self.running_var.data
        self.inv_std = (1.0 / xp.sqrt(var + self.eps)).reshape(shape)
        self.xhat = (x - mean.reshape(shape)) * self.inv_std
        if not affine:
            self.w = None
            return self.xhat
        w, b = affine
        self.w = w.reshape(shape)
        return self.xhat * self.w + b.reshape(shape)

    def backward(self, gy):
        gxhat = gy if self.w is None else gy * self.w
        gx = gw = gb = None
        if self.needs_grad[0]:
            if self.training:  # the statistics depend on x too: the compact form of their chain rule
                mean_g = gxhat.mean(axis=self.axes, keepdims=True)
                mean_gx = (gxhat * self.xhat).mean(axis=self.axes, keepdims=True)
                gx = self.inv_std * (gxhat - mean_g - self.xhat * mean_gx)
            else:
                gx = gxhat * self.inv_std
        if len(self.needs_grad) > 1 and self.needs_grad[1]:
            gw = (gy * self.xhat).sum(axis=self.axes)
        if len(self.needs_grad) > 2 and self.needs_grad[2]:
            gb = gy.sum(axis=self.axes)
        return gx, gw, gb


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """PyTorch's F.batch_norm on (N, C) or (N, C, H, W) input. running_mean and running_var are
    tensors of shape (C,) (or None: batch statistics always); in training mode they move by
    `momentum` towards the batch's mean and unbiased variance, in place."""
    op = "batch_norm"
    require_tensor(input, op)
    check_float_input(input, op)
    affine = () if weight is None and bias is None else (weight, bias)
    if len(affine) and (weight is None or bias is None):
        raise ValueError(f"{op}: give both weight and bias, or neither")
    check_compatible(op, input, *affine, *(t for t in (running_mean, running_var) if t is not None))
    if input.ndim not in (2, 4):
        raise ValueError(f"{op}: expected (N, C) or (N, C, H, W) input, got shape {input.shape}")
    c = input.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                    ("bias", bias)):
        if t is not None and t.shape != (c,):
            raise ValueError(f"{op}: {name} has shape {t.shape}, expected ({c},) for input of shape {input.shape}")
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{op}: give both running_mean and running_var, or neither")
    if not training and running_mean is None:
        raise ValueError(f"{op}: eval mode needs running statistics (or pass training=True)")
    if training and input.numel() // max(c, 1) < 2:
        raise ValueError(f"{op}: expected more than 1 value per channel when training, got input of shape "
                         f"{input.shape}")
    if not (is_real(momentum) and 0 <= momentum <= 1) or not (is_real(eps) and eps > 0):
        raise ValueError(f"{op}: momentum must be a number in [0, 1] and eps a number > 0, got {momentum!r} and "
                         f"{eps!r}")
    # Python floats: a NumPy float64 eps or momentum would turn float32 statistics into float64
    momentum, eps = float(momentum), float(eps)
    fn = BatchNormFunction(running_mean, running_var, training, eps)
    y = fn(input, *affine)
    if training and running_mean is not None:  # once the batch was accepted; in place, no graph (versions move)
        m = input.numel() // c
        running_mean.mul_(1 - momentum).add_(momentum * fn.batch_mean)
        running_var.mul_(1 - momentum).add_(momentum * fn.batch_var * (m / (m - 1)))  # unbiased, as PyTorch keeps it
    return y
