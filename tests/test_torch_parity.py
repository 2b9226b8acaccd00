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


# ---------------------------------------------------------------- batch normalisation

def build_bn(ref):
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False, dtype=mt.float64), nn.BatchNorm2d(4, dtype=mt.float64), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 8, dtype=mt.float64), nn.BatchNorm1d(8, dtype=mt.float64),
        nn.ReLU(), nn.Linear(8, 3, dtype=mt.float64))
    model.load_state_dict({k[5:]: v for k, v in ref.items() if k.startswith("bn/w/")})  # PyTorch's keys, as they are
    return model


def test_batch_norm_train_steps_and_eval_match_pytorch(ref, device):
    """Three SGD steps in train mode (logits, every gradient, running statistics and the batch count
    after each), then eval mode, which uses the running statistics."""
    model = build_bn(ref).to(device)
    opt = mt.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    close = lambda a, b, what: np.testing.assert_allclose(mt.backend.to_host(a), b, rtol=1e-9, atol=1e-12,
                                                          err_msg=what)
    for step in range(3):
        x = mt.tensor(ref[f"bn/{step}/x"], requires_grad=True, device=device)
        logits = model(x)
        loss = F.cross_entropy(logits, ref[f"bn/{step}/y"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        close(logits.data, ref[f"bn/{step}/logits"], f"step {step} logits")
        close(x.grad, ref[f"bn/{step}/g/x"], f"step {step} input gradient")
        for name, p in model.named_parameters():
            close(p.grad, ref[f"bn/{step}/g/{name}"], f"step {step} gradient of {name}")
        for name, v in model.state_dict().items():
            close(v, ref[f"bn/{step}/state/{name}"], f"step {step} {name}")
    model.eval()
    close(model(mt.tensor(ref["bn/eval/x"], device=device)).data, ref["bn/eval/logits"], "eval logits")


def test_a_batch_norm_state_dict_goes_to_pytorch_and_back(tmp_path):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    mt.manual_seed(0)
    ours = nn.BatchNorm2d(3, dtype=mt.float64)
    ours.train()
    ours(mt.tensor(np.random.default_rng(0).standard_normal((4, 3, 5, 5)) * 3 + 1))  # move the statistics
    mt.save(ours.state_dict(), tmp_path / "bn.npz")
    theirs = torch.nn.BatchNorm2d(3, dtype=torch.float64)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in mt.load(tmp_path / "bn.npz").items()})
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 4))
    ours.eval(), theirs.eval()
    np.testing.assert_allclose(ours(mt.tensor(x)).numpy(), theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-12)
    back = nn.BatchNorm2d(3, dtype=mt.float64)
    back.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    for k, v in ours.state_dict().items():
        assert np.array_equal(v, back.state_dict()[k]), k
    assert int(back.num_batches_tracked.numpy()) == 1


def torch_twin(torch, norm):
    """transfer.TransferCNN's layers in PyTorch, under the same state-dict names."""
    tnn = torch.nn
    bn = (lambda c: [tnn.BatchNorm2d(c)]) if norm else (lambda c: [])
    bias = not norm  # a layer followed by batch norm has no bias
    features = tnn.Sequential(tnn.Conv2d(1, 16, 3, padding=1, bias=bias), *bn(16), tnn.ReLU(), tnn.MaxPool2d(2),
                              tnn.Conv2d(16, 32, 3, padding=1, bias=bias), *bn(32), tnn.ReLU(), tnn.MaxPool2d(2),
                              tnn.Flatten(), tnn.Linear(32 * 4 * 4, 64, bias=bias),
                              *([tnn.BatchNorm1d(64)] if norm else []), tnn.ReLU())
    model = tnn.Module()
    model.features, model.head = features, tnn.Linear(64, 5)
    return model


