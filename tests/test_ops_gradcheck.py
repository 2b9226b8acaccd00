"""Every op in the op-spec table passes gradcheck on Hypothesis-drawn shapes, on every device."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import KINDS, shapes_and_params

import minitl as mt
from minitl.opspecs import OP_SPECS, make_inputs
from minitl.testing import tensors


def test_every_spec_kind_has_a_strategy():
    assert {s.kind for s in OP_SPECS} <= set(KINDS)


@pytest.mark.parametrize("spec", OP_SPECS, ids=lambda s: s.name)
@given(data=st.data())
def test_gradcheck(spec, device, data):
    """The op table through minitl.testing's public pieces (what a learner uses for an op of their own):
    values drawn by `tensors` from each input's domain, judged by gradcheck; shapes per op kind."""
    shapes, params = data.draw(shapes_and_params(spec), label="shapes, params")
    inputs = [data.draw(tensors(s, domain, device), label=f"input {i}")
              for i, (s, domain) in enumerate(zip(shapes, spec.domains))]
    assert mt.gradcheck(lambda *xs: spec.fn(*xs, **params), inputs)


@pytest.mark.parametrize("spec", OP_SPECS, ids=lambda s: s.name)
@pytest.mark.parametrize("trained", ["first", "last"])
def test_only_needed_gradients_are_computed(spec, device, trained):
    """Freeze every input but one: each op's backward computes no gradient for an input that needs
    none (what it returns is spied on, as test_nn's _SpyConv does for conv: the engine would drop an
    unneeded gradient anyway, so .grad alone cannot show the work was skipped), and the trained input
    still gets its gradient."""
    from minitl.autograd import graph_order
    inputs = make_inputs(spec, np.random.default_rng(0), device=device)
    keep = inputs[0] if trained == "first" else inputs[-1]
    for x in inputs:
        x.requires_grad = x is keep
    out = spec.fn(*inputs, **spec.params)
    returned = []
    for t in graph_order(out):
        fn = t._creator
        if fn is not None:
            def spy(gy, fn=fn, backward=fn.backward):
                got = backward(gy)
                returned.append((type(fn).__name__, fn.needs_grad, got if isinstance(got, tuple) else (got,)))
                return got
            fn.backward = spy
    out.backward(mt.tensor(np.ones(out.shape), dtype=mt.float64, device=device))
    assert returned, "no op ran backward"
    for name, needs, grads in returned:
        for i, (need, g) in enumerate(zip(needs, grads)):
            assert need or g is None, f"{name}.backward computed a gradient for input {i}, which needs none"
            assert not need or g is not None, f"{name}.backward returned no gradient for input {i}, which needs one"
    assert keep.grad is not None and keep.grad.shape == keep.data.shape


def test_batch_norm_needs_a_random_upstream_gradient(device, monkeypatch):
    """With sum() as the loss, batch norm's true input gradient in training mode is zero (the
    normalised outputs of a channel always sum to zero), so a check with an all-ones upstream
    gradient passes a backward that returns zeros. gradcheck draws the upstream gradient at
    random and catches it."""
    bn = lambda x: mt.functional.batch_norm(x, None, None, training=True)
    x = mt.tensor(np.random.default_rng(0).standard_normal((4, 3)), requires_grad=True, device=device)
    bn(x).sum().backward()
    assert np.abs(mt.backend.to_host(x.grad)).max() < 1e-12
    assert mt.gradcheck(bn, [x])

    from minitl.functional.normalization import BatchNormFunction
    monkeypatch.setattr(BatchNormFunction, "backward", lambda self, gy: (gy * 0, None, None))  # broken
    x.grad = None
    bn(x).sum().backward()
    assert np.abs(mt.backend.to_host(x.grad)).max() < 1e-12   # the all-ones check cannot tell
    with pytest.raises(mt.GradcheckError):
        mt.gradcheck(bn, [x])


@pytest.mark.parametrize("spec", OP_SPECS, ids=lambda s: s.name)
def test_ops_that_promise_new_gradients_return_arrays_nobody_else_holds(spec, device):
    """An op with new_grads = True has its gradients kept as leaves' .grad without a copy: each must be
    a new array, no view of the upstream gradient, and no two of them the same memory."""
    from minitl import backend
    from minitl.autograd import graph_order
    inputs = make_inputs(spec, np.random.default_rng(0), device=device)
    out = spec.fn(*inputs, **spec.params)
    for t in graph_order(out):
        fn = t._creator
        if fn is None or not fn.new_grads:
            continue
        xp = backend.get_array_module(t.data)
        gy = xp.asarray(backend.to_device(np.random.default_rng(1).standard_normal(t.shape), t.device))
        got = fn.backward(gy)
        grads = [g for g in (got if isinstance(got, tuple) else (got,)) if g is not None]
        for i, g in enumerate(grads):
            assert not xp.shares_memory(g, gy), f"{type(fn).__name__}: gradient {i} is a view of gy"
            for j in range(i):
                assert not xp.shares_memory(g, grads[j]), f"{type(fn).__name__}: gradients {j} and {i} share memory"


def test_a_leaf_keeps_a_new_gradient_and_gets_a_copy_of_a_shared_one():
    """x * x sums two new arrays; a + a hands the same gy to both sides: either way each leaf's .grad is
    its own and accumulates correctly over two backwards."""
    for make in (lambda a, b: (a * b).sum(), lambda a, b: (a + b).sum(), lambda a, b: (a + a * b).sum()):
        a = mt.tensor(np.arange(3.0), requires_grad=True)
        b = mt.tensor(np.ones(3) * 2, requires_grad=True)
        for _ in range(2):
            make(a, b).backward()
        expected = [a.grad.copy(), b.grad.copy()]
        a.grad += 100  # a's gradient is its own: b's does not move
        np.testing.assert_array_equal(b.grad, expected[1])
        assert not np.shares_memory(a.grad, b.grad)
