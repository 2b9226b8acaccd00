import os

import pytest
from hypothesis import HealthCheck, settings

from minitl import backend

# CI: derandomised and untimed (the machine is shared and noisy); locally: a few more examples.
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=20,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", deadline=None, max_examples=500, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

CUDA_OK, CUDA_WHY = backend.cuda_status()
DEVICES = [pytest.param("cpu", id="cpu"),
           pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not CUDA_OK, reason=CUDA_WHY))]


@pytest.fixture(params=DEVICES, scope="session")
def device(request):
    """Each test that takes `device` runs once per backend; CUDA cases skip without CuPy or a GPU."""
    return request.param



# Tests name their devices explicitly (the `device` fixture runs each device-aware test on every
# backend, cuda included when it is there), and compare against NumPy on the host; so the default
# device inside tests is the CPU whatever MINITL_DEVICE says. Lessons and the main command honour it.
REQUESTED_DEVICE = os.environ.get("MINITL_DEVICE")
os.environ["MINITL_DEVICE"] = "cpu"
