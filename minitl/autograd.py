"""Reverse-mode autograd: grad mode, Function (one op: forward and backward on raw arrays,
side by side) and the backward pass.

Calling a Function on tensors runs its forward; when grad mode is on and an input requires
grad, the output remembers the Function (`_creator`). `Tensor.backward` calls run_backward,
which visits the recorded graph once, in a fixed order, and hands every Function the gradient
of its output.
"""

import functools
import inspect
import threading

from minitl import backend
from minitl.tensors import Tensor, _new_tensor

_numpy_scalar = backend.numpy_host.generic

# ---------------------------------------------------------------- grad mode

class _GradMode(threading.local):
    """Per thread, as in PyTorch: a thread evaluating under no_grad leaves another one's training alone."""
    enabled = True

    def __init__(self):
        self.entered = []  # the modes that the no_grad blocks this thread is inside replaced


_grad_mode = _GradMode()


class no_grad:
    """Inside `with no_grad():` no op records a graph (evaluation, feature extraction), in this
    thread. As in PyTorch, one object can be entered again and again, and it decorates a
    function with or without parentheses (`@no_grad()`, `@no_grad`)."""

    def __new__(cls, fn=None):
        if fn is None:
            return super().__new__(cls)
        if not callable(fn):
            raise TypeError(f"no_grad takes no arguments (or decorates a function), got {fn!r}")
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):  # its body runs later, elsewhere
            raise TypeError(f"no_grad cannot decorate the async function {fn.__qualname__}: use `with no_grad():` "
                            f"inside it")

        if inspect.isgeneratorfunction(fn):  # its body runs at each next(), after the call returned
            @functools.wraps(fn)
            def generator_without_grad(*args, **kwargs):
                gen = fn(*args, **kwargs)
                resume = functools.partial(gen.send, None)
                while True:
                    try:
                        with cls():
                            item = resume()
                    except StopIteration as stop:
                        return stop.value
                    try:
                        resume = functools.partial(gen.send, (yield item))
                    except GeneratorExit:
                        with cls():
                            gen.close()
                        raise
                    except BaseException as e:  # thrown in: the body sees it, under no_grad
                        resume = functools.partial(gen.throw, e)
            return generator_without_grad

        @functools.wraps(fn)
        def without_grad(*args, **kwargs):
            with cls():
                return fn(*args, **kwargs)
        return without_grad

    def __enter__(self):
        _grad_mode.entered.append(_grad_mode.enabled)  # per thread, so one object serves every thread
        _grad_mode.enabled = False

    def __exit__(self, *exc):
        _grad_mode.enabled = _grad_mode.entered.pop()

    def __call__(self, fn):
        return no_grad(fn)


def is_grad_enabled():
    return _grad_mode.enabled


# ---------------------------------------------------------------- Function and the backward pass

class Function:
    """One op: `forward` and `backward` on raw arrays.

    Calling a Function on tensors runs forward; if grad mode is on and some input
    requires grad, the output remembers this Function and its inputs. Before
    forward runs, `self.needs_grad[i]` says whether input i needs a gradient, so
    forward can skip saving what backward will not use, and backward computes
    only those gradients (returning None for the others).

    `reads_inputs`: backward uses the values of the inputs (or views of them), so an
    in-place change of an input between forward and backward would give a wrong
    gradient; the inputs' versions are recorded and checked. Ops whose backward needs
    only shapes, or arrays they made themselves, set it to False.
    """

    reads_inputs = True
    makes_view = False  # the output may be a view of input 0: then it shares its version (see bump_version)
    saves_output = False  # backward reads the output it returned (exp's y): the output's version is checked too
    released = False  # set once backward has freed what this op saved
    # new_grads: every array backward returns is made by this call and returned once (no view of gy,
    # no array shared by two inputs), so a leaf may keep it as its .grad without a copy.
    new_grads = False

    def __call__(self, *inputs):
        record = False
        for t in inputs:
            if not isinstance(t, Tensor):
                raise TypeError(f"{type(self).__name__}: input {inputs.index(t)} is a {type(t).__name__}, not a "
                                f"Tensor; wrap it with mt.tensor(...)")
            record = record or t._requires_grad
        record = record and _grad_mode.enabled
        self.needs_grad = tuple([t._requires_grad for t in inputs]) if record else (False,) * len(inputs)
        data = self.forward(*[t.data for t in inputs])
        if isinstance(data, _numpy_scalar):  # NumPy reduces to a scalar, CuPy to a 0-d array:
            data = backend.numpy_host.asarray(data)  # a 0-d array on both devices
        out = _new_tensor(data, record)
        if self.makes_view and backend.is_array(data) and data.ndim and \
                backend.get_array_module(data).may_share_memory(data, inputs[0].data):
            out._versions = inputs[0]._versions
        if record:
            self.inputs = inputs
            if self.reads_inputs:
                self.versions = [t._versions[0] for t in inputs]
            if self.saves_output:
                self.output_versions = out._versions  # (a new array's list; its version is 0 now)
            out._creator = self
        return out

    def release(self):
        """Free everything this op saved for backward (arrays, links to its inputs)."""
        self.__dict__.clear()
        self.released = True

    def check_versions(self):
        """A RuntimeError if an input this op reads, or the output it saved, was changed in place since
        the forward."""
        if self.saves_output and self.output_versions[0] != 0:
            raise RuntimeError(f"one of the tensors needed for gradient computation has been modified by an inplace "
                               f"operation: the output of {type(self).__name__}, which its backward reads, is at "
                               f"version {self.output_versions[0]}; expected version 0")
        if not self.reads_inputs or [t._versions[0] for t in self.inputs] == self.versions:
            return
        for i, (t, seen) in enumerate(zip(self.inputs, self.versions)):
            if t._version != seen:
                raise RuntimeError(
                    f"one of the tensors needed for gradient computation has been modified by an inplace "
                    f"operation: input {i} of {type(self).__name__} (shape {t.shape}) is at version {t._version}; "
                    f"expected version {seen}. Was there an optimizer step (or load_state_dict) between the "
                    f"forward and this backward? Step after backward.")

    def forward(self, *xs):
        raise TypeError(f"{type(self).__name__} must define forward")

    def backward(self, gy):
        raise TypeError(f"{type(self).__name__} must define backward")


