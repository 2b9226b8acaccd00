"""The device rules of DESIGN.md, and every place where CuPy differs from NumPy in a way that
once broke minitl on a GPU. The "cuda" cases run under the CuPy stand-in on every commit
(MINITL_CUPY_STANDIN=1, see tests/cupy_standin) and on a real GPU in benchmarks/gpu_check.sh."""

import copy

import numpy as np
import pytest
from conftest import CUDA_OK, CUDA_WHY, STANDIN

import minitl as mt
import minitl.functional as F
import minitl.nn as nn
from minitl import backend, data, training, transfer

needs_cuda = pytest.mark.skipif(not CUDA_OK, reason=CUDA_WHY)


def other(device):
    return "cpu" if device == "cuda" else "cuda"


# ---------------------------------------------------------------- 1. out-of-range index arrays

@pytest.mark.parametrize("index", [[0, 7], np.array([0, 7]), [-5], (slice(None), [3, 0])],
                         ids=["list", "numpy", "negative", "second-axis"])
def test_out_of_range_index_arrays_raise_on_every_device(device, index):
    """CuPy wraps index 7 of an axis of 4 around to 3; minitl raises, the same on every device."""
    t = mt.tensor(np.arange(12.0).reshape(4, 3), device=device)
    if isinstance(index, tuple):
        index = (index[0], [0, 5])  # axis 1 has 3 columns
    with pytest.raises(IndexError, match=r"out of range for axis"):
        t[index]


def test_index_arrays_on_the_device_are_checked_too(device):
    t = mt.tensor(np.arange(4.0), device=device, requires_grad=True)
    good = mt.tensor(np.array([3, -4, 3]), device=device)
    t[good].sum().backward()
    np.testing.assert_array_equal(backend.to_host(t.grad), [1, 0, 0, 2])
    with pytest.raises(IndexError, match="index 4 is out of range for axis 0 of size 4"):
        t[mt.tensor(np.array([0, 4]), device=device)]


# ---------------------------------------------------------------- 2. 0-d arrays follow the scalar rule

def test_a_0d_array_in_an_op_follows_the_scalar_rule(device):
    """A CuPy reduction returns a 0-d array where NumPy returns a scalar; both take the tensor's dtype."""
    t32 = mt.tensor(np.ones(3, dtype=np.float32), device=device)
    other64 = mt.tensor(np.full(2, 1.5), device=device)
    total = other64.data.sum()  # NumPy: np.float64; CuPy: a 0-d float64 array on the GPU
    for y in (t32 * total, total * t32, t32 + np.array(3.0), t32 / total):
        assert y.dtype == mt.float32 and y.device == device
    np.testing.assert_allclose((t32 * total).numpy(), [3.0, 3.0, 3.0])
    ints = mt.tensor(np.arange(3), device=device)
    assert (ints * total).dtype == mt.float32  # a float next to an integer tensor: float32


def test_a_0d_gpu_array_next_to_a_cpu_tensor_is_a_device_error():
    if not CUDA_OK:
        pytest.skip(CUDA_WHY)
    gpu_scalar = backend.to_device(np.ones(2), "cuda").sum()
    with pytest.raises(ValueError, match="different devices"):
        mt.tensor(np.ones(2)) * gpu_scalar


# ---------------------------------------------------------------- 3. device=None means where the model is

@needs_cuda
def test_device_none_means_where_the_model_is(device, monkeypatch, tmp_path):
    monkeypatch.setenv("MINITL_DEVICE", other(device))  # the default points elsewhere on purpose
    d = data.glyphs(source_per_class=20, source_test_per_class=10, target_pool_per_class=10,
                    target_test_per_class=10)
    mt.manual_seed(0)
    model = transfer.model_for(d, device)
    assert training.accuracy(model, d.source_test) == training.accuracy(model, d.source_test, device)
    feats = transfer.FeatureCache(tmp_path, log=lambda *a: None).features(model.features, d.target_pool, "t")
    assert feats.shape == (50, 64)
    # A DataLoader keeps GPU arrays on the GPU; host arrays are new data for the default device.
    gpu = data.DataLoader(backend.to_device(d.target_pool.x, "cuda"), backend.to_device(d.target_pool.y, "cuda"), 8)
    host = data.DataLoader(d.target_pool.x, d.target_pool.y, 8)
    assert next(iter(gpu))[0].device == "cuda" and next(iter(host))[0].device == other(device)


# ---------------------------------------------------------------- 4. an array keeps its device

