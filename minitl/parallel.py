"""Independent runs in several processes, each with one BLAS thread.

A comparison table is dozens of small, independent, seeded training runs. On a 2-core
machine two processes finish it in about half the time, and the same runs give the same
numbers in any process. Each worker keeps to one BLAS thread: two processes with two
threads each on two cores fight for them (benchmarks/README.md has the measurements).
"""

import ctypes
import multiprocessing
import os
import pickle
import signal
import traceback
from multiprocessing import connection

from threadpoolctl import threadpool_limits

from minitl.checks import positive_int


def default_jobs(device):
    """One process per core (at most 2) on the CPU; one on a GPU (a forked process cannot use CUDA)."""
    if device == "cuda" or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(2, os.cpu_count() or 1))


def check_jobs(jobs, device):
    """A usable number of processes, or a ValueError saying why not."""
    jobs = positive_int("parallel", "jobs", jobs)
    if jobs > 1 and device == "cuda":
        raise ValueError(f"jobs={jobs} on cuda: a forked process cannot use CUDA; use jobs=1 on a GPU")
    if jobs > 1 and "fork" not in multiprocessing.get_all_start_methods():
        raise ValueError(f"jobs={jobs}: this system cannot fork processes; use jobs=1")
    cores = os.cpu_count() or 1
    if jobs > cores:
        raise ValueError(f"jobs={jobs} is more than the {cores} cores here: more processes than cores only fight")
    return jobs


class LostRun(RuntimeError):
    """A worker process died in the middle of a run (killed, or out of memory)."""


class RemoteTraceback(Exception):
    """Where a run's error came from, in its worker process: shown as the cause of the error."""

    def __str__(self):
        return self.args[0]


def map_runs(fn, runs, jobs):
    """fn(run) for each run, in order, as a generator: each result comes as soon as it and every
    run before it are done (a table prints its rows while later runs still train). With jobs > 1
    the runs go to `jobs` forked processes that inherit the caller's state. (The training loops
    themselves run with one BLAS thread in any process: training.fit.)

    Each worker holds one run at a time, so a worker that dies (the out-of-memory killer sends SIGKILL)
    is noticed at once and named with its run: a LostRun, never a table that waits forever."""
    if jobs == 1:
        for run in runs:
            yield fn(run)
        return
    context = multiprocessing.get_context("fork")
    todo, workers, ready, done = list(reversed(range(len(runs)))), [], {}, 0
    running = {}  # our end of a worker's pipe -> (the worker, the index of the run it holds)
    try:
        for _ in range(min(jobs, len(runs))):
            ours, theirs = context.Pipe()
            # the worker closes every parent end it inherits, so the parent's death reads as end-of-file there
            worker = context.Process(target=_worker, args=(fn, runs, theirs, [ours, *running], os.getpid()),
                                     daemon=True)
            worker.start()
            workers.append(worker)
            theirs.close()  # now the pipe reads as closed the moment the worker dies
            _hand_out(todo, running, ours, worker)
        while running:
            for ours in connection.wait(list(running)):
                worker, i = running.pop(ours)
                try:
                    _, ok, value, remote = ours.recv()
                except EOFError:
                    raise LostRun(_lost(worker, runs[i], done + len(ready), len(runs))) from None
                if not ok:  # raised here, with the worker's traceback as its cause (as Pool does)
                    raise value from RemoteTraceback(f"run {runs[i]!r}, in worker process {worker.pid}:\n{remote}")
                ready[i] = value
                _hand_out(todo, running, ours, worker)
            while done in ready:  # in order: the next result the caller waits for, and any after it
                yield ready.pop(done)
                done += 1
    except BaseException:  # an error, a lost run, Ctrl-C, or the caller stopped early: no worker outlives it
        for worker in workers:
            worker.kill()
        raise
    finally:
        for worker in workers:
            worker.join()


def _hand_out(todo, running, ours, worker):
    """Give the worker the next run, or tell it to stop."""
    if todo:
        ours.send(todo[-1])
        running[ours] = (worker, todo.pop())
    else:
        ours.send(None)


def _worker(fn, runs, pipe, parent_ends, parent):
    for end in parent_ends:
        end.close()
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it ends the workers
    threadpool_limits(1, user_api="blas")  # two workers on two cores: more threads would fight
    while True:
        try:
            i = pipe.recv()
        except EOFError:  # the parent is gone (killed): nothing to run for
            return
        if i is None:
            return
        try:
            pipe.send((i, True, fn(runs[i]), None))
        except Exception as e:  # the caller raises it, as if fn had run there
            e = e if _picklable(e) else RuntimeError(f"{type(e).__name__}: {e}")
            pipe.send((i, False, e, traceback.format_exc()))


def _die_with(parent):
    """On Linux, ask the kernel to end this worker when its parent dies, even mid-run (a killed
    parent would otherwise leave it computing for no one)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the worker still stops at its next read
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


def _picklable(e):
    try:
        pickle.loads(pickle.dumps(e))
        return True
    except Exception:
        return False


def _lost(worker, run, done, total):
    worker.join(5)
    code = worker.exitcode
    how = (f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0
           else f"exited with status {code}")
    hint = " (SIGKILL is most often the out-of-memory killer: try --jobs 1)" if code == -signal.SIGKILL else ""
    return (f"run {run!r} was lost: its worker process (pid {worker.pid}) {how}{hint}; "
            f"{done} of {total} runs had finished")
