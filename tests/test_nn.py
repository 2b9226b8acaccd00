"""Modules, state dicts, optimizers and the freeze contract."""

import numpy as np
import pytest
from conftest import host

import minitl as mt
import minitl.functional as F
import minitl.nn as nn
from minitl import backend


def small_cnn(dtype=None, device=None):
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, dtype=dtype, device=device), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, dtype=dtype, device=device), nn.ReLU(), nn.Flatten(),
        nn.Dropout(0.2), nn.Linear(6 * 2 * 2, 3, dtype=dtype, device=device))


def batch(n=8, seed=0, device=None):
    rng = np.random.default_rng(seed)
    return mt.tensor(rng.random((n, 1, 8, 8), dtype=np.float32), device=device), rng.integers(0, 3, n)


# ---------------------------------------------------------------- Module

def test_parameters_have_pytorch_names_and_layouts():
    mt.manual_seed(0)
    model = small_cnn()
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias"]
    assert model[0].weight.shape == (4, 1, 3, 3) and model[7].weight.shape == (3, 24)
    assert all(p.dtype == mt.float32 for p in model.parameters())


def test_nested_modules_register_with_dotted_names():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
            self.head = nn.Linear(3, 2)

        def forward(self, x):
            return self.head(self.features(x))

    names = list(Net().state_dict())
    assert names == ["features.0.weight", "features.0.bias", "head.weight", "head.bias"]


def test_default_init_bounds_match_pytorch():
    mt.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3)
    bound = 1 / np.sqrt(4 * 9)
    assert np.abs(conv.weight.numpy()).max() <= bound and np.abs(conv.weight.numpy()).max() > 0.8 * bound


def test_repr_reads_like_pytorch():
    text = repr(small_cnn())
    assert "(0): Conv2d(1, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))" in text
    assert "(7): Linear(in_features=24, out_features=3, bias=True)" in text


def test_sequential_indexing_iteration_and_len():
    model = small_cnn()
    assert len(model) == 8 and isinstance(model[-1], nn.Linear)
    assert len(model[:3]) == 3 and len(list(model)) == 8


def test_eval_turns_dropout_off_and_train_turns_it_on():
    x = mt.tensor(np.ones((4, 100), dtype=np.float32))
    drop = nn.Dropout(0.5)
    assert (drop(x).numpy() == 0).any()
    drop.eval()
    assert np.array_equal(drop(x).numpy(), x.numpy())
    assert drop.train() is drop and drop.training


def test_state_dict_round_trip_through_a_file(tmp_path):
    mt.manual_seed(0)
    a = small_cnn()
    mt.save(a.state_dict(), tmp_path / "model.npz")
    mt.manual_seed(1)
    b = small_cnn()
    b.load_state_dict(mt.load(tmp_path / "model.npz"))
    x, _ = batch()
    a.eval(), b.eval()
    assert np.array_equal(a(x).numpy(), b(x).numpy())


def test_state_dict_is_a_copy():
    model = nn.Linear(3, 2)
    sd = model.state_dict()
    model.weight.data += 1
    assert not np.array_equal(sd["weight"], model.weight.data)


def test_a_failed_load_changes_nothing():
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    before = model.state_dict()
    bad = dict(before)
    bad["0.weight"] = np.zeros((2, 3), dtype=np.float32)  # fine on its own ...
    bad["1.weight"] = np.zeros((5, 5), dtype=np.float32)  # ... but this one is mis-shaped
    with pytest.raises(ValueError, match=r"1.weight: shape \(5, 5\) in the state dict, \(2, 2\) in the model"):
        model.load_state_dict(bad)
    for k, v in model.state_dict().items():
        assert np.array_equal(v, before[k])


def test_strict_load_names_missing_and_unexpected_keys():
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"missing keys \['bias'\].*unexpected keys \['extra'\]"):
        model.load_state_dict({"weight": np.zeros((2, 3)), "extra": np.zeros(1)})
    missing, unexpected = model.load_state_dict({"weight": np.zeros((2, 3))}, strict=False)
    assert missing == ["bias"] and unexpected == []


# ---------------------------------------------------------------- the freeze contract

def test_frozen_parameters_get_no_gradient():
    mt.manual_seed(0)
    model = small_cnn()
    model[0].requires_grad_(False)
    x, y = batch()
    F.cross_entropy(model(x), y).backward()
    assert model[0].weight.grad is None and model[0].bias.grad is None
    assert model[3].weight.grad is not None