@needs_cuda
def test_an_array_keeps_its_device_unless_one_is_named(device, monkeypatch):
    monkeypatch.setenv("MINITL_DEVICE", other(device))
    host_or_gpu = backend.to_device(np.ones((2, 2), dtype=np.float32), device)
    assert mt.tensor(host_or_gpu).device == device
    assert nn.Parameter(host_or_gpu).device == device
    assert nn.Linear(2, 2, device=device).weight.device == device
    assert mt.tensor([1.0, 2.0]).device == other(device)  # Python data: the default device
    assert mt.tensor(host_or_gpu, device=other(device)).device == other(device)


# ---------------------------------------------------------------- 5. optimizer state follows its parameters

@needs_cuda
@pytest.mark.parametrize("make_opt", [lambda ps: mt.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
                                      lambda ps: mt.optim.Adam(ps, lr=0.01, weight_decay=0.01)],
                         ids=["sgd-momentum", "adam"])
def test_optimizer_state_follows_its_parameters_after_module_to(make_opt):
    def run(move_at):
        mt.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8, device="cpu"), nn.ReLU(), nn.Linear(8, 3, device="cpu"))
        opt = make_opt(model.parameters())
        x = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)
        y = np.arange(16) % 3
        for step in range(4):
            if step == move_at:
                model.to("cuda")
            device = "cuda" if move_at is not None and step >= move_at else "cpu"
            training.train_step(lambda x, y: F.cross_entropy(model(x), y), opt, mt.tensor(x, device=device), y)
        states = [v for s in opt.state.values() for v in s.values() if hasattr(v, "shape")]
        return [p.numpy() for p in model.parameters()], {backend.device_of(v) for v in states}

    moved, where = run(move_at=2)
    stayed, _ = run(move_at=None)
    assert where == {"cuda"}
    for a, b in zip(moved, stayed):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- 6. a training step never waits for the GPU

def sync_guard():
    """A context in which any device-to-host sync raises: the stand-in's, else CuPy's own (best effort)."""
    if STANDIN:
        from cupy_standin import forbid_sync
        return forbid_sync()
    import warnings

    import cupyx
    warnings.filterwarnings("ignore", message=".*allow_synchronize.*")
    return cupyx.allow_synchronize(False)


@needs_cuda
def test_a_transfer_cnn_adam_step_at_batch_32_makes_no_host_sync():
    mt.manual_seed(0)
    model = transfer.TransferCNN(5, device="cuda")
    opt = mt.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    loader = data.DataLoader(rng.random((64, 1, 16, 16), dtype=np.float32), rng.integers(0, 5, 64), 32,
                             shuffle=True, seed=0, device="cuda")
    loss_fn = lambda x, y: F.cross_entropy(model(x), y)
    batches = iter(loader)
    training.train_step(loss_fn, opt, *next(batches))  # the first step creates Adam's state
    with sync_guard():  # drawing the batch too: the loader's indexing and its next epoch's order
        loss = training.train_step(loss_fn, opt, *next(batches))
        # fit's own loop: 5 steps over two more epochs, with the cosine schedule (it reads back only at its end)
        losses = training._steps(loss_fn, opt, loader, 5, "cosine", None, 50, [1e-3])
    assert np.isfinite(loss.item()) and len(losses) == 5


# ---------------------------------------------------------------- labels: checked on the host, never in a step

@pytest.mark.parametrize("labels", [[0, 5], np.array([0, -1])], ids=["too-large", "negative"])
def test_host_labels_are_checked_before_anything_runs(device, labels):
    logits = mt.tensor(np.zeros((2, 5), dtype=np.float32), device=device)
    with pytest.raises(ValueError, match="out of range for 5 classes"):
        F.cross_entropy(logits, labels)


@needs_cuda
def test_a_bad_label_already_on_the_gpu_makes_the_loss_nan_not_a_wrong_number():
    logits = mt.tensor(np.zeros((2, 5), dtype=np.float32), device="cuda", requires_grad=True)
    labels = backend.to_device(np.array([0, 7]), "cuda")  # CuPy would read column 7 % 5 = 2 without a word
    assert np.isnan(F.cross_entropy(logits, labels).item())
    good = backend.to_device(np.array([0, 4]), "cuda")
    assert np.isclose(F.cross_entropy(logits, good).item(), np.log(5))


def test_the_dataloader_checks_labels_on_the_host(device):
    with pytest.raises(ValueError, match="label -1 at position 1 is negative"):
        data.DataLoader(np.zeros((3, 2), dtype=np.float32), np.array([0, -1, 2]), 2, device=device)


