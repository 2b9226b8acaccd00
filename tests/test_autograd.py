"""The autograd rules of DESIGN.md: graph recording, no_grad, order, accumulation, dtypes, errors."""

import pathlib
import re

import numpy as np
import pytest

import minitl as mt
import minitl.functional as F
from minitl import backend


def leaf(shape, device="cpu", requires_grad=True, seed=0):
    return mt.tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=requires_grad, device=device)


# ---------------------------------------------------------------- what is recorded

def test_frozen_inputs_get_no_gradient_and_record_no_graph(device):
    x = leaf((4, 3), device, requires_grad=False)
    w = leaf((3, 2), device, requires_grad=False, seed=1)
    y = F.relu(x @ w).sum()
    assert not y.requires_grad and y._creator is None  # nothing recorded: activations are freed at once
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_graph_is_recorded_only_through_inputs_that_need_it(device):
    frozen = leaf((4, 3), device, requires_grad=False)
    h = F.relu(frozen * 2.0)  # all-frozen subgraph
    assert h._creator is None
    w = leaf((3, 2), device, seed=1)
    out = (h @ w).sum()
    assert out._creator.inputs[0]._creator.inputs[0] is h  # the graph stops at the frozen part
    out.backward()
    assert frozen.grad is None and w.grad is not None


def test_no_grad_records_nothing_and_restores_the_mode():
    x = leaf((2, 2))
    with mt.no_grad():
        assert not mt.is_grad_enabled()
        y = (x * x).sum()
    assert mt.is_grad_enabled()
    assert not y.requires_grad and y._creator is None


def test_one_no_grad_object_is_reusable_and_decorates_with_or_without_parentheses():
    ng = mt.no_grad()
    for _ in range(2):  # the second `with` failed: a generator-based context manager runs once
        with ng:
            with ng:
                assert not mt.is_grad_enabled()
            assert not mt.is_grad_enabled()
        assert mt.is_grad_enabled()

    @mt.no_grad
    def bare():
        return mt.is_grad_enabled()

    @mt.no_grad()
    def called():
        return mt.is_grad_enabled()

    assert bare() is False and called() is False and mt.is_grad_enabled() and bare.__name__ == "bare"


def test_no_grad_restores_the_mode_after_an_exception():
    with pytest.raises(ZeroDivisionError), mt.no_grad():
        raise ZeroDivisionError
    assert mt.is_grad_enabled()


def test_no_grad_in_one_thread_leaves_another_threads_training_alone():
    import threading
    inside, done = threading.Event(), threading.Event()

    def evaluate():  # a thread scoring a model under no_grad while the main thread trains
        with mt.no_grad():
            inside.set()
            done.wait(10)

    evaluator = threading.Thread(target=evaluate)
    evaluator.start()
    try:
        inside.wait(10)
        x = leaf((2, 2))
        y = (x * x).sum()  # the mode was global: no graph, and a frozen-looking model
        assert mt.is_grad_enabled() and y.requires_grad
        y.backward()
        np.testing.assert_allclose(x.grad, 2 * x.data)
    finally:
        done.set()
        evaluator.join()


def test_a_20000_op_chain_backpropagates_without_recursion_error():
    x = mt.tensor(1.0, requires_grad=True, dtype=mt.float64)
    y = x
    for _ in range(20_000):
        y = y * 1.0001
    y.backward()
    assert np.isclose(x.grad, 1.0001 ** 20_000)


def test_gradients_accumulate_through_a_reused_input_and_across_calls():
    x = mt.tensor([1.0, 2.0, 3.0], requires_grad=True, dtype=mt.float64)
    (x * x + x).sum().backward()  # d/dx = 2x + 1
    np.testing.assert_allclose(x.grad, [3.0, 5.0, 7.0])
    (x * 2.0).sum().backward()  # adds 2 to every element
    np.testing.assert_allclose(x.grad, [5.0, 7.0, 9.0])


