"""The layout rule (docs/design-notes.md): the gradient arriving at every op is laid out in memory
like that op's output. conv and pool store (C, H, W, N); a gradient that came back NCHW would make
pooling's and ReLU's backwards walk two layouts at once, 2 to 10 times slower, and no value would
show it: only a timing would. So the strides are checked here, layer by layer."""

import numpy as np
import pytest

import minitl as mt
import minitl.functional as F
from minitl import nn, transfer
from minitl.autograd import graph_order


def layout(a):
    """The axes of `a` from outermost to innermost in memory (axes of size 1 have no place)."""
    return tuple(int(i) for i in sorted(range(a.ndim), key=lambda i: -a.strides[i]) if a.shape[i] > 1)


def arriving_layouts(loss):
    """(op, its output's layout, the layout of the gradient it received) for every op of a backward."""
    seen = []
    for t in graph_order(loss):
        fn = t._creator
        if fn is None:
            continue
        backward = fn.backward

        def spy(gy, fn=fn, out=t.data, backward=backward):
            seen.append((type(fn).__name__, out.shape, layout(out), layout(gy)))
            return backward(gy)
        fn.backward = spy
    loss.backward()
    return seen


def lenet():
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 7 * 7, 10)), (1, 28, 28)


def transfer_cnn(norm=None):
    return lambda: (transfer.TransferCNN(5, norm=norm), (1, 16, 16))


def with_dropout():
    """A user's model: dropout and an average pool between the convolutions and the head."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Dropout(0.5), nn.Linear(8 * 4 * 4, 3)), (1, 8, 8)


@pytest.mark.parametrize("make", [lenet, transfer_cnn(), transfer_cnn("batch"), with_dropout],
                         ids=["lenet", "transfercnn", "transfercnn-batchnorm", "dropout-avgpool"])
def test_every_gradient_arrives_laid_out_like_its_op_output(make, device):
    mt.manual_seed(0)
    model, shape = make()
    model.to(device)
    x = mt.tensor(np.random.default_rng(0).random((6,) + shape, dtype=np.float32), device=device)
    loss = F.cross_entropy(model(x), np.arange(6) % 3)
    seen = arriving_layouts(loss)
    assert {op for op, *_ in seen} >= {"Conv2dFunction", "LinearFunction", "Reshape"}
    wrong = [(op, shape, out, gy) for op, shape, out, gy in seen if out != gy]
    assert not wrong, f"gradients laid out unlike their op's output (op, shape, output, gradient): {wrong}"
    for op, shape, out, _ in seen:  # and conv and pool really are stored batch innermost
        if op in ("Conv2dFunction", "MaxPool2dFunction", "AvgPool2dFunction"):
            assert out[-1] == 0, f"{op} {shape} is stored {out}, not batch innermost"


def test_pooling_takes_a_gradient_of_any_layout(device):
    """A gradient that arrives NCHW (a user's own op before the pool) is re-laid once, and the
    result is the same as from a (C, H, W, N) one."""
    rng = np.random.default_rng(1)
    x = mt.tensor(rng.standard_normal((4, 3, 6, 6)), requires_grad=True, device=device)
    gy = rng.standard_normal((4, 3, 3, 3))
    for pool in (F.max_pool2d, F.avg_pool2d):
        grads = []
        for g in (gy, np.ascontiguousarray(gy.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)):
            x.grad = None
            pool(x, 2).backward(mt.tensor(g, device=device))
            grads.append(mt.backend.to_host(x.grad))
        np.testing.assert_array_equal(grads[0], grads[1])


@pytest.mark.parametrize("make", [lenet, transfer_cnn(), transfer_cnn("batch")], ids=["lenet", "transfercnn",
                                                                                     "transfercnn-batchnorm"])
def test_every_leaf_gradient_is_laid_out_like_its_tensor(make, device):
    """As in PyTorch, .grad has its tensor's layout (a flattened view of it is a view, and writes through
    it land), however the backward produced it (conv's weight gradient comes out transposed, an input's
    gradient as a (C, H, W, N) slice of a padded buffer)."""
    mt.manual_seed(0)
    model, shape = make()
    model.to(device)
    x = mt.tensor(np.random.default_rng(0).random((6,) + shape, dtype=np.float32), device=device,
                  requires_grad=True)
    F.cross_entropy(model(x), np.arange(6) % 3).backward()
    for name, t in list(model.named_parameters()) + [("input", x)]:
        assert t.grad.strides == t.data.strides, f"{name}: .grad strides {t.grad.strides}, data {t.data.strides}"
