"""Bad input, as a hostile user gives it: each case must raise a clear error that names what was
wrong (or give a correct result), never a silently wrong number. One table per area: the
call, the exception type, and a phrase its message must contain."""

import math

import numpy as np
import pytest

import minitl as mt
import minitl.functional as F
import minitl.nn as nn
from minitl import data, training, transfer


def t(*shape, dtype=np.float32, requires_grad=False):
    return mt.tensor(np.ones(shape, dtype=dtype), requires_grad=requires_grad)


def p(*shape):
    return nn.Parameter(np.ones(shape, dtype=np.float32))


def load_into_linear(value):
    model = nn.Linear(2, 2)
    state = model.state_dict()
    state["bias"] = value
    model.load_state_dict(state)


# ---------------------------------------------------------------- tensors and ops

TENSOR_CASES = [
    ("transpose axes out of range", lambda: t(2, 3, 4).transpose(3, 1, 2), ValueError, "out of range"),
    ("transpose axes repeated", lambda: t(2, 3, 4).transpose(0, 0, 1), ValueError, "not a permutation"),
    ("a raw array to an op", lambda: F.relu(np.ones(3)), TypeError, "wrap it with mt.tensor"),
    ("a raw array to a layer", lambda: nn.Linear(3, 2)(np.ones((1, 3), np.float32)), TypeError, "mt.tensor"),
    ("a raw array to conv2d", lambda: F.conv2d(np.ones((1, 1, 4, 4)), t(2, 1, 3, 3)), TypeError, "mt.tensor"),
    ("a raw array to flatten", lambda: F.flatten(np.ones((2, 3))), TypeError, "mt.tensor"),
    ("a raw array to dropout", lambda: F.dropout(np.ones(3)), TypeError, "mt.tensor"),
    ("a raw array to max_pool2d", lambda: F.max_pool2d(np.ones((1, 1, 4, 4)), 2), TypeError, "mt.tensor"),
    ("a raw array to a loss", lambda: F.mse_loss(np.ones(2), t(2)), TypeError, "mt.tensor"),
    ("a string as data", lambda: mt.tensor("abc"), TypeError, "cannot make a tensor from str"),
    ("an index past the end", lambda: t(4)[[0, 7]], IndexError, "index 7 is out of range for axis 0 of size 4"),
    ("two float dtypes", lambda: t(2) + t(2, dtype=np.float64), TypeError, ".float(), .double() or .to(dtype)"),
    ("an unknown device", lambda: t(2).to("tpu"), ValueError, "unknown device 'tpu'"),
    ("a cast to strings", lambda: t(2).to("U3"), TypeError, "not a number type"),
    ("backward of a non-scalar", lambda: (t(2, requires_grad=True) * 2).backward(), RuntimeError, "pass grad="),
]

# ---------------------------------------------------------------- layers and shapes

LAYER_CASES = [
    ("kernel_size 0", lambda: nn.Conv2d(1, 4, 0), ValueError, "Conv2d: kernel_size must be >= 1, got (0, 0)"),
    ("negative channels", lambda: nn.Conv2d(-1, 4, 3), ValueError, "Conv2d: in_channels must be >= 1, got -1"),
    ("negative padding", lambda: nn.Conv2d(1, 4, 3, padding=-1), ValueError, "padding must be >= 0"),
    ("negative features", lambda: nn.Linear(3, -2), ValueError, "Linear: out_features must be >= 1, got -2"),
    ("fractional features", lambda: nn.Linear(2.5, 3), TypeError, "Linear: in_features must be an integer"),
    ("integer parameters", lambda: nn.Linear(3, 2, dtype=mt.int64), TypeError, "must be floating point"),
    ("pool window 0", lambda: nn.MaxPool2d(0), ValueError, "MaxPool2d: kernel_size must be >= 1"),
    ("pool stride 0", lambda: nn.AvgPool2d(2, stride=0), ValueError, "AvgPool2d: stride must be >= 1"),
    ("dropout p > 1", lambda: nn.Dropout(1.5), ValueError, "p must be a number in [0, 1]"),
    ("an int64 image into Conv2d", lambda: nn.Conv2d(1, 2, 3)(t(1, 1, 4, 4, dtype=np.int64)), TypeError,
     "Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1), padding=(0, 0)): conv2d: the input is int64"),
    ("an int64 batch into Linear", lambda: nn.Linear(3, 2)(t(2, 3, dtype=np.int64)), TypeError, "x.float()"),
    ("an empty conv kernel", lambda: F.conv2d(t(1, 3, 4, 4), t(4, 3, 0, 0)), ValueError, "no empty axis"),
    ("an empty batch into cross_entropy", lambda: F.cross_entropy(t(0, 5), np.zeros(0, np.int64)), ValueError,
     "are empty: the mean over no examples is undefined"),
    ("an empty batch into mse_loss", lambda: F.mse_loss(t(0, 3), t(0, 3)), ValueError, "are empty"),
    ("a label past the classes", lambda: F.cross_entropy(t(2, 3), [0, 3]), ValueError,
     "label 3 at position 1 is out of range for 3 classes"),
    ("float labels", lambda: F.cross_entropy(t(2, 3), [0.0, 1.0]), TypeError, "labels must be integers"),
]

# ---------------------------------------------------------------- state dicts

STATE_CASES = [
    ("None as a state dict", lambda: nn.Linear(2, 2).load_state_dict(None), TypeError,
     "expected a dict of name -> array, got NoneType"),
    ("strings of the right shape", lambda: load_into_linear(np.array(["a", "b"])), ValueError,
     "bias: <U1 values, not real numbers"),
    ("an object array of None", lambda: load_into_linear(np.array([None, None])), ValueError,
     "bias: object values"),
    ("complex numbers", lambda: load_into_linear(np.array([1 + 2j, 0j])), ValueError, "complex128 values"),
    ("a list", lambda: load_into_linear([1.0, 2.0]), ValueError, "bias: a list, not an array"),
    ("a wrong shape", lambda: load_into_linear(np.ones(3)), ValueError, "bias: shape (3,) in the state dict"),
]

# ---------------------------------------------------------------- optimizers

