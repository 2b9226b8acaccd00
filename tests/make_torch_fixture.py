"""Write tests/fixtures/torch_cnn.npz: PyTorch's answers for a small CNN, in float64.

Run by hand where torch==2.13.0 is installed (CI has no PyTorch):

    python tests/make_torch_fixture.py

test_torch_parity.py checks minitl against the file: logits, loss, every
gradient, and the weights after two SGD-momentum and two Adam steps.
"""

import pathlib

import numpy as np
import torch
from torch import nn

torch.set_num_threads(1)  # OpenBLAS and OpenMP pools fight on 2 cores
OUT = pathlib.Path(__file__).parent / "fixtures" / "torch_cnn.npz"


def build():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, stride=1, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(6 * 2 * 2, 3)).double()


def main():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 1, 8, 8))
    y = rng.integers(0, 3, 5)
    model = build()
    out = {"x": x, "y": y}
    out.update({f"w/{k}": v.detach().numpy().copy() for k, v in model.state_dict().items()})
    initial = {k: v.clone() for k, v in model.state_dict().items()}

    xt = torch.tensor(x, requires_grad=True)
    logits = model(xt)
    loss = nn.functional.cross_entropy(logits, torch.tensor(y))
    loss.backward()
    out["logits"], out["loss"], out["g/x"] = logits.detach().numpy(), loss.detach().numpy(), xt.grad.numpy()
    out.update({f"g/{k}": p.grad.numpy().copy() for k, p in model.named_parameters()})

    for name, make in (("sgd", lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-3)),
                       ("adam", lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-3))):
        model.load_state_dict(initial)
        opt = make(model.parameters())
        for _ in range(2):
            opt.zero_grad()
            nn.functional.cross_entropy(model(torch.tensor(x)), torch.tensor(y)).backward()
            opt.step()
        out.update({f"{name}/{k}": v.detach().numpy().copy() for k, v in model.state_dict().items()})

    OUT.parent.mkdir(exist_ok=True)
    np.savez(OUT, **out)
    print(f"wrote {OUT} ({len(out)} arrays, torch {torch.__version__})")


if __name__ == "__main__":
    main()
