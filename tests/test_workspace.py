"""The workspace (minitl/backend.py): large host arrays are reused from step to step, but only once
nothing refers to them. Every result with the workspace must equal, bit for bit, the result
without it (MINITL_REUSE_MEMORY=0), however graphs are kept alive, retained or interleaved."""

import gc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitl as mt
import minitl.functional as F
from minitl import backend, nn, training


def lenet():
    mt.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Dropout(0.2), nn.Linear(16 * 7 * 7, 10))


def batch(seed, n=32):
    rng = np.random.default_rng(seed)
    return mt.tensor(rng.random((n, 1, 28, 28), dtype=np.float32)), rng.integers(0, 10, n)


@pytest.fixture
def no_workspace(monkeypatch):
    """A context in which the workspace is off: the reference every result is compared with."""
    def switch(off):
        if off:
            monkeypatch.setenv("MINITL_REUSE_MEMORY", "0")
        else:
            monkeypatch.delenv("MINITL_REUSE_MEMORY", raising=False)
    return switch


def test_large_arrays_come_from_the_workspace_and_are_reused():
    model = lenet()
    opt = mt.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sizes = []
    for step in range(4):
        training.train_step(lambda x, y: F.cross_entropy(model(x), y), opt, *batch(step))
        sizes.append(backend.workspace_bytes())
    assert sizes[0] > 1_000_000, "a LeNet step at batch 32 makes megabytes of large temporaries"
    assert sizes[1] == sizes[2] == sizes[3], f"the workspace kept growing: {sizes}"


def test_a_buffer_in_use_is_never_handed_out():
    a = backend.empty((256, 256), "float32", np, reuse=True)
    view = a.T[3:]  # a view keeps the buffer in use after `a` is gone
    view[...] = 7
    del a
    b = backend.empty((256, 256), "float32", np, reuse=True)
    b[...] = 0
    assert (view == 7).all()
    del view, b
    assert backend.empty((256, 256), "float32", np, reuse=True) is not None


def run(program, seed=0):
    """Run a program of forwards and backwards on two batches; every loss and gradient it saw."""
    model = lenet()
    params = list(model.parameters())
    losses, alive, seen = {}, {}, []
    kept = []  # outputs of forwards without a graph, with a copy made when they were computed
    for action, which, retain in program:
        if action == "evaluate":
            with mt.no_grad():
                out = model(batch(which)[0])
            kept.append((out, out.data.copy()))
        elif action == "forward":
            mt.manual_seed(seed + which)  # the same dropout mask with and without the workspace
            x, y = batch(which)
            alive[which] = F.cross_entropy(model(x), y)
            losses.setdefault(which, []).append(alive[which].item())
        elif which in alive:
            for p in params:
                p.grad = None
            alive[which].backward(retain_graph=retain)
            seen.append([p.grad.copy() for p in params])
            if not retain:
                del alive[which]
    # the outputs still alive were not overwritten by later steps
    seen.append([alive[w].item() for w in sorted(alive)])
    for out, copy in kept:
        np.testing.assert_array_equal(out.data, copy)
    return losses, seen


programs = st.lists(st.tuples(st.sampled_from(["forward", "backward", "evaluate"]), st.integers(0, 1), st.booleans()),
                    min_size=1, max_size=8)


@given(programs)
def test_any_interleaving_of_steps_gives_the_results_of_fresh_memory(program):
    """Two graphs alive at once, retained graphs, backward twice: with the workspace the numbers are
    exactly those computed with fresh memory."""
    import os
    saved = os.environ.pop("MINITL_REUSE_MEMORY", None)
    try:
        with_workspace = run(program)
        os.environ["MINITL_REUSE_MEMORY"] = "0"
        fresh = run(program)
    finally:
        os.environ.pop("MINITL_REUSE_MEMORY", None)
        if saved is not None:
            os.environ["MINITL_REUSE_MEMORY"] = saved
    assert with_workspace[0] == fresh[0]
    for a, b in zip(with_workspace[1], fresh[1]):
        for ga, gb in zip(a, b):
            np.testing.assert_array_equal(ga, gb)


def test_retained_graph_and_second_forward(no_workspace):
    """The case named in the issue: retain_graph=True, then a second forward and backward, then the
    first graph's backward again."""
    program = [("forward", 0, False), ("backward", 0, True), ("forward", 1, False), ("backward", 1, False),
               ("backward", 0, False)]
    with_workspace = run(program)
    no_workspace(True)
    fresh = run(program)
    for a, b in zip(with_workspace[1], fresh[1]):
        for ga, gb in zip(a, b):
            np.testing.assert_array_equal(ga, gb)


def test_a_full_workspace_still_gives_right_answers(monkeypatch, no_workspace):
    monkeypatch.setattr(backend, "WORKSPACE_MAX_BYTES", 3 * 2**20)
    backend.free_workspace()
    program = [("forward", 0, False), ("forward", 1, False), ("backward", 0, False), ("backward", 1, False)]
    small = run(program)
    assert backend.workspace_bytes() <= 3 * 2**20
    no_workspace(True)
    fresh = run(program)
    for a, b in zip(small[1], fresh[1]):
        for ga, gb in zip(a, b):
            np.testing.assert_array_equal(ga, gb)


def test_free_workspace_gives_back_what_nothing_uses():
    gc.collect()
    before = backend.free_workspace()  # what other tests' objects still hold
    x, y = batch(0)
    F.cross_entropy(lenet()(x), y).backward()
    assert backend.workspace_bytes() > before
    left = backend.free_workspace()
    assert left <= before, f"{left - before} bytes still held after every graph was freed"


def test_the_workspace_counts_exactly_what_it_holds(monkeypatch):
    """A size dropped to make room for itself must still be held and counted (it once went missing
    from the books, and the count only grew until reuse stopped)."""
    monkeypatch.setattr(backend, "WORKSPACE_MAX_BYTES", 10 * 2**20)
    backend.free_workspace()
    for mib in (6, 7, 6, 3, 7):
        a = backend.empty((mib * 2**18,), np.float32, np, reuse=True)
        del a
        held = sum(nbytes * len(buffers) for nbytes, buffers in backend._workspace.items())
        assert backend.workspace_bytes() == held <= 10 * 2**20
    assert backend.free_workspace() == 0
