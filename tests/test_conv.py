"""conv2d and pooling: against naive loops, im2col's adjoint, and bad input."""

import itertools

import numpy as np
import pytest
from conftest import host
from hypothesis import given
from hypothesis import strategies as st

import minitl as mt
import minitl.functional as F
from minitl import backend
from minitl.functional.conv import col2im, im2col


def naive_conv2d(x, w, b, stride, padding):
    """Cross-correlation by four loops, the definition itself."""
    n, c, h, wd = x.shape
    oc, _, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh, ow = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    y = np.zeros((n, oc, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            y[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w)
    return y + (0 if b is None else b[None, :, None, None])


def naive_pool(x, k, s, reduce):
    n, c, h, w = x.shape
    oh, ow = (h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            y[:, :, i, j] = reduce(x[:, :, i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]], axis=(2, 3))
    return y


conv_cases = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 3),
                       st.integers(1, 3), st.integers(1, 3), st.integers(0, 2), st.integers(1, 7), st.integers(1, 7))


@given(conv_cases, st.booleans(), st.integers(0, 2**31))
def test_conv2d_matches_the_naive_loop(device, case, bias, seed):
    n, c, oc, kh, kw, stride, pad, h, w = case
    h, w = max(h, kh), max(w, kw)
    rng = np.random.default_rng(seed)
    x, wt, b = rng.standard_normal((n, c, h, w)), rng.standard_normal((oc, c, kh, kw)), rng.standard_normal(oc)
    on = lambda a: mt.tensor(a, device=device)
    y = F.conv2d(on(x), on(wt), on(b) if bias else None, stride, pad)
    np.testing.assert_allclose(y.numpy(), naive_conv2d(x, wt, b if bias else None, (stride, stride), (pad, pad)),
                               rtol=1e-10, atol=1e-10)


@given(conv_cases, st.integers(0, 2**31))
def test_col2im_is_the_adjoint_of_im2col(device, case, seed):
    """<im2col(x), c> == <x, col2im(c)> for every x and c: the backward of im2col is col2im."""
    n, c, _, kh, kw, stride, pad, h, w = case
    h, w = max(h, kh), max(w, kw)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    cols = host(im2col(backend.to_device(x, device), kh, kw, (stride, stride), (pad, pad)))
    other = rng.standard_normal(cols.shape)
    back = host(col2im(backend.to_device(other, device), x.shape, kh, kw, (stride, stride), (pad, pad)))
    assert np.isclose((cols * other).sum(), (x * back).sum(), rtol=1e-10, atol=1e-10)


def test_conv2d_takes_pairs_for_kernel_stride_and_padding(device):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 2))
    y = F.conv2d(mt.tensor(x, device=device), mt.tensor(w, device=device), stride=(2, 1), padding=(1, 0))
    np.testing.assert_allclose(y.numpy(), naive_conv2d(x, w, None, (2, 1), (1, 0)), rtol=1e-10)


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(0, 2**31))
def test_pooling_matches_the_naive_loop(device, k0, k1, s0, s1, seed):
    x = np.random.default_rng(seed).standard_normal((2, 3, 7, 6))
    for op, reduce in ((F.max_pool2d, np.max), (F.avg_pool2d, np.mean)):
        y = op(mt.tensor(x, device=device), (k0, k1), (s0, s1))
        np.testing.assert_allclose(y.numpy(), naive_pool(x, (k0, k1), (s0, s1), reduce), rtol=1e-12, atol=1e-12)


def naive_pool_grad(x, gy, k, s, op):
    """The gradient of a pool, window by window: gy to the first maximum, or spread over the window."""
    gx = np.zeros_like(x)
    for b in range(x.shape[0]):
        for ch in range(x.shape[1]):
            for i in range(gy.shape[2]):
                for j in range(gy.shape[3]):
                    window = x[b, ch, i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]]
                    target = gx[b, ch, i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]]
                    if op == "max":
                        target[np.unravel_index(window.argmax(), window.shape)] += gy[b, ch, i, j]
                    else:
                        target += gy[b, ch, i, j] / window.size
    return gx


