"""The CuPy stand-in behaves like CuPy where CuPy differs from NumPy (run with MINITL_CUPY_STANDIN=1)."""

import numpy as np
import pytest
from conftest import STANDIN

pytestmark = pytest.mark.skipif(not STANDIN, reason="the CuPy stand-in is not active (MINITL_CUPY_STANDIN=1)")

if STANDIN:
    import cupy
    import cupy_names
    import cupy_standin
    import cupyx
    from cupy_standin import counting, forbid_sync


def a(values):
    return cupy.asarray(np.asarray(values, dtype=np.float64))


def test_it_is_the_stand_in_and_says_so():
    assert cupy._IS_STANDIN and "stand-in" in cupy.__version__
    assert cupy.__version__.startswith(cupy_names.CUPY_VERSION)
    assert b"stand-in" in cupy.cuda.runtime.getDeviceProperties(0)["name"]


def test_only_names_cupy_has_are_exposed():
    for name in ["exp", "zeros", "concatenate", "float32", "newaxis", "maximum", "take_along_axis"]:
        getattr(cupy, name)
    assert not cupy_standin.ndarray_names_ok(), "the stand-in's array has attributes CuPy's has not"
    with pytest.raises(AttributeError, match="has no such name"):
        cupy.frobnicate  # noqa: B018
    with pytest.raises(AttributeError, match="does not imitate"):
        cupy.RawKernel  # noqa: B018  (CuPy has it; NumPy cannot imitate it)
    assert {n for n in vars(cupyx) if not n.startswith("_")} - {"contextlib"} <= cupy_names.CUPYX


def test_no_implicit_conversion_to_numpy():
    x = a([1.0, 2.0])
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(x)
    with pytest.raises(TypeError):
        np.exp(x)
    assert isinstance(x.get(), np.ndarray) and isinstance(cupy.asnumpy(x), np.ndarray)


def test_numpy_arrays_and_lists_are_refused_as_operands():
    x = a([1.0, 2.0])
    for bad in (lambda: x + np.ones(2), lambda: np.ones(2) * x, lambda: cupy.maximum(x, np.ones(2)),
                lambda: cupy.exp([1.0, 2.0])):
        with pytest.raises(TypeError, match="Unsupported type"):
            bad()
    assert (x + np.float32(1)).dtype == np.float64  # NumPy scalars are fine (and typed, as in NumPy 2)


def test_reductions_and_scalar_indexing_give_0d_arrays():
    x = a([[1.0, 2.0], [3.0, 4.0]])
    for r in (x.sum(), x.max(), x[0, 1], cupy.sum(x), x.argmax()):
        assert isinstance(r, cupy.ndarray) and r.ndim == 0


def test_out_of_range_integer_indices_wrap_around():
    x = a([10.0, 11.0, 12.0, 13.0])
    np.testing.assert_array_equal(x[[0, 7]].get(), [10.0, 13.0])
    np.testing.assert_array_equal(x[cupy.asarray(np.array([-5]))].get(), [13.0])
    x[[6]] = 0.0
    np.testing.assert_array_equal(x.get(), [10.0, 11.0, 0.0, 13.0])
    cupyx.scatter_add(x, cupy.asarray(np.array([4, 4])), 1.0)
    np.testing.assert_array_equal(x.get(), [12.0, 11.0, 0.0, 13.0])
    with pytest.raises(IndexError):
        x[7]  # a plain integer still raises, in CuPy as in NumPy


def test_host_syncs_are_counted_and_can_be_forbidden():
    x = a([1.0, 2.0, 3.0])
    with counting() as c:
        int(x[0]), float(x.sum()), bool(x[1] > 0), x.get(), cupy.asnumpy(x), x.tobytes()
        x[x > 1]  # a boolean mask: the result's size depends on the data
    assert c.syncs == 7
    with forbid_sync():
        y = (x * 2).sum()  # stays on the device: fine
        with pytest.raises(cupyx.DeviceSynchronized):
            float(y)
        with pytest.raises(cupyx.DeviceSynchronized):
            cupy.cuda.Device().synchronize()


def test_array_ops_are_counted_and_views_are_free():
    x = a(np.ones((4, 6)))
    with counting() as c:
        x.T, x.reshape(6, 4), x.transpose(1, 0), x[1:3], cupy.broadcast_to(x, (2, 4, 6))
    assert c.ops == 0
    with counting() as c:
        y = x * 2      # 1
        y += 1         # 2
        y.sum(axis=0)  # 3
        x.T.reshape(-1)  # 4: a reshape that must copy
        cupy.zeros((3,))  # 5
    assert c.ops == 5 and c.syncs == 0


def test_fuse_runs_as_one_op():
    @cupy.fuse
    def axpy(y, x, alpha):
        y += alpha * x * x - 1

    x, y = a([1.0, 2.0]), a([0.0, 0.0])
    with counting() as c:
        axpy(y, x, 2.0)
    assert c.ops == 1
    np.testing.assert_array_equal(y.get(), [1.0, 7.0])
