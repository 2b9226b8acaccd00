"""Every lesson runs in quick mode, exits 0 and ends with its table."""

import os
import pathlib
import subprocess
import sys

import pytest
from conftest import REQUESTED_DEVICE

LESSONS = sorted((pathlib.Path(__file__).parent.parent / "lessons").glob("[0-9][0-9]_*.py"))


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache folder for all lessons, as a learner has: the source model is trained once."""
    return str(tmp_path_factory.mktemp("lesson-cache"))


def test_there_are_nine_lessons():
    assert len(LESSONS) == 9


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_lesson_runs_in_quick_mode(lesson, shared_cache):
    env = dict(os.environ, MINITL_CACHE=shared_cache, MPLBACKEND="Agg")
    device = REQUESTED_DEVICE or "cpu"  # MINITL_DEVICE=cuda runs the lessons on the GPU
    done = subprocess.run([sys.executable, str(lesson), "--quick", "--device", device], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.rstrip().splitlines()
    assert any(set(line.replace(" ", "")) == {"-"} for line in lines), "the lesson printed no table"
