"""The transfer model (TransferCNN), freezing, a new head, and cutting a model at any layer."""

from minitl import backend, nn
from minitl.autograd import no_grad
from minitl.checks import positive_int
from minitl.tensors import Tensor
from minitl.training import device_for_model, evaluating

# ---------------------------------------------------------------- the model


NORMS = (None, "batch")


class TransferCNN(nn.Module):
    """conv-relu-pool, conv-relu-pool, linear-relu (`features`), then `head`, the last Linear.

    `features` is everything but the last layer; `head` is the seed's theta_y. With
    norm="batch" every block is conv-BatchNorm-relu (and linear-BatchNorm-relu), the way the
    backbones a learner meets next are built; the default has no normalisation.
    """

    def __init__(self, num_classes, in_channels=1, image_size=16, width=16, hidden=64, norm=None, device=None):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"TransferCNN: norm must be one of {NORMS}, got {norm!r}")
        num_classes, in_channels, image_size, width, hidden = (
            positive_int("TransferCNN", name, value) for name, value in (
                ("num_classes", num_classes), ("in_channels", in_channels), ("image_size", image_size),
                ("width", width), ("hidden", hidden)))
        if image_size % 4:
            raise ValueError(f"TransferCNN: image_size must be a multiple of 4 (two 2x2 poolings), got {image_size}")
        self.norm = norm
        flat = 2 * width * (image_size // 4) ** 2
        batch = norm == "batch"

        def conv_block(cin, cout):  # with batch norm a conv needs no bias: the norm's own bias follows
            conv = nn.Conv2d(cin, cout, 3, padding=1, bias=not batch, device=device)
            return [conv, nn.BatchNorm2d(cout, device=device)] if batch else [conv]

        self.features = nn.Sequential(
            *conv_block(in_channels, width), nn.ReLU(), nn.MaxPool2d(2),
            *conv_block(width, 2 * width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(flat, hidden, bias=not batch, device=device),
            *([nn.BatchNorm1d(hidden, device=device)] if batch else []), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes, device=device)

    def forward(self, x):
        return self.head(self.features(x))


def architecture(data, norm=None):
    """What model_for(data, norm=norm) builds, as plain values (names the source model's file)."""
    c, h, _ = data.image_shape
    return {"model": "TransferCNN", "num_classes": len(data.source_classes), "in_channels": c, "image_size": h,
            "width": 16, "hidden": 64, "norm": norm}


def model_for(data, device=None, norm=None):
    """A TransferCNN sized for a dataset's images and source classes."""
    a = architecture(data, norm)
    return TransferCNN(a["num_classes"], in_channels=a["in_channels"], image_size=a["image_size"], width=a["width"],
                       hidden=a["hidden"], norm=norm, device=device)


# ---------------------------------------------------------------- freezing and the head

def freeze(module):
    """Freeze parameters and statistics together; returns the module.

    No gradient, no graph, no optimizer update for any parameter, and every BatchNorm
    inside normalises with its running statistics and never updates them, even after a
    later model.train() (what Keras gives a layer with trainable = False). Note that
    requires_grad_(False) alone, as in PyTorch, leaves the statistics moving in train mode.
    """
    module.requires_grad_(False)
    for m in module.modules():
        if hasattr(m, "freeze_statistics"):
            m.freeze_statistics(True)
    return module


def unfreeze(module):
    """Undo freeze: every parameter of the module trains again (whatever it was before freeze), and
    BatchNorm statistics follow train/eval mode again."""
    module.requires_grad_(True)
    for m in module.modules():
        if hasattr(m, "freeze_statistics"):
            m.freeze_statistics(False)
    return module


def new_head(in_features, num_classes, seed, device=None):
    """A freshly initialised Linear; the same seed always gives the same head (drawn from a private
    generator: the global one is not touched)."""
    with backend.fork_rng(seed):
        return nn.Linear(in_features, num_classes, device=device)


def replace_head(model, num_classes, seed=0):
    """The seed's "crop the source output layer": a new random `head` with num_classes outputs."""
    device = model.head.weight.device
    model.head = new_head(model.head.in_features, num_classes, seed, device)
    return model


# ---------------------------------------------------------------- cutting a model at any layer

def cut_points(model):
    """Where a TransferCNN's features can be read: "input" (the raw pixels), then the end of every
    stage of its backbone (a conv or linear layer with its normalisation and ReLU, a pooling),
    named as in named_modules(). The last one is the whole backbone."""
    names = ["input"]
    for name, m in model.features.named_children():
        if isinstance(m, (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d)):
            names.append(f"features.{name}")
    return names


def cut(model, at):
    """The model's backbone up to and including the module named `at` (a name from cut_points, or
    any `features.i`), ending in a flatten: a trunk whose output a linear head can read. It shares
    its modules with the model (freeze it to keep them still). "input" is a flatten alone."""
    if at == "input":
        return nn.Sequential(nn.Flatten())
    names = [f"features.{name}" for name, _ in model.features.named_children()]
    if at not in names:
        raise ValueError(f"cut: {at!r} is not a module of the backbone; choose one of {['input'] + names}")
    modules = list(model.features)[:names.index(at) + 1]
    if not any(isinstance(m, nn.Flatten) for m in modules):
        modules.append(nn.Flatten())
    return nn.Sequential(*modules)


def output_size(trunk, data, device=None):
    """How many features the trunk gives per example of this dataset (one example runs through it)."""
    return output_of_one(trunk, data.target_pool.x, device_for_model(trunk, device)).shape[1]


def output_of_one(trunk, x, device):
    """The trunk's output for the first example of x (eval mode, no graph): its shape and dtype."""
    with no_grad(), evaluating(trunk):
        return trunk(Tensor(backend.to_device(x[:1], device)))
