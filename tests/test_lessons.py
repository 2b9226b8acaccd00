"""Every lesson runs in quick mode, exits 0, prints its table, draws its pictures (when matplotlib is
there), opens as a notebook (percent-format cells, no empty markdown cell), and ends with exercises."""

import json
import os
import pathlib
import re
import subprocess
import sys
from dataclasses import dataclass

import pytest
from conftest import REQUESTED_DEVICE
from conftest import STANDIN as UNDER_STANDIN

HERE = pathlib.Path(__file__).parent.parent / "lessons"
LESSONS = sorted(HERE.glob("[0-9][0-9]_*.py"))
PICTURES = {  # what each lesson draws (under lessons/out/quick/<lesson>/ in quick mode)
    "04_train_the_source_model": {"data.png", "loss_curve.png", "first_layer_filters.png"},
    "05_fine_tune_the_last_layer": {"learning_curves.png"},
    "06_feature_extraction_and_proxy_collection": {"features_vs_pixels.png"},
    "07_regularized_fine_tuning": {"learning_curves.png"},
    "08_which_layer_transfers": {"accuracy_by_layer.png"},
    "09_frozen_statistics": {"running_means.png"},
    "12_transfer_on_real_photos": {"source_photos.png", "faces.png", "accuracy_by_layer.png"},
}
NEEDS = {"12_transfer_on_real_photos": "skimage"}  # a lesson that stops at once, in one line, without this module


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
    assert {"09_frozen_statistics", "10_the_gpu_path_without_a_gpu", "11_timing_cpu_and_gpu",
            "12_transfer_on_real_photos"} <= set(names)
    assert len(LESSONS) == 12


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


def once(lesson_number):
    """Under the CuPy stand-in without MINITL_DEVICE a lesson runs on the CPU, as in the CPU suite: the
    same run again, except in lessons 10 and 11, which look for CuPy and find the stand-in (on
    PYTHONPATH). Those run in both suites, the others once; .ci/run runs lessons 5 and 6 on "cuda"."""
    if UNDER_STANDIN and not REQUESTED_DEVICE and lesson_number not in ("10", "11"):
        pytest.skip("the same CPU run as the CPU suite's")


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_lesson_runs_in_quick_mode(lesson, shared_cache):
    once(lesson.name[:2])
    if lesson.stem in NEEDS:
        pytest.importorskip(NEEDS[lesson.stem])
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


# ---------------------------------------------------------------- the "Try this" exercises (issue 20, item 1)

@dataclass(frozen=True)
class Exercise:
    """A "Try this" exercise as a test checks it: its edits applied to a copy of its lesson (or, for an
    exercise that runs a command, that command), run in quick mode, and the outcome its text states
    there. Several exercises of one lesson whose edits combine are checked in one run, to save time."""
    lesson: str                  # the lesson's number, "01" to "12"
    edits: tuple = ()            # (old, new) pairs: each old text is in the lesson once, and is replaced
    fails_with: str = None       # None: the run ends with exit code 0; else a phrase of the error it stops with
    prints: tuple = ()           # regular expressions, each found in what the run prints (re.M)
    holds: object = None         # a check of the numbers the prints' named groups captured (as floats)
    commands: tuple = ()         # instead of the lesson: command lines, python's arguments ({out}: a scratch folder)
    env: tuple = ()              # (name, value) pairs added to the environment of the run
    needs: str = None            # a module the exercise needs (sklearn, skimage): skipped without it


ROOT = HERE.parent
STANDIN = ("PYTHONPATH", os.pathsep.join([str(ROOT / "tests" / "cupy_standin"), os.environ.get("PYTHONPATH", "")]))
AT_STEP_100 = r"^step +100 .*source test accuracy (?P<at_100>[\d.]+)"   # lesson 4's line at step 100 (0.805)
CACHED_HEAD = r"^the cached head, on this backbone +(?P<drifted>[\d.]+) +(?P<frozen>[\d.]+)"   # lesson 9's table
LEAKY_FIXED = ("        return gy * self.positive  # the mistake: the negative side should get SLOPE * gy, not 0\n",
               "        return gy * mt.backend.get_array_module(gy).where(self.positive, 1.0, SLOPE)\n")