def test_backward_is_deterministic():
    def run():
        x = leaf((5, 4))
        w = leaf((4, 3), seed=1)
        h = F.relu(x @ w)
        (F.softmax(h) * h + h.max(axis=1, keepdims=True)).sum().backward()
        return x.grad.copy(), w.grad.copy()
    a, b = run(), run()
    for u, v in zip(a, b):
        assert np.array_equal(u, v)


def test_backward_never_mutates_the_gradient_it_receives():
    x = leaf((3,))
    y = x + x  # add passes gy straight through to both inputs
    g = np.array([1.0, 2.0, 3.0])
    kept = g.copy()
    y.backward(g)
    x.grad += 100  # a leaf's .grad is its own copy
    np.testing.assert_array_equal(g, kept)


def test_intermediate_gradients_are_kept_only_when_asked():
    x = leaf((3,))
    h = x * 2.0
    k = x * 3.0
    k.retain_grad()
    (h + k).sum().backward()
    assert h.grad is None
    np.testing.assert_array_equal(k.grad, np.ones(3))


def test_broadcasting_is_undone():
    a = leaf((2, 3))
    b = leaf((3,), seed=1)
    c = leaf((2, 1), seed=2)
    (a * b + c).sum().backward()
    assert b.grad.shape == (3,) and c.grad.shape == (2, 1)
    np.testing.assert_allclose(b.grad, a.data.sum(axis=0))
    np.testing.assert_allclose(c.grad, np.full((2, 1), 3.0))


def test_max_sends_the_gradient_to_the_first_maximum():
    x = mt.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]], requires_grad=True)
    x.max(axis=1).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 1, 0], [1, 0, 0]])
    x.grad = None
    x.max().backward()
    np.testing.assert_array_equal(x.grad, [[0, 1, 0], [0, 0, 0]])


def test_backward_on_a_non_scalar_needs_a_gradient():
    y = leaf((2, 3)) * 2.0
    with pytest.raises(RuntimeError, match=r"shape \(2, 3\)"):
        y.backward()
    with pytest.raises(ValueError, match=r"grad has shape \(3,\), expected \(2, 3\)"):
        y.backward(np.ones(3))


def test_detach_stops_gradients():
    x = leaf((3,))
    (x.detach() * x).sum().backward()
    np.testing.assert_allclose(x.grad, x.data)


# ---------------------------------------------------------------- dtypes

def test_python_numbers_and_lists_become_float32():
    assert mt.tensor(1).dtype == mt.float32
    assert mt.tensor([1, 2]).dtype == mt.float32
    assert mt.tensor([[1.5]]).dtype == mt.float32


def test_arrays_keep_their_dtype_and_integers_never_require_grad():
    assert mt.tensor(np.zeros(2)).dtype == mt.float64
    labels = mt.tensor(np.array([0, 2]))
    assert labels.dtype == np.int64
    with pytest.raises(TypeError, match="floating-point"):
        mt.tensor(np.array([0, 2]), requires_grad=True)


def test_python_scalars_take_the_tensor_dtype():
    for dtype in (mt.float32, mt.float64):
        x = mt.tensor([1.0, 2.0], dtype=dtype)
        for y in (x * 2, 2.5 - x, x / 3, x ** 2, -x, x + 1, (x * 0.5).sum(), x * np.float64(2), np.float32(3) + x):
            assert y.dtype == dtype


def test_two_float_dtypes_in_one_op_is_an_error_not_a_promotion():
    a = mt.tensor([1.0], dtype=mt.float32)
    b = mt.tensor([1.0], dtype=mt.float64)
    with pytest.raises(TypeError, match="float32 and float64"):
        a + b
    with pytest.raises(TypeError, match="float32 and float64"):
        a * np.ones(1)  # a float64 NumPy array is a float64 operand too


def test_tensor_copies_and_tensor_class_shares():
    a = np.zeros(3, dtype=np.float32)
    t = mt.tensor(a)
    a[0] = 1
    assert t.data[0] == 0


def test_a_seed_gives_the_same_weights():
    mt.manual_seed(3)
    a = mt.nn.Linear(4, 2).weight.numpy()
    mt.manual_seed(3)
    b = mt.nn.Linear(4, 2).weight.numpy()
    assert np.array_equal(a, b)


