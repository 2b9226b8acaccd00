"""Losses: cross_entropy and mse_loss, each fused with its closed-form gradient,
next to a composed twin built from primitive ops (tests show the two agree)."""

import weakref

from minitl import backend
from minitl.autograd import Function
from minitl.checks import check_float_input
from minitl.functional.activation import log_softmax
from minitl.tensors import Tensor, check_compatible, require_tensor


def check_labels(logits, labels, op="cross_entropy"):
    """Labels as a raw integer array on the logits' device, or a clear error naming what is wrong.

    Labels given on the host (a list, a NumPy array, a CPU tensor) are checked there, label by
    label, before they move. Labels already on the GPU are not read back (that would stall
    every training step): their range is checked on the device by the op itself, and an
    out-of-range label makes the loss NaN. minitl's DataLoader and recipes check labels while
    they are still on the host, so a training step never needs to.
    """
    require_tensor(logits, op, "logits")
    check_float_input(logits, op)  # integer logits would give a float64 loss
    if logits.ndim != 2:
        raise ValueError(f"{op}: logits must be 2-D (N, C), got shape {logits.shape}")
    n, c = logits.shape
    if n == 0 or c == 0:
        raise ValueError(f"{op}: logits of shape {logits.shape} are empty: the mean over no examples is undefined")
    if isinstance(labels, Tensor):
        labels = labels.data
    if not backend.is_array(labels):
        labels = backend.numpy_host.asarray(labels)
    if not backend.is_integer(labels.dtype):
        raise TypeError(f"{op}: labels must be integers (class indices), got dtype {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"{op}: labels have shape {tuple(labels.shape)}, expected ({n},) "
                         f"to match logits {logits.shape}")
    if backend.device_of(labels) == "cpu" and labels.size and (labels.min() < 0 or labels.max() >= c):
        bad = backend.numpy_host.flatnonzero((labels < 0) | (labels >= c))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"{op}: label {int(labels[i])} at position {i} is out of range for {c} classes "
                             f"(labels must be in 0..{c - 1})")
    return backend.to_device(labels, logits.device)


# Label tensors whose values were checked on the host before they moved (minitl's DataLoader makes
# them): tensor -> (its array, one more than the largest label). cross_entropy needs no check on the
# device for them, which would cost five kernels a step.
_checked_on_host = weakref.WeakKeyDictionary()


def checked_labels(array, classes):
    """A Tensor of class labels (already on their device) that were checked on the host to lie in
    0..classes-1: cross_entropy with at least that many classes skips its check on the device."""
    t = Tensor(array)
    _checked_on_host[t] = (array, classes)
    return t


def _checked_before(labels, c):
    """Whether labels is a tensor of checked_labels, unchanged since, with every label below c."""
    entry = _checked_on_host.get(labels) if isinstance(labels, Tensor) else None
    return entry is not None and entry[0] is labels.data and entry[1] <= c


def _out_of_range(labels, c):
    """A 0-d device array: True when some label is outside 0..c-1 (checked on the device, no sync)."""
    return ((labels < 0) | (labels >= c)).any()


class CrossEntropy(Function):
    """L = mean_i(logsumexp(z_i) - z_i[y_i]);  gz = (softmax(z) - onehot(y)) * gL / N"""
    new_grads = True
    reads_inputs = False
    def __init__(self, labels, checked):
        self.labels, self.checked = labels, checked

    def forward(self, z):
        xp = backend.get_array_module(z)
        n = z.shape[0]
        shifted = z - z.max(axis=1, keepdims=True)  # the largest logit of each row becomes 0: exp cannot overflow
        e = xp.exp(shifted)
        total = e.sum(axis=1, keepdims=True)
        self.rows = xp.arange(n)
        if self.needs_grad[0]:
            self.p = e / total  # softmax, reused by backward
        loss = (xp.log(total[:, 0]) - shifted[self.rows, self.labels]).sum() / n  # (NumPy's mean: 3 us slower)
        if not self.checked:  # labels on the GPU: a bad one makes the loss NaN instead of a wrong number
            loss = xp.where(_out_of_range(self.labels, z.shape[1]), xp.nan, loss)
        return loss

    def backward(self, gy):
        scale = gy / self.p.shape[0]
        gz = self.p * scale
        backend.scatter_add(gz, (self.rows, self.labels), -scale)  # minus the one-hot of the labels
        return gz


