"""Shared timing helpers: warm up, synchronise the device around every clock read, report medians."""

import json
import os
import platform
import statistics
import subprocess
import sys

# No minitl import at module level: the steps' processes import what they time (minitl, or a peer)
# themselves. A peer's process imports minitl for its timer (report.wall_times), which loads the
# package (NumPy, and CuPy where it is installed) but runs nothing of it.


def timeit(fn, sync=lambda: None, warmup=3, repeat=15):
    """Median and spread (interquartile range) of fn's wall time in seconds, after warm-up runs
    (minitl.report.wall_times: `sync` waits for the device, and runs around every clock read)."""
    from minitl.report import wall_times
    times = wall_times(fn, sync, repeat, warmup)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return statistics.median(times), q[2] - q[0]


def device_sync(device):
    from minitl import backend
    return lambda: backend.synchronize(device)


def machine():
    """What the numbers were measured on, recorded inside every results file."""
    from minitl import backend
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "blas": backend.blas_name(), **backend.versions()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        from threadpoolctl import threadpool_info
        info["blas_threads"] = [p.get("num_threads") for p in threadpool_info()]
        info["blas_kernel"] = [p.get("architecture") for p in threadpool_info() if p.get("user_api") == "blas"]
    except ImportError:
        pass
    info.update({name: os.environ.get(name) for name in BLAS_KERNEL_VARIABLES})
    info["load_average"] = os.getloadavg()
    ok, gpu = backend.cuda_status()
    info["gpu"] = gpu if ok else None
    return info


# Set on some machines here to pick another OpenBLAS kernel: numbers differ in the last digits, and speed
# differs too. The step benchmarks' timed processes run without them (and say so); tests and CI never change them.
BLAS_KERNEL_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
STEPS_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "steps.py")


