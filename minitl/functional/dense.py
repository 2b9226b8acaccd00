"""Dense (fully connected) layers' ops: linear and flatten. (Named dense.py, not linear.py: F.linear, the function,
would hide a submodule of the same name in minitl.functional.)"""

import math

from minitl.autograd import Function
from minitl.checks import check_float_input
from minitl.tensors import check_compatible, require_tensor


class LinearFunction(Function):
    """y = x @ W^T + b;  gx = gy @ W, gW = gy^T @ x, gb = sum of gy over rows"""
    new_grads = True
    def forward(self, x, w, *b):
        self.x_shape = x.shape
        x2 = x if x.ndim == 2 else x.reshape(-1, x.shape[-1])  # leading axes act as one batch axis
        self.x2 = x2 if self.needs_grad[1] else None
        self.w = w if self.needs_grad[0] else None
        # A flattened conv or pool output comes batch innermost, stored (features, N): see backward.
        self.batch_inner = min(x2.shape) > 1 and x2.strides[0] < x2.strides[1]
        y = x2 @ w.T
        if b:
            y += b[0]
        return y if x.ndim == 2 else y.reshape(x.shape[:-1] + (w.shape[0],))

    def backward(self, gy):
        gy2 = gy if gy.ndim == 2 else gy.reshape(-1, gy.shape[-1])
        gx = None
        if self.needs_grad[0]:
            # gx laid out like x (the layout rule in docs/design-notes.md): for batch-innermost x,
            # (W^T gy^T)^T is the same product, written (features, N), so the pooling and ReLU
            # backwards before it walk one layout. Free: BLAS takes either order.
            gx = (self.w.T @ gy2.T).T if self.batch_inner else gy2 @ self.w
            gx = gx if gx.shape == self.x_shape else gx.reshape(self.x_shape)
        gw = gy2.T @ self.x2 if self.needs_grad[1] else None
        gb = gy2.sum(axis=0) if len(self.needs_grad) > 2 and self.needs_grad[2] else None
        return gx, gw, gb


def linear(x, weight, bias=None):
    """y = x @ weight^T + bias, with weight of shape (out_features, in_features) as in PyTorch."""
    inputs = (x, weight) if bias is None else (x, weight, bias)
    check_compatible("linear", *inputs)
    check_float_input(x, "linear")
    x_shape, w_shape = x.shape, weight.shape
    if len(w_shape) != 2:
        raise ValueError(f"linear: weight must be 2-D (out_features, in_features), got shape {w_shape}")
    if not x_shape or x_shape[-1] != w_shape[1]:
        raise ValueError(f"linear: input has shape {x_shape}, expected (N, {w_shape[1]}) "
                         f"to match weight of shape {w_shape}")
    if bias is not None and bias.shape != w_shape[:1]:
        raise ValueError(f"linear: bias has shape {bias.shape}, expected ({w_shape[0]},)")
    return LinearFunction()(*inputs)


def flatten(x, start_dim=1):
    """Merge every axis from start_dim on (NCHW order, as PyTorch): (N, C, H, W) -> (N, C*H*W)."""
    require_tensor(x, "flatten")
    if not isinstance(start_dim, int) or not 0 <= start_dim < max(x.ndim, 1):
        raise ValueError(f"flatten: start_dim {start_dim} is out of range for shape {x.shape}")
    size = math.prod(x.shape[start_dim:])
    return x.reshape(x.shape[:start_dim] + (size,))  # the size, not -1: an empty batch flattens too
