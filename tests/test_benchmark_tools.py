"""The speed tools a developer runs before committing: their options and what they refuse.
(Their numbers are never asserted: timings are not tests.)"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def in_git_checkout():
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True).returncode == 0


@pytest.mark.parametrize("args, message", [
    (["no-such-commit"], "is not a commit of this repository"),
    (["HEAD", "--rounds", "0"], "--rounds must be >= 1"),
    (["HEAD", "--repeat", "-3"], "--repeat must be >= 1"),
    (["HEAD", "--threshold", "nan"], "--threshold must be a number >= 0"),
    (["HEAD", "--steps", "lenet-sgd-7"], "invalid choice"),
    (["HEAD", "--out", __file__], "--out must be a folder"),
])
def test_against_refuses_bad_options(args, message):
    if not in_git_checkout():
        pytest.skip("not a git checkout")
    done = run("benchmarks.against", *args)
    assert done.returncode != 0 and message in done.stdout + done.stderr


@pytest.mark.slow
def test_against_times_a_commit_and_the_working_tree(tmp_path):
    if not in_git_checkout():
        pytest.skip("not a git checkout")
    done = run("benchmarks.against", "HEAD", "--rounds", "1", "--repeat", "2", "--steps", "mlp-sgd-128",
               "--out", str(tmp_path))
    assert done.returncode in (0, 1), done.stderr  # 1: flagged slower, which noise can do with one round
    assert "mlp-sgd-128" in done.stdout and "new / old" in done.stdout
    (results,) = tmp_path.iterdir()
    saved = json.loads(results.read_text())
    assert saved["results"]["steps"]["mlp-sgd-128"]["new_over_old"] > 0
    assert "blas_kernel" in saved["machine"] and "OPENBLAS_CORETYPE" in saved["machine"]


def test_the_steps_worker_imports_minitl_from_the_tree_it_is_given(tmp_path):
    """`against` relies on it: PYTHONPATH names the tree, and the worker says which minitl it ran."""
    from benchmarks.common import run_steps
    result = run_steps("minitl", ROOT, ["mlp-sgd-128"], repeat=1)
    assert result["file"].startswith(os.path.join(ROOT, "minitl"))
    with pytest.raises(RuntimeError, match="failed in|not from"):
        run_steps("minitl", str(tmp_path), ["mlp-sgd-128"], repeat=1)  # no minitl there
    if not in_git_checkout():
        return
    # An older tree without one of today's modules: it must not be taken from the installed tree.
    subprocess.run(f"git archive HEAD minitl | tar -x -C {tmp_path}", shell=True, cwd=ROOT, check=True)
    os.remove(tmp_path / "minitl" / "optim.py")
    with pytest.raises(RuntimeError, match="failed in|not from"):
        run_steps("minitl", str(tmp_path), ["mlp-sgd-128"], repeat=1)