# ---------------------------------------------------------------- bad input

def test_matmul_shape_mismatch_names_the_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4, 5\)"):
        mt.tensor(np.ones((2, 3))) @ mt.tensor(np.ones((4, 5)))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        mt.tensor(np.ones(3)) @ mt.tensor(np.ones((3, 1)))


def test_broadcast_mismatch_names_the_shapes():
    with pytest.raises(ValueError, match=r"shapes \(2, 3\) and \(4,\) cannot be broadcast"):
        mt.tensor(np.ones((2, 3))) + mt.tensor(np.ones(4))


def test_bad_reshape_names_the_shapes():
    with pytest.raises(ValueError, match=r"shape \(2, 3\) \(6 elements\) into \(4, -1\)"):
        mt.tensor(np.ones((2, 3))).reshape(4, -1)
    assert mt.tensor(np.ones((2, 3))).reshape(-1).shape == (6,)
    assert mt.tensor(np.ones((2, 3))).reshape((3, 2)).shape == (3, 2)


def test_unknown_device_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        mt.tensor([1.0], device="tpu")


def test_cuda_without_cupy_or_gpu_is_a_clear_error_never_a_fallback():
    ok, why = backend.cuda_status()
    if ok:
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="device 'cuda' was asked for, but"):
        mt.tensor([1.0], device="cuda")


def test_cupy_older_than_14_is_refused_naming_the_version(monkeypatch):
    from types import SimpleNamespace
    monkeypatch.setattr(backend, "cupy", SimpleNamespace(__version__="13.6.0"))  # fuse computes in float64 there
    backend.cuda_status.cache_clear()  # (its answer is kept per process)
    try:
        ok, why = backend.cuda_status()
        assert not ok and "CuPy 13.6.0 is installed; minitl needs CuPy 14 or later" in why
        with pytest.raises(RuntimeError, match="device 'cuda' was asked for, but CuPy 13.6.0 is installed"):
            backend.check_device("cuda")
    finally:
        monkeypatch.undo()
        backend.cuda_status.cache_clear()