def print_environment():
    """Say what the timed processes run with; the same as a dict for the results file."""
    found = {name: os.environ[name] for name in BLAS_KERNEL_VARIABLES if name in os.environ}
    if found:
        print(f"  this machine sets {found}: the timed processes run without them (OpenBLAS picks its own kernel)")
    print(f"  load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return {"blas_kernel_variables_unset": found, "load_average": os.getloadavg()}


def run_steps(framework, tree, steps, repeat, threads=None, setup="default"):
    """benchmarks/steps.py in a fresh process, minitl imported from `tree`; its JSON answer, or None
    when the framework is not installed."""
    env = {k: v for k, v in os.environ.items() if k not in BLAS_KERNEL_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (tree, env.get("PYTHONPATH")) if p)
    if threads:
        env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = str(threads)
    done = subprocess.run([sys.executable, STEPS_WORKER, framework, json.dumps(
        {"steps": steps, "repeat": repeat, "threads": threads, "setup": setup})], capture_output=True, text=True,
        env=env)
    if done.returncode != 0:
        if framework != "minitl" and "No module named" in done.stderr:  # a peer that is not installed
            return None
        raise RuntimeError(f"the {framework} steps failed in {tree}:\n{done.stderr.strip()}")
    result = json.loads(done.stdout)
    if framework == "minitl":  # a module that REV lacks would be found in the installed tree instead
        inside = os.path.realpath(tree) + os.sep
        stray = [f for f in [result["file"]] + result.get("modules", []) if not os.path.realpath(f).startswith(inside)]
        if stray:
            raise RuntimeError(f"the steps imported minitl from {stray[0]}, not from {tree}")
    return result


def interleaved(runs, steps, rounds, repeat, threads=None):
    """Time every step for every run (label -> (framework, tree[, setup])): one fresh process per step, run
    and round, the runs alternating (and their order flipping each round) so that load hits all
    alike. Per run and step: the best of the rounds' medians, the best single step, the median of
    the page faults per step, the BLAS each process ran with, and each round's median (for
    paired_ratio); a run whose framework is missing is None."""
    seen = {label: {step: [] for step in steps} for label in runs}
    missing = set()
    for r in range(rounds):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for step in steps:
            for label in order:
                if label in missing:
                    continue
                framework, tree, *setup = runs[label]
                result = run_steps(framework, tree, [step], repeat, threads, *setup)
                if result is None:
                    print(f"  ({label}: not installed, skipped)")
                    missing.add(label)
                    continue
                seen[label][step].append({**result["steps"][step], "blas": result["blas"],
                                          "version": result.get("version")})
            print(".", end="", flush=True)
    print()
    out = {}
    for label in runs:
        if label in missing:
            out[label] = None
            continue
        out[label] = {step: {"median": min(o["median"] for o in obs), "best": min(o["best"] for o in obs),
                             "faults_per_step": statistics.median(o["faults_per_step"] for o in obs),
                             "rounds": [o["median"] for o in obs], "blas": obs[0]["blas"],
                             "version": obs[0]["version"]}
                      for step, obs in seen[label].items()}
    return out


def paired_ratio(a, b):
    """a's time over b's for one step of `interleaved`, as the median over rounds of the ratio within
    each round: the two ran next to each other, so load that comes and goes cancels out."""
    return statistics.median(x / y for x, y in zip(a["rounds"], b["rounds"]))


def write_results(name, results, folder=None):
    """Write results as JSON under benchmarks/results/ (or MINITL_BENCH_RESULTS: gpu_check.sh keeps
    its run's results with its logs), named by benchmark and machine."""
    folder = folder or os.environ.get("MINITL_BENCH_RESULTS") or os.path.join(os.path.dirname(__file__), "results")
    os.makedirs(folder, exist_ok=True)
    info = machine()
    tag = "".join(ch if ch.isalnum() else "-" for ch in (info["gpu"] or info["cpu"]))[:40].strip("-")
    path = os.path.join(folder, f"{name}-{tag}.json")
    from minitl.io import atomic_write  # two benchmarks writing one name never leave a half-written file
    with atomic_write(path, "w") as f:
        json.dump({"machine": info, "results": results}, f, indent=1)
    return path


def lenet_step(n, device, mode):
    """One SGD step of the LeNet-style CNN at batch n, as a function of no arguments.

    mode "full": every layer trains; "frozen": only the last Linear trains (the freeze
    contract: no graph through the backbone); "cached": the last Linear trains on
    features computed once beforehand (proxy collection: the backbone never runs).
    """
    import minitl as mt
    import minitl.functional as F
    from minitl import backend, nn, training
    mt.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()).to(device)
    head = nn.Linear(32 * 7 * 7, 10).to(device)
    rng = backend.host_rng(1)
    x = mt.tensor(rng.random((n, 1, 28, 28), dtype="float32"), device=device)
    y = backend.to_device(rng.integers(0, 10, n), device)
    if mode == "full":
        params, model = list(backbone.parameters()) + list(head.parameters()), lambda x: head(backbone(x))
    elif mode == "frozen":
        backbone.requires_grad_(False)
        params, model = list(head.parameters()), lambda x: head(backbone(x))
    elif mode == "cached":
        with mt.no_grad():
            x = backbone(x).detach()
        params, model = list(head.parameters()), head
    else:
        raise ValueError(f"unknown mode {mode!r}")
    opt = mt.optim.SGD(params, lr=0.01)
    return lambda: training.train_step(lambda x, y: F.cross_entropy(model(x), y), opt, x, y)


def matmul_gflops(device, n, repeat):
    """The device's float32 matrix-product rate on (n, n) @ (n, n): the ceiling for every product."""
    from minitl import backend
    a = backend.to_device(backend.host_rng(0).random((n, n), dtype="float32"), device)
    t, _ = timeit(lambda: a @ a, device_sync(device), repeat=repeat)
    return 2 * n ** 3 / t / 1e9


def run_peer(peer, task, tries=2, **args):
    """A peer's JSON answer, or None when it is not installed or fails. It runs `tries` times and
    each time keeps its best, so machine noise never makes a peer look slower than it is."""
    best = None
    for _ in range(tries):
        done = subprocess.run([sys.executable, "-m", "benchmarks.peers", peer, task, json.dumps(args)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            why = "not installed" if done.returncode == 3 else done.stderr.strip().splitlines()[-1:]
            print(f"  ({peer} skipped: {why})")
            return None
        result = json.loads(done.stdout)
        if best is not None:
            result["seconds"] = [min(a, b) for a, b in zip(best["seconds"], result["seconds"])]
        best = result
    return best


def verdict(value, target, higher_is_better=True):
    if value is None:
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "NOT met"
