"""Every lesson runs in quick mode, exits 0, prints its table, draws its pictures (when matplotlib is
there), opens as a notebook (percent-format cells, no empty markdown cell), and ends with exercises."""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
from conftest import REQUESTED_DEVICE

HERE = pathlib.Path(__file__).parent.parent / "lessons"
LESSONS = sorted(HERE.glob("[0-9][0-9]_*.py"))
PICTURES = {  # what each lesson draws (under lessons/out/quick/<lesson>/ in quick mode)
    "04_train_the_source_model": {"data.png", "loss_curve.png", "first_layer_filters.png"},
    "05_fine_tune_the_last_layer": {"learning_curves.png"},
    "06_feature_extraction_and_proxy_collection": {"features_vs_pixels.png"},
    "07_regularized_fine_tuning": {"learning_curves.png"},
    "08_which_layer_transfers": {"accuracy_by_layer.png"},
    "09_frozen_statistics": {"running_means.png"},
}


def cells(path):
    """(kind, text) of every percent-format cell: kind "code" or "markdown"."""
    out, kind, lines = [], "code", []
    for line in path.read_text().splitlines():
        marker = re.match(r"# %%( \[markdown\])?", line)
        if marker:
            out.append((kind, "\n".join(lines)))
            kind, lines = ("markdown" if marker.group(1) else "code"), []
        else:
            lines.append(line)
    out.append((kind, "\n".join(lines)))
    return out


def test_the_lessons_are_the_course():
    names = [p.stem for p in LESSONS]
    assert names[:3] == ["01_tensors_and_autograd", "02_gradient_checking", "03_convolution_as_matrix_product"]
    assert {"09_frozen_statistics", "10_the_gpu_path_without_a_gpu", "11_timing_cpu_and_gpu"} <= set(names)
    assert len(LESSONS) == 11


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_a_lesson_is_a_notebook_of_cells_and_ends_with_exercises(lesson):
    parts = cells(lesson)
    markdown = [text for kind, text in parts if kind == "markdown"]
    assert parts[0][1].lstrip().startswith('"""Lesson'), "a lesson opens with its docstring"
    assert len(parts) >= 6 and len(markdown) >= 3, "a lesson is split into cells, prose in markdown cells"
    for text in markdown:
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines and all(line.startswith("#") for line in lines), "a markdown cell is prose, not empty, not code"
    assert "## Try this" in markdown[-1] and len(re.findall(r"^# \d\. ", markdown[-1], re.M)) >= 3