def test_the_default_device_comes_from_MINITL_DEVICE(monkeypatch):
    monkeypatch.setenv("MINITL_DEVICE", "cpu")
    assert mt.tensor([1.0]).device == "cpu" and mt.nn.Linear(2, 2).weight.device == "cpu"
    monkeypatch.setenv("MINITL_DEVICE", "tpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        mt.tensor([1.0])
    monkeypatch.setenv("MINITL_DEVICE", "cuda")
    if backend.cuda_status()[0]:
        assert mt.tensor([1.0]).device == "cuda" and mt.nn.Linear(2, 2).weight.device == "cuda"
    else:
        with pytest.raises(RuntimeError, match="device 'cuda' was asked for"):
            mt.tensor([1.0])


def test_transpose_and_T_follow_numpy():
    a = np.arange(24.0).reshape(2, 3, 4)
    t = mt.tensor(a)
    assert np.array_equal(t.T.numpy(), a.T)
    assert np.array_equal(t.transpose(1, 0, 2).numpy(), a.transpose(1, 0, 2))
    assert np.array_equal(t.transpose((2, 0, 1)).numpy(), a.transpose(2, 0, 1))
    with pytest.raises(ValueError, match="not a permutation"):
        t.transpose(0, 0, 1)


def test_reductions_follow_numpy():
    a = np.random.default_rng(0).standard_normal((3, 4, 5))
    t = mt.tensor(a)
    for axis in (None, 0, -1, (0, 2)):
        for keepdims in (False, True):
            for name in ("sum", "mean", "max"):
                np.testing.assert_allclose(getattr(t, name)(axis, keepdims).numpy(),
                                           getattr(a, name)(axis=axis, keepdims=keepdims))


# ---------------------------------------------------------------- the layering rule

def test_only_backend_imports_numpy_or_cupy():
    package = pathlib.Path(mt.__file__).parent
    pattern = re.compile(r"^\s*(import|from)\s+(numpy|cupy|cupyx)\b", re.MULTILINE)
    offenders = [str(p.relative_to(package)) for p in package.rglob("*.py")
                 if p.name != "backend.py" and pattern.search(p.read_text())]
    assert offenders == []


def test_tensors_on_two_devices_in_one_op_is_a_clear_error(device):
    if device == "cpu":
        pytest.skip("needs a second device")
    a = mt.tensor([1.0, 2.0], device="cpu")
    b = mt.tensor([1.0, 2.0], device=device)
    with pytest.raises(ValueError, match="different devices \\(cpu and cuda\\)"):
        a + b
    with pytest.raises(ValueError, match="different devices"):
        F.linear(mt.tensor(np.ones((2, 3), dtype=np.float32)), mt.nn.Linear(3, 2, device=device).weight)


@pytest.mark.parametrize("x_shape, view", [((2, 3), lambda w: w.T), ((2, 4), lambda w: w.reshape(3, 4).reshape(4, 3)),
                                           ((2, 4), lambda w: w[:, :]), ((2, 3), lambda w: w.transpose(1, 0).T.T),
                                           ((2, 3), lambda w: mt.functional.flatten(w.T))],
                         ids=["T", "reshape", "slice", "transposes", "flatten"])
def test_a_view_shares_its_base_version_so_a_step_in_between_is_refused(x_shape, view):
    """y = x @ view(w); an optimizer step on w; y.sum().backward() would compute x's gradient from
    the new w (off by up to the step). Views share their base's version, as in PyTorch."""
    x = mt.tensor(np.ones(x_shape), requires_grad=True)
    w = mt.nn.Parameter(mt.tensor(np.arange(12.0).reshape(4, 3)))
    y = x @ view(w)
    w.grad = np.ones_like(w.data)
    mt.optim.SGD([w], lr=1.0).step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_a_copy_made_by_indexing_does_not_share_the_version():
    """Fancy indexing copies: a step on w afterwards does not touch what the product saved."""
    x = mt.tensor(np.ones((2, 4)), requires_grad=True)
    w = mt.nn.Parameter(mt.tensor(np.arange(12.0).reshape(4, 3)))
    picked = w[[0, 1, 2, 3]]
    y = x @ picked
    w.grad = np.ones_like(w.data)
    mt.optim.SGD([w], lr=1.0).step()
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, np.tile(np.arange(12.0).reshape(4, 3).sum(axis=1), (2, 1)))


def test_factories_follow_pytorch():
    assert mt.zeros(2, 3).shape == (2, 3) and mt.zeros((2, 3)).dtype == mt.float32
    assert mt.ones(2, dtype=mt.int64).data.tolist() == [1, 1] and mt.empty(0, 4).shape == (0, 4)
    assert mt.zeros(()).shape == () and mt.ones(3, requires_grad=True).requires_grad
    for bad in [(-1,), (2.0,), ("2",), (True,), ((2, -3),)]:
        with pytest.raises(ValueError, match="the size must be integers >= 0"):
            mt.zeros(*bad)
    with pytest.raises(TypeError, match="only floating-point tensors can require gradients"):
        mt.ones(2, dtype=mt.int64, requires_grad=True)


def test_in_place_updates_move_the_version_and_refuse_a_trained_leaf():
    w = mt.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="add_: this tensor requires grad"):
        w.add_(1)
    assert w.data.tolist() == [1, 1, 1], "refused before anything changed"
    x = mt.ones(3, requires_grad=True)
    stats = mt.zeros(3)
    y = (x * stats).sum()  # Mul saved stats
    stats.mul_(2).add_(mt.ones(3), alpha=0.5)
    assert stats.data.tolist() == [0.5] * 3 and stats._version == 2
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def test_batch_norm_moves_its_statistics_through_the_in_place_helper():
    """The running statistics and the batch count move with add_/mul_, so their versions move too."""
    bn = mt.nn.BatchNorm1d(2)
    versions = [t._version for t in (bn.running_mean, bn.running_var, bn.num_batches_tracked)]
    bn(mt.tensor(np.array([[1.0, 2.0], [3.0, 6.0]], dtype=np.float32)))
    assert [t._version for t in (bn.running_mean, bn.running_var, bn.num_batches_tracked)] == \
        [v + 2 for v in versions[:2]] + [versions[2] + 1]
    np.testing.assert_allclose(bn.running_mean.data, [0.2, 0.4])
    np.testing.assert_allclose(bn.running_var.data, [0.9 + 0.1 * 2.0, 0.9 + 0.1 * 8.0], rtol=1e-6)
    assert int(bn.num_batches_tracked.data) == 1


