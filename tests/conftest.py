import os
import pathlib
import sys

import pytest
from hypothesis import HealthCheck, settings

# MINITL_CUPY_STANDIN=1: the CuPy stand-in (tests/cupy_standin) answers `import cupy`, so every "cuda"
# case runs on a machine without a GPU. It must come first on the path before minitl.backend is imported;
# PYTHONPATH carries it to the subprocesses the tests start (lessons, the CLI).
STANDIN = os.environ.get("MINITL_CUPY_STANDIN") == "1"
STANDIN_FOLDER = str(pathlib.Path(__file__).parent / "cupy_standin")
if STANDIN:
    if "minitl.backend" in sys.modules:
        raise RuntimeError("MINITL_CUPY_STANDIN=1 came too late: minitl.backend was imported before conftest.py")
    sys.path.insert(0, STANDIN_FOLDER)
# The subprocesses the tests start (lessons, the CLI) import the minitl of this checkout, installed
# or not, and under the stand-in its cupy too.
ROOT = str(pathlib.Path(__file__).parent.parent)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (STANDIN_FOLDER if STANDIN else None, ROOT,
                                                        os.environ.get("PYTHONPATH")) if p)

from minitl import backend  # noqa: E402  (after the stand-in is on the path)

# CI: derandomised and untimed (the machine is shared and noisy); locally: a few more examples.
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=20,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", deadline=None, max_examples=500, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

CUDA_OK, CUDA_WHY = backend.cuda_status()
ON_CUDA = pytest.mark.skipif(not CUDA_OK, reason=CUDA_WHY)
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=ON_CUDA)]


@pytest.fixture(params=DEVICES, scope="session")
def device(request):
    """Each test that takes `device` runs once per backend; CUDA cases skip without CuPy or a GPU."""
    return request.param



# Tests name their devices explicitly (the `device` fixture runs each device-aware test on every
# backend, cuda included when it is there), and compare against NumPy on the host; so the default
# device inside tests is the CPU whatever MINITL_DEVICE says. Lessons and the main command honour it.
REQUESTED_DEVICE = os.environ.get("MINITL_DEVICE")
os.environ["MINITL_DEVICE"] = "cpu"


def host(a):
    """A NumPy array of a tensor's data or of a raw array, wherever it lives (tests compare on the host)."""
    return backend.to_host(a.data if hasattr(a, "data") and not backend.is_array(a) else a)


def quiet(*args):
    """A log function that says nothing."""


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    """One cache folder for the whole session, as a learner has: each source model is trained once
    (the lessons, the main command and the tests that run it share it)."""
    return str(tmp_path_factory.mktemp("shared-cache"))


@pytest.fixture(scope="session")
def small_source(shared_cache):
    """(data, its trained source model, the cache folder): a small glyph task the transfer and layer
    tests share, trained once per session."""
    from minitl import data, transfer
    d = data.glyphs(seed=0, source_per_class=200, source_test_per_class=40, target_pool_per_class=30,
                    target_test_per_class=40)
    return d, transfer.source_model(d, folder=shared_cache, log=quiet), shared_cache