OPTIMIZER_CASES = [
    ("a negative lr in a group", lambda: mt.optim.Adam([{"params": [p(2)], "lr": -0.05}]), ValueError,
     "Invalid learning rate: -0.05"),
    ("beta1 above 1", lambda: mt.optim.Adam([p(2)], betas=(1.5, 0.999)), ValueError,
     "Invalid beta parameter at index 0: 1.5"),
    ("lr NaN", lambda: mt.optim.SGD([p(2)], lr=math.nan), ValueError, "Invalid learning rate: nan"),
    ("lr inf", lambda: mt.optim.Adam([p(2)], lr=math.inf), ValueError, "Invalid learning rate: inf"),
    ("eps NaN", lambda: mt.optim.Adam([p(2)], eps=math.nan), ValueError, "Invalid epsilon value: nan"),
    ("momentum NaN", lambda: mt.optim.SGD([p(2)], lr=0.1, momentum=math.nan), ValueError, "Invalid momentum"),
    ("an empty group", lambda: mt.optim.Adam([{"params": []}, {"params": [p(2)]}]), ValueError,
     "parameter group 0 has no parameters"),
    ("betas a single number", lambda: mt.optim.Adam([p(2)], betas=0.9), ValueError, "betas must be a pair"),
    ("three betas", lambda: mt.optim.Adam([p(2)], betas=(0.9, 0.99, 0.999)), ValueError, "betas must be a pair"),
    ("a group mixed with a tensor", lambda: mt.optim.SGD([{"params": [p(2)]}, p(2)], lr=0.1), TypeError,
     "mixes parameter groups"),
    ("one tensor, not a list", lambda: mt.optim.SGD(p(2), lr=0.1), TypeError, "an iterable of tensors"),
    ("nesterov without momentum", lambda: mt.optim.SGD([p(2)], lr=0.1, nesterov=True), ValueError,
     "Nesterov momentum requires a momentum > 0"),
    ("a typo in an option", lambda: mt.optim.SGD([{"params": [p(2)], "momentun": 0.9}], lr=0.1), ValueError,
     "unknown options ['momentun']"),
    ("a group's lr NaN on load", lambda: _load_optimizer_state_with_lr(math.nan), ValueError,
     "Invalid learning rate: nan"),
]


def _load_optimizer_state_with_lr(lr):
    opt = mt.optim.SGD([p(2)], lr=0.1)
    state = opt.state_dict()
    state["param_groups"][0]["lr"] = lr
    opt.load_state_dict(state)


# ---------------------------------------------------------------- data

POOL = data.Split(np.zeros((6, 1, 2, 2), np.float32), np.array([0, 0, 1, 1, 2, 2]))

DATA_CASES = [
    ("k = True", lambda: data.k_shot(POOL, True), ValueError, "positive integer or 'all'"),
    ("k = 0", lambda: data.k_shot(POOL, 0), ValueError, "positive integer or 'all'"),
    ("k = 2.5", lambda: data.k_shot(POOL, 2.5), ValueError, "positive integer or 'all'"),
    ("batch_size 2.5", lambda: data.DataLoader(POOL.x, POOL.y, 2.5), ValueError, "positive integer, got 2.5"),
    ("batch_size None", lambda: data.DataLoader(POOL.x, POOL.y, None), ValueError, "positive integer, got None"),
    ("batch_size 0", lambda: data.DataLoader(POOL.x, POOL.y, 0), ValueError, "positive integer, got 0"),
    ("an empty split", lambda: data.DataLoader(POOL.x[:0], POOL.y[:0], 2), ValueError, "there are no examples"),
    ("a negative label", lambda: data.DataLoader(POOL.x[:2], np.array([0, -3]), 2), ValueError,
     "label -3 at position 1 is negative"),
    ("2-D labels", lambda: data.DataLoader(POOL.x, POOL.y[:, None], 2), ValueError, "y must be 1-D"),
    ("x and y of different lengths", lambda: data.DataLoader(POOL.x, POOL.y[:4], 2), ValueError,
     "x has 6 examples but y has 4"),
    ("predicting nothing", lambda: training.predict(nn.Linear(4, 2), np.zeros((0, 4), np.float32)), ValueError,
     "there are no inputs"),
    ("an unknown dataset", lambda: data.load_dataset("mnist"), ValueError, "unknown dataset 'mnist'"),
]

def _sgd_state_into_adam():
    p_ = p(2)
    sgd = mt.optim.SGD([p_], lr=0.1, momentum=0.9)
    p_.grad = np.ones(2, np.float32)
    sgd.step()
    mt.optim.Adam([p(2)]).load_state_dict(sgd.state_dict())


def _adam_options_into_sgd():
    mt.optim.SGD([p(2)], lr=0.1).load_state_dict(mt.optim.Adam([p(2)]).state_dict())


def _optimizer_state_for_a_missing_parameter():
    state = mt.optim.SGD([p(2)], lr=0.1).state_dict()
    state["state"][5] = {"momentum_buffer": np.zeros(2)}
    mt.optim.SGD([p(2)], lr=0.1).load_state_dict(state)


# ---------------------------------------------------------------- found by a hostile tester, after the first round

LATER_CASES = [
    ("an int64 image into BatchNorm", lambda: nn.BatchNorm2d(1)(t(2, 1, 3, 3, dtype=np.int64)), TypeError,
     "batch_norm: the input is int64"),
    ("integers into mse_loss (would overflow)", lambda: F.mse_loss(t(2, dtype=np.uint8), t(2, dtype=np.uint8)),
     TypeError, "mse_loss: the input is uint8"),
    ("labels of shape (n, 1) in a Split", lambda: training.accuracy(nn.Linear(4, 2), data.Split(
        np.zeros((3, 4), np.float32), np.zeros((3, 1), np.int64))), ValueError,
     "y must be 1-D labels, got shape (3, 1)"),
    ("momentum None in F.batch_norm", lambda: F.batch_norm(t(4, 2), None, None, training=True, momentum=None),
     ValueError, "momentum must be a number in [0, 1]"),
    ("momentum True in BatchNorm", lambda: nn.BatchNorm1d(2, momentum=True), ValueError, "momentum must be a number"),
    ("SGD's state into Adam", _sgd_state_into_adam, ValueError, "is it another optimizer's state?"),
    ("Adam's options into SGD", _adam_options_into_sgd, ValueError, "that a SGD does not take"),
    ("state for a parameter that is not there", _optimizer_state_for_a_missing_parameter, ValueError,
     "state for parameter 5, but there are 1 parameters"),
    ("fit for 0 steps", lambda: training.fit(lambda x, y: None, mt.optim.SGD([p(2)], lr=0.1), [], 0), ValueError,
     "steps must be a positive integer, got 0"),
    ("reshape to 2.7 rows", lambda: t(2, 3).reshape(2.7, 3), TypeError, "the shape must be integers"),
    ("sum over axis True", lambda: t(2, 3).sum(axis=True), TypeError, "axis must be an integer"),
    ("sum over one axis twice", lambda: t(2, 3).sum(axis=(0, 0)), ValueError, "names an axis twice"),
    ("a tensor of strings", lambda: mt.tensor(np.array(["a", "b"])), TypeError, "cannot make a tensor of <U1"),
    ("a float count into an integer buffer", lambda: nn.BatchNorm1d(2).load_state_dict(
        {**nn.BatchNorm1d(2).state_dict(), "num_batches_tracked": np.asarray(7.9)}), ValueError, "would be truncated"),
    ("a cache name with a slash", lambda: transfer.FeatureCache("/tmp/minitl-test-cache").path("a/b"), ValueError,
     "without path separators"),
    ("predict on a list", lambda: training.predict(nn.Linear(2, 2), [[1.0, 2.0]]), TypeError, "must be an array"),
    ("a negative image size", lambda: transfer.TransferCNN(5, image_size=-4), ValueError,
     "image_size must be a positive integer"),
    ("a negative learning rate in a budget", lambda: transfer.Budget(lr=-1), ValueError, "Invalid lr: -1"),
]

