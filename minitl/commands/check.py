"""`python -m minitl check`: the install doctor.

Prints versions, the BLAS, the devices found, then gradient-checks every op in
the op-spec table on every available device, one line per op.
"""

import platform
import sys

from minitl import backend
from minitl.gradcheck import GradcheckError, gradcheck
from minitl.opspecs import OP_SPECS, make_inputs


def available_devices():
    return ["cpu", "cuda"] if backend.cuda_status()[0] else ["cpu"]


def run_check(out=sys.stdout, devices=None):
    """Print the report for `devices` (default: every one found); return the number of failed checks."""
    import minitl
    ok, gpu = backend.cuda_status()
    versions = backend.versions()
    print(f"minitl {minitl.__version__}, Python {platform.python_version()}, NumPy {versions['numpy']}, "
          f"CuPy {versions.get('cupy', 'not installed')}", file=out)
    print(f"BLAS: {backend.blas_name()}", file=out)
    print("devices: cpu" + (f", cuda ({gpu})" if ok else f" (no cuda: {gpu})"), file=out)
    failures = 0
    for device in devices or available_devices():
        print(f"\ngradcheck on {device}:", file=out)
        for spec in OP_SPECS:
            inputs = make_inputs(spec, backend.host_rng(0), device=device)
            try:
                gradcheck(lambda *xs: spec.fn(*xs, **spec.params), inputs)
                line = "ok"
            except GradcheckError as e:
                failures += 1
                line = f"FAILED: {e}"
            except Exception as e:  # the doctor reports every failure, it never crashes on one
                failures += 1
                line = f"FAILED ({type(e).__name__}): {e}"
            print(f"  {spec.name:<24} {line}", file=out)
    print(f"\n{'all ops passed' if not failures else f'{failures} check(s) failed'}", file=out)
    return failures
