"""minitl.transfer: freezing, the head, the source model cache, the feature cache, regularisers, recipes."""

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import host, quiet

import minitl as mt
import minitl.functional as F
from minitl import backend, data, nn, training, transfer

_ON_DEVICE = {}


@pytest.fixture
def setup(small_source):
    return small_source


def on(source, device):
    """The source model on a device (a copy, made once per device)."""
    key = (id(source), device)
    if key not in _ON_DEVICE:
        _ON_DEVICE[key] = copy.deepcopy(source).to(device)
    return _ON_DEVICE[key]


def test_replace_head_and_freeze(setup):
    d, source, _ = setup
    model = transfer.replace_head(transfer.TransferCNN(5), 3, seed=1)
    assert model.head.weight.shape == (3, 64)
    again = transfer.replace_head(transfer.TransferCNN(5), 3, seed=1)
    assert np.array_equal(model.head.weight.data, again.head.weight.data)  # one seed, one head
    transfer.freeze(model.features)
    assert not any(p.requires_grad for p in model.features.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    transfer.unfreeze(model.features)
    assert all(p.requires_grad for p in model.parameters())


def test_source_model_is_loaded_from_the_cache_the_second_time(setup):
    d, source, folder = setup
    said = []
    again = transfer.source_model(d, folder=folder, log=said.append)
    assert said == []  # nothing trained, nothing to say
    for k, v in source.state_dict().items():
        assert np.array_equal(v, again.state_dict()[k])
    assert training.accuracy(source, d.source_test) > 0.8


def test_a_corrupt_source_file_is_retrained(setup, tmp_path):
    d, source, folder = setup
    transfer.source_model(d, folder=str(tmp_path), log=quiet)
    (path,) = [p for p in tmp_path.iterdir() if p.name.startswith("source-")]
    path.write_bytes(b"not a checkpoint")
    said = []
    model = transfer.source_model(d, folder=str(tmp_path), log=said.append)
    assert any("unusable" in s for s in said) and any("trained the source model" in s for s in said)
    assert np.array_equal(model.head.weight.data, source.head.weight.data)  # same seed, same training


def test_extract_features_runs_in_eval_mode_without_a_graph(setup, device):
    d, source, _ = setup
    source = on(source, device)
    source.train()
    loader = data.DataLoader(d.target_test.x, d.target_test.y, 16, device=device)
    feats, labels = transfer.extract_features(source.features, loader)
    assert feats.shape == (200, 64) and np.array_equal(host(labels), d.target_test.y)
    assert backend.device_of(feats) == device
    assert source.training  # the mode is restored


# ---------------------------------------------------------------- FeatureCache

def test_feature_cache_hit_does_not_run_the_backbone(setup, tmp_path, monkeypatch, device):
    d, source, _ = setup
    source = on(source, device)
    cache = transfer.FeatureCache(str(tmp_path), log=quiet)
    first = cache.features(source.features, d.target_pool, "pool")
    assert cache.last == "created"
    monkeypatch.setattr(transfer.cache, "extract_features", lambda *a: pytest.fail("the backbone ran on a cache hit"))
    second = cache.features(source.features, d.target_pool, "pool")
    assert cache.last == "hit" and np.array_equal(first, second)


def test_feature_cache_recomputes_for_changed_weights(setup, tmp_path, device):
    d, source, _ = setup
    cache = transfer.FeatureCache(str(tmp_path), log=quiet)
    cache.features(on(source, device).features, d.target_pool, "pool")
    changed = transfer.model_for(d, device)
    changed.load_state_dict(source.state_dict())
    changed.features[0].weight.data[0, 0, 0, 0] += 1
    feats = cache.features(changed.features, d.target_pool, "pool")
    assert cache.last == "recomputed: it was made for other backbone weights"
    assert np.allclose(feats, host(transfer.extract_features(changed.features, data.DataLoader(
        d.target_pool.x, d.target_pool.y, 64, device=device))[0]), atol=1e-6)


class Scale(nn.Module):
    """A user's layer with no extra_repr: its repr is "Scale()" whatever its factor."""
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def test_feature_cache_keys_on_what_repr_does_not_show(setup, tmp_path, device):
    """Scale(2.0) -> Scale(3.0) was a cache hit, with features 2/3 of the truth (issue 18, item 4)."""
    d, source, _ = setup
    cache = transfer.FeatureCache(str(tmp_path), log=quiet)
    backbone = lambda factor: nn.Sequential(on(source, device).features, Scale(factor))
    cache.features(backbone(2.0), d.target_pool, "pool")
    feats = cache.features(backbone(3.0), d.target_pool, "pool")
    assert cache.last == "recomputed: it was made for another backbone structure"
    expected = cache.features(on(source, device).features, d.target_pool, "plain") * 3.0
    assert np.allclose(feats, expected, atol=1e-5)


class Hold(nn.Module):
    """A user's layer whose factor sits in an array, a dict, an unregistered tensor or a function."""
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        f = self.factor
        f = f["scale"] if isinstance(f, dict) else f.data if isinstance(f, mt.Tensor) else f
        return x * float(f() if callable(f) else np.asarray(f).ravel()[0])


CHANGES = {  # the hostile pass found each one a cache hit with stale features
    "array replaced": (lambda: np.full(1, 2.0), lambda m: setattr(m, "factor", np.full(1, 3.0))),
    "array changed in place": (lambda: np.full(1, 2.0), lambda m: m.factor.__setitem__(0, 3.0)),
    "dict changed in place": (lambda: {"scale": 2.0}, lambda m: m.factor.__setitem__("scale", 3.0)),
    "unregistered tensor": (lambda: mt.tensor([2.0]), lambda m: setattr(m, "factor", mt.tensor([3.0]))),
    "function replaced": (lambda: (lambda: 2.0), lambda m: setattr(m, "factor", lambda: 3.0)),
    "forward replaced on the instance": (lambda: 2.0, lambda m: setattr(m, "forward", lambda x: x * 3.0)),
}


@pytest.mark.parametrize("change", CHANGES, ids=list(CHANGES))
def test_feature_cache_keys_on_arrays_dicts_tensors_and_functions_of_a_layer(setup, tmp_path, change):
    d, source, _ = setup
    make, apply = CHANGES[change]
    cache = transfer.FeatureCache(str(tmp_path), log=quiet)
    backbone = nn.Sequential(source.features, Hold(make()))
    twice = cache.features(backbone, d.target_pool, "pool")
    apply(backbone[1])
    thrice = cache.features(backbone, d.target_pool, "pool")
    assert cache.last == "recomputed: it was made for another backbone structure"
    np.testing.assert_allclose(thrice, twice * 1.5, rtol=1e-6)
    cache.features(backbone, d.target_pool, "pool")
    assert cache.last == "hit"


class Namespace:
    """A plain object holding a layer's setting."""
    def __init__(self, f):
        self.f = f


def _factor(v):
    if isinstance(v, slice):
        return float(v.stop)
    if isinstance(v, np.random.Generator):
        return float(v.bit_generator.state["state"]["state"] % 7 + 1)
    if v in (__import__("operator").add, __import__("operator").mul):
        return float(v(1, 2))
    if v in (_relu_of, _softplus_of):
        return 2.0 if v is _relu_of else 3.0
    if v in (_scaled, _scaled_more):
        return v(1.0)
    if isinstance(v, (set, frozenset)):
        return max(v)
    if isinstance(v, (bytes, type)):
        return float(v[0]) if isinstance(v, bytes) else (2.0 if v is np.float32 else 3.0)
    if isinstance(v, list):
        return float(v[0].weight.data[0, 0])
    return v() if callable(v) else v.f


class Held(nn.Module):
    """A user's layer whose factor sits where the second hostile pass found the cache blind."""
    def __init__(self, v):
        super().__init__()
        self.v = v

    def forward(self, x):
        return x * _factor(self.v)


def _set_first_weight(m, value):
    m.v[0].weight.data[0, 0] = value


def _relu_of(x):
    return F.relu(x)


def _softplus_of(x):
    return F.log_softmax(x)  # the same bytecode as _relu_of: only the name it calls differs


def _scaled(x, scale=2.0):
    return x * scale


def _scaled_more(x, scale=3.0):
    return x * scale


MORE_CHANGES = {
    "a built-in function": (lambda: __import__("operator").add, lambda m: setattr(m, "v", __import__("operator").mul)),
    "a slice": (lambda: slice(0, 2), lambda m: setattr(m, "v", slice(0, 3))),
    "a random generator's state": (lambda: np.random.default_rng(0), lambda m: m.v.random()),
    "a function calling another function": (lambda: _relu_of, lambda m: setattr(m, "v", _softplus_of)),
    "a function's default argument": (lambda: _scaled, lambda m: setattr(m, "v", _scaled_more)),
    "set changed in place": (lambda: {2.0}, lambda m: (m.v.clear(), m.v.add(3.0))),
    "object attribute": (lambda: Namespace(2.0), lambda m: setattr(m.v, "f", 3.0)),
    "functools.partial": (lambda: __import__("functools").partial(float, 2.0),
                          lambda m: setattr(m, "v", __import__("functools").partial(float, 3.0))),
    "bytes": (lambda: bytes([2]), lambda m: setattr(m, "v", bytes([3]))),
    "a type": (lambda: np.float32, lambda m: setattr(m, "v", np.float16)),
    "a layer in a list": (lambda: [nn.Linear(1, 1)], lambda m: _set_first_weight(m, 2.0)),
}


@pytest.mark.parametrize("change", MORE_CHANGES, ids=list(MORE_CHANGES))
def test_feature_cache_keys_on_objects_sets_partials_bytes_types_and_listed_layers(setup, tmp_path, change):
    d, source, _ = setup
    make, apply = MORE_CHANGES[change]
    cache = transfer.FeatureCache(str(tmp_path), log=quiet)
    held = Held(make())
    if change == "a layer in a list":
        held.v[0].weight.data[0, 0] = 1.0
    backbone = nn.Sequential(source.features, held)
    before = cache.features(backbone, d.target_pool, "pool")
    apply(held)
    after = cache.features(backbone, d.target_pool, "pool")
    assert cache.last == "recomputed: it was made for another backbone structure"
    assert not np.allclose(after, before)


def test_a_backbone_that_normalises_with_each_batch_is_not_cached(setup, tmp_path):
    """BatchNorm with track_running_stats=False uses each batch's statistics even in eval mode: the
    cache hit at another batch size (issue 18, item 4). Refused, naming the layer."""
    d, _, _ = setup
    cache = transfer.FeatureCache(str(tmp_path), log=quiet)
    backbone = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(256, track_running_stats=False))
    with pytest.raises(ValueError, match=r"1 \(BatchNorm1d\(256.*track_running_stats=False"):
        cache.features(backbone, d.target_pool, "pool")