# ---------------------------------------------------------------- the third hostile pass (issue 18), so far

THIRD_PASS_CASES = [
    ("a uint8 image of 200s into AvgPool2d (the sums wrapped to 8.0)", lambda: nn.AvgPool2d(2)(
        mt.tensor(np.full((1, 1, 2, 2), 200, np.uint8))), TypeError, "avg_pool2d: the input is uint8"),
    ("an int64 tensor into MaxPool2d", lambda: nn.MaxPool2d(2)(t(1, 1, 2, 2, dtype=np.int64)), TypeError,
     "max_pool2d: the input is int64"),
    ("an int64 tensor into Dropout (it was not rescaled)", lambda: nn.Dropout(0.5)(t(4, dtype=np.int64)),
     TypeError, "dropout: the input is int64"),
    ("integer logits into cross_entropy (a float64 loss)", lambda: F.cross_entropy(t(2, 3, dtype=np.int64), [0, 1]),
     TypeError, "cross_entropy: the input is int64"),
    ("a Python int that float32 cannot hold (it became inf)", lambda: mt.tensor(2**200), OverflowError,
     "does not fit in float32"),
    ("a list with one such int", lambda: mt.tensor([1, 2**130]), OverflowError, "does not fit in float32"),
    ("a budget of 2.5 steps at most (it failed later, in fit)", lambda: transfer.Budget(max_steps=2.5), ValueError,
     "max_steps must be an integer >= 0"),
]

CASES = TENSOR_CASES + LAYER_CASES + STATE_CASES + OPTIMIZER_CASES + DATA_CASES + LATER_CASES + THIRD_PASS_CASES


