"""The layers: thin Modules over minitl.functional, initialised as PyTorch's defaults."""

import math

from minitl import backend
from minitl import functional as F
from minitl.checks import is_int, is_real, probability
from minitl.functional.conv import _pair
from minitl.nn.module import Module, Parameter
from minitl.tensors import ones, zeros


def _check_sizes(layer, minimum=1, **sizes):
    """Each size an integer >= minimum (a pair counts as two), or an error naming the layer and the value."""
    for name, value in sizes.items():
        for v in value if isinstance(value, tuple) else (value,):
            if not is_int(v):
                raise TypeError(f"{layer}: {name} must be an integer, got {value!r}")
            if v < minimum:
                raise ValueError(f"{layer}: {name} must be >= {minimum}, got {value!r}")


def _float_dtype(layer, dtype):
    dtype = backend.as_dtype(dtype or backend.float32)
    if not backend.is_float(dtype):
        raise TypeError(f"{layer}: parameters must be floating point, got dtype {dtype}")
    return dtype


def _init_uniform(shape, fan_in, dtype, device):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for weights
    (kaiming_uniform with a=sqrt(5)) and biases; drawn on the host."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return Parameter(backend.uniform(-bound, bound, shape, dtype, backend.check_device(device)))


class Linear(Module):
    """y = x @ weight^T + bias, weight of shape (out_features, in_features)."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        _check_sizes("Linear", in_features=in_features, out_features=out_features)
        dtype = _float_dtype("Linear", dtype)
        self.in_features, self.out_features = in_features, out_features
        self.weight = _init_uniform((out_features, in_features), in_features, dtype, device)
        self.bias = _init_uniform((out_features,), in_features, dtype, device) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Conv2d(Module):
    """2-D convolution (cross-correlation) on NCHW input, weight (out, in, kh, kw)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 device=None, dtype=None):
        super().__init__()
        self.kernel_size = _pair(kernel_size, "kernel_size", "Conv2d")
        self.stride, self.padding = _pair(stride, "stride", "Conv2d"), _pair(padding, "padding", "Conv2d")
        _check_sizes("Conv2d", in_channels=in_channels, out_channels=out_channels, kernel_size=self.kernel_size,
                     stride=self.stride)
        _check_sizes("Conv2d", minimum=0, padding=self.padding)
        dtype = _float_dtype("Conv2d", dtype)
        self.in_channels, self.out_channels = in_channels, out_channels
        fan_in = in_channels * self.kernel_size[0] * self.kernel_size[1]
        self.weight = _init_uniform((out_channels, in_channels) + self.kernel_size, fan_in, dtype, device)
        self.bias = _init_uniform((out_channels,), fan_in, dtype, device) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")


class _Pool2d(Module):
    """What the two pooling layers share: a window and a stride (the window's by default)."""

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        name = type(self).__name__
        _check_sizes(name, kernel_size=_pair(kernel_size, "kernel_size", name))
        if stride is not None:
            _check_sizes(name, stride=_pair(stride, "stride", name))
        self.kernel_size, self.stride = kernel_size, stride

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}"


class MaxPool2d(_Pool2d):
    """The largest value of each window."""

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride)


class AvgPool2d(_Pool2d):
    """The mean of each window."""

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride)


class _BatchNorm(Module):
    """What BatchNorm1d and BatchNorm2d share (PyTorch's arguments, buffers and state-dict keys).

    In training mode it normalises with the batch's statistics and moves its running
    statistics; in eval mode it uses them. `freeze_statistics()` (what transfer.freeze calls)
    makes it use and keep its running statistics whatever the mode, so a later model.train()
    cannot move them.
    """

    input_dims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        _check_sizes(name, num_features=num_features)
        dtype = _float_dtype(name, dtype)
        if momentum is not None and not (is_real(momentum) and 0 <= momentum <= 1):
            raise ValueError(f"{name}: momentum must be a number in [0, 1] or None (a cumulative average, which "
                             f"reads the batch count back every step: a GPU sync), got {momentum!r}")
        if not (is_real(eps) and eps > 0):
            raise ValueError(f"{name}: eps must be a number > 0, got {eps!r}")
        # Python floats: a NumPy float64 eps would make a float32 layer's output float64 (NumPy 2's rules)
        self.num_features, self.eps = num_features, float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine, self.track_running_stats = affine, track_running_stats
        self.stats_frozen = False
        device = backend.check_device(device)
        self.weight = Parameter(ones(num_features, dtype=dtype, device=device)) if affine else None
        self.bias = Parameter(zeros(num_features, dtype=dtype, device=device)) if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", zeros(num_features, dtype=dtype, device=device))
            self.register_buffer("running_var", ones(num_features, dtype=dtype, device=device))
            self.register_buffer("num_batches_tracked", zeros((), dtype=backend.int64, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def check_state(self, values, prefix):
        """What load_state_dict refuses for this layer: a negative running variance (eval-mode output
        would be NaN) or batch count. `values` are the entries about to load, by local name."""
        name = (prefix + ".") if prefix else ""
        return [f"{name}{key}: negative values ({what} is never negative)"
                for key, what in (("running_var", "a variance"), ("num_batches_tracked", "a count"))
                if key in values and values[key].size and bool((values[key] < 0).any())]

    def freeze_statistics(self, flag=True):
        """Normalise with the running statistics and never update them, in any mode (flag=False undoes it)."""
        object.__setattr__(self, "stats_frozen", bool(flag))
        return self

    @property
    def uses_batch_stats(self):
        """Whether forward normalises with each batch's own statistics (so a batch of one cannot pass)."""
        return (self.training and not self.stats_frozen) or self.running_mean is None

    def forward(self, x):
        if getattr(x, "ndim", None) not in self.input_dims:
            raise ValueError(f"expected a {' or '.join(f'{d}-D' for d in self.input_dims)} input, got "
                             f"shape {getattr(x, 'shape', type(x).__name__)}")
        use_batch_stats = self.uses_batch_stats
        counting = use_batch_stats and self.num_batches_tracked is not None
        momentum = 0.0 if self.momentum is None else self.momentum
        if counting and self.momentum is None:  # a cumulative average needs the count on the host: a sync
            momentum = 1.0 / (float(self.num_batches_tracked.data) + 1)
        y = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                         training=use_batch_stats, momentum=momentum, eps=self.eps)
        if counting:  # only once the batch was accepted; counted on the device (no sync)
            self.num_batches_tracked.add_(1)
        return y

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) input, per feature."""
    input_dims = (2,)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) input, per channel."""
    input_dims = (4,)


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class Flatten(Module):
    """(N, C, H, W) -> (N, C*H*W), in NCHW order like PyTorch."""

    def __init__(self, start_dim=1):
        super().__init__()
        self.start_dim = start_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim)


class Dropout(Module):
    """Inverted dropout while training; the identity after eval()."""

    def __init__(self, p=0.5):
        super().__init__()
        self.p = probability("Dropout", p)  # np.float32(0.5) is welcome, and kept as a Python number

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class CrossEntropyLoss(Module):
    def forward(self, logits, labels):
        return F.cross_entropy(logits, labels)


class MSELoss(Module):
    def forward(self, a, b):
        return F.mse_loss(a, b)
