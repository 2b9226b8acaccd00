"""Features from any layer: cutting a model, probing every cut point, and the seed's section 3 as a check."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ON_CUDA, host, quiet

import minitl as mt
from minitl import data, transfer


@pytest.fixture
def setup(small_source):
    return small_source


def test_cut_points_are_the_ends_of_the_stages(setup):
    _, source, _ = setup
    assert transfer.cut_points(source) == ["input", "features.1", "features.2", "features.4", "features.5",
                                           "features.8"]
    bn = transfer.TransferCNN(5, norm="batch")
    assert transfer.cut_points(bn) == ["input", "features.2", "features.3", "features.6", "features.7",
                                       "features.11"]


@pytest.mark.parametrize("at, size", [("input", 256), ("features.1", 16 * 16 * 16), ("features.2", 16 * 8 * 8),
                                      ("features.5", 32 * 4 * 4), ("features.8", 64)])
def test_a_cut_ends_in_a_flatten_and_shares_the_models_modules(setup, at, size, device):
    d, source, _ = setup
    model = transfer.model_for(d, device)
    trunk = transfer.cut(model, at)
    assert isinstance(trunk[-1], (mt.nn.Flatten, mt.nn.ReLU)) and transfer.output_size(trunk, d) == size
    assert all(any(m is n for n in model.modules()) for m in trunk if not isinstance(m, mt.nn.Flatten))


def test_a_bad_cut_names_the_choices(setup):
    with pytest.raises(ValueError, match=r"'features.9' is not a module of the backbone; choose one of \['input'"):
        transfer.cut(setup[1], "features.9")


def test_the_cut_is_part_of_the_cache_key(setup, tmp_path):
    d, source, _ = setup
    cache = transfer.FeatureCache(str(tmp_path), log=quiet)
    cache.features(transfer.cut(source, "features.5"), d.target_pool, "pool", layer="features.5")
    cache.features(transfer.cut(source, "features.4"), d.target_pool, "pool", layer="features.4")
    assert cache.last.startswith("recomputed: it was made for another backbone structure and another layer")


def test_probe_and_proxy_at_a_cut_are_the_same_computation(setup, tmp_path, device):
    d, source, _ = setup
    source = transfer.model_for(d, device)
    train = data.k_shot(d.target_pool, 5, seed=1)
    budget = transfer.Budget(steps=20, head_lr=0.05)
    probe = transfer.linear_probe(source, d, train, budget, seed=1, device=device, at="features.5")
    proxy = transfer.proxy_train(source, d, train, transfer.FeatureCache(str(tmp_path), log=quiet), budget, seed=1,
                                 device=device, at="features.5")
    assert probe.model[1].weight.shape == (5, 512)
    np.testing.assert_allclose(host(probe.model[1].weight), host(proxy.model[1].weight), rtol=1e-4, atol=1e-5)
    assert abs(probe.accuracy - proxy.accuracy) <= 0.01


def test_the_seeds_section_3_read_literally_checks_the_cache(setup, tmp_path):
    """A head on the cached SOURCE features, with the source labels, recovers the source model's accuracy."""
    d, source, _ = setup
    head, model = transfer.check_cache_on_source_task(source, d, transfer.FeatureCache(str(tmp_path), log=quiet))
    assert model > 0.8 and abs(head - model) <= 0.03


@pytest.mark.slow
@pytest.mark.parametrize("dataset, device", [("glyphs", "cpu"), ("digits", "cpu"),
                                             pytest.param("glyphs", "cuda", marks=ON_CUDA)])
def test_python_m_minitl_layers_quick(tmp_path, shared_cache, dataset, device):
    if dataset == "digits":
        pytest.importorskip("sklearn")
    done = subprocess.run([sys.executable, "-m", "minitl", "layers", "--quick", "--dataset", dataset, "--device",
                           device, "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, MINITL_CACHE=shared_cache))
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["config"]["device"] == device
    assert list(results["table"]) == ["input", "features.1", "features.2", "features.4", "features.5", "features.8"]
    for row in results["table"].values():
        assert list(row) == ["2", "all"] and all(len(cell["accuracy"]) == 2 for cell in row.values())
    assert results["config"]["feature_size"]["features.8"] == 64
    assert "linear probe accuracy on the held-out target test set, by the layer it reads" in done.stdout


@pytest.mark.parametrize("args, message", [(("--k", "0"), "'0' is not a positive integer"),
                                           (("--seeds", "0"), "must be >= 1"), (("--dataset", "mnist"), "mnist")])
def test_layers_bad_options_are_named(tmp_path, args, message):
    done = subprocess.run([sys.executable, "-m", "minitl", "layers", *args], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, MINITL_CACHE=str(tmp_path)))
    assert done.returncode == 2 and message in done.stderr