def test_a_frozen_backbone_records_no_graph():
    mt.manual_seed(0)
    model = small_cnn()
    backbone, head = model[:7], model[7]
    backbone.requires_grad_(False)
    x, _ = batch()
    features = backbone(x)
    assert features._creator is None and not features.requires_grad  # activations freed at once
    assert head(features)._creator is not None


class _SpyConv(F.conv.Conv2dFunction):
    computed = []

    def backward(self, gy):
        grads = super().backward(gy)
        _SpyConv.computed.append(tuple(g is not None for g in grads))
        return grads


def test_a_conv_with_a_frozen_weight_computes_no_weight_gradient():
    rng = np.random.default_rng(0)
    x = mt.tensor(rng.standard_normal((2, 3, 5, 5)), requires_grad=True)
    w = mt.tensor(rng.standard_normal((4, 3, 3, 3)))
    y = _SpyConv((1, 1), (0, 0))(x, w)
    y.sum().backward()
    assert _SpyConv.computed[-1][:2] == (True, False)


@pytest.mark.parametrize("make_opt", [
    lambda ps: mt.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
    lambda ps: mt.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    lambda ps: mt.optim.Adam(ps, lr=0.01, weight_decay=0.01),
])
def test_optimizers_leave_frozen_parameters_bit_identical(device, make_opt):
    mt.manual_seed(0)
    model = small_cnn(device=device)
    opt = make_opt(model.parameters())
    x, y = batch(device=device)
    for step in range(4):
        if step == 2:  # freeze after the optimizer has built momentum / Adam state for it
            model[0].requires_grad_(False)
            frozen = {k: v for k, v in model.state_dict().items() if k.startswith("0.")}
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    for k, v in model.state_dict().items():
        if k.startswith("0."):
            assert np.array_equal(host(v), host(frozen[k])), k
    assert "0.weight" in model.state_dict()  # still saved


def test_a_frozen_parameter_with_a_stale_gradient_is_not_updated():
    p = nn.Parameter(np.ones(3, dtype=np.float32))
    p.grad = np.ones(3, dtype=np.float32)
    p.requires_grad = False
    mt.optim.SGD([p], lr=1.0, weight_decay=0.5).step()
    assert np.array_equal(p.data, np.ones(3))


# ---------------------------------------------------------------- optimizers

def test_sgd_momentum_follows_pytorchs_rule(device):
    p = nn.Parameter(backend.to_device(np.array([1.0, -2.0]), device))
    opt = mt.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01)
    buf, expected = None, p.numpy().copy()
    for g in (np.array([0.5, 1.0]), np.array([-0.2, 0.3])):
        p.grad = backend.to_device(g, device)
        opt.step()
        d = g + 0.01 * expected
        buf = d if buf is None else 0.9 * buf + d
        expected = expected - 0.1 * buf
        np.testing.assert_allclose(p.numpy(), expected, rtol=1e-14)


def test_adam_follows_pytorchs_rule(device):
    p = nn.Parameter(backend.to_device(np.array([1.0, -2.0]), device))
    opt = mt.optim.Adam([p], lr=0.01, betas=(0.8, 0.9), eps=1e-6)
    m = v = 0
    expected = p.numpy().copy()
    for t, g in enumerate((np.array([0.5, 1.0]), np.array([-0.2, 0.3])), start=1):
        p.grad = backend.to_device(g, device)
        opt.step()
        m, v = 0.8 * m + 0.2 * g, 0.9 * v + 0.1 * g * g
        expected = expected - 0.01 / (1 - 0.8 ** t) * m / (np.sqrt(v) / np.sqrt(1 - 0.9 ** t) + 1e-6)
        np.testing.assert_allclose(p.numpy(), expected, rtol=1e-12)


def test_parameter_groups_have_their_own_learning_rate(device):
    a, b = (nn.Parameter(backend.to_device(np.ones(2), device)) for _ in range(2))
    opt = mt.optim.SGD([{"params": [a], "lr": 0.01}, {"params": [b]}], lr=1.0)
    a.grad, b.grad = (backend.to_device(np.ones(2), device) for _ in range(2))
    opt.step()
    np.testing.assert_allclose(a.numpy(), 0.99)
    np.testing.assert_allclose(b.numpy(), 0.0)