def cross_entropy(logits, labels):
    """Mean negative log-likelihood of the labels under softmax(logits); logits (N, C), labels (N,).

    See check_labels for where the labels are checked."""
    raw = labels.data if isinstance(labels, Tensor) else labels
    on_host = not backend.is_array(raw) or backend.device_of(raw) == "cpu"  # then check_labels checks them
    checked = on_host or _checked_before(labels, logits.shape[-1] if isinstance(logits, Tensor) else 0)
    return CrossEntropy(check_labels(logits, labels), checked=checked)(logits)


def cross_entropy_composed(logits, labels):
    """The same loss from primitive ops: -mean(log_softmax(z)[i, y_i])."""
    labels = check_labels(logits, labels)
    rows = backend.get_array_module(labels).arange(logits.shape[0])
    return -log_softmax(logits)[rows, labels].mean()


def _check_same_shape(a, b, op):
    check_compatible(op, a, b)
    for t in (a, b):  # integer arithmetic would overflow silently
        check_float_input(t, op)
    if a.shape != b.shape:
        raise ValueError(f"{op}: shapes {a.shape} and {b.shape} differ; minitl does not broadcast in losses")
    if a.numel() == 0:
        raise ValueError(f"{op}: the inputs of shape {a.shape} are empty: the mean over no elements is undefined")


class MSELossFunction(Function):
    """L = mean((a - b)^2);  ga = 2(a - b) * gL / size, gb = -ga"""
    new_grads = True
    reads_inputs = False
    def forward(self, a, b):
        self.diff = a - b
        return (self.diff * self.diff).mean()

    def backward(self, gy):
        g = self.diff * (2 * gy / self.diff.size)
        return (g if self.needs_grad[0] else None), (-g if self.needs_grad[1] else None)


def mse_loss(a, b):
    """Mean over all elements of (a - b)^2; the shapes must be equal."""
    _check_same_shape(a, b, "mse_loss")
    return MSELossFunction()(a, b)


def mse_loss_composed(a, b):
    """The same loss from primitive ops: ((a - b) ** 2).mean()."""
    _check_same_shape(a, b, "mse_loss")
    return ((a - b) ** 2).mean()


class L2SPPenalty(Function):
    """R = 1/2 sum_i ||w_i - w0_i||^2 over the listed weights;  gw_i = gR * (w_i - w0_i)"""
    new_grads = True
    reads_inputs = False  # backward uses the differences it saved

    def __init__(self, anchors):
        self.anchors = anchors

    def forward(self, *weights):
        self.diffs = [w - a for w, a in zip(weights, self.anchors)]
        total = (self.diffs[0] * self.diffs[0]).sum()  # a 0-d array of the weights' own array module
        for d in self.diffs[1:]:
            total = total + (d * d).sum()
        return total * 0.5

    def backward(self, gy):
        return tuple(gy * d if need else None for d, need in zip(self.diffs, self.needs_grad))


def l2sp_penalty(weights, anchors):
    """L2-SP's R = 1/2 sum ||w - w0||^2 over weights (tensors) and their anchors (arrays of the same
    shapes, on the same device): how far fine-tuning has moved the weights from the source's."""
    weights, anchors = list(weights), list(anchors)
    if not weights or len(weights) != len(anchors):
        raise ValueError(f"l2sp_penalty: {len(weights)} weights and {len(anchors)} anchors; give one anchor per weight")
    check_compatible("l2sp_penalty", *weights)
    for i, (w, a) in enumerate(zip(weights, anchors)):
        if tuple(a.shape) != w.shape or backend.device_of(a) != w.device:
            raise ValueError(f"l2sp_penalty: anchor {i} has shape {tuple(a.shape)} on {backend.device_of(a)}, "
                             f"its weight {w.shape} on {w.device}")
    return L2SPPenalty(anchors)(*weights)
