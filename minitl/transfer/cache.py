"""Proxy collection: the frozen layers' features of the target data, computed once and kept
on disk with a manifest (FeatureCache), keyed on everything that changes them (module_settings)."""

import functools
import hashlib
import json
import os
import types

from minitl import backend, nn
from minitl.autograd import no_grad
from minitl.data import DataLoader
from minitl.io import load, save
from minitl.tensors import Tensor
from minitl.training import device_for_model, evaluating
from minitl.transfer.models import output_of_one

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
        probe = output_of_one(backbone, split.x, device)
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
