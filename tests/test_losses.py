"""Fused losses agree with their composed twins; bad labels are named."""

import numpy as np
import pytest
from conftest import host
from hypothesis import given, settings
from hypothesis import strategies as st

import minitl as mt
import minitl.functional as F
from minitl import backend


@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**31), st.booleans())
def test_cross_entropy_fused_and_composed_agree(device, n, c, seed, labels_on_device):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, c)) * 5
    y = rng.integers(0, c, n)
    y = backend.to_device(y, device) if labels_on_device else y
    grads = []
    for loss_fn in (F.cross_entropy, F.cross_entropy_composed):
        zt = mt.tensor(z, requires_grad=True, device=device)
        loss = loss_fn(zt, y)
        loss.backward()
        grads.append((loss.item(), host(zt.grad)))
    assert np.isclose(grads[0][0], grads[1][0], rtol=1e-12)
    np.testing.assert_allclose(grads[0][1], grads[1][1], rtol=1e-10, atol=1e-12)


@given(st.integers(1, 5), st.integers(1, 5), st.integers(0, 2**31))
def test_mse_fused_and_composed_agree(device, n, m, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((n, m)), rng.standard_normal((n, m))
    out = []
    for loss_fn in (F.mse_loss, F.mse_loss_composed):
        at, bt = mt.tensor(a, requires_grad=True, device=device), mt.tensor(b, requires_grad=True, device=device)
        loss = loss_fn(at, bt)
        loss.backward()
        out.append((loss.item(), host(at.grad), host(bt.grad)))
    assert np.isclose(out[0][0], out[1][0])
    for u, v in zip(out[0][1:], out[1][1:]):
        np.testing.assert_allclose(u, v, rtol=1e-10)


def test_cross_entropy_is_stable_for_huge_logits(device):
    z = mt.tensor(np.array([[1000.0, 0.0], [0.0, -1000.0]]), requires_grad=True, device=device)
    loss = F.cross_entropy(z, np.array([0, 1]))
    loss.backward()
    assert np.isclose(loss.item(), 500.0) and np.all(np.isfinite(host(z.grad)))


def test_cross_entropy_value_against_the_formula(device):
    z = np.array([[1.0, 2.0, 0.5]])
    expected = -np.log(np.exp(2.0) / np.exp(z).sum())
    assert np.isclose(F.cross_entropy(mt.tensor(z, device=device), [1]).item(), expected)


@pytest.mark.parametrize("labels, error, message", [
    (np.array([0, 1, 4]), ValueError, "label 4 at position 2 is out of range for 4 classes"),
    (np.array([0, -1, 2]), ValueError, "label -1 at position 1 is out of range"),
    (np.array([0.0, 1.0, 2.0]), TypeError, "labels must be integers"),
    (np.array([0, 1]), ValueError, r"labels have shape \(2,\), expected \(3,\)"),
])
def test_bad_labels_are_named(device, labels, error, message):
    with pytest.raises(error, match=message):
        F.cross_entropy(mt.tensor(np.zeros((3, 4), dtype=np.float32), device=device), labels)


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]),
       labels=st.lists(st.integers(-130, 300), min_size=1, max_size=12), classes=st.integers(1, 260),
       step=st.sampled_from([1, 2]))
def test_every_bad_label_is_found_in_every_integer_dtype(dtype, labels, classes, step):
    """For every integer dtype and a strided view, a label outside 0..classes-1 is refused and named,
    and labels inside pass (an unsigned reading of int8's -1 is 255, inside 256 classes: tried, and caught)."""
    info = np.iinfo(dtype)
    labels = np.array([v for v in labels if info.min <= v <= info.max] or [0], dtype=dtype)
    labels = np.repeat(labels, step)[::step]  # a view with a stride of `step` elements
    logits = mt.tensor(np.zeros((len(labels), classes), dtype=np.float32))
    bad = [i for i, v in enumerate(labels.tolist()) if not 0 <= v < classes]
    if bad:
        with pytest.raises(ValueError, match=f"label {int(labels[bad[0]])} at position {bad[0]} is "):
            F.cross_entropy(logits, labels)
    else:
        assert np.isclose(F.cross_entropy(logits, labels).item(), np.log(classes))


def test_logits_must_be_2d(device):
    with pytest.raises(ValueError, match=r"logits must be 2-D \(N, C\), got shape \(4,\)"):
        F.cross_entropy(mt.tensor(np.zeros(4, dtype=np.float32), device=device), np.array([0]))


def test_mse_refuses_to_broadcast(device):
    with pytest.raises(ValueError, match=r"shapes \(3, 1\) and \(3,\) differ"):
        F.mse_loss(mt.tensor(np.zeros((3, 1)), device=device), mt.tensor(np.zeros(3), device=device))


def test_loss_modules(device):
    z = mt.tensor(np.zeros((2, 3)), requires_grad=True, device=device)
    assert np.isclose(mt.nn.CrossEntropyLoss()(z, np.array([0, 2])).item(), np.log(3))
    assert mt.nn.MSELoss()(z, mt.tensor(np.ones((2, 3)), device=device)).item() == 1.0