@pytest.mark.parametrize("k, s", [((2, 2), (2, 2)), ((1, 1), (2, 2)), ((2, 2), (3, 3)), ((3, 2), (2, 2)),
                                  ((2, 3), (2, 3))])
def test_pooling_gradient_matches_the_naive_loop_whatever_memory_held(device, k, s):
    """Every pixel of the gradient is written, also those no window covers (a stride longer than the
    window, sizes not divisible): the workspace is filled with NaN first, so one left out shows."""
    rng = np.random.default_rng(0)
    for (h, w), (op, pool) in itertools.product([(14, 14), (14, 13)], [("max", F.max_pool2d), ("avg", F.avg_pool2d)]):
        x = rng.standard_normal((8, 16, h, w))
        xt = mt.tensor(x, requires_grad=True, device=device)
        y = pool(xt, k, s)
        gy = rng.standard_normal(y.shape)
        if device == "cpu":
            backend.empty((16, h, w, 8), np.float64, np, reuse=True).fill(np.nan)  # what gx will be given
        y.backward(mt.tensor(gy, device=device))
        np.testing.assert_allclose(host(xt.grad), naive_pool_grad(x, gy, k, s, op), rtol=1e-12, atol=1e-12)


def test_max_pool_sends_the_gradient_to_the_first_maximum_of_a_tied_window(device):
    x = mt.tensor(np.array([[[[1.0, 1.0], [1.0, 0.0]]]]), requires_grad=True, device=device)
    F.max_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(host(x.grad), [[[[1, 0], [0, 0]]]])


def test_conv_output_feeds_a_second_conv_and_its_gradients_are_right(device):
    """conv2d returns a transposed view; a second conv, pooling and flatten must handle it."""
    rng = np.random.default_rng(1)
    x = mt.tensor(rng.standard_normal((2, 2, 6, 6)), requires_grad=True, device=device)
    w1 = mt.tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True, device=device)
    w2 = mt.tensor(rng.standard_normal((2, 3, 3, 3)), requires_grad=True, device=device)
    fn = lambda x, w1, w2: F.flatten(F.max_pool2d(F.conv2d(F.relu(F.conv2d(x, w1, padding=1)), w2), 2))
    assert mt.gradcheck(fn, [x, w1, w2])


# ---------------------------------------------------------------- bad input, named

def t(*shape):
    return mt.tensor(np.zeros(shape, dtype=np.float32))


@pytest.mark.parametrize("call, message", [
    (lambda: F.conv2d(t(3, 8, 8), t(4, 3, 3, 3)), r"expected a 4-D input \(N, C, H, W\), got shape \(3, 8, 8\)"),
    (lambda: F.conv2d(t(1, 2, 8, 8), t(4, 3, 3, 3)), "input has 2 channels .* expects 3"),
    (lambda: F.conv2d(t(1, 3, 2, 2), t(4, 3, 3, 3)), "kernel 3x3 is larger than the padded input 2x2"),
    (lambda: F.conv2d(t(1, 3, 8, 8), t(4, 3, 3, 3), stride=0), "stride must be positive"),
    (lambda: F.conv2d(t(1, 3, 8, 8), t(4, 3, 3, 3), padding=-1), "padding must be >= 0"),
    (lambda: F.conv2d(t(1, 3, 8, 8), t(4, 3, 3, 3), t(5)), r"bias has shape \(5,\), expected \(4,\)"),
    (lambda: F.max_pool2d(t(1, 1, 2, 2), 3), "window 3x3 is larger than the input 2x2"),
    (lambda: F.avg_pool2d(t(1, 2, 2), 2), "4-D input"),
    (lambda: F.linear(t(2, 5), t(3, 4)), r"input has shape \(2, 5\), expected \(N, 4\)"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_layers_prefix_the_error_with_the_layer():
    conv = mt.nn.Conv2d(1, 4, 3)
    with pytest.raises(ValueError, match=r"Conv2d\(1, 4, kernel_size=\(3, 3\).*input has 3 channels"):
        conv(t(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"Linear\(in_features=4, out_features=2.*expected \(N, 4\)"):
        mt.nn.Linear(4, 2)(t(2, 5))
