"""gradcheck itself: it must catch what it exists to catch."""

import numpy as np
import pytest

import minitl as mt
from minitl.autograd import Function


class ForgetsUpstream(Function):
    """y = x^2 with a broken backward: gx = 2x (forgets to multiply by gy)."""
    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, gy):
        return 2 * self.x


class WrongFactor(Function):
    """y = x^3 with a broken backward: gx = 2 x^2 gy (should be 3 x^2 gy)."""
    def forward(self, x):
        self.x = x
        return x ** 3

    def backward(self, gy):
        return 2 * self.x ** 2 * gy


def x64(shape=(3, 4)):
    return mt.tensor(np.random.default_rng(0).uniform(0.5, 1.5, shape), requires_grad=True)


def test_a_correct_op_passes():
    assert mt.gradcheck(lambda x: (x * x).sum(axis=1), [x64()])


def test_a_backward_that_forgets_the_upstream_gradient_is_caught():
    with pytest.raises(mt.GradcheckError, match="input 0"):
        mt.gradcheck(lambda x: ForgetsUpstream()(x), [x64()])


def test_the_message_names_input_index_and_both_values():
    w = mt.tensor(np.ones((3, 4)))  # not checked: does not require grad
    with pytest.raises(mt.GradcheckError, match=r"input 1 \(shape \(3, 4\)\): at index \(\d, \d\) backward gave .* "
                                                 r"numerical gradient is"):
        mt.gradcheck(lambda a, x: a * WrongFactor()(x), [w, x64()])


def test_float32_inputs_are_refused():
    with pytest.raises(TypeError, match="float64"):
        mt.gradcheck(lambda x: x * x, [mt.tensor([1.0, 2.0], requires_grad=True)])


def test_nothing_to_check_is_an_error():
    with pytest.raises(ValueError, match="no input requires grad"):
        mt.gradcheck(lambda x: x * x, [mt.tensor(np.ones(2))])


class NonzeroForZeroUpstream(Function):
    """A backward that adds a constant: wrong, and caught by the zero-upstream check."""
    def forward(self, x):
        return x * 1.0

    def backward(self, gy):
        return gy + 1e-8  # far below the numerical tolerance: only the zero check sees it


def test_a_zero_upstream_gradient_must_give_zero():
    with pytest.raises(mt.GradcheckError, match="zero upstream gradient"):
        mt.gradcheck(lambda x: NonzeroForZeroUpstream()(x), [x64()])


def test_zero_dimensional_inputs_keep_their_shape():
    x = mt.tensor(np.float64(1.5), requires_grad=True)
    y = mt.tensor(np.ones(3), requires_grad=True)
    assert mt.gradcheck(lambda a, b: a * b, [x, y])
    assert x.shape == ()