def test_feature_cache_recomputes_for_changed_data(setup, tmp_path, device):
    d, source, _ = setup
    source = on(source, device)
    cache = transfer.FeatureCache(str(tmp_path), log=quiet)
    cache.features(source.features, d.target_pool, "pool")
    other = data.Split(d.target_pool.x[::-1].copy(), d.target_pool.y[::-1].copy())
    cache.features(source.features, other, "pool")
    assert cache.last == "recomputed: it was made for other data"


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"garbage"])
def test_feature_cache_recovers_from_a_corrupt_file(setup, tmp_path, damage, device):
    d, source, _ = setup
    source = on(source, device)
    cache = transfer.FeatureCache(str(tmp_path), log=quiet)
    good = cache.features(source.features, d.target_pool, "pool")
    path = cache.path("pool")
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(damage(raw))
    again = cache.features(source.features, d.target_pool, "pool")
    assert cache.last.startswith("recomputed: the file is unreadable") and np.array_equal(good, again)


def test_a_crash_mid_write_leaves_the_previous_cache(setup, tmp_path, monkeypatch, device):
    d, source, _ = setup
    source = on(source, device)
    cache = transfer.FeatureCache(str(tmp_path), log=quiet)
    good = cache.features(source.features, d.target_pool, "pool")
    changed = transfer.model_for(d, device)  # different weights: a recompute, and a write

    def crash(file, arrays):
        file.write(b"PK half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(mt.io, "write_npz", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.features(changed.features, d.target_pool, "pool")
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["features-pool.npz"]  # no half file, no temp file
    assert np.array_equal(cache.features(source.features, d.target_pool, "pool"), good)
    assert cache.last == "hit"


def test_an_unwritable_cache_folder_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(OSError, match=f"the cache folder {blocker}/sub cannot be written"):
        transfer.FeatureCache(str(blocker / "sub"))


# ---------------------------------------------------------------- regularisers

def test_l2sp_fused_and_composed_agree_and_pass_gradcheck():
    mt.manual_seed(0)
    backbone = mt.nn.Sequential(mt.nn.Linear(3, 4, dtype=mt.float64), mt.nn.Linear(4, 2, dtype=mt.float64))
    penalty = transfer.L2SP(backbone)
    assert penalty().item() == 0.0
    for p in backbone.parameters():
        p.data += np.random.default_rng(1).standard_normal(p.shape)
    fused, composed = penalty(), penalty.composed()
    assert np.isclose(fused.item(), composed.item(), rtol=1e-12)
    expected = 0.5 * sum(((p.data - a) ** 2).sum() for p, a in zip(penalty.params, penalty.anchors))
    assert np.isclose(fused.item(), expected)
    params = list(backbone.parameters())
    assert mt.gradcheck(lambda *ps: mt.functional.l2sp_penalty(ps, penalty.anchors), params)
    fused.backward()
    grads = [p.grad.copy() for p in params]
    backbone.zero_grad()
    penalty.composed().backward()
    for g, p in zip(grads, params):
        np.testing.assert_allclose(g, p.grad, rtol=1e-12)


def test_feature_mse_pulls_only_the_fine_tuned_features():
    rng = np.random.default_rng(0)
    f = mt.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    f0 = mt.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    transfer.feature_mse(f, f0).backward()
    assert f0.grad is None  # the source features are a fixed target
    np.testing.assert_allclose(f.grad, 2 * (f.data - f0.data) / 12)
    assert np.isclose(transfer.feature_mse(f, f0).item(), transfer.feature_mse_composed(f, f0).item())
    assert mt.gradcheck(lambda a: transfer.feature_mse(a, f0), [f])


# ---------------------------------------------------------------- recipes

def test_proxy_training_ends_with_the_linear_probe_head(setup, tmp_path, device):
    d, source, _ = setup
    source = on(source, device)
    train = data.k_shot(d.target_pool, 5, seed=2)
    budget = transfer.Budget(steps=30)
    probe = transfer.linear_probe(source, d, train, budget, seed=2, device=device)
    proxy = transfer.proxy_train(source, d, train, transfer.FeatureCache(str(tmp_path), log=quiet), budget, seed=2,
                                 device=device)
    np.testing.assert_allclose(probe.model.head.weight.numpy(), proxy.model.head.weight.numpy(), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(probe.losses, proxy.losses, rtol=1e-4)
    assert abs(probe.accuracy - proxy.accuracy) <= 0.01


def test_the_linear_probe_leaves_the_backbone_bit_identical(setup, device):
    d, source, _ = setup
    source = on(source, device)
    before = source.state_dict()
    result = transfer.linear_probe(source, d, data.k_shot(d.target_pool, 5), transfer.Budget(steps=10),
                                   device=device)
    for k, v in result.model.features.state_dict().items():
        assert np.array_equal(host(v), host(before["features." + k]))
    assert not np.array_equal(host(result.model.head.weight)[:5], host(before["head.weight"])[:5])


@pytest.mark.parametrize("method", transfer.METHODS)
def test_every_method_runs_and_reports(setup, tmp_path, method, device):
    d, source, _ = setup
    result = transfer.run_method(method, on(source, device), d, data.k_shot(d.target_pool, 3), transfer.FeatureCache(
        str(tmp_path), log=quiet), transfer.Budget(steps=5), device=device)
    assert result.model.head.weight.device == device
    assert 0 <= result.accuracy <= 1 and len(result.losses) == 5 and result.seconds > 0
    assert all(np.isfinite(result.losses))


def test_a_head_that_does_not_match_the_labels_is_named(setup):
    d, source, _ = setup
    bad = data.Split(d.target_pool.x[:4], np.array([0, 1, 2, 7]))
    with pytest.raises(ValueError, match="labels run from 0 to 7, but the head has 5 outputs"):
        transfer.linear_probe(source, d, bad, transfer.Budget(steps=1))


def test_unknown_method_and_regularizer_are_named(setup, tmp_path):
    d, source, _ = setup
    with pytest.raises(ValueError, match="unknown method 'dance'"):
        transfer.run_method("dance", source, d, d.target_pool, None)
    with pytest.raises(ValueError, match="unknown regularizer 'l1'"):
        transfer.fine_tune(source, d, d.target_pool, regularizer="l1")


# ---------------------------------------------------------------- the main command

def run_main(*args, cache):
    env = dict(os.environ, MINITL_CACHE=str(cache))
    return subprocess.run([sys.executable, "-m", "minitl", *args], capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.mark.slow
def test_python_m_minitl_quick_runs_end_to_end(tmp_path, shared_cache, device):
    done = run_main("--quick", "--device", device, "--out", str(tmp_path / "out"), cache=shared_cache)
    assert done.returncode == 0, done.stderr
    assert "accuracy on the held-out target test set" in done.stdout and f"device {device}" in done.stdout
    for method in transfer.METHODS:
        assert method in done.stdout
    assert json.loads((tmp_path / "out" / "results.json").read_text())["config"]["device"] == device


@pytest.mark.slow
def test_python_m_minitl_norm_batch_runs_end_to_end(tmp_path, shared_cache, device):
    # k=13: 65 training examples in batches of 32, a last batch of one (left out for batch norm)
    done = run_main("--quick", "--norm", "batch", "--device", device, "--methods", "scratch,proxy,fine_tune",
                    "--k", "2,13", "--seeds", "1", cache=shared_cache)
    assert done.returncode == 0, done.stderr
    assert "(batch norm)" in done.stdout and f"device {device}" in done.stdout
    assert all(f"k={k}" in done.stdout for k in (2, 13))


@pytest.mark.parametrize("args, message", [
    (("--dataset", "mnist"), "unknown dataset 'mnist'"),
    (("--methods", "scratch,dance"), "unknown methods \\['dance'\\]"),
    (("--k", "500"), "k=500 is more than the 200 examples per class"),
    (("--k", "two"), "'two' is not a positive integer"),
    (("--k", ""), "--k is empty"),
    (("--k", "2,2"), "'2' is given twice"),
    (("--steps", "-5"), "argument --steps: must be >= 1, got -5"),
    (("--steps", "0"), "argument --steps: must be >= 1, got 0"),
    (("--seeds", "0"), "argument --seeds: must be >= 1, got 0"),
    (("--seeds", "-1"), "argument --seeds: must be >= 1, got -1"),
    (("--seeds", "٣"), "argument --seeds: '٣' is not an integer"),  # int() read it as 3
    (("--seeds", "99999999999999999999"), "seeds=99999999999999999999 is more than 1000"),  # filled memory
    (("--steps", "2000000"), "steps=2000000 is more than 1000000"),
    (("--methods", "proxy,proxy"), "a method is given twice"),
    (("--out", "FILE"), "is a file, not a folder"),
    (("--device", "tpu"), "unknown device 'tpu'"),
    (("check", "--device", "tpu"), "unknown device 'tpu'"),
    (("check", "--devices"), "unrecognized arguments"),
    (("chek",), "unknown command 'chek': the commands are 'layers' and 'check'"),
])
def test_main_command_bad_options_are_named(tmp_path, args, message):
    (tmp_path / "FILE").write_text("a file where --out wants a folder")
    args = [str(tmp_path / "FILE") if a == "FILE" else a for a in args]
    done = run_main(*args, cache=tmp_path)
    assert done.returncode == 2
    assert __import__("re").search(message, done.stderr), done.stderr
    assert "Traceback" not in done.stderr and "source model" not in done.stdout  # refused before any work


def test_the_table_is_the_same_in_one_process_or_two(shared_cache, monkeypatch):
    from minitl.commands import compare
    monkeypatch.setenv("MINITL_CACHE", shared_cache)
    run = lambda jobs: compare.run_comparison(methods=("proxy", "fine_tune", "scratch"), ks=(2, 5), seeds=2, steps=5,
                                              log=quiet, jobs=jobs)
    one, two = run(1), run(2)
    for method, row in one.items():
        for k, cell in row.items():
            assert cell["accuracy"] == two[method][k]["accuracy"], (method, k)
            assert cell["loss_curve"] == two[method][k]["loss_curve"]


def test_a_budget_takes_its_steps_its_epochs_or_its_cap():
    b = transfer.Budget(steps=200, epochs=25, max_steps=1000, batch_size=32)
    assert b.steps_for(320) == 250   # 25 passes over 320 examples, 10 batches each: more than 200
    assert b.steps_for(15) == 200    # few examples (25 passes of one batch): the minimum number of steps
    assert b.steps_for(2000) == 1000  # 25 passes would be 1563 steps: capped
    assert transfer.Budget(steps=60).steps_for(10_000) == 60   # no epochs, no cap: exactly its steps


def test_every_recipe_trains_for_its_budgets_steps(setup, tmp_path, monkeypatch):
    """Each method's default budget, for this training set's size, is what the recipe gives fit (which
    here trains 2 of those steps, to keep the test quick)."""
    d, source, _ = setup
    train = data.k_shot(d.target_pool, 3)
    asked = []

    def fit_two_steps(loss_fn, opt, loader, steps, *args):
        asked.append(steps)
        return training.fit(loss_fn, opt, loader, 2, *args)

    monkeypatch.setattr(transfer.recipes, "fit", fit_two_steps)
    for method in transfer.METHODS:
        budget = transfer.BUDGETS[method]
        asked.clear()
        result = transfer.run_method(method, source, d, train, transfer.FeatureCache(str(tmp_path), log=quiet), budget)
        assert asked == [budget.steps_for(len(train))] and len(result.losses) == 2, method


def test_a_cached_source_model_with_a_nan_weight_is_trained_again(tmp_path):
    """It was loaded, and every later run trained 1600 steps, then blamed the learning rate (issue 18,
    item 18). Now it is retrained, saying why."""
    d = data.glyphs(seed=0, source_per_class=20, source_test_per_class=4, target_pool_per_class=4,
                    target_test_per_class=4)
    path = transfer.source_model_path(d, folder=str(tmp_path))
    model = transfer.model_for(d)
    state = model.state_dict()
    state["features.0.weight"][0, 0, 0, 0] = np.nan
    mt.save(state, path)
    said = []
    source = transfer.source_model(d, folder=str(tmp_path), log=said.append)
    assert "features.0.weight" in said[0] and "NaN or infinite" in said[0] and "training again" in said[0]
    assert all(np.isfinite(host(p)).all() for p in source.parameters())
    assert np.isfinite(mt.load(path)["features.0.weight"]).all()
