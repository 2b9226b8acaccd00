"""Transfer learning, as the seed describes it.

1. train a source model on the source task (`source_model`, cached on disk);
2. build the target model from it: a new head for the target classes
   (`replace_head`), everything else frozen (`freeze`), so only theta_y trains;
3. compute the frozen layers' features of the target data (`extract_features`), from the
   last layer or from any layer (`cut`: the seed's features are "a convolution layer's output");
4. keep them on disk with a manifest (`FeatureCache`: proxy collection);
5. train the head on those features (`proxy_train`), or on the images (`linear_probe`);
6. evaluate on the held-out target test set.

Fine-tuning every layer, and fine-tuning regularised towards the source model
(L = CE + lambda * R), are here too, so every method can be compared on one table.

The seed's section 3, read literally, computes features of the SOURCE data and trains the
head on (h_s, y_s). With the source labels such a head can only predict source classes: it
relearns the source task, and cannot classify a single target example. minitl therefore
trains the target head on target features (section 2's step 3, which section 3 repeats for
the cached variant). The literal reading is still useful, as a check: a head trained on the
cached source features with the source labels must recover the source model's own accuracy,
which shows the cache holds the backbone's real features (`check_cache_on_source_task`,
printed by `python -m minitl`). Where the article trains "until the accuracy is good enough",
minitl trains for a budget fixed in advance on development data (`BUDGETS`), so that no
number is tuned on the test set it reports.
"""

import copy
import functools
import hashlib
import json
import math
import os
import time
import types
from dataclasses import dataclass, field

from minitl import backend, nn
from minitl import functional as F
from minitl.autograd import no_grad
from minitl.checks import check_number, is_int, is_real, positive_int
from minitl.data import DataLoader, Split
from minitl.io import load, save
from minitl.optim import Adam
from minitl.tensors import Tensor
from minitl.training import SCHEDULES, accuracy, device_for_model, evaluating, fit

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
    return _one_output(trunk, data.target_pool.x, device_for_model(trunk, device)).shape[1]


def _one_output(trunk, x, device):
    """The trunk's output for the first example of x (eval mode, no graph): its shape and dtype."""
    with no_grad(), evaluating(trunk):
        return trunk(Tensor(backend.to_device(x[:1], device)))


# ---------------------------------------------------------------- extracting features

def extract_features(backbone, loader):
    """(features, labels) of every batch of loader, under no_grad and eval mode (raw arrays)."""
    feats, labels = [], []
    with no_grad(), evaluating(backbone):
        for x, y in loader:
            feats.append(backbone(x).data)
            labels.append(y.data)
    xp = backend.get_array_module(feats[0])
    return xp.concatenate(feats), xp.concatenate(labels)


def module_settings(module):
    """Every attribute of every submodule that its output may depend on, as text: what a layer's
    repr may not show (a user's Scale(2.0) without an extra_repr). Numbers, strings, dtypes and
    containers of them by value; arrays and tensors that are not registered (a user's
    `self.mean = mt.tensor(...)`) by a hash of their values; functions set on the instance (a
    replaced `forward`) by their code and what they close over. A change to a class's code, or to
    a global that forward reads, is not seen."""
    modes = ("training", "stats_frozen")  # left out: features are computed in eval mode
    lines = []
    for name, m in module.named_modules():
        registered = set(m._parameters) | set(m._buffers) | set(m._modules)  # in the repr and the weights hash
        settings = sorted((k, _setting(v)) for k, v in vars(m).items()
                          if not k.startswith("_") and k not in modes and k not in registered)
        settings += sorted((f"class {k}", _setting(v)) for k, v in _class_data(type(m)).items())
        lines.append(f"{name or '.'} {type(m).__module__}.{type(m).__qualname__} {settings}")
    return "\n".join(lines)


def _class_data(cls):
    """The data a layer's class holds (a user's `scale = 2.0` in the class body), not its methods."""
    data = {}
    for klass in reversed(cls.__mro__):
        if klass.__module__.startswith("minitl.") or klass is object:
            continue  # minitl's own classes keep their settings on the instance
        for k, v in vars(klass).items():
            if not k.startswith("_") and not callable(v) and not isinstance(v, (property, classmethod, staticmethod)):
                data[k] = v
    return data