SECTION_2_OF_11 = """times = clock(step, device, REPEAT + 1)
first, rest = times[0], times[1:]
print(f"batch {BATCHES[0]} on {device}: first call {first * 1e3:.2f} ms; then median "
      f"{statistics.median(rest) * 1e3:.2f} ms; mean of all {statistics.fmean(times) * 1e3:.2f} ms, "
      f"median of all {statistics.median(times) * 1e3:.2f} ms")
"""

EXERCISES = {
    "lesson 1, Try 1: sum() for mean()": Exercise("01", edits=(
        ("y = (F.relu(h) * h).sum() + (a * a).mean()", "y = (F.relu(h) * h).sum() + (a * a).sum()"),
        ("(path_square * path_square).mean()", "(path_square * path_square).sum()"),
        ("(a @ b + c)).sum() + (a * a).mean()", "(a @ b + c)).sum() + (a * a).sum()")),
        prints=(r"and the sum of the two paths: 0\.0e\+00$",)),
    "lesson 1, Try 2: c + 10": Exercise("01", edits=(
        ("rng.standard_normal(2), requires_grad", "rng.standard_normal(2) + 10, requires_grad"),),
        prints=(r"ReLU is off there\): \[\]$",)),
    "lesson 1, Try 3: EPS = 1e-2": Exercise("01", edits=(("EPS = 1e-6 ", "EPS = 1e-2 "),)),
    "lesson 1, Try 3: EPS = 1e-12": Exercise("01", edits=(("EPS = 1e-6 ", "EPS = 1e-12 "),),
                                             fails_with="backward and the finite differences disagree"),
    "lesson 2, Try 1: the fixed backward": Exercise("02", edits=(
        ("        return 2 * self.x\n", "        return gy * 2 * self.x\n"),), fails_with="a gradient check failed",
        prints=(r"^BrokenSquare \(forgets gy\) +\(3, 4\) +not caught",)),
    "lesson 2, Try 2: 0.5% off": Exercise("02", edits=(
        ("        return 2 * self.x\n", "        return gy * 2.01 * self.x\n"),),
        prints=(r"^BrokenSquare \(forgets gy\) +\(3, 4\) +caught",)),
    "lesson 2, Try 2: 0.05% off": Exercise("02", edits=(
        ("        return 2 * self.x\n", "        return gy * 2.001 * self.x\n"),),
        fails_with="a gradient check failed"),
    "lesson 2, Try 3: python -m minitl check": Exercise("02", commands=(("-m", "minitl", "check"),),
                                                         prints=(r"^all ops passed",)),
    "lesson 2, Try 4: the fixed leaky ReLU": Exercise("02", edits=(LEAKY_FIXED,), prints=(
        r"^LeakyReLU \(forgets its slope\), drawn +drawn +pass",)),
    "lesson 2, Try 4: domains='real'": Exercise("02", edits=(
        LEAKY_FIXED, ('domains="nonzero", on=', 'domains="real", on=')), prints=(
        r"^LeakyReLU \(forgets its slope\), drawn +drawn +caught", r"Draw \d \(input 0\): tensor\(\[0\.\]")),
    "lesson 3, Try 1: STRIDE, PAD = 2, 0": Exercise("03", edits=(("STRIDE, PAD = 1, 1", "STRIDE, PAD = 2, 0"),),
                                                     prints=(r"^im2col\(x\) +\(27, 18\) ", r"^y +\(2, 4, 3, 3\) ")),
    "lesson 3, Try 2: a 3x3 kernel in section 0": Exercise("03", edits=(
        ("F.im2col(tiny, 2, 2, (1, 1), (0, 0))", "F.im2col(tiny, 3, 3, (1, 1), (0, 0))"),),
        prints=(r"^ \[\[1\.\]\n \[2\.\]\n \[3\.\]\n \[4\.\]\n \[5\.\]\n \[6\.\]\n \[7\.\]\n \[8\.\]\n \[9\.\]\]$",)),
    "lesson 3, Try 3: the first call timed": Exercise("03", edits=(
        ("import numpy as np\n", "import time\n\nimport numpy as np\n"),
        ("y_conv = F.conv2d(xt, wt_, bt, STRIDE, PAD).numpy()\n",
         "start = time.perf_counter()\ny_conv = F.conv2d(xt, wt_, bt, STRIDE, PAD).numpy()\n"
         'print(f"first call of conv2d: {(time.perf_counter() - start) * 1e3:.2f} ms")\n')),
        prints=(r"^first call of conv2d: [\d.]+ ms$",)),
    "lesson 4, Try 1: LR = 2e-2": Exercise("04", edits=(("LR = transfer.SOURCE_LR", "LR = 2e-2"),),
                                           prints=(AT_STEP_100,), holds=lambda v: v["at_100"] > 0.85),
    "lesson 4, Try 1: LR = 2e-4": Exercise("04", edits=(("LR = transfer.SOURCE_LR", "LR = 2e-4"),),
                                           prints=(AT_STEP_100,), holds=lambda v: v["at_100"] < 0.7),
    "lesson 4, Try 2: STEPS = 50": Exercise("04", edits=(
        ("STEPS = 100 if args.quick else transfer.SOURCE_STEPS", "STEPS = 50"),),
        prints=(r"^step +50 ", r"^this is the file transfer.source_model loads: False$")),
    "lesson 4, Try 3: the hard glyphs": Exercise("04", edits=(
        ("data.glyphs(seed=SEED)", "data.glyphs(hard=True, seed=SEED)"),),
        prints=(AT_STEP_100,), holds=lambda v: v["at_100"] < 0.7),
    "lesson 5, Try 1: K = 2": Exercise("05", edits=(("K = 10 ", "K = 2 "),), prints=(
        r"^last layer only +target test accuracy (?P<last>[\d.]+)",
        r"^every layer +target test accuracy (?P<every>[\d.]+)", r"^target test accuracy \(k=2\)"),
        holds=lambda v: v["every"] > v["last"]),
    "lesson 5, Try 2 + 3: no freeze; fine-tuning for 20 steps": Exercise("05", edits=(
        ("\ntransfer.freeze(model.features)\n", "\n"),
        ("EVERY = ", 'FINE_TUNE = transfer.Budget(steps=20, head_lr=2e-2, schedule="cosine")\nEVERY = ')), prints=(
        r"^trainable parameters +37957 +37957",
        r"^every layer +target test accuracy (?P<every>[\d.]+) after 20 steps"), holds=lambda v: v["every"] < 0.85),
    "lesson 6, Try 1 + 3: K = 2; the manifest": Exercise("06", edits=(
        ("K = 20", "K = 2"), ("import numpy as np\n", "import numpy as np\n\nimport minitl as mt\n"),
        ('print(f"features {feats.shape}', 'stored = mt.load(cache.path(name))\n'
         'print(bytes(stored["manifest"]).decode())\nprint(f"features {feats.shape}')), prints=(
        r"^features \(10, 64\)", r"^largest difference between the two heads' weights: (?P<gap>\S+)$",
        r"^target test accuracy +(?P<probe>[\d.]+) +(?P<proxy>[\d.]+)$", r"^plain arrays: ",
        *(f'"{key}": ' for key in ("module", "weights", "layer", "data", "shape", "dtype", "device", "checksum"))),
        holds=lambda v: v["gap"] < 1e-4 and v["probe"] == v["proxy"]),
    "lesson 6, Try 2: another seed for the proxy": Exercise("06", edits=(
        ("proxy = transfer.proxy_train(source, glyphs, train, cache, BUDGET, SEED, ",
         "proxy = transfer.proxy_train(source, glyphs, train, cache, BUDGET, SEED + 1, "),),
        fails_with="the linear probe and the proxy should end with the same accuracy",
        prints=(r"^largest difference between the two heads' weights: (?P<gap>\S+)$",), holds=lambda v: v["gap"] > 0.1),
    "lesson 7, Try 1 + 2 + 3: lambda 100; three seeds; KS = (20,)": Exercise("07", edits=(
        ("KS = (2, 5)", "KS = (20,)"), ("SEEDS = 2 if args.quick else 8", "SEEDS = 3"),
        ("T_CRITICAL = {1: 12.71, 7: 2.36}", "T_CRITICAL = {1: 12.71, 2: 4.30, 7: 2.36}"),
        ("SWEEP = (0.0, 1.0) if args.quick else (0.0, 0.1, 1.0, 10.0)",
         "SWEEP = (0.0, 1.0, 100.0) if args.quick else (0.0, 0.1, 1.0, 10.0, 100.0)")), prints=(
        r"^k=20 +l2sp \(lambda=0\.01\) +[\d.]+ +[\d.]+ +[+-][\d.]+ [+-][\d.]+ [+-][\d.]+ +[+-][\d.]+ ± ",  # 3 pairs
        r"^1\.000 +(?P<at_1>[\d.]+) ", r"^100\.000 +(?P<at_100>[\d.]+) "), holds=lambda v: v["at_100"] < v["at_1"]),
    "lesson 8, Try 1 + 2: proxy and linear probe; the hard glyphs": Exercise("08", edits=(
        ('METHODS = ("scratch", "fine_tune")', 'METHODS = ("scratch", "fine_tune", "proxy", "linear_probe")'),
        ('DATASETS = ("glyphs", "digits")', 'DATASETS = ("glyphs", "glyphs-hard")')), prints=(
        r"^  glyphs +proxy +k=2: (?P<proxy>[\d.]+)  k=all: (?P<proxy_all>[\d.]+)$",
        r"^  glyphs +linear_probe +k=2: (?P<probe>[\d.]+)  k=all: (?P<probe_all>[\d.]+)$",
        r"^  features\.8 +64 features  k=2: (?P<top>[\d.]+)  k=all: (?P<top_all>[\d.]+)$",   # the glyphs' top layer
        r"^glyphs-hard, k=2: ", r"^small \(k=2\), similar \(glyphs-hard\) "),
        holds=lambda v: v["proxy"] == v["probe"] == v["top"] and v["proxy_all"] == v["probe_all"] == v["top_all"]),
    "lesson 8, Try 3: python -m minitl layers --dataset digits": Exercise("08", needs="sklearn", commands=(
        ("-m", "minitl", "layers", "--dataset", "digits", "--quick", "--out", "{out}"),),
        prints=(r"^features\.8 +64 ", r"^plot: .*accuracy-vs-depth\.png$")),
    "lesson 9, Try 1: K = 'all'": Exercise("09", edits=(("K = 10 ", 'K = "all" '),), prints=(CACHED_HEAD,),
                                           holds=lambda v: v["drifted"] < v["frozen"]),
    "lesson 9, Try 2: eval() after train()": Exercise("09", edits=(
        ("    model.train()\n", "    model.train()\n    model.eval()\n"),), fails_with="AssertionError"),
    "lesson 9, Try 3: the digits": Exercise("09", needs="sklearn", edits=(
        ("glyphs = data.glyphs(seed=0)", "glyphs = data.digits()"),), prints=(r"source-digits-batch-", CACHED_HEAD),
        holds=lambda v: v["drifted"] < v["frozen"]),
    "lesson 10, Try 1: a sync where none is allowed": Exercise("10", edits=(
        ("        loss = step()\n    with counting() as reading:",
         "        loss = step()\n        print(loss.item())\n    with counting() as reading:"),),
        fails_with="DeviceSynchronized: ndarray.item() waits for the GPU"),
    "lesson 10, Try 2: the device tests on the stand-in": Exercise("10", env=(("MINITL_CUPY_STANDIN", "1"),), commands=(
        ("-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_devices.py")),),
        prints=(r"^\d+ passed",)),
    "lesson 10, Try 3: kernel launches at batch 256 and 32": Exercise("10", env=(STANDIN,), commands=(
        ("-m", "benchmarks.count_ops", "--batch", "256"), ("-m", "benchmarks.count_ops", "--batch", "32")), prints=(
        r"^ops per .* at batch 256 .*: (?P<at_256>\d+)$", r"^ops per .* at batch 32 .*: (?P<at_32>\d+)$"),
        holds=lambda v: v["at_256"] == v["at_32"]),
    "lesson 11, Try 1 + 2 + 3: two busy processes; section 2 again; GPU_BATCHES = (1,)": Exercise("11", edits=(
        ("BUSY = 1 ", "BUSY = 2 "), (SECTION_2_OF_11, SECTION_2_OF_11 + SECTION_2_OF_11),
        ("GPU_BATCHES = (8, 64, 512) if args.quick else", "GPU_BATCHES = (1,) if args.quick else")), prints=(
        r"^  2 busy processes beside +batch +256: ", r"(?s)^batch 32 on cpu: first call.*^batch 32 on cpu: first call",
        r"^no GPU here|^the CPU won at every batch here")),
    "lesson 12, Try 1 + 2: contrast for brightness; feature MSE": Exercise("12", needs="skimage", edits=(
        ("return split.x.mean(axis=(1, 2, 3))", "return split.x.std(axis=(1, 2, 3))"),
        ('METHODS = ("scratch", "proxy", "fine_tune")',
         'METHODS = ("scratch", "proxy", "fine_tune", "fine_tune+feature_mse")')), prints=(
        r"the nearer mean gets (?P<contrast>[\d.]+) of the target test set right$",
        r"^fine_tune\+feature_mse +[\d.]+ ± [\d.]+ +[\d.]+ ± ",                 # section 3's table, k=2 and all
        r"^k=2 +fine_tune\+feature_mse +[\d.]+ +[\d.]+ "),                        # section 4's pairs
        holds=lambda v: v["contrast"] == 0.64),
    "lesson 12, Try 3: python -m minitl --dataset photos": Exercise("12", needs="skimage", commands=(
        ("-m", "minitl", "--dataset", "photos", "--quick", "--out", "{out}"),),
        prints=(r"^fine_tune\+l2sp +[\d.]+ ± ", r"^plot: .*accuracy-vs-k\.png$", r"^plot: .*loss-curves\.png$")),
}