def test_optimizer_state_dict_round_trip(device):
    mt.manual_seed(0)
    model = small_cnn(device=device)
    opt = mt.optim.Adam(model.parameters(), lr=0.01)
    x, y = batch(device=device)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    saved_model, saved_opt = model.state_dict(), opt.state_dict()
    mt.manual_seed(5)
    model2 = small_cnn(device=device)
    model2.load_state_dict(saved_model)
    opt2 = mt.optim.Adam(model2.parameters(), lr=0.5)
    opt2.load_state_dict(saved_opt)
    model.eval(), model2.eval()
    for m, o in ((model, opt), (model2, opt2)):
        o.zero_grad()
        F.cross_entropy(m(x), y).backward()
        o.step()
    for k, v in model.state_dict().items():
        assert np.array_equal(host(v), host(model2.state_dict()[k]))


def test_optimizer_bad_options():
    with pytest.raises(ValueError, match="unknown options"):
        mt.optim.SGD([{"params": [nn.Parameter(np.ones(1))], "momentun": 0.9}], lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        mt.optim.Adam([])


# ---------------------------------------------------------------- devices

def test_module_to_moves_parameters(device):
    model = nn.Linear(3, 2).to(device)
    assert all(p.device == device for p in model.parameters())
    x = mt.tensor(np.ones((1, 3), dtype=np.float32), device=device)
    assert model(x).device == device


def test_a_seed_gives_the_same_model_on_every_device(device):
    mt.manual_seed(7)
    a = small_cnn()
    mt.manual_seed(7)
    b = small_cnn(device=device)
    for k, v in a.state_dict().items():
        assert np.array_equal(v, mt.backend.to_host(b.state_dict()[k]))


def test_replacing_a_child_or_a_parameter_keeps_its_place():
    """setattr(seq, "1", ...) used to move the child to the end, so the Sequential ran its layers in
    another order (output 1.293 -> 1.674 in the report); reassigning .weight reordered the state dict."""
    mt.manual_seed(0)
    seq = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))
    x = mt.tensor(np.random.default_rng(0).standard_normal((2, 3)), dtype=mt.float32)
    before = seq(x).numpy()
    setattr(seq, "1", nn.ReLU())
    assert [name for name, _ in seq.named_children()] == ["0", "1", "2"]
    np.testing.assert_array_equal(seq(x).numpy(), before)
    lin = nn.Linear(2, 2)
    lin.weight = nn.Parameter(lin.weight.data.copy())
    assert [name for name, _ in lin.named_parameters()] == ["weight", "bias"]


def test_a_slot_set_to_none_keeps_its_place_and_takes_only_its_own_kind():
    """As in PyTorch: a child or parameter set to None keeps its slot (the hostile pass put a
    Sequential's first layer last that way), and a plain tensor assigned to a parameter slot is an
    error (it silently left named_parameters and the state dict: never trained, never saved)."""
    mt.manual_seed(0)
    first = nn.Linear(3, 3)
    seq = nn.Sequential(first, nn.ReLU(), nn.Linear(3, 1))
    x = mt.tensor(np.random.default_rng(0).standard_normal((2, 3)), dtype=mt.float32)
    before = seq(x).numpy()
    setattr(seq, "0", None)
    assert list(seq.state_dict()) == ["2.weight", "2.bias"]
    with pytest.raises(TypeError, match="child '0' is None"):
        seq(x)
    setattr(seq, "0", first)
    assert [name for name, _ in seq.named_children()] == ["0", "1", "2"]
    np.testing.assert_array_equal(seq(x).numpy(), before)
    lin = nn.Linear(2, 2)
    lin.weight = None
    lin.weight = nn.Parameter(np.ones((2, 2), dtype=np.float32))
    assert [name for name, _ in lin.named_parameters()] == ["weight", "bias"]
    for value in (mt.tensor(np.ones((2, 2)), dtype=mt.float32), np.ones((2, 2))):
        with pytest.raises(TypeError, match="as parameter 'weight' of Linear .a Parameter or None expected"):
            lin.weight = value
    with pytest.raises(TypeError, match="as child module '1' of Sequential"):
        setattr(seq, "1", 5)
    assert list(lin.state_dict()) == ["weight", "bias"] and lin.weight.shape == (2, 2)
