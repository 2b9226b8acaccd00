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


def _one_blas_thread():
    threadpool_limits(1, user_api="blas")  # two workers on two cores: more threads would fight


def map_runs(fn, runs, jobs):
    """[fn(run) for run in runs], in `jobs` forked processes that inherit the caller's state; in order.
    (The training loops themselves run with one BLAS thread in any process: training.fit.)"""
    if jobs == 1:
        return [fn(run) for run in runs]
    with multiprocessing.get_context("fork").Pool(jobs, initializer=_one_blas_thread) as pool:
        return pool.map(fn, runs, chunksize=1)
