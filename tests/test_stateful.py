"""Stateful layers: buffers, batch norm, train/eval restored per module, the statistics clause of
the freeze contract, casts, and no hidden global effects."""

import copy

import numpy as np
import pytest
from conftest import host

import minitl as mt
import minitl.nn as nn
from minitl import backend, data, training, transfer
from minitl.opspecs import OP_SPECS, make_inputs


def images(n=8, seed=0, device="cpu"):
    return mt.tensor(np.random.default_rng(seed).standard_normal((n, 1, 16, 16)).astype(np.float32) * 2 + 1,
                     device=device)


def bn_model(device="cpu"):
    mt.manual_seed(0)
    return transfer.TransferCNN(5, norm="batch", device=device)


def stats(model):
    return {k: host(v).copy() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


# ---------------------------------------------------------------- buffers

def test_buffers_are_in_the_state_dict_move_with_to_and_survive_deepcopy(device):
    bn = nn.BatchNorm2d(3)
    assert [n for n, _ in bn.named_buffers()] == ["running_mean", "running_var", "num_batches_tracked"]
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    bn.to(device)
    assert all(b.device == device for b in bn.buffers())
    twin = copy.deepcopy(bn)
    twin.running_mean.data += 1
    assert not np.array_equal(host(twin.running_mean), host(bn.running_mean))


def test_a_non_persistent_buffer_moves_but_is_not_saved(device):
    m = nn.Module()
    m.register_buffer("scratch", np.zeros(2, dtype=np.float32), persistent=False)
    m.register_buffer("kept", np.ones(2, dtype=np.float32))
    assert list(m.state_dict()) == ["kept"] and [n for n, _ in m.named_buffers()] == ["scratch", "kept"]
    m.to(device)
    assert m.scratch.device == device
    with pytest.raises(KeyError, match="already has an attribute 'training'"):
        m.register_buffer("training", None)
    with pytest.raises(TypeError, match="is a buffer: assign a Tensor or None"):
        m.kept = [1, 2]


def test_changed_running_statistics_alone_recompute_the_feature_cache(tmp_path):
    d = data.glyphs(source_per_class=20, source_test_per_class=4, target_pool_per_class=4, target_test_per_class=4)
    model = transfer.model_for(d, norm="batch")
    cache = transfer.FeatureCache(str(tmp_path), log=lambda *a: None)
    cache.features(model.features, d.target_pool, "pool")
    model.features[1].running_var.data *= 2  # the weights are the same; only a statistic moved
    cache.features(model.features, d.target_pool, "pool")
    assert cache.last == "recomputed: it was made for other backbone weights"


# ---------------------------------------------------------------- train/eval restored per module

def test_predict_and_extract_features_give_every_module_its_own_flag_back(device):
    model = nn.Sequential(nn.Linear(4, 4, device=device), nn.Dropout(0.5), nn.Linear(4, 2, device=device))
    model.train()
    model[1].eval()  # the caller turned this one dropout off on purpose
    training.predict(model, backend.to_device(np.ones((3, 4), np.float32), device))
    transfer.extract_features(model, data.DataLoader(np.ones((3, 4), np.float32), np.zeros(3, np.int64), 2,
                                                     device=device))
    assert model.training and model[0].training and not model[1].training


# ---------------------------------------------------------------- the statistics clause of the freeze contract

def test_requires_grad_false_keeps_pytorchs_meaning_statistics_still_move(device):
    """The classic pitfall, reproduced on purpose: frozen weights, moving statistics."""
    model = bn_model(device)
    model.features.requires_grad_(False)
    before = stats(model)
    model.train()
    model(images(device=device))
    after = stats(model)
    assert not np.array_equal(before["features.1.running_mean"], after["features.1.running_mean"])
    assert after["features.1.num_batches_tracked"] == 1


def test_transfer_freeze_freezes_statistics_even_after_model_train(device):
    model = bn_model(device)
    model.train()
    model(images(seed=1, device=device))  # statistics that are not the defaults
    transfer.freeze(model.features)
    before = stats(model)
    model.train()  # a later train() on the whole model must not unfreeze them
    out_train = model(images(device=device))
    assert all(np.array_equal(v, stats(model)[k]) for k, v in before.items())
    model.eval()
    out_eval = model(images(device=device))
    np.testing.assert_allclose(host(out_train.data), host(out_eval.data), rtol=1e-6)  # normalised the same way
    assert not any(p.requires_grad for p in model.features.parameters())


def test_unfreeze_undoes_both(device):
    model = bn_model(device)
    transfer.unfreeze(transfer.freeze(model.features))
    model.train()
    before = stats(model)
    model(images(device=device))
    assert not np.array_equal(before["features.1.running_mean"], stats(model)["features.1.running_mean"])
    assert all(p.requires_grad for p in model.parameters())


def test_a_frozen_bn_backbone_trains_its_head_and_keeps_its_cache_valid(tmp_path):
    d = data.glyphs(source_per_class=20, source_test_per_class=4, target_pool_per_class=6, target_test_per_class=4)
    source = transfer.model_for(d, norm="batch")
    source.train()
    source(mt.tensor(d.source_train.x[:50]))
    cache = transfer.FeatureCache(str(tmp_path), log=lambda *a: None)
    cache.features(source.features, d.target_pool, "pool")
    result = transfer.linear_probe(source, d, d.target_pool, transfer.Budget(steps=5, batch_size=8))
    cache.features(result.model.features, d.target_pool, "pool")
    assert cache.last == "hit"  # the probe's train-mode steps moved no statistic


def test_a_batch_norm_model_trains_on_a_set_that_leaves_a_last_batch_of_one():
    # --norm batch --k 13: 65 examples in batches of 32 left a batch of one, and BatchNorm1d refused it
    d = data.glyphs(source_per_class=20, source_test_per_class=4, target_pool_per_class=13, target_test_per_class=4)
    train = data.k_shot(d.target_pool, 13, 0)
    assert len(train.y) % 32 == 1
    result = transfer.train_scratch(d, train, transfer.Budget(steps=6, batch_size=32), norm="batch")
    assert len(result.losses) == 6
    with pytest.raises(ValueError, match="batch norm needs at least two examples a batch.*batch_size 1"):
        transfer.train_scratch(d, train, transfer.Budget(steps=6, batch_size=1), norm="batch")
    plain = transfer.recipes._loader(train.x, train.y, transfer.Budget(batch_size=32), 0, "cpu", transfer.model_for(d))
    assert sum(len(y) for _, y in plain) == 65  # a model without batch statistics keeps every example


# ---------------------------------------------------------------- casts

def test_casts_and_gradients_back_in_the_source_dtype(device):
    x = mt.tensor(np.array([1.0, 2.0], dtype=np.float32), requires_grad=True, device=device)
    y = x.double()
    assert y.dtype == mt.float64 and x.to(mt.float64).dtype == mt.float64 and x.to("float16").dtype == np.float16
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(host(x.grad), [2.0, 4.0])
    assert x.float() is x and mt.tensor(np.arange(3), device=device).float().dtype == mt.float32


# ---------------------------------------------------------------- no hidden global effects

def test_helpers_do_not_touch_the_global_random_generator(tmp_path):
    d = data.glyphs(source_per_class=10, source_test_per_class=2, target_pool_per_class=3, target_test_per_class=2)
    mt.manual_seed(123)
    expected = backend.host_rng().random(3)
    mt.manual_seed(123)
    transfer.new_head(64, 5, seed=7)
    transfer.source_model_path(d)
    transfer.train_scratch(d, d.target_pool, transfer.Budget(steps=1, batch_size=4))
    for _ in range(2):  # trained and saved, then loaded from the file: neither draws from the global generator
        transfer.source_model(d, folder=str(tmp_path), log=lambda *a: None)
    assert np.array_equal(backend.host_rng().random(3), expected)


def test_minitl_leaves_malloc_alone():
    """Neither importing minitl nor training changes malloc for the process: the workspace reuses the
    step's large arrays instead (backend.tune_malloc is the user's own choice)."""
    import subprocess
    import sys
    code = ("import numpy as np, minitl as mt, minitl.backend as b\n"
            "net = mt.nn.Sequential(mt.nn.Conv2d(1, 4, 3), mt.nn.ReLU(), mt.nn.Flatten(), mt.nn.Linear(144, 2))\n"
            "mt.functional.cross_entropy(net(mt.tensor(np.ones((3, 1, 8, 8), np.float32))), [0, 1, 0]).backward()\n"
            "print(b.malloc_tuned())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


# ---------------------------------------------------------------- every op on non-contiguous inputs

def non_contiguous(a):
    """The same values in memory that is not C-contiguous (every other element of a bigger array)."""
    xp = backend.get_array_module(a)
    if a.ndim == 0:
        return a
    return xp.repeat(a, 2, axis=-1)[..., ::2]


@pytest.mark.parametrize("spec", OP_SPECS, ids=lambda s: s.name)
def test_every_op_gives_the_same_answer_on_non_contiguous_inputs(spec, device):
    inputs = make_inputs(spec, np.random.default_rng(0), device=device)
    strided = [mt.Tensor(non_contiguous(x.data), requires_grad=True) for x in inputs]  # a view, not a copy
    assert all(not s.data.flags.c_contiguous for s in strided if s.ndim)
    out, out2 = spec.fn(*inputs, **spec.params), spec.fn(*strided, **spec.params)
    gy = backend.to_device(np.random.default_rng(1).standard_normal(out.shape), device)
    out.backward(gy)
    out2.backward(gy)
    np.testing.assert_allclose(host(out2.data), host(out.data), rtol=1e-12, atol=1e-12)
    for a, b in zip(inputs, strided):
        np.testing.assert_allclose(host(b.grad), host(a.grad), rtol=1e-12, atol=1e-12)
