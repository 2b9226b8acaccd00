"""minitl.testing: a correct op passes, and each planted mistake in a backward is caught and shrunk
to the smallest example."""

import re

import numpy as np
import pytest
from conftest import DEVICES, host
from hypothesis import given
from test_gradcheck_tool import ForgetsUpstream

import minitl as mt
from minitl import backend
from minitl.autograd import Function
from minitl.ops import unbroadcast
from minitl.testing import broadcastable_shapes, check_op, shape, tensors


class Softplus(Function):
    """y = log(1 + exp(x));  gx = gy * sigmoid(x)"""
    def forward(self, x):
        self.x = x
        return backend.get_array_module(x).log1p(backend.get_array_module(x).exp(x))

    def backward(self, gy):
        return gy / (1 + backend.get_array_module(gy).exp(-self.x))


class ForgetsTheUpstreamGradient(Softplus):
    def backward(self, gy):
        return 1 / (1 + backend.get_array_module(gy).exp(-self.x))


class WrongSignOnOneElement(Softplus):
    def backward(self, gy):
        gx = gy / (1 + backend.get_array_module(gy).exp(-self.x))
        gx.reshape(-1)[-1] *= -1 if gx.size > 1 else 1  # only when there are at least two elements
        return gx


class Add(Function):
    """y = a + b (broadcast);  ga = gy summed to a's shape, gb = gy summed to b's shape"""
    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        return a + b

    def backward(self, gy):
        return unbroadcast(gy, self.a_shape), unbroadcast(gy, self.b_shape)


class ForgetsTheBroadcastReduction(Add):
    def backward(self, gy):
        return gy, gy


def failing_example(op, shapes):
    """The error of the smallest failing example, and what Hypothesis says about it (its draws)."""
    with pytest.raises(Exception) as caught:
        check_op(op, shapes=shapes, on=["cpu"])
    return caught.value, "\n".join(getattr(caught.value, "__notes__", []))


@pytest.mark.parametrize("device", [d.values[0] for d in DEVICES if not d.marks] +
                         [pytest.param("cuda", marks=d.marks) for d in DEVICES if d.marks])
def test_a_correct_op_passes_on_every_device(device):
    check_op(lambda x: Softplus()(x), shapes=shape(), on=[device])
    check_op(lambda a, b: Add()(a, b), shapes=broadcastable_shapes(2), on=[device])


def test_forgetting_the_upstream_gradient_is_caught_at_one_element():
    error, printed = failing_example(lambda x: ForgetsTheUpstreamGradient()(x), shape())
    assert isinstance(error, mt.GradcheckError)
    assert "shape (1,)" in str(error), f"not shrunk to one element: {error}"
    assert "Draw 2 (shapes): (1,)" in printed, printed


def test_a_wrong_sign_on_one_element_is_caught_and_shrunk_to_two_elements():
    error, printed = failing_example(lambda x: WrongSignOnOneElement()(x), shape())
    assert isinstance(error, mt.GradcheckError)
    assert re.search(r"shape \((2,|1, 2|2, 1)", str(error)), f"not shrunk to two elements: {error}"
    assert "Draw 2 (shapes)" in printed, printed


def test_a_missing_broadcast_reduction_is_caught_with_the_smallest_broadcast():
    error, printed = failing_example(lambda a, b: ForgetsTheBroadcastReduction()(a, b), broadcastable_shapes(2))
    assert "returned a gradient of shape" in str(error), error
    shapes = re.search(r"Draw 2 \(shapes\): (.*?)(  #|$)", printed, re.M).group(1)
    assert shapes in ("((), (1,))", "((1,), ())", "((), (2,))", "((2,), ())", "((1,), (2,))", "((2,), (1,))"), printed


def test_kinks_are_kept_out_of_reach_and_domains_are_checked():
    check_op(lambda x: mt.functional.relu(x), shapes=shape(), domains="nonzero", on=["cpu"])
    check_op(lambda x: x.max(), shapes=shape(), domains="distinct", on=["cpu"])
    check_op(lambda x: x.log(), shapes=[(2, 3)], domains="positive", on=["cpu"])
    with pytest.raises(ValueError, match="domain must be one of"):
        check_op(lambda x: x, shapes=[(2,)], domains="small", on=["cpu"])
    with pytest.raises(ValueError, match="no device"):
        check_op(lambda x: x, shapes=[(2,)], on=[])


@given(tensors(shape(max_dims=2), low=3.0, high=4.0))
def test_tensors_draw_float64_values_in_the_range_asked_for(t):
    assert t.dtype == mt.float64 and t.requires_grad
    assert ((host(t) >= 3.0) & (host(t) <= 4.0)).all()
    with pytest.raises(ValueError, match="give both low and high"):
        tensors((2,), low=1.0)


def test_without_hypothesis_the_import_names_the_extra(monkeypatch):
    import builtins
    import importlib
    import sys
    real_import = builtins.__import__

    def no_hypothesis(name, *args, **kwargs):
        if name == "hypothesis" or name.startswith("hypothesis."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_hypothesis)
    monkeypatch.delitem(sys.modules, "minitl.testing")
    with pytest.raises(ImportError, match=r"pip install 'minitl\[test\]'"):
        importlib.import_module("minitl.testing")
    monkeypatch.undo()
    importlib.import_module("minitl.testing")
    assert np is not None


def test_one_bug_is_one_error_even_when_it_fails_two_checks():
    """Wrong values at x = 1 and a non-zero gradient for a zero upstream one at x ~ 0 are two checks
    of gradcheck: Hypothesis used to raise a group of both, which `except GradcheckError` missed."""
    for _ in range(3):
        with pytest.raises(mt.GradcheckError):
            check_op(lambda x: ForgetsUpstream()(x), shapes=shape(), on="cpu")  # lesson 2's broken square


def test_the_ways_to_give_shapes_params_and_devices():
    from hypothesis import strategies as st
    check_op(lambda a, b: a * b, shapes=[shape(max_dims=2), (1,)], on="cpu", max_examples=10)
    check_op(lambda x, axis: x.sum(axis=axis), shapes=[(2, 3)], params={"axis": st.integers(0, 1)}, on=["cpu"],
             max_examples=10)
    check_op(lambda x, axis: x.sum(axis=axis), shapes=shape(), on="cpu", max_examples=10,
             params=lambda shapes: {"axis": st.integers(0, len(shapes[0]) - 1)})  # an axis that fits the shape
    for bad in ([], (3, 4)):
        with pytest.raises(ValueError, match="one shape per input"):
            check_op(lambda x: x, shapes=bad, on="cpu")
    with pytest.raises(ValueError, match="1 domains for 2 inputs"):
        check_op(lambda a, b: a * b, shapes=[(2,), (2,)], domains=["real"], on="cpu")
    with pytest.raises(ValueError, match="has its own"):
        tensors((3,), domain="positive", low=-5.0, high=-4.0)