def _inputs_of(t):
    fn = t._creator
    if fn is None:
        return ()
    if fn.released:
        raise RuntimeError("Trying to backward through the graph a second time (or directly access saved tensors "
                           "after they have already been freed): the first backward freed it. Specify "
                           "retain_graph=True if you need to backward through the graph a second time.")
    return fn.inputs


def graph_order(root):
    """Every tensor that root depends on and that requires grad, inputs before outputs: backward
    visits them in the reverse of this order.

    Iterative depth-first search (no recursion limit) that follows inputs in their
    order, so the order is the same on every run.
    """
    order, seen = [], {id(root)}
    stack = [(root, iter(_inputs_of(root)))]
    while stack:
        t, pending = stack[-1]
        for parent in pending:
            key = id(parent)
            if parent._requires_grad and key not in seen:
                seen.add(key)
                if parent._creator is None:  # a leaf has no inputs: it is finished as soon as it is found
                    order.append(parent)
                    continue
                stack.append((parent, iter(_inputs_of(parent))))
                break
        else:
            stack.pop()
            order.append(t)
    return order


def run_backward(root, grad, retain_graph=False):
    """Tensor.backward's work: every gradient from root's down to the leaves, in graph_order reversed."""
    order = graph_order(root)
    for t in order:  # every check before any gradient is touched
        fn = t._creator
        if fn is not None and (fn.reads_inputs or fn.saves_output):
            fn.check_versions()
    grads = {id(root): grad}
    owned = set()  # ids whose pending gradient is a new array that nothing else holds
    for t in reversed(order):
        key = id(t)
        gy = grads.pop(key, None)
        if gy is None:
            continue
        fn = t._creator
        if fn is None or t._retain_grad:
            if t.grad is None:
                t.grad = _own_gradient(t, gy, fn is None and key in owned)
            else:
                t.grad += gy
        if fn is None:
            continue
        gxs = fn.backward(gy)
        if not isinstance(gxs, tuple):
            gxs = (gxs,)
        for i, (x, gx) in enumerate(zip(fn.inputs, gxs)):
            if gx is None or not x._requires_grad:
                continue
            if gx.shape != x.data.shape:  # a user's backward that forgot to undo a broadcast, say
                raise RuntimeError(f"{type(fn).__name__}.backward returned a gradient of shape {tuple(gx.shape)} "
                                   f"for input {i} of shape {x.shape}")
            key = id(x)
            if key in grads:  # out of place: gx may be a view of gy, which belongs to someone else
                grads[key] = grads[key] + gx
                owned.add(key)
            else:
                grads[key] = gx
                if fn.new_grads:
                    owned.add(key)
        if not retain_graph:
            fn.release()  # its saved arrays (im2col columns and all) are freed now, not at the next step


def _own_gradient(t, gy, owned):
    """gy as t's .grad: t's alone (so += into it is safe) and laid out like t's data, as in PyTorch.
    A new array that nothing else holds, already in t's layout, is kept as it is; else it is copied."""
    if owned and type(gy) is type(t.data) and gy.strides == t.data.strides:  # (NumPy's 0-d results are scalars)
        return gy
    g = backend.get_array_module(gy).empty_like(t.data, dtype=gy.dtype)  # t's layout ("K" order)
    g[...] = gy
    return g


# Older code imports these from here (they moved to minitl/checks.py and minitl/tensors.py).
from minitl.checks import is_int, is_real  # noqa: E402, F401
from minitl.tensors import broadcast_shape, check_compatible, manual_seed, require_tensor, tensor, would_overflow  # noqa: E402, F401