def captured(matches):
    """The named groups of the prints' matches, numbers as floats."""
    def value(text):
        try:
            return float(text)
        except ValueError:
            return text
    return {name: value(text) for match in matches for name, text in match.groupdict().items()}


@pytest.mark.parametrize("name", EXERCISES)
def test_an_exercise_ends_as_its_text_says_in_quick_mode(name, tmp_path, shared_cache):
    exercise = EXERCISES[name]
    once(exercise.lesson)
    if exercise.needs:
        pytest.importorskip(exercise.needs)
    env = dict(os.environ, MINITL_CACHE=shared_cache, MPLBACKEND="Agg", **dict(exercise.env))
    if exercise.commands:
        runs = [subprocess.run([sys.executable, *(a.format(out=tmp_path) for a in command)], capture_output=True,
                               text=True, env=env, timeout=300, cwd=ROOT) for command in exercise.commands]
    else:
        lesson = next(p for p in LESSONS if p.stem.startswith(exercise.lesson + "_"))
        # the edits change the lesson's code, not the exercise text that quotes it
        code, tries = lesson.read_text().split("# ## Try this")
        for old, new in exercise.edits:
            assert code.count(old) == 1, f"the exercise's edit no longer matches the lesson once: {old!r}"
            code = code.replace(old, new)
        # the copy sits as the lesson does, one folder below the repository's tests/ and benchmarks/ (lesson 10)
        (tmp_path / "lessons").mkdir()
        for folder in ("tests", "benchmarks"):
            (tmp_path / folder).symlink_to(ROOT / folder)
        edited = tmp_path / "lessons" / lesson.name
        edited.write_text(code + "# ## Try this" + tries)
        runs = [subprocess.run([sys.executable, str(edited), "--quick"], capture_output=True, text=True, env=env,
                               timeout=300)]
    stdout, stderr = "".join(r.stdout for r in runs), "".join(r.stderr for r in runs)
    if exercise.fails_with is None:
        assert all(r.returncode == 0 for r in runs), stderr[-3000:]
    else:
        assert runs[-1].returncode != 0 and exercise.fails_with in stderr, stderr[-3000:]
    matches = [re.search(pattern, stdout, re.M) for pattern in exercise.prints]
    missing = [pattern for pattern, match in zip(exercise.prints, matches) if match is None]
    assert not missing, f"not printed: {missing}\n{stdout[-3000:]}"
    if exercise.holds is not None:
        assert exercise.holds(captured(matches)), (captured(matches), stdout[-3000:])


def test_every_try_this_exercise_is_checked():
    """Every numbered exercise in every lesson's "Try this" has an entry in EXERCISES ("lesson 5, Try 2 + 3: ...")."""
    checked = {(e.lesson, int(n)) for name, e in EXERCISES.items()
               for n in re.findall(r"\d+", name.split("Try ", 1)[1].split(":")[0])}
    for lesson in LESSONS:
        for n in re.findall(r"^# (\d+)\. ", cells(lesson)[-1][1], re.M):
            assert (lesson.stem[:2], int(n)) in checked, f"{lesson.stem}, Try {n} has no entry in EXERCISES"


def test_lesson_12_without_scikit_image_stops_in_one_line(tmp_path):
    (tmp_path / "skimage").mkdir()
    (tmp_path / "skimage" / "__init__.py").write_text("raise ModuleNotFoundError('no scikit-image here')\n")
    lesson = next(p for p in LESSONS if p.stem.startswith("12_"))
    env = dict(os.environ, MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(lesson), "--quick"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr[-3000:]
    assert done.stdout.strip() == "(lesson 12 is skipped: scikit-image is not installed; pip install 'minitl[lessons]')"


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
