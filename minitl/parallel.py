"""Independent runs in several processes, each with one BLAS thread.

A comparison table is dozens of small, independent, seeded training runs. On a 2-core
machine two processes finish it in about half the time, and the same runs give the same
numbers in any process. Each worker keeps to one BLAS thread: two processes with two
threads each on two cores fight for them (benchmarks/README.md has the measurements).
"""

import multiprocessing
import os

from threadpoolctl import threadpool_limits


def default_jobs(device):
    """One process per core (at most 2) on the CPU; one on a GPU (a forked process cannot use CUDA)."""
    if device == "cuda" or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(2, os.cpu_count() or 1))


def check_jobs(jobs, device):
    """A usable number of processes, or a ValueError saying why not."""
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    if jobs > 1 and device == "cuda":
        raise ValueError(f"jobs={jobs} on cuda: a forked process cannot use CUDA; use jobs=1 on a GPU")
    if jobs > 1 and "fork" not in multiprocessing.get_all_start_methods():
        raise ValueError(f"jobs={jobs}: this system cannot fork processes; use jobs=1")
    cores = os.cpu_count() or 1
    if jobs > cores:
        raise ValueError(f"jobs={jobs} is more than the {cores} cores here: more processes than cores only fight")
    return jobs


def _one_blas_thread():
    threadpool_limits(1, user_api="blas")  # two workers on two cores: more threads would fight


def map_runs(fn, runs, jobs):
    """[fn(run) for run in runs], in `jobs` forked processes that inherit the caller's state; in order.
    (The training loops themselves run with one BLAS thread in any process: training.fit.)"""
    if jobs == 1:
        return [fn(run) for run in runs]
    with multiprocessing.get_context("fork").Pool(jobs, initializer=_one_blas_thread) as pool:
        return pool.map(fn, runs, chunksize=1)