def test_a_float16_mean_over_more_elements_than_float16_can_count():
    """The count 70000 does not fit in float16 (it rounds to inf): the mean divides in float32 and
    rounds back, as PyTorch does, instead of returning a silent 0 (and a gradient of 0)."""
    x = mt.tensor(np.full(70000, 0.01, dtype=np.float16), requires_grad=True)
    m = x.mean()
    m.backward()
    assert m.dtype == np.float16 and abs(float(m) - 0.01) < 1e-4
    assert x.grad.dtype == np.float16 and abs(float(x.grad[0]) - 1 / 70000) < 1e-6


def test_in_place_changes_that_autograd_cannot_follow_are_refused_or_caught():
    """minitl records no in-place op: add_/mul_ on a tensor that requires grad is refused in grad mode,
    and a change made where a graph saved the values (through detach, or an op's saved output) is
    caught at backward, as PyTorch does, instead of a silently wrong gradient."""
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="mul_: this tensor requires grad"):
        (x * 2).mul_(3)  # a non-leaf: its gradient would ignore the 3
    with pytest.raises(RuntimeError, match="add_: this tensor requires grad"):
        x[0:1].add_(10)  # a view of a trained leaf
    y = x.exp()
    with mt.no_grad():
        y.mul_(2)  # Exp's backward reads its output
    with pytest.raises(RuntimeError, match="the output of Exp, which its backward reads, is at version 1"):
        y.sum().backward()
    w = mt.tensor([1.0, 2.0], requires_grad=True)
    loss = (w * w).sum()
    w.detach().mul_(2)  # detach shares the version, as in PyTorch
    with pytest.raises(RuntimeError, match="input 0 of Mul"):
        loss.backward()


def test_in_place_operands_follow_the_rules_of_every_op():
    z = mt.zeros(3)
    with pytest.raises(OverflowError, match="does not fit in float32"):
        z.add_(1e300)
    with pytest.raises(TypeError, match="different float dtypes"):
        z.add_(mt.tensor(np.ones(3)))
    with pytest.raises(OverflowError, match="does not fit in float32"):
        mt.ones(2).mul_(1e300)
    assert z.data.tolist() == [0, 0, 0], "refused before anything changed"
    assert mt.ones(2).add_(mt.ones(2), alpha=0.5).data.tolist() == [1.5, 1.5]


def test_in_place_refusals_name_the_problem_before_anything_changes():
    z = mt.zeros(2)
    with pytest.raises(ValueError, match=r"add_: shapes \(2,\) and \(3,\) cannot be broadcast together"):
        z.add_(mt.ones(3))
    with pytest.raises(ValueError, match=r"shape \(2, 2\) does not fit in place"):
        z.add_(mt.ones(2, 2))
    with pytest.raises(TypeError, match="mul_: a float32 operand would make this int64 tensor float"):
        mt.ones(2, dtype=mt.int64).mul_(0.5)
    assert z.data.tolist() == [0, 0]
    assert mt.ones(2, 3).add_(mt.ones(3)).data.tolist() == [[2, 2, 2]] * 2  # a broadcast that fits


def test_a_float16_mean_whose_sum_passes_float16s_range():
    """100000 ones sum to more than float16's largest (65504), but their mean is 1: summed in float32."""
    x = mt.ones(100000, dtype="float16", requires_grad=True)
    m = x.mean()
    m.backward()
    assert m.dtype == np.float16 and float(m) == 1.0 and abs(float(x.grad[0]) - 1e-5) < 1e-7