@pytest.mark.parametrize("call, error, phrase", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_a_clear_error(call, error, phrase):
    with pytest.raises(error) as caught:
        call()
    assert phrase in str(caught.value), str(caught.value)


# ---------------------------------------------------------------- correct results where an error is not needed

def test_a_numpy_integer_k_is_a_k():
    assert len(data.k_shot(POOL, np.int64(2))) == 6


def test_an_empty_batch_flattens():
    assert F.flatten(t(0, 2, 3, 3)).shape == (0, 18)


def test_a_failed_state_dict_load_changes_nothing():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    bad = dict(before)
    bad["1.bias"] = np.array(["x", "y"])  # the last of four: the first three must not be overwritten
    with pytest.raises(ValueError):
        model.load_state_dict(bad)
    for k, v in model.state_dict().items():
        assert np.array_equal(v, before[k])


# ---------------------------------------------------------------- in-place changes and graph lifetime

def test_an_optimizer_step_between_forward_and_backward_is_refused():
    model = nn.Linear(3, 2)
    opt = mt.optim.SGD(model.parameters(), lr=0.1)
    x = t(4, 3)
    model(x).sum().backward()
    loss = (model(x) ** 2).sum()  # saves the weight for its backward
    opt.step()                    # ... which then changes it in place
    with pytest.raises(RuntimeError, match=r"modified by an inplace operation: input 1 of LinearFunction"):
        loss.backward()


def test_a_second_backward_needs_retain_graph():
    x = t(3, requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()  # allowed once more: the graph was kept
    np.testing.assert_allclose(x.grad, 4 * np.ones(3))
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()  # the second backward freed it


def test_backward_frees_the_graph():
    x = t(2, 3, requires_grad=True)
    h = F.relu(x * 2.0)
    loss = h.sum()
    loss.backward()
    assert loss._creator.released and h._creator.released  # saved arrays and links are gone


# ---------------------------------------------------------------- NaN and infinity

def test_nan_in_the_inputs_propagates_as_in_pytorch():
    x = mt.tensor(np.array([[1.0, np.nan]]))
    assert np.isnan(nn.Linear(2, 1, dtype=mt.float64)(x).item())


def test_training_on_nan_stops_with_the_step():
    d = data.glyphs(source_per_class=20, source_test_per_class=4, target_pool_per_class=4, target_test_per_class=4)
    x = d.target_pool.x.copy()
    x[3, 0, 5, 5] = np.nan
    train = data.Split(x, d.target_pool.y)
    mt.manual_seed(0)
    source = transfer.model_for(d)
    with pytest.raises(training.NonFiniteLoss, match=r"the loss became nan at step \d+ of 5"):
        transfer.fine_tune(source, d, train, transfer.Budget(steps=5, batch_size=20))


def test_the_comparison_names_method_k_and_seed_when_a_loss_diverges(monkeypatch, tmp_path):
    from minitl.commands import compare
    monkeypatch.setenv("MINITL_CACHE", str(tmp_path))

    def diverge(method, *args, **kwargs):
        raise training.NonFiniteLoss("the loss became nan at step 7 of 10")

    monkeypatch.setattr(transfer, "run_method", diverge)
    monkeypatch.setattr(transfer, "source_model", lambda *a, **k: None)
    monkeypatch.setattr(transfer, "check_cache_on_source_task", lambda *a, **k: (1.0, 1.0))
    with pytest.raises(training.NonFiniteLoss, match=r"proxy, k=2, seed=0: the loss became nan at step 7"):
        compare.run_comparison(methods=("proxy",), ks=(2,), seeds=1, steps=10, log=lambda *a: None, jobs=2)


def test_batch_norm_refuses_a_weight_changed_between_forward_and_backward():
    bn = nn.BatchNorm1d(3, dtype=mt.float64)
    opt = mt.optim.SGD(bn.parameters(), lr=1.0)
    x = mt.tensor(np.random.default_rng(0).standard_normal((4, 3)), requires_grad=True)
    first, second = bn(x), bn(x)
    first.sum().backward()
    opt.step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation: input 1 of BatchNormFunction"):
        second.sum().backward()


def test_a_failed_batch_norm_forward_counts_no_batch():
    bn = nn.BatchNorm1d(3, momentum=None)
    bn(mt.tensor(np.full((2, 3), 1.0, np.float32)))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(mt.tensor(np.ones((1, 3), np.float32)))
    bn(mt.tensor(np.full((2, 3), 4.0, np.float32)))
    assert int(bn.num_batches_tracked.item()) == 2
    np.testing.assert_allclose(bn.running_mean.numpy(), 2.5)  # the mean of the two accepted batches


def test_old_pytorch_batch_norm_checkpoints_without_a_count_load():
    state = nn.BatchNorm2d(2).state_dict()
    del state["num_batches_tracked"]
    bn = nn.BatchNorm2d(2)
    assert bn.load_state_dict(state) == ([], [])
    bn.load_state_dict({**state, "num_batches_tracked": np.int64(3)})  # a NumPy scalar for the 0-d count
    assert int(bn.num_batches_tracked.item()) == 3


def test_device_none_and_to_none_leave_things_where_they_are():
    x = mt.tensor([1.0, 2.0])
    assert x.to(None) is x and x.to(None).dtype == mt.float32
    model = nn.Linear(2, 2)
    assert model.to(None) is model


def test_an_interrupted_cosine_fit_gives_the_learning_rate_back():
    param = p(2)
    opt = mt.optim.SGD([param], lr=0.1)

    def loss_fn(x, y):
        if loss_fn.calls == 3:
            raise KeyboardInterrupt
        loss_fn.calls += 1
        return (param * param).sum()
    loss_fn.calls = 0
    loader = data.DataLoader(np.zeros((4, 1), np.float32), np.zeros(4, np.int64), 2)
    with pytest.raises(KeyboardInterrupt):
        training.fit(loss_fn, opt, loader, 10, "cosine")
    assert opt.param_groups[0]["lr"] == 0.1


def test_a_big_endian_checkpoint_loads_in_native_byte_order(tmp_path):
    mt.save({"w": np.arange(3, dtype=">f4")}, tmp_path / "be.npz")
    w = mt.load(tmp_path / "be.npz")["w"]
    assert w.dtype.isnative and list(w) == [0.0, 1.0, 2.0]


def test_saving_keeps_links_and_permissions(tmp_path):
    import os
    target = tmp_path / "model.npz"
    mt.save({"w": np.ones(2)}, target)
    os.chmod(target, 0o600)
    (tmp_path / "link.npz").symlink_to(target)
    mt.save({"w": np.zeros(2)}, tmp_path / "link.npz")
    assert (tmp_path / "link.npz").is_symlink() and oct(target.stat().st_mode & 0o777) == oct(0o600)
    assert list(mt.load(target)["w"]) == [0.0, 0.0]
    with pytest.raises(ValueError, match="printable"):
        mt.save({"a\x00b": np.ones(1)}, tmp_path / "x.npz")
    with pytest.raises(ValueError, match="is a folder"):
        mt.save({"w": np.ones(1)}, tmp_path)


def test_compressed_or_repeated_members_are_refused(tmp_path):
    import zipfile
    np.savez_compressed(tmp_path / "c.npz", a=np.zeros(1000), __minitl_format__=np.asarray(1))
    with pytest.raises(ValueError, match="member 'a.npy' is compressed"):
        mt.load(tmp_path / "c.npz")
    mt.save({"a": np.zeros(2)}, tmp_path / "d.npz")
    with zipfile.ZipFile(tmp_path / "d.npz", "a") as z:
        with pytest.warns(UserWarning):  # zipfile warns about the duplicate name it is asked to write
            z.writestr("a.npy", z.read("a.npy"))
    with pytest.raises(ValueError, match="member 'a.npy' appears twice"):
        mt.load(tmp_path / "d.npz")


@pytest.mark.parametrize("env, args, message", [
    ({"MINITL_BLAS_THREADS": "abc"}, (), "MINITL_BLAS_THREADS must be an integer from 0 to 1024"),
    ({"MINITL_DEVICE": ""}, (), "from the environment variable MINITL_DEVICE"),
    ({}, ("--k", "²"), "is not a positive integer"),
    ({}, ("--jobs", "9999"), "more than the"),
    ({}, ("--out", "OUT"), "results.json there is a folder"),
])
def test_the_cli_names_bad_environments_and_options_before_any_work(tmp_path, env, args, message):
    import os
    import subprocess
    import sys
    (tmp_path / "out" / "results.json").mkdir(parents=True)
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    done = subprocess.run([sys.executable, "-m", "minitl", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MINITL_CACHE": str(tmp_path / "cache"), **env})
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "source model" not in done.stdout


@pytest.mark.parametrize("value", ["99999999999999999999999", "\u00b2", "-1", "1.5", "2000"])
def test_a_bad_blas_thread_count_is_named(monkeypatch, value):
    """It gave a ctypes traceback (a huge number) or an unclear int() error ("\u00b2" is a digit)."""
    monkeypatch.setenv("MINITL_BLAS_THREADS", value)
    with pytest.raises(ValueError, match="MINITL_BLAS_THREADS must be an integer from 0 to 1024"):
        mt.backend.blas_thread_count()


def test_the_cache_folder_expands_a_tilde_and_honours_xdg(monkeypatch, tmp_path):
    """MINITL_CACHE='~/x' made a folder literally named '~' in the working directory."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MINITL_CACHE", "~/minitl-cache")
    assert transfer.cache_dir() == str(tmp_path / "minitl-cache")
    monkeypatch.delenv("MINITL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert transfer.cache_dir() == str(tmp_path / "xdg" / "minitl")


def test_np_asarray_gives_the_values():
    """It gave an object array of 0-d tensors."""
    a = np.asarray(mt.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True))
    assert a.dtype == np.float32 and a.tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_no_silent_float64():
    """A NumPy float64 eps made a float32 BatchNorm's output float64; an integer tensor divided by 2 or
    averaged was float64."""
    bn = nn.BatchNorm1d(3, eps=np.float64(1e-5), momentum=np.float64(0.1))
    assert bn(t(4, 3)).dtype == mt.float32 and bn.running_var.dtype == mt.float32
    x = mt.tensor(np.arange(6).reshape(2, 3))
    assert (x / 2).dtype == mt.float32 and x.mean().dtype == mt.float32


@pytest.mark.parametrize("call, error, phrase", [
    (lambda: transfer.fine_tune(None, None, None, lam=0.1), ValueError,
     "lam=0.1 was given without a regularizer"),
    (lambda: transfer.fine_tune(None, None, None, regularizer="l2sp", lam=-5), ValueError,
     "lam must be a finite number >= 0"),
    (lambda: transfer.fine_tune(None, None, None, regularizer="l2sp", lam=float("nan")), ValueError,
     "lam must be a finite number >= 0"),
    (lambda: transfer.fine_tune(None, None, None, regularizer="l2sp", lam="0.1"), ValueError,
     "lam must be a finite number >= 0"),
    (lambda: training.fit(lambda x, y: None, mt.optim.SGD([p(2)], lr=0.1), [], 3), ValueError,
     "the loader gave no batch"),
    (lambda: mt.optim.Adam([p(2)] * 2), ValueError, "is given twice"),
    (lambda: data.k_shot(data.Split(np.zeros((3, 2), np.float32), np.array([0, -1, 1])), 1), ValueError,
     "label -1 at position 1"),
])
def test_third_pass_clear_errors(call, error, phrase):
    with pytest.raises(error, match=phrase):
        call()


def test_a_transpose_takes_numpy_integers():
    x = t(2, 3)
    assert x.transpose(np.int64(1), np.int64(0)).shape == (3, 2)


def test_load_refuses_a_named_pipe(tmp_path):
    import os
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="is not a regular file"):
        mt.load(fifo)


def test_save_into_a_read_only_folder_names_the_file(tmp_path):
    import os
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="model.npz"):
            mt.save({"w": np.ones(2)}, tmp_path / "model.npz")
    finally:
        tmp_path.chmod(0o700)


def test_checking_the_op_table_leaves_the_global_generator_alone():
    from minitl.opspecs import OP_SPECS, make_inputs
    mt.manual_seed(7)
    expected = mt.backend.host_rng().random(3)
    mt.manual_seed(7)
    spec = next(s for s in OP_SPECS if s.name == "dropout")
    spec.fn(*make_inputs(spec, np.random.default_rng(0)), **spec.params)
    np.testing.assert_array_equal(mt.backend.host_rng().random(3), expected)


def test_a_state_value_that_does_not_fit_is_refused_and_nothing_changes():
    """A uint64 2**64-1 batch count wrapped to -1."""
    bn = nn.BatchNorm1d(2)
    state = {**bn.state_dict(), "num_batches_tracked": np.asarray(2**64 - 1, dtype=np.uint64)}
    with pytest.raises(ValueError, match="do not fit its int64"):
        bn.load_state_dict(state)
    assert bn.num_batches_tracked.item() == 0


@pytest.mark.parametrize("name, value, phrase", [
    ("exp_avg", np.zeros(2, dtype=np.int64), "must be finite floating-point values, got int64"),
    ("exp_avg_sq", -np.ones(2, dtype=np.float32), "has negative values"),
    ("exp_avg", np.full(2, np.nan, dtype=np.float32), "with NaN or infinity"),
])
def test_optimizer_state_is_checked_when_loaded(name, value, phrase):
    """An int64 exp_avg failed only at step(), after the step counter moved; a negative exp_avg_sq
    was accepted and the weights went NaN."""
    w = p(2)
    opt = mt.optim.Adam([w])
    w.grad = np.ones(2, np.float32)
    opt.step()
    state = opt.state_dict()
    state["state"][0][name] = value
    before = opt.state_dict()
    with pytest.raises(ValueError, match=phrase):
        opt.load_state_dict(state)
    assert opt.state_dict()["state"][0]["step"] == before["state"][0]["step"]


def test_a_notebook_keeps_its_plotting_backend(monkeypatch):
    """Asking for a lesson's pyplot switched a notebook to Agg, and its figures stopped showing inline."""
    matplotlib = pytest.importorskip("matplotlib")
    import sys
    import types

    from minitl import report
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    switched = []
    monkeypatch.setattr(matplotlib, "use", lambda backend, *a, **k: switched.append(backend))
    report.pyplot()
    assert switched == []
    monkeypatch.delitem(sys.modules, "ipykernel")
    report.pyplot()
    assert switched == ["Agg"]


def test_a_killed_worker_is_named_and_the_comparison_exits_within_seconds(monkeypatch, tmp_path, capsys):
    import os
    import signal
    import time

    from minitl.commands import cli

    def killed_on_seed_1(method, source, data, train, cache, budget, seed, device):
        if seed == 1:
            os.kill(os.getpid(), signal.SIGKILL)  # what the out-of-memory killer does
        return transfer.Result(method, 0.5, [1.0], 0.0, None)

    monkeypatch.setenv("MINITL_CACHE", str(tmp_path))
    monkeypatch.setattr(transfer, "run_method", killed_on_seed_1)
    monkeypatch.setattr(transfer, "source_model", lambda *a, **k: None)
    monkeypatch.setattr(transfer, "check_cache_on_source_task", lambda *a, **k: (1.0, 1.0))
    start = time.perf_counter()
    assert cli.main(["--methods", "proxy", "--k", "2", "--seeds", "3", "--steps", "5", "--jobs", "2"]) == 2
    assert time.perf_counter() - start < 30  # Pool.map waited forever
    error = capsys.readouterr().err
    assert "run ('proxy', 2, 1) was lost" in error and "SIGKILL" in error and "--jobs 1" in error, error


# ---------------------------------------------------------------- the hostile pass of 2026-12-06

def test_a_tensor_converts_as_pytorch_does():
    s = t(3).sum()
    assert type(s.data) is np.ndarray and s.data.shape == ()  # NumPy's scalar made np.asarray(s) fail
    assert np.asarray(s) == 3.0 and float(s) == 3.0 and int(s) == 3 and f"{s:.2f}" == "3.00" and bool(s)
    assert not bool(mt.tensor(np.zeros((1, 1))))
    with pytest.raises(RuntimeError, match=r"truth value of a tensor of shape \(2, 3\) is ambiguous"):
        bool(mt.tensor(np.zeros((2, 3))))  # len() made it True


def test_a_bool_tensor_promotes_as_numpy_and_pytorch_do():
    b = mt.tensor(np.array([True, False]))
    assert (b + 1).data.tolist() == [2, 1] and (b * 3).data.tolist() == [3, 0]  # were [True, True], [True, False]
    assert (b + 0.5).dtype == mt.float32 and (b + True).dtype == np.bool_


def test_no_float64_from_numpy_hyperparameters_or_state():
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    y = x ** np.float64(2)
    y.sum().backward()
    assert y.dtype == mt.float32 and x.grad.dtype == np.float32
    assert (mt.tensor(np.arange(3)) ** 0.5).dtype == mt.float32
    lin = nn.Linear(2, 3)
    sgd = mt.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9, weight_decay=np.float64(0.01))
    adam = mt.optim.Adam(lin.parameters(), lr=np.float64(1e-3))
    lin(t(1, 2)).sum().backward()
    sgd.step()
    adam.step()
    state = adam.state_dict()
    state["state"][0]["exp_avg"] = state["state"][0]["exp_avg"].astype(np.float64)
    adam.load_state_dict(state)  # PyTorch casts state to its parameter's dtype
    adam.step()
    assert {v.dtype for s in (*sgd.state.values(), *adam.state.values()) for v in s.values()
            if hasattr(v, "dtype")} == {np.dtype(np.float32)}
    assert lin.weight.dtype == mt.float32


OVERFLOWS = {
    "a huge Python float beside float32": (lambda: t(2) + 1e300, "1e\\+300 does not fit in float32"),
    "a huge Python int beside float32": (lambda: t(2) * 2**200, "does not fit in float32"),
    "an int beyond int8 beside int8": (lambda: mt.tensor(np.array([100], np.int8)) + 200, "200 does not fit in int8"),
    "a float64 array made float32": (lambda: mt.tensor(np.array([1e39]), dtype=mt.float32),
                                     "values: 1e\\+39 .and maybe others. does not fit in float32"),
    "a float64 state entry into float32": (lambda: load_into_linear(np.full(2, 1e300)),
                                           "values as large as 1e\\+300 do not fit its float32"),
}


@pytest.mark.parametrize("case", OVERFLOWS, ids=list(OVERFLOWS))
def test_numbers_that_do_not_fit_are_refused_not_made_inf(case):
    fn, phrase = OVERFLOWS[case]
    with pytest.raises((OverflowError, ValueError), match=phrase):
        fn()
    assert np.isinf((t(2) + float("inf")).data).all()  # infinity itself is a value


@pytest.mark.parametrize("key, value", [("running_var", -np.ones(3, np.float32)),
                                        ("num_batches_tracked", np.array(-3))])
def test_batch_norm_refuses_negative_statistics_at_load(key, value):
    bn = nn.BatchNorm1d(3)
    state = {k: np.asarray(v) for k, v in bn.state_dict().items()}
    state[key] = value
    with pytest.raises(ValueError, match=f"{key}: negative values"):
        bn.load_state_dict(state)
    assert (np.asarray(bn.running_var) == 1).all() and int(bn.num_batches_tracked.item()) == 0


@pytest.mark.parametrize("value, phrase", [([[0.0] * 2] * 3, "is a list, not an array"),
                                           (mt.tensor(np.zeros((3, 2))), "is a Tensor, not an array")])
def test_optimizer_state_of_the_wrong_kind_is_named_by_its_kind(value, phrase):
    lin = nn.Linear(2, 3)
    adam = mt.optim.Adam(lin.parameters())
    lin(t(1, 2)).sum().backward()
    adam.step()
    state = adam.state_dict()
    state["state"][0]["exp_avg"] = value  # said "has shape (), the parameter has (3, 2)"
    with pytest.raises(ValueError, match=phrase):
        adam.load_state_dict(state)


class OddError(ValueError):
    """An exception whose constructor takes other arguments (as NumPy's casting errors do)."""
    def __init__(self, a, b):
        super().__init__(f"{a} and {b}")


def test_layer_errors_name_the_layer_whatever_the_exception_class():
    class Odd(nn.Module):
        def forward(self, x):
            raise OddError("x", "y")  # broke the naming itself: TypeError, __init__() missing arguments

    with pytest.raises(ValueError, match=r"^Odd\(\): x and y"):
        Odd()(None)
    with pytest.raises(TypeError, match=r"ReLU\(\): relu: the input is bool"):
        nn.ReLU()(mt.tensor(np.ones((1, 2), dtype=bool)))
    with pytest.raises(TypeError, match=r"Dropout\(p=0.5\): dropout: the input is int64"):
        nn.Dropout(0.5)(mt.tensor(np.ones(3, dtype=np.int64)))


def test_the_innermost_layer_names_an_error_once():
    """Module.__call__ names an error with the layer that raised it; the containers around it leave
    it as it is (their reprs span lines), and a user's own module is named as minitl's are."""
    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return F.relu(self.fc(x))

    model = nn.Sequential(nn.Sequential(Head()))
    with pytest.raises(ValueError) as caught:
        model(mt.tensor(np.ones((1, 4), dtype=np.float32)))
    named = "Linear(in_features=3, out_features=2, bias=True): linear: input has shape (1, 4)"
    assert str(caught.value).startswith(named)
    assert str(caught.value).count("Linear(") == 1 and "Sequential" not in str(caught.value)

    class Own(nn.Module):
        def forward(self, x):
            return F.linear(x, mt.tensor(np.ones((2, 3), dtype=np.float32)))

    with pytest.raises(ValueError, match=r"^Own\(\): linear: input has shape \(1, 4\)"):
        nn.Sequential(Own())(mt.tensor(np.ones((1, 4), dtype=np.float32)))
    with pytest.raises(ValueError, match=r"^Bad\(\.\.\.\): shapes"):
        class Bad(Head):
            def forward(self, x):
                raise ValueError("shapes")
        Bad()(None)


def test_fit_over_a_one_shot_iterator_says_what_ran_out():
    lin = nn.Linear(2, 2)
    batches = iter([(t(4, 2), np.array([0, 1, 0, 1]))])
    with pytest.raises(ValueError, match="ran out after 1 of 3 steps.*one-shot iterator"):
        training.fit(lambda x, y: F.cross_entropy(lin(x), y), mt.optim.SGD(lin.parameters(), lr=0.1), batches, 3)


def test_budget_takes_numpy_integers_and_refuses_a_cap_below_its_steps():
    b = transfer.Budget(steps=np.int64(3), batch_size=np.int64(8))
    assert (b.steps, b.batch_size) == (3, 8) and type(b.steps) is int
    with pytest.raises(ValueError, match="max_steps=1 is below steps=5"):
        transfer.Budget(steps=5, max_steps=1)  # ran 5 steps, its docstring says at most max_steps


SPLITS = {
    "x and y of different lengths": (lambda: data.Split(np.zeros((10, 1)), np.zeros(5, np.int64)),
                                     "x has 10 examples but y has 5"),
    "2-D labels": (lambda: data.Split(np.zeros((4, 1)), np.zeros((4, 1), np.int64)), "y must be 1-D"),
    "a class with no examples": (lambda: data.k_shot(data.Split(np.zeros((4, 1)), np.array([0, 2, 0, 2])), 1),
                                 "class 1 has no examples"),
    "a label far beyond the pool": (lambda: data.k_shot(data.Split(np.zeros((4, 1)), np.array([0, 1, 0, 2**62])), 1),
                                    "label 4611686018427387904 at position 3, but only 4 examples"),
    "a negative seed": (lambda: data.k_shot(data.Split(np.zeros((4, 1)), np.array([0, 1, 0, 1])), 1, seed=-1),
                        "seed must be an integer >= 0"),
}


@pytest.mark.parametrize("case", SPLITS, ids=list(SPLITS))
def test_splits_and_k_shot_name_what_is_wrong(case):
    fn, phrase = SPLITS[case]
    with pytest.raises(ValueError, match=phrase):
        fn()


def test_an_optimizer_step_checks_every_gradient_before_moving_any():
    lin = nn.Linear(2, 3)
    opt = mt.optim.SGD(lin.parameters(), lr=0.1)
    before = lin.weight.numpy().copy(), lin.bias.numpy().copy()
    for bad in (mt.tensor(np.ones(3), dtype=mt.float32), np.ones(1, np.float32), np.ones(3)):
        lin.weight.grad, lin.bias.grad = np.ones((3, 2), np.float32), bad  # a (1,) gradient would broadcast
        with pytest.raises(TypeError, match=r"a parameter of shape \(3,\) \(float32\) has a .grad that is"):
            opt.step()
    assert np.array_equal(lin.weight.numpy(), before[0]) and np.array_equal(lin.bias.numpy(), before[1])


@pytest.mark.parametrize("mark", [0, 2, -1, 1.0])
def test_a_checkpoint_of_another_format_is_refused(tmp_path, mark):
    path = str(tmp_path / "x.npz")
    mt.io.write_npz(path, {"w": np.ones(2), "__minitl_format__": np.asarray(mark)})
    with pytest.raises(ValueError, match=f"says it is minitl file format {mark!r}; this minitl reads format 1"):
        mt.load(path)


def test_one_seed_shows_no_spread_and_a_chosen_plot_backend_is_kept(monkeypatch):
    from minitl import report
    assert report.mean_std([0.4391]) == "0.439 (1 seed)" and report.mean_std([0.4, 0.6]) == "0.500 ± 0.141"
    matplotlib = pytest.importorskip("matplotlib")
    switched = []
    monkeypatch.setattr(matplotlib, "use", lambda backend, *a, **k: switched.append(backend))
    monkeypatch.setenv("MPLBACKEND", "svg")
    report.pyplot()
    assert switched == []  # forced Agg over the user's choice


@pytest.mark.parametrize("jobs", [1, 2])
def test_results_arrive_in_order_while_later_runs_still_run(jobs):
    """python -m minitl printed nothing until every run was done (issue 19, item 4)."""
    import multiprocessing

    from minitl import parallel
    gate = multiprocessing.get_context("fork").Event()

    def run(i):
        if i == 3:  # the last run may finish only once the caller has the first result
            assert gate.wait(20), "the first result never reached the caller"
        return i * i

    results = parallel.map_runs(run, [0, 1, 2, 3], jobs)
    assert next(results) == 0
    gate.set()
    assert list(results) == [1, 4, 9]


def test_workers_end_when_their_parent_is_killed():
    """A SIGKILLed comparison left its --jobs workers blocked (or computing) for no one."""
    import pathlib
    import subprocess
    import sys
    import time

    def alive(pid):
        stat = pathlib.Path(f"/proc/{pid}/stat")
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
        except (FileNotFoundError, ProcessLookupError):
            return False

    if not pathlib.Path("/proc/self/stat").exists():
        pytest.skip("needs /proc to see the workers")
    script = ("import os, time\nfrom minitl import parallel\n"
              # one write per pid: two workers' prints could interleave
              "def run(i):\n    os.write(1, f'{os.getpid()}\\n'.encode())\n    time.sleep(60)\n"
              "list(parallel.map_runs(run, [0, 1], 2))\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    workers = [int(parent.stdout.readline()) for _ in range(2)]
    parent.kill()
    parent.wait()
    deadline = time.perf_counter() + 10
    while any(alive(pid) for pid in workers) and time.perf_counter() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in workers), "a worker outlived its parent"


# ---------------------------------------------------------------- the second hostile pass of 2026-12-06

SECOND_PASS = {  # (call, error type, phrase); each was silently wrong or a raw traceback before
    "iterating a 0-d tensor": (lambda: list(mt.tensor(3.5)), TypeError, "iteration over a 0-d tensor"),
    "a NumPy int beyond int32 beside int32": (lambda: mt.tensor(np.array([1, 2], np.int32)) * np.int64(2**40),
                                               OverflowError, "1099511627776 does not fit in int32"),
    "a NumPy uint64 beside int64": (lambda: mt.tensor(np.array([1, 2])) + np.uint64(2**64 - 1),
                                    OverflowError, "does not fit in int64"),
    "1e20 made int64": (lambda: mt.tensor(np.array([1e20]), dtype=mt.int64), OverflowError, "does not fit in int64"),
    "-1 made uint8": (lambda: mt.tensor(np.array([-1]), dtype=np.uint8), OverflowError, "-1 (and maybe"),
    "nan made int64 by .to": (lambda: mt.tensor([float("nan")]).to(mt.int64), OverflowError, "nan (and maybe"),
    "1e300 made float32 by .float()": (lambda: mt.tensor(np.array([1e300, 1.0])).float(), OverflowError,
                                       "does not fit in float32"),
    "a Python int beyond int64": (lambda: mt.tensor(2**70, dtype=mt.int64), OverflowError, "cannot make a int64"),
    "a non-module appended": (lambda: nn.Sequential(nn.ReLU()).append(3), TypeError, "3 is a int, not a Module"),
    "a DataLoader seed of -1": (lambda: data.DataLoader(np.zeros((4, 1)), np.zeros(4, int), 2, seed=-1), ValueError,
                                "DataLoader: seed must be an integer >= 0"),
    "steps for no examples": (lambda: transfer.Budget(steps=1, epochs=3.0).steps_for(0), ValueError,
                              "number of training examples must be a positive integer"),
}


@pytest.mark.parametrize("case", SECOND_PASS, ids=list(SECOND_PASS))
def test_the_second_hostile_pass(case):
    call, error, phrase = SECOND_PASS[case]
    with pytest.raises(error) as caught:
        call()
    assert phrase in str(caught.value), str(caught.value)


def test_values_that_just_fit_are_kept():
    assert (t(1) + 3.4028235e38).data[0] == np.float32(3.4028235e38)  # float32's largest: it was refused
    assert (mt.tensor(np.array([1.5, -2.7])).to(mt.int64)).data.tolist() == [1, -2]  # truncation is a cast, as in NumPy
    assert nn.Dropout(np.float32(0.5)).p == 0.5


def test_optimizer_options_edited_between_steps_are_checked_before_anything_moves():
    lin = nn.Linear(4, 2)
    opt = mt.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9)
    for bad in (float("nan"), None, "0.1"):
        F.mse_loss(lin(t(5, 4)), t(5, 2)).backward()
        opt.step()
        before = lin.weight.numpy().copy(), {k: s["momentum_buffer"].copy() for k, s in opt.state.items()}
        opt.param_groups[0]["lr"] = bad  # a hand-written schedule's mistake: NaN weights, or a raw TypeError
        with pytest.raises(ValueError, match=r"SGD.step: parameter group 0: Invalid learning rate"):
            opt.step()
        assert np.array_equal(lin.weight.numpy(), before[0])
        assert all(np.array_equal(s["momentum_buffer"], before[1][k]) for k, s in opt.state.items())
        opt.param_groups[0]["lr"] = 0.1


def test_adam_state_that_would_overflow_is_refused_and_numpy_steps_are_kept_as_ints():
    lin = nn.Linear(4, 2)
    adam = mt.optim.Adam(lin.parameters())
    F.mse_loss(lin(t(5, 4)), t(5, 2)).backward()
    adam.step()
    state = adam.state_dict()
    state["state"][0]["step"] = np.int64(3)
    adam.load_state_dict(state)
    assert type(next(iter(adam.state.values()))["step"]) is int
    state["state"][0]["exp_avg"] = np.full((2, 4), 1e300)  # accepted, then NaN weights after a step
    with pytest.raises(ValueError, match="values as large as 1e\\+300, which do not fit its float32"):
        adam.load_state_dict(state)


def test_no_grad_covers_a_generators_body_and_modules_in_a_cycle_are_walked_once():
    @mt.no_grad()
    def doubled(x):
        yield x * 2
        yield x * 3

    x = mt.tensor([1.0], requires_grad=True)
    assert [y.requires_grad for y in doubled(x)] == [False, False] and mt.is_grad_enabled()
    seq = nn.Sequential(nn.Linear(2, 2))
    seq.append(seq)  # a RecursionError in named_modules
    assert len(list(seq.named_parameters())) == 2 and len(list(seq.modules())) == 2


def test_a_workers_error_keeps_its_traceback_and_names_its_run():
    from minitl import parallel

    def deep(i):
        if i == 2:
            raise ValueError("bad value in run 2")
        return i

    def run(i):
        return deep(i)

    with pytest.raises(ValueError, match="bad value in run 2") as caught:
        list(parallel.map_runs(run, [0, 1, 2, 3], 2))
    cause = str(caught.value.__cause__)  # ended at map_runs' own raise before: where did it happen?
    assert "run 2, in worker process" in cause and "in deep" in cause, cause


def test_review_findings_of_2026_12_06():
    # a 0-d parameter whose gradient came through a reduction (NumPy gives a scalar there)
    p = nn.Parameter(np.float32(1.0) * np.ones((), np.float32))
    (p * 3.0).sum().backward()
    mt.optim.SGD([p], lr=0.1).step()
    assert float(p.data) == pytest.approx(0.7)
    # an option replaced by an equal value of another type is checked again
    lin = nn.Linear(2, 2)
    opt = mt.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    F.mse_loss(lin(t(3, 2)), t(3, 2)).backward()
    opt.step()
    opt.param_groups[0]["nesterov"] = 1  # == True
    with pytest.raises(TypeError, match="nesterov must be True or False, got 1"):
        opt.step()
    with pytest.raises(TypeError, match="needs a one-element tensor"):
        f"{t(2):.3f}"


def test_no_grad_passes_throw_and_close_to_a_generator():
    seen = []

    @mt.no_grad
    def gen():
        try:
            yield 1
        except KeyError:
            seen.append(("thrown", mt.is_grad_enabled()))
            yield 2
        finally:
            seen.append(("finally", mt.is_grad_enabled()))

    g = gen()
    next(g)
    assert g.throw(KeyError) == 2
    g.close()
    assert seen == [("thrown", False), ("finally", False)] and mt.is_grad_enabled()


def test_the_third_hostile_pass(monkeypatch, capsys):
    from collections import OrderedDict

    from minitl.commands import cli
    named = nn.Sequential(OrderedDict(first=nn.Linear(2, 2)))  # was an empty Sequential passing its input through
    assert list(named.state_dict()) == ["first.weight", "first.bias"]
    with pytest.raises(TypeError, match="Sequential: '1' is a function, not a Module"):
        nn.Sequential(nn.Linear(2, 2), lambda x: x * 0)  # was skipped: the keys jumped from 0 to 2

    async def coroutine():
        return mt.is_grad_enabled()

    with pytest.raises(TypeError, match="no_grad cannot decorate the async function"):
        mt.no_grad(coroutine)

    def interrupted(argv=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "main", interrupted)
    with pytest.raises(SystemExit) as stopped:
        cli.console()
    assert stopped.value.code == 130 and capsys.readouterr().err == "interrupted\n"


def test_a_named_layer_error_still_shows_the_line_that_raised_it():
    import traceback

    class Net(nn.Module):
        def forward(self, x):
            return x.reshape(5, 5)  # the line a learner must see

    try:
        Net()(mt.tensor(np.ones(4, dtype=np.float32)))
    except ValueError as e:
        frames = traceback.extract_tb(e.__traceback__)
        assert str(e).startswith("Net(): reshape: cannot reshape") and any("x.reshape(5, 5)" in (f.line or "")
                                                                          for f in frames)
    else:
        pytest.fail("no error")


def test_run_method_passes_a_recipes_options_on():

    d = data.glyphs(source_per_class=4, source_test_per_class=2, target_pool_per_class=4, target_test_per_class=2)
    source = transfer.model_for(d)
    budget = transfer.Budget(steps=2)
    result = transfer.run_method("fine_tune+l2sp", source, d, d.target_pool, None, budget, lam=0.5)
    assert result.method == "fine_tune+l2sp"
    seen = []
    transfer.run_method("linear_probe", source, d, d.target_pool, None, budget, callback=lambda s, m: seen.append(s))
    assert seen == [2], "the probe called back at its last step"
