"""Peer frameworks for the benchmarks, each run in a process of its own.

    python -m benchmarks.peers torch conv '{"cases": [[64, 1, 16, 28]], "repeat": 10}'

prints one JSON object on stdout. OpenBLAS and OpenMP thread pools fight when two
frameworks share a process on 2 cores, so a benchmark never imports a peer itself.
Exit code 3 means the peer is not installed (its column is skipped).
"""

import json
import sys

import numpy as np

from benchmarks.common import timeit


def lenet_torch(torch, frozen):
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(32 * 7 * 7, 10))
    if frozen:
        model[:7].requires_grad_(False)
    return model


def torch_conv(cases, repeat):
    import torch
    out = []
    for n, cin, cout, size in cases:
        x = torch.rand(n, cin, size, size, requires_grad=cin >= 16)  # a first layer needs no input gradient
        conv = torch.nn.Conv2d(cin, cout, 3, padding=1)

        def run():
            conv.zero_grad()
            conv(x).sum().backward()
        out.append(timeit(run, repeat=repeat)[0])
    return {"seconds": out, "version": torch.__version__, "threads": torch.get_num_threads()}


def torch_step(batches, repeat, frozen=False, device="cpu"):
    import torch
    if device == "cuda" and not torch.cuda.is_available():
        raise ImportError("this PyTorch build has no CUDA")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = lenet_torch(torch, frozen).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01)
    out = []
    for n in batches:
        x, y = torch.rand(n, 1, 28, 28, device=device), torch.randint(0, 10, (n,), device=device)

        def step():
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        out.append(timeit(step, sync, warmup=5, repeat=repeat)[0])
    return {"seconds": out, "version": torch.__version__, "threads": torch.get_num_threads()}


def dezero_step(batches, repeat):
    np.int = int  # DeZero 0.0.13 still uses np.int, removed in NumPy 1.24
    import dezero
    import dezero.functions as F
    import dezero.layers as L

    class LeNet(dezero.Model):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = L.Conv2d(16, 3, 1, 1, in_channels=1), L.Conv2d(32, 3, 1, 1, in_channels=16)
            self.fc = L.Linear(10, in_size=32 * 7 * 7)

        def forward(self, x):
            x = F.pooling(F.relu(self.c1(x)), 2, 2)
            x = F.pooling(F.relu(self.c2(x)), 2, 2)
            return self.fc(F.reshape(x, (x.shape[0], -1)))

    model = LeNet()
    rng = np.random.default_rng(0)
    model(rng.random((1, 1, 28, 28), dtype=np.float32))  # builds the lazily-shaped weights
    for p in model.params():  # as released, DeZero makes float64 weights under NumPy 2: cast them
        p.data = p.data.astype(np.float32)
    opt = dezero.optimizers.SGD(lr=0.01).setup(model)
    out = []
    for n in batches:
        x, y = rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)

        def step():
            loss = F.softmax_cross_entropy(model(x), y)
            model.cleargrads()
            loss.backward()
            opt.update()
        out.append(timeit(step, repeat=repeat)[0])
        assert model.fc.W.data.dtype == np.float32, "DeZero drifted to float64"
    return {"seconds": out, "version": getattr(dezero, "__version__", "?")}


TASKS = {("torch", "conv"): torch_conv, ("torch", "step"): torch_step, ("dezero", "step"): dezero_step}

if __name__ == "__main__":
    peer, task, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    try:
        result = TASKS[peer, task](**args)
    except ImportError as e:
        print(json.dumps({"missing": str(e)}))
        sys.exit(3)
    print(json.dumps(result))
