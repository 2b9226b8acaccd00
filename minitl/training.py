"""The general training helpers every recipe and lesson shares: one step, the fit loop,
predictions, accuracy, and where a model lives.

A training step (forward, backward, optimizer step) never waits for the GPU: losses stay
on the device while a loop runs and are read back once, at its end.
"""

import contextlib
import math

from minitl import backend
from minitl.autograd import no_grad
from minitl.checks import positive_int
from minitl.tensors import Tensor


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite: training diverged (or the data holds NaN)."""


def module_device(module):
    """Where a module's parameters live ("cpu" or "cuda"); None for a module without any."""
    for p in module.parameters():
        return p.device
    return None


def device_for_model(model, device=None):
    """`device` if one is named, else where the model is, else the default device."""
    return backend.check_device(device if device is not None else module_device(model))


@contextlib.contextmanager
def evaluating(model):
    """Eval mode inside the block; afterwards every submodule gets back its own training flag
    (a Dropout the caller had set to eval stays in eval)."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def train_step(loss_fn, optimizer, x, y):
    """One step: loss, zero_grad, backward, optimizer step; returns the loss tensor."""
    loss = loss_fn(x, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


SCHEDULES = ("constant", "cosine")


def fit(loss_fn, optimizer, loader, steps, schedule="constant", callback=None, every=50):
    """`steps` optimizer steps over loader's batches (as many epochs as it takes); the losses.

    schedule "cosine" scales every group's learning rate by (1 + cos(pi * step / steps)) / 2,
    from its value down to zero at the last step. `callback(step)`, if given, runs after every
    `every` steps and after the last (to watch a run converge; it may sync a GPU).
    The losses stay on the device during the loop and are read back once at the end (on a
    GPU a per-step read would stall every step). A NaN or infinite loss then raises
    NonFiniteLoss naming the first step where it appeared. The loop runs with one BLAS thread
    (MINITL_BLAS_THREADS changes it; see backend.blas_threads).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"fit: schedule must be one of {SCHEDULES}, got {schedule!r}")
    steps, every = positive_int("fit", "steps", steps), positive_int("fit", "every", every)
    base = [group["lr"] for group in optimizer.param_groups]
    try:
        losses = _steps(loss_fn, optimizer, loader, steps, schedule, callback, every, base)
    finally:  # even when interrupted, the optimizer keeps its own learning rates, not a decayed one
        for group, lr in zip(optimizer.param_groups, base):
            group["lr"] = lr
    losses = backend.to_host(backend.get_array_module(losses[0]).stack(losses)).tolist()  # one read, not one a step
    bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
    if bad is not None:
        raise NonFiniteLoss(f"the loss became {losses[bad]} at step {bad + 1} of {steps} "
                            f"(the last finite loss was {losses[bad - 1] if bad else 'none'}): training diverged; "
                            f"try a smaller learning rate, and check the data for NaN")
    return losses


def _steps(loss_fn, optimizer, loader, steps, schedule, callback, every, base):
    """fit's loop: the losses as device arrays."""
    losses, batches = [], iter(loader)
    with backend.blas_threads():  # small batches: one BLAS thread by default (see backend.blas_threads)
        for step in range(steps):
            if schedule == "cosine":
                for group, lr in zip(optimizer.param_groups, base):
                    group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
            try:
                x, y = next(batches)
            except StopIteration:
                batches = iter(loader)
                x, y = next(batches, (None, None))
                if x is None and step == 0:
                    raise ValueError("fit: the loader gave no batch (an empty dataset or iterable)") from None
                if x is None:  # fit goes over the loader again for each epoch: an iterator cannot
                    raise ValueError(f"fit: the loader ran out after {step} of {steps} steps and gave nothing when "
                                     f"iterated again (a one-shot iterator or generator?): pass something that "
                                     f"can be iterated once per epoch, such as a DataLoader or a list of batches; "
                                     f"the first {step} steps were taken") from None
            losses.append(train_step(loss_fn, optimizer, x, y).data)
            if callback is not None and ((step + 1) % every == 0 or step + 1 == steps):
                callback(step + 1)
    return losses


def predict(model, x, batch_size=512):
    """Logits for a whole array of inputs (on the model's device), in eval mode, without a graph."""
    if not backend.is_array(x):
        raise TypeError(f"predict: x must be an array of inputs (NumPy or CuPy), got {type(x).__name__}")
    if len(x) == 0:
        raise ValueError("predict: there are no inputs (an empty array)")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"predict: batch_size must be a positive integer, got {batch_size!r}")
    xp = backend.get_array_module(x)
    with no_grad(), evaluating(model):
        out = [model(Tensor(x[i:i + batch_size])).data for i in range(0, len(x), batch_size)]
    return xp.concatenate(out)


def accuracy(model, split, device=None, batch_size=512):
    """Fraction of split's examples whose largest logit is the label; the data goes to `device`,
    else to where the model is."""
    y = backend.to_host(split.y)
    if y.ndim != 1 or len(y) != len(split.x):
        raise ValueError(f"accuracy: the labels have shape {tuple(y.shape)}, expected ({len(split.x)},): one class "
                         f"index per example")
    x = backend.to_device(split.x, device_for_model(model, device))
    return float((backend.to_host(predict(model, x, batch_size).argmax(axis=1)) == y).mean())
