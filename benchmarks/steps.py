"""The training steps users run, timed in a process of their own: the worker behind
`benchmarks.against` (minitl at two commits) and `benchmarks.user_script` (minitl against PyTorch).

    python benchmarks/steps.py minitl '{"steps": ["lenet-sgd-64"], "repeat": 20}'
    python benchmarks/steps.py torch  '{"steps": ["lenet-sgd-64"], "repeat": 20}'

prints one JSON object: per step its median and best seconds, and the page faults per step.
Run as a script (not with -m), so that `import minitl` finds whichever tree PYTHONPATH names
first: that is how `against` times an older commit with today's steps. Each step is written
with the public API only (what the README teaches: build, forward, loss, zero_grad, backward,
step), never calls backend.tune_malloc, and is the same model in both frameworks.
"""

import json
import os
import resource
import statistics
import sys
import time

import numpy as np

# name -> (model, batch, optimizer, what trains). The LeNet-style CNN is the user script:
# 1x28x28 -> conv16-relu-pool -> conv32-relu-pool -> linear 10. The TransferCNN is what every
# fine-tuning recipe runs (1x16x16, conv16-relu-pool, conv32-relu-pool, linear 64-relu, linear 5).
STEPS = {
    **{f"lenet-sgd-{n}": ("lenet", n, "sgd", "all") for n in (16, 64, 256, 1024)},
    **{f"lenet-frozen-{n}": ("lenet", n, "sgd", "head") for n in (16, 64, 256, 1024)},
    **{f"lenet-cached-{n}": ("lenet", n, "sgd", "cached") for n in (16, 64, 256, 1024)},
    "transfercnn-adam-32": ("transfercnn", 32, "adam", "all"),
    "transfercnn-adam-256": ("transfercnn", 256, "adam", "all"),
    "mlp-sgd-128": ("mlp", 128, "sgd", "all"),
}


def layers_of(nn, model):
    """The same layers in minitl and PyTorch (their nn modules share these names)."""
    if model == "lenet":
        backbone = [nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                    nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()]
        return backbone, nn.Linear(32 * 7 * 7, 10), (1, 28, 28)
    if model == "transfercnn":
        backbone = [nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                    nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                    nn.Linear(32 * 4 * 4, 64), nn.ReLU()]
        return backbone, nn.Linear(64, 5), (1, 16, 16)
    backbone = [nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU()]
    return backbone, nn.Linear(256, 10), (784,)


def build(framework, name):
    """(step function of no arguments, framework version) for one named step."""
    model, n, optimizer, trains = STEPS[name]
    rng = np.random.default_rng(0)
    if framework == "torch":
        import torch
        import torch.nn.functional as F
        from torch import nn
        torch.manual_seed(0)
        tensor = lambda a: torch.from_numpy(a)
        no_grad, version = torch.no_grad, torch.__version__
    else:
        import minitl as mt
        import minitl.functional as F
        from minitl import nn
        mt.manual_seed(0)
        tensor = lambda a: mt.tensor(a)
        no_grad, version = mt.no_grad, mt.__version__
    backbone, head, shape = layers_of(nn, model)
    backbone = nn.Sequential(*backbone)
    x = tensor(rng.random((n,) + shape, dtype=np.float32))
    y = rng.integers(0, head.out_features, n)
    y = torch.from_numpy(y) if framework == "torch" else y
    params = list(head.parameters())
    if trains == "all":
        params += list(backbone.parameters())
    else:
        backbone.requires_grad_(False)
    if trains == "cached":
        with no_grad():
            x = backbone(x).detach()
        net = head
    else:
        net = nn.Sequential(backbone, head)
    optim = (torch.optim if framework == "torch" else mt.optim)
    opt = optim.SGD(params, lr=0.01, momentum=0.9) if optimizer == "sgd" else optim.Adam(params, lr=1e-3)

    def step():
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step, version


def time_step(step, repeat, warmup=5):
    """(median seconds, best seconds, minor page faults per step) over `repeat` timed steps."""
    for _ in range(warmup):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / repeat
    return statistics.median(times), min(times), faults


def blas_info():
    """The BLAS kernel and thread count this process runs with (the same code gives slightly
    different numbers, and speeds, per kernel)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return [{k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for p in threadpool_info() if p.get("user_api") == "blas"]


# How memory is reused, for `benchmarks.memory` (the steps themselves never change it):
# "default" what a plain script gets; "no-workspace" minitl's workspace off; "tune-malloc" the
# workspace off and glibc's malloc told to keep freed memory (a process-wide change).
SETUPS = ("default", "no-workspace", "tune-malloc")


def main(framework, args):
    setup = args.get("setup", "default")
    if setup != "default":
        os.environ["MINITL_REUSE_MEMORY"] = "0"
    if setup == "tune-malloc":
        from minitl import backend
        backend.tune_malloc()
    if framework == "torch":
        import torch
        torch.set_num_threads(args.get("threads") or torch.get_num_threads())
        where = torch.__file__
    else:
        import minitl
        where = minitl.__file__
    out = {"framework": framework, "file": where, "blas": blas_info(), "steps": {}}
    for name in args["steps"]:
        step, out["version"] = build(framework, name)
        median, best, faults = time_step(step, args.get("repeat", 20))
        out["steps"][name] = {"median": median, "best": best, "faults_per_step": faults}
    # Every minitl module that ran, so the caller can check that none came from another tree.
    out["modules"] = sorted(m.__file__ for name, m in list(sys.modules.items())
                            if (name == "minitl" or name.startswith("minitl.")) and getattr(m, "__file__", None))
    print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("minitl", "torch"):
        sys.exit(__doc__)
    if os.path.dirname(os.path.abspath(__file__)) == os.path.abspath(sys.path[0]):
        sys.path.pop(0)  # benchmarks/ itself is not where minitl comes from
    main(sys.argv[1], json.loads(sys.argv[2]))
