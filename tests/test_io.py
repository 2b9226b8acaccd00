"""mt.save / mt.load: round trips, atomic writes, clear errors naming the path."""

import os

import numpy as np
import pytest

import minitl as mt
from minitl import backend


def test_round_trip_keeps_names_shapes_and_dtypes(tmp_path, device):
    sd = {"a.weight": backend.to_device(np.arange(6, dtype=np.float32).reshape(2, 3), device),
          "b": backend.to_device(np.ones(2), device), "t": mt.tensor([1.0, 2.0], device=device)}
    mt.save(sd, tmp_path / "x.npz")
    back = mt.load(tmp_path / "x.npz")  # always host arrays: a checkpoint does not remember a device
    assert list(back) == ["a.weight", "b", "t"]
    assert back["a.weight"].dtype == np.float32 and back["b"].dtype == np.float64
    assert all(isinstance(v, np.ndarray) for v in back.values())
    np.testing.assert_array_equal(back["t"], [1.0, 2.0])
    model = mt.nn.Linear(3, 2, device=device)
    model.load_state_dict({"weight": back["a.weight"], "bias": back["b"].astype(np.float32)})
    assert model.weight.device == device and model.weight.numpy()[1, 2] == 5


def test_a_crash_mid_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "x.npz"
    mt.save({"v": np.zeros(3)}, path)

    def crash(file, arrays):
        file.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(mt.io, "write_npz", crash)
    with pytest.raises(KeyboardInterrupt):
        mt.save({"v": np.ones(3)}, path)
    np.testing.assert_array_equal(mt.load(path)["v"], np.zeros(3))
    assert os.listdir(tmp_path) == ["x.npz"]  # no temp file left behind


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        mt.load(tmp_path / "nope.npz")


def test_truncated_file_names_the_path(tmp_path):
    path = tmp_path / "t.npz"
    mt.save({"v": np.zeros(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{path}.*not a readable minitl checkpoint"):
        mt.load(path)


def test_foreign_npz_is_refused(tmp_path):
    path = tmp_path / "f.npz"
    np.savez(path, v=np.zeros(2))
    with pytest.raises(ValueError, match="not written by minitl.save"):
        mt.load(path)


def test_only_arrays_can_be_saved(tmp_path):
    with pytest.raises(TypeError, match="'lr' is a float"):
        mt.save({"lr": 0.1}, tmp_path / "x.npz")


def test_save_takes_a_pytorch_state_dict_as_it_is(tmp_path):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    theirs = torch.nn.Linear(2, 3)
    for name in ("model.safetensors", "model.npz"):
        mt.save(theirs.state_dict(), tmp_path / name)  # said "'weight' is a Tensor; only arrays ... can be saved"
        loaded = mt.load(tmp_path / name)
        assert np.array_equal(loaded["weight"], theirs.weight.detach().numpy()), name
