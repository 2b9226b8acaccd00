"""Write tests/fixtures/torch_cnn.npz: PyTorch's answers for a small CNN, in float64.

Run by hand where torch==2.13.0 is installed (CI has no PyTorch):

    python tests/make_torch_fixture.py

test_torch_parity.py checks minitl against the file: logits, loss, every
gradient, and the weights after two SGD-momentum and two Adam steps; and for a
small CNN with BatchNorm2d and BatchNorm1d, three train-mode SGD steps (logits,
every gradient, the running statistics after each) and then eval-mode logits.
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


def build_bn():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).double()


def batch_norm_steps(out):
    """Three train-mode steps of a CNN with batch norm, then eval mode: every number under "bn/"."""
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    model = build_bn()
    out.update({f"bn/w/{k}": v.detach().numpy().copy() for k, v in model.state_dict().items()})
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for step in range(3):
        x, y = rng.standard_normal((6, 1, 8, 8)) + step, rng.integers(0, 3, 6)
        xt = torch.tensor(x, requires_grad=True)
        logits = model(xt)
        loss = nn.functional.cross_entropy(logits, torch.tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.update({f"bn/{step}/x": x, f"bn/{step}/y": y, f"bn/{step}/logits": logits.detach().numpy(),
                    f"bn/{step}/g/x": xt.grad.numpy()})
        out.update({f"bn/{step}/g/{k}": p.grad.numpy().copy() for k, p in model.named_parameters()})
        out.update({f"bn/{step}/state/{k}": v.detach().numpy().copy() for k, v in model.state_dict().items()})
    model.eval()
    out["bn/eval/x"] = rng.standard_normal((4, 1, 8, 8))
    out["bn/eval/logits"] = model(torch.tensor(out["bn/eval/x"])).detach().numpy()


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

    batch_norm_steps(out)
    OUT.parent.mkdir(exist_ok=True)
    np.savez(OUT, **out)
    print(f"wrote {OUT} ({len(out)} arrays, torch {torch.__version__})")


def safetensors_fixture():
    """tests/fixtures/torch_bn.safetensors, written by PyTorch's safetensors: a Linear and a
    BatchNorm1d with moved statistics (the batch count included), and the eval-mode output
    for a fixed input in torch_bn_expected.npz. It covers PyTorch -> minitl where CI has no torch."""
    from safetensors.torch import save_file
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    model.train()
    for _ in range(3):
        model(torch.randn(8, 4) * 2 + 1)
    model.eval()
    x = torch.linspace(-1, 1, 8).reshape(2, 4)
    save_file(model.state_dict(), str(OUT.parent / "torch_bn.safetensors"), metadata={"format": "pt"})
    np.savez(OUT.parent / "torch_bn_expected.npz", x=x.numpy(), y=model(x).detach().numpy())
    print(f"wrote {OUT.parent / 'torch_bn.safetensors'} (torch {torch.__version__})")


if __name__ == "__main__":
    safetensors_fixture()
    main()