@pytest.mark.parametrize("norm", [None, "batch"])
def test_a_pytorch_state_dict_loads_as_it_is_and_tensors_cross_by_dlpack(norm):
    """Issue 19, item 2: no .numpy() calls on the way in, no host copy on the way out."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from minitl import transfer
    torch.manual_seed(0)
    theirs = torch_twin(torch, norm)
    theirs.train()
    x = np.random.default_rng(0).random((8, 1, 16, 16), dtype=np.float32)
    theirs.head(theirs.features(torch.from_numpy(x)))  # move the batch statistics
    ours = transfer.TransferCNN(5, norm=norm)
    assert ours.load_state_dict(theirs.state_dict()) == ([], [])  # torch tensors, as they are
    theirs.eval(), ours.eval()
    expected = theirs.head(theirs.features(torch.from_numpy(x))).detach().numpy()
    np.testing.assert_allclose(ours(mt.tensor(x)).numpy(), expected, rtol=1e-5, atol=1e-6)
    shared = torch.from_dlpack(ours.head.weight)  # the same memory, both ways
    assert shared.data_ptr() == ours.head.weight.data.ctypes.data
    with pytest.raises(ValueError, match="weight: a Tensor that cannot become an array"):
        ours.load_state_dict({k: v.to(torch.bfloat16) for k, v in theirs.state_dict().items()})


def test_a_plain_npz_loads_only_when_asked(tmp_path):
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (True,), }"
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    with __import__("zipfile").ZipFile(tmp_path / "odd.npz", "w") as z:
        z.writestr("a.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + np.ones(1).tobytes())
    with pytest.raises(ValueError, match=r"a.npy' has a damaged header: shape \(True,\)"):  # a raw TypeError before
        mt.load(tmp_path / "odd.npz", foreign=True)
    np.savez(tmp_path / "plain.npz", w=np.ones(2))
    with pytest.raises(ValueError, match=r"was not written by minitl.save \(load\(path, foreign=True\)"):
        mt.load(tmp_path / "plain.npz")
    assert mt.load(tmp_path / "plain.npz", foreign=True)["w"].tolist() == [1.0, 1.0]


def test_a_safetensors_file_written_by_pytorch_loads_with_its_batch_norm_buffers():
    """tests/fixtures/torch_bn.safetensors: safetensors.torch.save_file of a Linear + BatchNorm1d
    (make_torch_fixture.py); no PyTorch needed to check it."""
    fixtures = FIXTURE.parent
    ours = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    assert ours.load_state_dict(mt.load(fixtures / "torch_bn.safetensors")) == ([], [])
    assert int(ours[1].num_batches_tracked.item()) == 3
    ours.eval()
    with np.load(fixtures / "torch_bn_expected.npz") as expected:
        np.testing.assert_allclose(ours(mt.tensor(expected["x"])).numpy(), expected["y"], rtol=1e-5, atol=1e-6)


def test_a_safetensors_file_written_by_minitl_loads_strictly_in_pytorch(tmp_path):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    torch.set_num_threads(1)
    from minitl import transfer
    ours = transfer.TransferCNN(5, norm="batch")
    mt.save(ours.state_dict(), tmp_path / "model.safetensors")
    theirs = torch_twin(torch, "batch")
    theirs.load_state_dict(safetensors_torch.load_file(str(tmp_path / "model.safetensors")))  # strict
    x = np.random.default_rng(0).random((4, 1, 16, 16), dtype=np.float32)
    ours.eval(), theirs.eval()
    np.testing.assert_allclose(ours(mt.tensor(x)).numpy(),
                               theirs.head(theirs.features(torch.from_numpy(x))).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_a_view_with_a_negative_stride_goes_to_pytorch_as_a_copy():
    torch = pytest.importorskip("torch")  # torch.from_dlpack aborted the whole process on such a view
    torch.set_num_threads(1)
    t = mt.tensor(np.arange(4, dtype=np.float32))[::-1]
    assert torch.from_dlpack(t).tolist() == [3.0, 2.0, 1.0, 0.0]