def _setting(v, depth=0):
    """A value as text that changes when the value does (module_settings' rules)."""
    if depth > 8:  # a structure that contains itself
        return "..."
    if v is None or isinstance(v, (str, complex, type(backend.float32))) or backend.is_scalar(v):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return f"{type(v).__name__}[{', '.join(_setting(x, depth + 1) for x in v)}]"
    if isinstance(v, dict):
        items = sorted((repr(k), _setting(x, depth + 1)) for k, x in v.items())
        return "{" + ", ".join(f"{k}: {x}" for k, x in items) + "}"
    if isinstance(v, (set, frozenset)):
        return f"{type(v).__name__}{{{', '.join(sorted(_setting(x, depth + 1) for x in v))}}}"
    if isinstance(v, (bytes, bytearray)):
        return f"bytes {hashlib.sha256(v).hexdigest()[:16]}"
    if isinstance(v, type):  # a class or a dtype's type (np.float32)
        return f"type {v.__module__}.{v.__qualname__}"
    if isinstance(v, (slice, range)):
        return repr(v)
    if isinstance(v, memoryview):
        return f"bytes {hashlib.sha256(v.tobytes()).hexdigest()[:16]}"
    if isinstance(v, Tensor):
        v = v.data
    if hasattr(v, "mask") and backend.is_array(v):  # a masked array: its mask counts too
        return f"masked {_setting(backend.numpy_host.asarray(v), depth + 1)} {_setting(v.mask, depth + 1)}"
    if not backend.is_array(v) and (hasattr(v, "__dlpack__") or hasattr(v, "__array__")):
        try:  # another library's tensor (a PyTorch constant)
            v = backend.array_of(v)
        except TypeError:
            pass
    if backend.is_array(v):
        return f"array {v.dtype} {tuple(v.shape)} {_checksum(backend.to_host(v))[:16]}"
    if isinstance(v, (backend.numpy_host.random.Generator, backend.numpy_host.random.RandomState)):
        state = v.bit_generator.state if hasattr(v, "bit_generator") else v.get_state(legacy=False)
        return f"generator {_setting(state, depth + 1)}"
    if isinstance(v, nn.Module):  # a layer kept outside the registered children (in a list)
        return f"module {repr(v)} {weights_hash(v)}"
    if isinstance(v, functools.partial):
        return f"partial {_setting(v.func, depth + 1)} {_setting(v.args, depth + 1)} {_setting(v.keywords, depth + 1)}"
    code = getattr(v, "__code__", None)
    if code is not None:  # a function or a bound method: its code, defaults, closure and what it is bound to
        held = [c.cell_contents for c in (getattr(v, "__closure__", None) or ())]
        held += [getattr(v, "__defaults__", None), getattr(v, "__kwdefaults__", None)]
        bound = _setting(v.__self__, depth + 1) if hasattr(v, "__self__") else ""
        return f"function {v.__qualname__} {_code_digest(code)} {_setting(held, depth + 1)} {bound}"
    if isinstance(v, types.ModuleType):  # (what a built-in function is bound to: operator.add's is operator)
        return f"module {v.__name__}"
    if callable(v) and hasattr(v, "__self__"):  # a built-in function or method (operator.add, [1].count, rng.random)
        return f"builtin {getattr(v, '__module__', None)}.{v.__qualname__} {_setting(v.__self__, depth + 1)}"
    if hasattr(v, "__dict__"):  # a plain object, a namespace, a dataclass, a callable object: what it holds
        return f"<{type(v).__module__}.{type(v).__qualname__}> {_setting(vars(v), depth + 1)}"
    text = repr(v)  # the last resort: its repr, when that shows no memory address (torch.float32 does not)
    return text if " at 0x" not in text else f"<{type(v).__module__}.{type(v).__qualname__}>"


def _code_digest(code):
    """A hash of a function's bytecode, constants and the names it uses, nested functions included
    (a code object's repr holds its memory address, which changes every run)."""
    h = hashlib.sha256(code.co_code)
    h.update(repr(code.co_names).encode())  # the globals and attributes it uses: F.relu is not F.log_softmax
    for const in code.co_consts:
        h.update((_code_digest(const) if hasattr(const, "co_code") else repr(const)).encode())
    return h.hexdigest()[:16]


