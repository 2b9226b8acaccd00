"""Numerical gradient checking: is every backward right?

For f(inputs) -> output and a random upstream gradient g, backward gives
d<g, f>/dx for each input x; central differences give the same number one
element at a time: (<g, f(x + eps e_i)> - <g, f(x - eps e_i)>) / (2 eps).
A random g (not all ones) catches a backward that forgets to multiply by it.
"""

from minitl import backend
from minitl.autograd import no_grad
from minitl.tensors import Tensor


class GradcheckError(AssertionError):
    """A backward disagreed with the numerical gradient (the message says where)."""


def _analytic(fn, inputs, checked, gy):
    """The gradients backward gives for the checked inputs, from fresh .grad."""
    for x in checked:
        x.grad = None
    fn(*inputs).backward(gy)
    xp = backend.get_array_module(gy)
    return [x.grad if x.grad is not None else xp.zeros_like(x.data) for x in checked]


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0):
    """Check fn's backward against central differences, for every input that requires grad.

    Inputs that take gradients must be float64. Also checks that two backward passes
    agree and that a zero upstream gradient gives zero gradients. Returns True, or
    raises GradcheckError naming the input, the worst index and both values.
    """
    inputs = list(inputs)
    checked = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad, so there is nothing to check")
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor) and x.requires_grad and x.dtype != backend.float64:
            raise TypeError(f"gradcheck: input {i} is {x.dtype}; gradients are checked in float64 only")
    with no_grad():
        out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    rng = backend.host_rng(seed)
    gy = backend.randn(out.shape, out.dtype, out.device, rng)
    xp = backend.get_array_module(gy)
    positions = {id(x): i for i, x in enumerate(inputs) if isinstance(x, Tensor)}

    first = _analytic(fn, inputs, checked, gy)
    for x, analytic in zip(checked, first):
        x.data = x.data.copy()      # C-contiguous (and still 0-d if it was), so that ...
        flat = x.data.reshape(-1)  # ... this is a view: perturbing it perturbs x
        numeric = xp.zeros(x.data.size, dtype=x.dtype)
        with no_grad():
            for i in range(x.data.size):
                old = flat[i].item()
                flat[i] = old + eps
                plus = (fn(*inputs).data * gy).sum()
                flat[i] = old - eps
                minus = (fn(*inputs).data * gy).sum()
                flat[i] = old
                numeric[i] = (plus - minus) / (2 * eps)
        analytic = analytic.reshape(-1)
        error = xp.abs(analytic - numeric) - (atol + rtol * xp.abs(numeric))
        worst = int(error.argmax()) if error.size else 0
        if error.size and float(error[worst]) > 0:
            index = tuple(int(k) for k in backend.numpy_host.unravel_index(worst, x.shape))
            raise GradcheckError(
                f"gradcheck: input {positions[id(x)]} (shape {x.shape}): at index {index} backward gave "
                f"{float(analytic[worst]):.8g} but the numerical gradient is {float(numeric[worst]):.8g} "
                f"(atol={atol}, rtol={rtol})")
    second = _analytic(fn, inputs, checked, gy)
    for x, a, b in zip(checked, first, second):
        if not bool(xp.allclose(a, b, rtol=0, atol=0)):
            raise GradcheckError(f"gradcheck: input {positions[id(x)]}: two backward passes gave different gradients")
    zero = _analytic(fn, inputs, checked, xp.zeros_like(gy))
    for x, g in zip(checked, zero):
        if bool(xp.any(g != 0)):
            raise GradcheckError(f"gradcheck: input {positions[id(x)]}: a zero upstream gradient "
                                 f"gave a non-zero gradient")

    return True
