"""minitl.functional: the ops a network is built from, each a Function (PyTorch's names)."""

from minitl.functional.activation import dropout, log_softmax, relu, softmax
from minitl.functional.conv import avg_pool2d, col2im, conv2d, im2col, max_pool2d
from minitl.functional.dense import flatten, linear
from minitl.functional.loss import cross_entropy, cross_entropy_composed, l2sp_penalty, mse_loss, mse_loss_composed
from minitl.functional.normalization import batch_norm

__all__ = [
    "relu", "softmax", "log_softmax", "dropout",
    "conv2d", "max_pool2d", "avg_pool2d", "im2col", "col2im",
    "linear", "flatten",
    "cross_entropy", "cross_entropy_composed", "mse_loss", "mse_loss_composed", "l2sp_penalty",
    "batch_norm",
]