def weights_hash(module):
    """A short hash of every entry of the module's state dict (parameters and persistent
    buffers): name, dtype, shape and values."""
    h = hashlib.sha256()
    for name, value in module.state_dict().items():
        h.update(f"{name}{value.dtype}{tuple(value.shape)}".encode())
        h.update(backend.to_host(value).tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- the cache folder

def cache_dir(folder=None):
    """MINITL_CACHE (with ~ expanded, as PyTorch does for TORCH_HOME), else $XDG_CACHE_HOME/minitl, else
    ~/.cache/minitl; created and checked for writing, or a clear error."""
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    folder = os.path.expanduser(folder or os.environ.get("MINITL_CACHE") or os.path.join(xdg, "minitl"))
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise OSError(f"the cache folder {folder} cannot be written ({e.strerror or e}); "
                      f"set MINITL_CACHE to a writable folder") from None
    return folder


# ---------------------------------------------------------------- the source model

SOURCE_STEPS, SOURCE_LR, SOURCE_BATCH = 500, 2e-3, 64


def train_source(data, device=None, seed=0, steps=SOURCE_STEPS, norm=None):
    """Train a TransferCNN on the source task (Adam, a fixed number of steps); returns it."""
    with backend.fork_rng(seed):
        model = model_for(data, device, norm)
    opt = Adam(model.parameters(), lr=SOURCE_LR)
    loader = DataLoader(data.source_train.x, data.source_train.y, SOURCE_BATCH, shuffle=True, seed=seed,
                        device=device)
    fit(lambda x, y: F.cross_entropy(model(x), y), opt, loader, steps)
    return model


def source_model_path(data, seed=0, folder=None, norm=None, steps=SOURCE_STEPS, lr=SOURCE_LR, batch=SOURCE_BATCH):
    """Where the source model trained on this data, architecture and recipe (steps, lr, batch, seed) is
    kept: a different recipe is a different file, so a model trained another way is never mistaken
    for source_model's."""
    recipe = json.dumps([data.name, data.source_train.fingerprint(), architecture(data, norm), steps, lr, batch, seed])
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    return os.path.join(cache_dir(folder), f"source-{data.name}{'-' + norm if norm else ''}-{digest}.npz")


def source_model(data, device=None, seed=0, folder=None, log=print, norm=None, verbose=False):
    """The source model for `data`: loaded from the cache folder when a file for exactly this
    data, architecture and training recipe is there; trained and saved otherwise (seconds).
    verbose=True also says which file was loaded, and the model's source test accuracy."""
    path = source_model_path(data, seed, folder, norm)
    if os.path.exists(path):
        try:
            with backend.fork_rng(seed):  # the weights are about to be overwritten: no global draw either way
                model = model_for(data, device, norm)
            state = load(path)
            finite = backend.numpy_host.isfinite
            bad = [name for name, a in state.items() if a.dtype.kind == "f" and not finite(a).all()]
            if bad:  # a model with NaN weights would train every later run into NonFiniteLoss
                raise ValueError(f"{', '.join(bad)} in {path} hold NaN or infinite values")
            model.load_state_dict(state)
            if verbose:
                log(f"loaded the source model from {path} "
                    f"(source test accuracy {accuracy(model, data.source_test, device):.3f})")
            return model
        except ValueError as e:
            log(f"source model cache unusable ({e}); training again")
    start = time.perf_counter()
    model = train_source(data, device, seed, norm=norm)
    save(model.state_dict(), path)
    log(f"trained the source model on {data.name} in {time.perf_counter() - start:.1f} s "
        f"(source test accuracy {accuracy(model, data.source_test, device):.3f}); saved to {path}")
    return model


# ---------------------------------------------------------------- proxy collection

class FeatureCache:
    """Proxy collection: a frozen backbone's features of a dataset, computed once and kept on disk.

    Each file holds the features and a manifest keyed on everything that computes them: the
    backbone's structure and hyperparameters (its repr), its weights and buffers, the layer it
    ends at, a fingerprint of the data, the expected shape and dtype, the device that computes
    them (the CPU's and a GPU's features differ in the last digits) and the file format;
    plus a checksum of the stored feature bytes, verified on every read. A file whose manifest
    does not match is recomputed and says why; so is a truncated, damaged or tampered file.
    Files are written to a temporary name and renamed.
    """

    FORMAT = 5  # the manifest's layout: a file of another format is recomputed (5: the device, arrays and functions)
    _WHY = {"format": "an older file format", "module": "another backbone structure", "weights":
            "other backbone weights", "layer": "another layer", "data": "other data", "shape": "another feature shape",
            "dtype": "another dtype", "device": "another device (the CPU and a GPU round differently)"}

    def __init__(self, folder=None, log=print):
        self.folder = cache_dir(folder)
        self.log = log
        self.last = None  # "hit", "created" or "recomputed: why", for the caller to show

    def path(self, name):
        if not isinstance(name, str) or not name or os.sep in name or (os.altsep and os.altsep in name):
            raise ValueError(f"FeatureCache: a name must be a non-empty string without path separators, got {name!r}")
        return os.path.join(self.folder, f"features-{name}.npz")

    def key(self, backbone, split, layer, device):
        """What the features depend on. The output shape and dtype come from one example."""
        for name, m in backbone.named_modules():
            if isinstance(m, nn.layers._BatchNorm) and m.running_mean is None:
                raise ValueError(f"FeatureCache: {name or 'the backbone'} ({m!r}) has no running statistics "
                                 f"(track_running_stats=False, or running_mean set to None), so it normalises with "
                                 f"each batch's own, even in eval mode: its features depend on the batch they were "
                                 f"computed in, so they cannot be cached")
        probe = _one_output(backbone, split.x, device)
        return {"format": self.FORMAT, "module": repr(backbone) + "\n" + module_settings(backbone),
                "weights": weights_hash(backbone), "layer": layer, "data": split.fingerprint(),
                "shape": [len(split), *probe.shape[1:]], "dtype": str(probe.dtype), "device": device}

    def _read(self, path):
        """(manifest, features) of a cache file, or a ValueError saying why it cannot be used."""
        stored = load(path)
        if set(stored) != {"features", "manifest"}:
            raise ValueError(f"it holds {sorted(stored)}, not features and a manifest")
        try:
            found = json.loads(bytes(stored["manifest"]).decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"its manifest is not JSON ({e})") from None
        if not isinstance(found, dict):
            raise ValueError(f"its manifest is a JSON {type(found).__name__}, not an object")
        feats = stored["features"]
        if found.get("checksum") != _checksum(feats):
            raise ValueError("the features do not match their checksum")
        if [found.get("dtype"), found.get("shape")] != [str(feats.dtype), list(feats.shape)]:
            raise ValueError("the features do not match their manifest")
        return found, feats

    def features(self, backbone, split, name, layer="features", device=None, batch_size=512):
        """backbone's features of split.x (a host array), from disk when the manifest matches.
        The backbone runs where it is (`device`, if given, must be that device)."""
        if len(split) == 0:
            raise ValueError(f"FeatureCache.features: the split {name!r} is empty")
        device = device_for_model(backbone, device)
        key = self.key(backbone, split, layer, device)
        path, why = self.path(name), None
        if os.path.exists(path):
            try:
                found, feats = self._read(path)
            except ValueError as e:
                why = f"the file is unreadable ({e})"
            else:
                diff = [k for k in key if found.get(k) != key[k]]
                if not diff:
                    self.last = "hit"
                    return feats
                why = "it was made for " + " and ".join(self._WHY[k] for k in diff)
        loader = DataLoader(split.x, split.y, batch_size, device=device)
        feats = backend.to_host(extract_features(backbone, loader)[0])
        manifest = dict(key, checksum=_checksum(feats))
        save({"features": feats, "manifest": backend.numpy_host.frombuffer(json.dumps(manifest).encode(), "uint8")},
             path)
        self.last = "created" if why is None else f"recomputed: {why}"
        if why is not None:
            self.log(f"feature cache {path}: {why}; recomputed")
        return feats


def _checksum(array):
    """sha256 of an array's bytes, its dtype and its shape."""
    h = hashlib.sha256(f"{array.dtype}{array.shape}".encode())
    h.update(backend.numpy_host.ascontiguousarray(array).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- regularisers for L = CE + lambda * R

def feature_mse(features, source_features):
    """DELTA-style R: mean over batch and feature axes of (f_hat - f)^2, f from the frozen source backbone
    on the same batch (detached: the source is a fixed target). lambda ~ 0.1 is a moderate pull."""
    return F.mse_loss(features, source_features.detach())


def feature_mse_composed(features, source_features):
    return F.mse_loss_composed(features, source_features.detach())


class L2SP:
    """L2-SP: R = 1/2 sum ||w - w_source||^2 over a backbone's parameters, anchored where they
    are when this is created. A sum, not a mean: lambda ~ 1e-3 to 1e-2 suits a 30k-weight backbone."""

    def __init__(self, backbone):
        self.params = list(backbone.parameters())
        self.anchors = [p.data.copy() for p in self.params]

    def __call__(self):
        return F.l2sp_penalty(self.params, self.anchors)

    def composed(self):
        total = 0
        for p, a in zip(self.params, self.anchors):
            total = ((p - Tensor(a)) ** 2).sum() + total
        return total * 0.5


# ---------------------------------------------------------------- recipes

@dataclass
class Result:
    """What a recipe returns: test accuracy, the loss at every step, and wall time."""
    method: str
    accuracy: float
    losses: list
    seconds: float
    model: object = field(default=None, repr=False)


@dataclass(frozen=True)
class Budget:
    """A method's training budget, fixed in advance (chosen on a development draw, never on a test set).

    A run takes at least `steps` optimizer steps and at least `epochs` passes over its
    training set, and at most `max_steps` (so a large training set gets the passes it needs,
    a small one the steps it needs). `schedule="cosine"` decays the learning rates to zero
    over the run, so the last steps settle instead of hopping around the optimum.
    """
    steps: int = 200
    epochs: float = 0.0
    max_steps: int = 0        # 0: no more than `steps`
    batch_size: int = 32
    lr: float = 1e-3          # Adam, every layer when training from scratch
    head_lr: float = 1e-2     # Adam, a new head
    backbone_lr_scale: float = 0.1  # fine-tuning: the backbone moves 10x slower than the head
    schedule: str = "constant"

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            positive_int("Budget", name, getattr(self, name))
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Budget: schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not is_int(self.max_steps) or self.max_steps < 0:
            raise ValueError(f"Budget: max_steps must be an integer >= 0 (0: no more than steps), got "
                             f"{self.max_steps!r}")
        if 0 < self.max_steps < self.steps:  # steps_for would quietly run `steps`, past the cap
            raise ValueError(f"Budget: max_steps={self.max_steps} is below steps={self.steps}: a run takes at least "
                             f"`steps` and at most `max_steps` (0: no more than steps)")
        for name in ("steps", "batch_size", "max_steps"):  # np.int64(3) is welcome, and is kept as 3
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("epochs", "lr", "head_lr", "backbone_lr_scale"):
            check_number("Budget", name, getattr(self, name))

    def steps_for(self, n):
        """How many steps a run on n training examples takes."""
        n = positive_int("Budget.steps_for", "the number of training examples", n)
        passes = math.ceil(self.epochs * n / min(self.batch_size, n)) if self.epochs else 0
        return min(max(self.steps, passes), max(self.max_steps, self.steps))


def _loader(x, y, budget, seed, device, model):
    """The recipes' shuffled training batches. A batch of one has no variance to normalise with,
    so for a model whose BatchNorm uses each batch's statistics (a batch-norm TransferCNN being
    fine-tuned or trained from scratch) a last batch of one is left out, as PyTorch's drop_last
    does: 65 examples in batches of 32 train on 64 of them each epoch, a different one left out
    each time. Nothing else changes: every other run gives the same numbers as before."""
    batch = min(budget.batch_size, len(y))
    batch_norm = any(getattr(m, "uses_batch_stats", False) for m in model.modules())
    if batch_norm and batch == 1:
        raise ValueError(f"batch norm needs at least two examples a batch in training, but the budget's batches "
                         f"hold one (batch_size {budget.batch_size}, {len(y)} training examples)")
    return DataLoader(x, y, batch, shuffle=True, seed=seed, device=device, drop_last=batch_norm and len(y) % batch == 1)


def _fit(loss_fn, opt, model, x, y, budget, seed, device, callback):
    """fit() with the budget's steps for this training set and its schedule."""
    return fit(loss_fn, opt, _loader(x, y, budget, seed, device, model), budget.steps_for(len(y)), budget.schedule,
               callback)


def _check_labels(train, num_classes):
    if int(train.y.max()) >= num_classes or int(train.y.min()) < 0:
        raise ValueError(f"the training labels run from {int(train.y.min())} to {int(train.y.max())}, "
                         f"but the head has {num_classes} outputs")


def train_scratch(data, train, budget=Budget(), seed=0, device=None, norm=None, callback=None):
    """A new TransferCNN trained on the target examples alone: the baseline."""
    start = time.perf_counter()
    num_classes = len(data.target_classes)
    _check_labels(train, num_classes)
    c, h, _ = data.image_shape
    with backend.fork_rng(seed):
        model = TransferCNN(num_classes, in_channels=c, image_size=h, norm=norm, device=device)
    opt = Adam(model.parameters(), lr=budget.lr)
    losses = _fit(lambda x, y: F.cross_entropy(model(x), y), opt, model, train.x, train.y, budget, seed, device,
                  callback and (lambda step: callback(step, model)))
    return Result("scratch", accuracy(model, data.target_test, device), losses, time.perf_counter() - start, model)


def linear_probe(source, data, train, budget=Budget(), seed=0, device=None, callback=None, at=None):
    """The seed's "train only theta_y": the source backbone frozen (and in eval mode), a new head trained.
    With `at`, the backbone is cut there (see cut) and the head reads that layer's output."""
    start = time.perf_counter()
    device = device_for_model(source, device)
    num_classes = len(data.target_classes)
    _check_labels(train, num_classes)
    model = copy.deepcopy(source)
    if at is None:
        replace_head(model, num_classes, seed)
        freeze(model.features).eval()
        params = model.head.parameters()
    else:
        trunk = freeze(cut(model, at)).eval()
        model = nn.Sequential(trunk, new_head(output_size(trunk, data), num_classes, seed, device_for_model(trunk)))
        params = model[1].parameters()
    opt = Adam(params, lr=budget.head_lr)
    losses = _fit(lambda x, y: F.cross_entropy(model(x), y), opt, model, train.x, train.y, budget, seed, device,
                  callback and (lambda step: callback(step, model)))
    return Result("linear_probe", accuracy(model, data.target_test, device), losses, time.perf_counter() - start,
                  model)


def train_head(feats, labels, test_feats, test_labels, num_classes, budget=Budget(), seed=0, device=None):
    """A new linear head trained on features (host arrays) with the budget's head learning rate:
    (test accuracy, losses, head). What proxy training and the layer probes run."""
    head = new_head(feats.shape[1], num_classes, seed, device)
    opt = Adam(head.parameters(), lr=budget.head_lr)
    losses = _fit(lambda f, y: F.cross_entropy(head(f), y), opt, head, feats, labels, budget, seed, device, None)
    return accuracy(head, Split(test_feats, test_labels), device), losses, head


def proxy_train(source, data, train, cache, budget=Budget(), seed=0, device=None, name=None, at=None):
    """Proxy collection: the head trained on cached source features, never running the backbone in the loop.

    The same seed gives the same head and the same batches as linear_probe, so the
    two end with the same head weights (up to float rounding): it is the same
    computation, with the backbone's work read from disk. With `at`, the features are
    that layer's (see cut), cached under the cut's name.
    """
    start = time.perf_counter()
    device = device_for_model(source, device)
    num_classes = len(data.target_classes)
    _check_labels(train, num_classes)
    trunk = source.features if at is None else cut(source, at)
    layer = at or "features"
    tag = f"{data.name}-{layer}-{weights_hash(trunk)[:8]}"  # one file per backbone: no two thrash over a name
    feats, test_feats = cached_features(cache, trunk, tag, train, data.target_test, layer, device, name)
    acc, losses, head = train_head(feats, train.y, test_feats, data.target_test.y, num_classes, budget, seed, device)
    model = copy.deepcopy(source)
    if at is None:
        model.head = head
    else:
        model = nn.Sequential(cut(model, at), head)
    return Result("proxy", acc, losses, time.perf_counter() - start, model)


def cached_features(cache, trunk, tag, train, test, layer, device, name=None):
    """The trunk's features of a training split and a test split, through the cache: one file each,
    named by tag and the split's fingerprint (or `name` for the training split)."""
    feats = cache.features(trunk, train, name or f"{tag}-{train.fingerprint()}", layer=layer, device=device)
    test_feats = cache.features(trunk, test, f"{tag}-test-{test.fingerprint()}", layer=layer, device=device)
    return feats, test_feats


def check_cache_on_source_task(source, data, cache, budget=None, device=None):
    """The seed's section 3 read literally: features of the SOURCE data, a head trained on them with
    the source labels. That head can only relearn the source task, so as a transfer method it is
    useless; as a check it is exact: it must recover the source model's own accuracy, which shows
    that the cache holds the backbone's real features. Returns (head accuracy, source model accuracy)
    on the source test set."""
    budget = budget or budgets_for(data.name)["proxy"]
    tag = f"{data.name}-source-{weights_hash(source.features)[:8]}"
    feats, test = cached_features(cache, source.features, tag, data.source_train, data.source_test, "features",
                                   device)
    head_acc, _, _ = train_head(feats, data.source_train.y, test, data.source_test.y, len(data.source_classes),
                                budget, 0, device)
    return head_acc, accuracy(source, data.source_test, device)


REGULARIZERS = ("feature_mse", "l2sp")


def fine_tune(source, data, train, budget=Budget(), seed=0, device=None, regularizer=None, lam=None,
              callback=None):
    """Every layer trains, the backbone at budget.backbone_lr_scale times the head's rate.

    With a regulariser the loss is L = CE + lam * R: "feature_mse" pulls the backbone's
    features towards the frozen source backbone's on the same batch (lam default 0.1);
    "l2sp" pulls the backbone's weights towards the source weights (lam default 0.01).
    The defaults were chosen on glyphs generated with seed 1, a separate draw from the
    seed-0 data the comparison reports, and re-checked with the converged fine-tuning budget
    (benchmarks/budgets.py --lambdas): never on a test set that is reported.
    """
    if regularizer not in (None,) + REGULARIZERS:
        raise ValueError(f"unknown regularizer {regularizer!r}: choose None or one of {REGULARIZERS}")
    if lam is not None and regularizer is None:
        raise ValueError(f"fine_tune: lam={lam!r} was given without a regularizer: name one of {REGULARIZERS}")
    if lam is not None and not (is_real(lam) and math.isfinite(lam) and lam >= 0):
        raise ValueError(f"fine_tune: lam must be a finite number >= 0 (the weight of R in CE + lam * R), got {lam!r}")
    start = time.perf_counter()
    device = device_for_model(source, device)
    num_classes = len(data.target_classes)
    _check_labels(train, num_classes)
    model = unfreeze(replace_head(copy.deepcopy(source), num_classes, seed))
    opt = Adam([{"params": list(model.features.parameters()), "lr": budget.head_lr * budget.backbone_lr_scale},
                {"params": list(model.head.parameters())}], lr=budget.head_lr)
    if regularizer == "feature_mse":
        lam = 0.1 if lam is None else lam
        source_backbone = freeze(copy.deepcopy(source.features)).eval()

        def loss_fn(x, y):
            f = model.features(x)
            return F.cross_entropy(model.head(f), y) + lam * feature_mse(f, source_backbone(x))
    elif regularizer == "l2sp":
        lam = 0.01 if lam is None else lam
        penalty = L2SP(model.features)

        def loss_fn(x, y):
            return F.cross_entropy(model(x), y) + lam * penalty()
    else:
        def loss_fn(x, y):
            return F.cross_entropy(model(x), y)
    losses = _fit(loss_fn, opt, model, train.x, train.y, budget, seed, device,
                  callback and (lambda step: callback(step, model)))
    method = "fine_tune" if regularizer is None else f"fine_tune+{regularizer}"
    return Result(method, accuracy(model, data.target_test, device), losses, time.perf_counter() - start, model)


# Each method's budget, chosen on development data (minitl.data.development_data: the glyphs drawn
# with seed 1, half of the digits' target pool), never on a reported test set, so that every method
# has converged there: twice the steps changes neither its development accuracy nor its training
# loss much (benchmarks/budgets.py --check measures it; benchmarks/README.md has the numbers). All
# decay their learning rates with a cosine. Budgets differ by method: a head reading cached
# features costs microseconds a step, and the linear probe is the same computation, so it gets the
# same budget. The digits need more steps than their few examples would suggest (8x8 images, a
# small pool), so they have budgets of their own.
def _by_method(scratch, head, fine_tune):
    """One budget per method: the probe and the proxy share the head's, the fine-tunings theirs."""
    return {"scratch": scratch, "linear_probe": head, "proxy": head, "fine_tune": fine_tune,
            "fine_tune+feature_mse": fine_tune, "fine_tune+l2sp": fine_tune}


BUDGETS = _by_method(
    scratch=Budget(steps=200, epochs=25, max_steps=1000, lr=4e-3, schedule="cosine"),
    head=Budget(steps=400, epochs=50, max_steps=1600, head_lr=0.1, schedule="cosine"),
    fine_tune=Budget(steps=200, epochs=12, max_steps=800, head_lr=2e-2, schedule="cosine"))
DIGITS_BUDGETS = _by_method(
    scratch=Budget(steps=400, epochs=50, max_steps=1600, lr=4e-3, schedule="cosine"),
    head=Budget(steps=3200, head_lr=0.1, schedule="cosine"),
    fine_tune=Budget(steps=400, epochs=25, max_steps=1600, head_lr=2e-2, schedule="cosine"))


def budgets_for(dataset):
    """The budgets of a dataset's methods, by its name (the digits have their own)."""
    return DIGITS_BUDGETS if dataset.startswith("digits") else BUDGETS


# Every method by name, as the comparison table runs it: each entry takes (source, data, train,
# cache, budget, seed, device) and options (callback=f(step, model) every 50 steps, where the
# method has a model that runs on images) and returns a Result.
RECIPES = {
    "scratch": lambda source, data, train, cache, budget, seed, device, **options:
        train_scratch(data, train, budget, seed, device, norm=source.norm, **options),
    "linear_probe": lambda source, data, train, cache, budget, seed, device, **options:
        linear_probe(source, data, train, budget, seed, device, **options),
    "proxy": lambda source, data, train, cache, budget, seed, device, **options:
        proxy_train(source, data, train, cache, budget, seed, device),
    "fine_tune": lambda source, data, train, cache, budget, seed, device, **options:
        fine_tune(source, data, train, budget, seed, device, **options),
    "fine_tune+feature_mse": lambda source, data, train, cache, budget, seed, device, **options:
        fine_tune(source, data, train, budget, seed, device, regularizer="feature_mse", **options),
    "fine_tune+l2sp": lambda source, data, train, cache, budget, seed, device, **options:
        fine_tune(source, data, train, budget, seed, device, regularizer="l2sp", **options),
}
METHODS = tuple(RECIPES)


def run_method(method, source, data, train, cache, budget=Budget(), seed=0, device=None, **options):
    """One method by name, as the comparison table runs it."""
    if method not in RECIPES:
        raise ValueError(f"unknown method {method!r}: choose from {METHODS}")
    return RECIPES[method](source, data, train, cache, budget, seed, device, **options)


__all__ = ["TransferCNN", "model_for", "freeze", "unfreeze", "new_head", "replace_head", "extract_features",
           "weights_hash", "cache_dir", "train_source", "source_model_path", "source_model", "FeatureCache",
           "architecture",
           "feature_mse", "feature_mse_composed", "L2SP", "Budget", "Result", "train_scratch", "linear_probe",
           "proxy_train", "fine_tune", "run_method", "RECIPES", "METHODS", "REGULARIZERS", "NORMS", "cut", "cut_points",
           "output_size", "train_head", "cached_features", "BUDGETS", "DIGITS_BUDGETS", "budgets_for",
           "check_cache_on_source_task"]
