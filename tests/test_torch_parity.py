"""minitl against PyTorch's answers for the same small CNN (tests/fixtures/torch_cnn.npz,
written by tests/make_torch_fixture.py): a state dict saved by PyTorch loads here, and
the logits, loss, every gradient and two optimizer steps agree in float64."""

import pathlib

import numpy as np
import pytest

import minitl as mt
import minitl.functional as F
import minitl.nn as nn

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "torch_cnn.npz"


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def build(ref):
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, dtype=mt.float64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, stride=1, padding=1, dtype=mt.float64), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(6 * 2 * 2, 3, dtype=mt.float64))
    model.load_state_dict({k[2:]: v for k, v in ref.items() if k.startswith("w/")})
    return model


def test_forward_and_every_gradient_match_pytorch(ref, device):
    model = build(ref).to(device)
    x = mt.tensor(ref["x"], requires_grad=True, device=device)
    logits = model(x)
    loss = F.cross_entropy(logits, ref["y"])
    loss.backward()
    np.testing.assert_allclose(logits.numpy(), ref["logits"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(loss.item(), ref["loss"], rtol=1e-12)
    np.testing.assert_allclose(mt.backend.to_host(x.grad), ref["g/x"], rtol=1e-9, atol=1e-12)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(mt.backend.to_host(p.grad), ref[f"g/{name}"], rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("name, make", [
    ("sgd", lambda ps: mt.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-3)),
    ("adam", lambda ps: mt.optim.Adam(ps, lr=1e-2, weight_decay=1e-3)),
])
def test_two_optimizer_steps_match_pytorch(ref, device, name, make):
    model = build(ref).to(device)
    opt = make(model.parameters())
    x = mt.tensor(ref["x"], device=device)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), ref["y"]).backward()
        opt.step()
    for k, v in model.state_dict().items():
        np.testing.assert_allclose(mt.backend.to_host(v), ref[f"{name}/{k}"], rtol=1e-9, atol=1e-12, err_msg=k)