def test_the_lessons_open_as_notebooks_in_jupytext():
    """jupytext reads every lesson as the same cells, of the same kinds, as the checks above."""
    jupytext = pytest.importorskip("jupytext")
    for lesson in LESSONS:
        notebook = jupytext.read(lesson)
        assert [cell.cell_type for cell in notebook.cells] == [kind for kind, _ in cells(lesson)], lesson.name


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_lesson_runs_in_quick_mode(lesson, shared_cache):
    env = dict(os.environ, MINITL_CACHE=shared_cache, MPLBACKEND="Agg")
    device = REQUESTED_DEVICE or "cpu"  # MINITL_DEVICE=cuda runs the lessons on the GPU
    done = subprocess.run([sys.executable, str(lesson), "--quick", "--device", device], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.rstrip().splitlines()
    assert any(set(line.replace(" ", "")) == {"-"} for line in lines), "the lesson printed no table"
    drawn = {pathlib.Path(line.split("picture: ", 1)[1]).name for line in lines if line.startswith("picture: ")}
    skipped = any("picture skipped" in line for line in lines)
    expected = PICTURES.get(lesson.stem, set())
    assert drawn == expected or (skipped and not drawn), (drawn, expected)
    for line in lines:
        if line.startswith("picture: "):
            path = pathlib.Path(line.split("picture: ", 1)[1])
            assert path.exists() and path.parent.parent.name == "quick", "quick runs draw into out/quick/"


def test_a_lesson_without_a_usable_gpu_stops_with_one_line():
    from conftest import CUDA_OK
    if CUDA_OK:
        pytest.skip("this machine has a GPU (or the stand-in)")
    done = subprocess.run([sys.executable, str(LESSONS[0]), "--quick", "--device", "cuda"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "cuda" in done.stderr
    assert "Traceback" not in done.stderr


def test_lesson_4_saves_the_weights_transfer_source_model_would_train(tmp_path):
    """Lesson 4's loop and training.fit run with the same BLAS threads, so they add in the same
    order: the file both write under one name holds the same weights, whichever wrote it last."""
    lesson = next(p for p in LESSONS if p.stem.startswith("04_"))
    script = f"""
import json, runpy, sys
import numpy as np
from threadpoolctl import threadpool_info
import minitl as mt, minitl.functional as F
from minitl import data, transfer
seen, cross_entropy = set(), F.cross_entropy
def spy(*args, **kwargs):  # the BLAS threads at every training step
    seen.update(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
    return cross_entropy(*args, **kwargs)
F.cross_entropy = spy
sys.argv = ["lesson", "--quick"]
runpy.run_path({str(lesson)!r}, run_name="__main__")
in_lesson, seen = sorted(seen), set()
glyphs = data.glyphs(seed=0)
saved = mt.load(transfer.source_model_path(glyphs, 0, steps=100))
trained = transfer.train_source(glyphs, steps=100).state_dict()
same = all(np.array_equal(saved[k], np.asarray(v)) for k, v in trained.items())
print(json.dumps({{"lesson": in_lesson, "fit": sorted(seen), "same weights": same}}))
"""
    env = dict(os.environ, MINITL_CACHE=str(tmp_path), MPLBACKEND="Agg")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["lesson"] == found["fit"] and found["same weights"], found


def test_a_lesson_runs_as_a_notebook_and_shows_its_picture_inline(shared_cache, monkeypatch):
    """What a learner gets from Jupyter: the percent-format file as a notebook (jupytext), run by a
    kernel (nbclient), the figure shown inline and saved in the lesson's own folder."""
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    lesson = next(p for p in LESSONS if p.stem.startswith("06_"))
    # the kernel's environment: Jupyter Server names the notebook; MINITL_QUICK=1 stands in for --quick
    monkeypatch.setenv("JPY_SESSION_NAME", str(lesson))
    monkeypatch.setenv("MINITL_QUICK", "1")
    monkeypatch.setenv("MINITL_CACHE", shared_cache)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    notebook = jupytext.read(lesson)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(lesson.parent)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure was shown inline"
    printed = "".join(o.get("text", "") for o in outputs)
    assert f"out/quick/{lesson.stem}/features_vs_pixels.png" in printed, printed[-2000:]


# "Try this" edits and what their text says happens (issue 20, item 1): (lesson, old line, new line, outcome),
# the outcome None when the lesson runs to its end, else a phrase of the error it states it stops with.
EXERCISES = {
    "lesson 1, Try 3: EPS = 1e-2": ("01_", "EPS = 1e-6 ", "EPS = 1e-2 ", None),
    "lesson 1, Try 3: EPS = 1e-12": ("01_", "EPS = 1e-6 ", "EPS = 1e-12 ",
                                     "backward and the finite differences disagree"),
    "lesson 2, Try 1: the fixed backward": ("02_", "        return 2 * self.x\n", "        return gy * 2 * self.x\n",
                                            "a gradient check failed"),
    "lesson 2, Try 2: 0.5% off": ("02_", "        return 2 * self.x\n", "        return gy * 2.01 * self.x\n", None),
    "lesson 2, Try 2: 0.05% off": ("02_", "        return 2 * self.x\n", "        return gy * 2.001 * self.x\n",
                                   "a gradient check failed"),
    "lesson 7, Try 3: KS = (20,)": ("07_", "KS = (2, 5)", "KS = (20,)", None),
    "lesson 8, Try 2: the noisier glyphs": ("08_", 'DATASETS = ("glyphs", "digits")',
                                            'DATASETS = ("glyphs", "glyphs-hard")', None),
    "lesson 9, Try 2: eval() after train()": ("09_", "    model.train()\n", "    model.train()\n    model.eval()\n",
                                              "AssertionError"),
}


@pytest.mark.parametrize("exercise", EXERCISES, ids=list(EXERCISES))
def test_an_exercise_ends_as_its_text_says_in_quick_mode(exercise, tmp_path, shared_cache):
    prefix, old, new, outcome = EXERCISES[exercise]
    lesson = next(p for p in LESSONS if p.stem.startswith(prefix))
    text = lesson.read_text()
    assert old in text, "the exercise no longer matches the lesson"
    edited = tmp_path / lesson.name
    edited.write_text(text.replace(old, new, 1))
    env = dict(os.environ, MINITL_CACHE=shared_cache, MPLBACKEND="Agg")
    done = subprocess.run([sys.executable, str(edited), "--quick"], capture_output=True, text=True, env=env,
                          timeout=300)
    if outcome is None:
        assert done.returncode == 0, done.stderr[-3000:]
    else:
        assert done.returncode != 0 and outcome in done.stderr, done.stderr[-3000:]


def test_lesson_8_without_scikit_learn_says_so_in_one_line(tmp_path, shared_cache):
    (tmp_path / "sklearn").mkdir()
    (tmp_path / "sklearn" / "__init__.py").write_text("raise ImportError('no scikit-learn here')\n")
    lesson = next(p for p in LESSONS if p.stem.startswith("08_"))
    env = dict(os.environ, MINITL_CACHE=shared_cache, MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(lesson), "--quick"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "(the digits are skipped: scikit-learn is not installed" in done.stdout