@needs_cuda
def test_labels_the_dataloader_checked_skip_the_device_check_only_while_they_are_valid():
    """A DataLoader's labels were checked on the host: cross_entropy does not check them again on the
    device. But a loader whose labels go up to 6 says nothing about logits with 5 classes, and a label
    tensor whose data was replaced is checked again: a bad label still gives NaN, never a wrong number."""
    x = np.zeros((4, 3), dtype=np.float32)
    logits = mt.tensor(np.zeros((4, 5), dtype=np.float32), device="cuda", requires_grad=True)
    _, y = next(iter(data.DataLoader(x, np.array([0, 1, 2, 4]), 4, device="cuda")))
    assert F.cross_entropy(logits, y).grad_fn.checked
    assert np.isclose(F.cross_entropy(logits, y).item(), np.log(5))
    _, y = next(iter(data.DataLoader(x, np.array([0, 1, 2, 6]), 4, device="cuda")))
    assert not F.cross_entropy(logits, y).grad_fn.checked
    assert np.isnan(F.cross_entropy(logits, y).item())
    _, y = next(iter(data.DataLoader(x, np.array([0, 1, 2, 4]), 4, device="cuda")))
    y.data = backend.to_device(np.array([0, 1, 2, 9]), "cuda")
    assert np.isnan(F.cross_entropy(logits, y).item())


# ---------------------------------------------------------------- the tools that check the GPU path

@pytest.mark.skipif(not STANDIN, reason="counted under the CuPy stand-in")
def test_a_training_step_stays_within_120_array_ops_and_the_breakdown_adds_up():
    from benchmarks.count_ops import count_step
    counts = count_step(32)
    assert counts["step"] <= 120, counts
    assert counts["step"] == sum(counts["phases"].values())
    assert sum(counts["forward"].values()) == counts["phases"]["forward"]
    assert sum(counts["backward"].values()) == counts["phases"]["backward"]


@pytest.mark.skipif(CUDA_OK and not STANDIN, reason="this machine has a GPU: the script would run in full")
def test_gpu_check_stops_at_once_without_a_gpu(tmp_path):
    import pathlib
    import subprocess
    script = pathlib.Path(__file__).parent.parent / "benchmarks" / "gpu_check.sh"
    done = subprocess.run(["bash", str(script), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "FATAL" in done.stderr


def test_gpu_check_stages_fit_in_eight_minutes():
    import pathlib
    import re
    script = (pathlib.Path(__file__).parent.parent / "benchmarks" / "gpu_check.sh").read_text()
    limits = {name: int(limit) for name, limit in re.findall(r"^stage (\w+) (\d+) ", script, re.M)}
    assert list(limits)[:3] == ["versions", "check", "probe"] and list(limits)[-1] == "tests", limits
    assert sum(limits.values()) <= 480, f"{sum(limits.values())} s: {limits}"


@needs_cuda
def test_features_cached_on_one_device_are_recomputed_on_the_other_saying_so(tmp_path):
    """The CPU and a GPU round differently: a head trained on one device's features and scored on
    the other's would not give the numbers lesson 9 checks exactly."""
    d = data.glyphs(source_per_class=20, source_test_per_class=4, target_pool_per_class=4, target_test_per_class=4)
    mt.manual_seed(0)
    model = transfer.model_for(d, "cpu")
    said = []
    cache = transfer.FeatureCache(str(tmp_path), log=said.append)
    cache.features(model.features, d.target_pool, "pool")
    on_gpu = copy.deepcopy(model).to("cuda")  # the same weights, on the GPU
    cache.features(on_gpu.features, d.target_pool, "pool")
    assert cache.last == "recomputed: it was made for another device (the CPU and a GPU round differently)"
    assert len(said) == 1 and "another device" in said[0]
    cache.features(on_gpu.features, d.target_pool, "pool")
    assert cache.last == "hit"


@needs_cuda
def test_recipes_with_device_none_run_where_the_source_model_is(tmp_path, monkeypatch):
    monkeypatch.setenv("MINITL_DEVICE", "cpu")
    d = data.glyphs(source_per_class=20, source_test_per_class=4, target_pool_per_class=4, target_test_per_class=4)
    source = transfer.model_for(d, "cuda")
    train = data.k_shot(d.target_pool, 2)
    budget = transfer.Budget(steps=2)
    cache = transfer.FeatureCache(str(tmp_path), log=lambda *a: None)
    for method in ("linear_probe", "proxy", "fine_tune", "fine_tune+feature_mse"):
        result = transfer.run_method(method, source, d, train, cache, budget)
        assert result.model.head.weight.device == "cuda", method
