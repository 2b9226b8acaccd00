"""Parameter, Module and Sequential: PyTorch's names and habits."""

from collections import OrderedDict
from collections.abc import Mapping

from minitl import backend
from minitl.tensors import Tensor, would_overflow


class Parameter(Tensor):
    """A tensor that a Module owns and an optimizer trains; requires grad unless frozen."""

    __slots__ = ()

    def __init__(self, data, requires_grad=True):
        super().__init__(data.data if isinstance(data, Tensor) else data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


def _named(module, e):
    """e, its message prefixed with the layer that raised it (the layer's repr; a container's class
    name, as its repr spans many lines)."""
    name = repr(module) if not module._modules else f"{type(module).__name__}(...)"
    try:
        named = type(e)(f"{name}: {e}")
    except TypeError:  # an exception class that takes other arguments (NumPy's casting errors)
        named = (ValueError if isinstance(e, ValueError) else TypeError)(f"{name}: {e}")
    named.minitl_layer = name
    return named


class Module:
    """Base class of every layer and model.

    Assigning a Parameter or a Module as an attribute registers it, so
    `named_parameters()` finds it under a dotted name like `features.0.weight`.
    Buffers (`register_buffer`) are state that is not trained, such as BatchNorm's
    running statistics: persistent ones are saved in the state dict and all move with
    `to(device)`.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                 f"before assigning {name!r}")
        params, modules, buffers = self._parameters, self._modules, self._buffers
        # As in PyTorch: a name that is already registered keeps its place (a Sequential's order,
        # the state dict's), also through None; a parameter or child slot takes only its own kind.
        if isinstance(value, (Parameter, Module)):
            home = params if isinstance(value, Parameter) else modules
            for slots in (params, modules, buffers):  # a name is in one kind of slot at a time
                if slots is not home:
                    slots.pop(name, None)
            self._non_persistent.discard(name)
            home[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(f"cannot assign a {type(value).__name__} as parameter {name!r} of "
                                f"{type(self).__name__} (a Parameter or None expected): it would not be trained "
                                f"or saved; wrap it in nn.Parameter(...)")
            params[name] = None
        elif name in modules:
            if value is not None:
                raise TypeError(f"cannot assign a {type(value).__name__} as child module {name!r} of "
                                f"{type(self).__name__} (a Module or None expected)")
            modules[name] = None
        elif name in buffers:  # assigning to a buffer replaces its tensor, it stays a buffer
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"{type(self).__name__}.{name} is a buffer: assign a Tensor or None, "
                                f"not a {type(value).__name__}")
            buffers[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._parameters.pop(name, None)
        self._buffers.pop(name, None)
        self._non_persistent.discard(name)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name, tensor, persistent=True):
        """Add a buffer: a tensor (or an array, or None) that is module state but not a parameter.
        Persistent buffers are in the state dict under the module's dotted name."""
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"register_buffer: the name must be a non-empty string without '.', got {name!r}")
        if name in self._parameters or name in self._modules or (hasattr(self, name) and name not in self._buffers):
            raise KeyError(f"register_buffer: {type(self).__name__} already has an attribute {name!r}")
        if tensor is not None and not isinstance(tensor, Tensor):
            if not backend.is_array(tensor):
                raise TypeError(f"register_buffer: {name!r} must be a Tensor, an array or None, "
                                f"not a {type(tensor).__name__}")
            tensor = Tensor(tensor)
        if tensor is not None and tensor.requires_grad:
            raise ValueError(f"register_buffer: {name!r} requires grad; a trained tensor is a Parameter")
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)
        object.__setattr__(self, name, tensor)

    def forward(self, *args):
        raise TypeError(f"{type(self).__name__} must define forward")

    def __call__(self, *args, **kwargs):
        try:
            return self.forward(*args, **kwargs)
        except (ValueError, TypeError) as e:
            if getattr(e, "minitl_layer", None) is not None:  # named already, by the layer inside this one
                raise
            raise _named(self, e).with_traceback(e.__traceback__) from None  # still shows where it was raised

    # ---- walking the tree
    def named_children(self):
        return ((name, m) for name, m in self._modules.items() if m is not None)

    def children(self):
        return (m for _, m in self.named_children())

    def named_modules(self, prefix="", memo=None):
        """(dotted name, module) of this module and every one inside, each once (a module that
        holds itself, or one reached twice, is not walked again), as in PyTorch."""
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:  # a slot set to None (as in PyTorch)
                yield from child.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_parameters(self, prefix=""):
        """(dotted name, Parameter) pairs in registration order, each parameter once."""
        seen = set()
        for module_name, module in self.named_modules(prefix):
            for name, p in module._parameters.items():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{module_name}.{name}" if module_name else name), p

    def parameters(self):
        return (p for _, p in self.named_parameters())

    def named_buffers(self, prefix=""):
        """(dotted name, Tensor) pairs of every buffer that is not None, in registration order."""
        for module_name, module in self.named_modules(prefix):
            for name, b in module._buffers.items():
                if b is not None:
                    yield (f"{module_name}.{name}" if module_name else name), b

    def buffers(self):
        return (b for _, b in self.named_buffers())

    def _state_tensors(self):
        """(name, tensor) of everything the state dict holds: per module, its parameters, then its
        persistent buffers (PyTorch's order and keys)."""
        seen = set()
        for module_name, module in self.named_modules():
            entries = [(n, p) for n, p in module._parameters.items() if p is not None] + \
                      [(n, b) for n, b in module._buffers.items() if b is not None and n not in module._non_persistent]
            for name, t in entries:
                if id(t) not in seen:
                    seen.add(id(t))
                    yield (f"{module_name}.{name}" if module_name else name), t

    # ---- modes and devices
    def train(self, mode=True):
        """Training mode (dropout active); returns self."""
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        """Inference mode (dropout off); returns self."""
        return self.train(False)

    def requires_grad_(self, flag=True):
        """Freeze (False) or unfreeze (True) every parameter; returns self."""
        for p in self.parameters():
            p.requires_grad = flag
        return self

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def to(self, device):
        """Move every parameter (and its gradient) and every buffer to a device, in place; returns self.
        device=None leaves the module where it is."""
        if device is None:
            return self
        device = backend.check_device(device)
        for p in list(self.parameters()) + list(self.buffers()):
            if p.device != device:
                p.data = backend.to_device(p.data, device)
                p.bump_version()
            if p.grad is not None:
                p.grad = backend.to_device(p.grad, device)
        return self

    # ---- state
    def state_dict(self):
        """name -> a copy of the array of every parameter (frozen ones included) and persistent
        buffer, on the module's device."""
        return OrderedDict((name, t.data.copy()) for name, t in self._state_tensors())

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters and persistent buffers. Every key, shape and value is
        checked first (each value must be an array or tensor of real numbers, integers or bools),
        so a failed load changes nothing. Values may be another library's tensors: a PyTorch
        state dict loads as it is (through DLPack, or __array__). Returns (missing keys,
        unexpected keys)."""
        where = f"load_state_dict into {type(self).__name__}"
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"{where}: expected a dict of name -> array, got {type(state_dict).__name__}")
        own = OrderedDict(self._state_tensors())
        # PyTorch checkpoints from before BatchNorm counted its batches have no num_batches_tracked: PyTorch
        # loads them, and so does minitl (the count keeps its value).
        missing = [k for k in own if k not in state_dict and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in state_dict if k not in own]
        problems, values = [], {}
        if strict and missing:
            problems.append(f"missing keys {missing}")
        if strict and unexpected:
            problems.append(f"unexpected keys {unexpected}")
        for name, p in own.items():
            if name not in state_dict:
                continue
            value = state_dict[name]
            value = value.data if isinstance(value, Tensor) else value
            try:
                value = backend.array_of(value)  # a PyTorch tensor: through DLPack
            except TypeError as e:
                problems.append(f"{name}: {e}")
                continue
            if backend.is_scalar(value) and not isinstance(value, (bool, int, float)) and p.shape == ():
                value = backend.numpy_host.asarray(value)  # a NumPy scalar for a 0-d entry (a batch count)
            if not backend.is_array(value) or backend.is_scalar(value):
                problems.append(f"{name}: a {type(value).__name__}, not an array")
            elif value.dtype.kind not in "biuf":
                problems.append(f"{name}: {value.dtype} values, not real numbers")
            elif backend.is_integer(p.dtype) and value.dtype.kind == "f":
                problems.append(f"{name}: {value.dtype} values for an integer entry ({p.dtype}): would be truncated")
            elif backend.is_integer(p.dtype) and value.size and not _fits(value, p.dtype):
                problems.append(f"{name}: values from {int(value.min())} to {int(value.max())} do not fit its "
                                f"{p.dtype} (they would wrap around)")
            elif tuple(value.shape) != p.shape:
                problems.append(f"{name}: shape {tuple(value.shape)} in the state dict, {p.shape} in the model")
            elif p.dtype.kind == "f" and would_overflow(value, p.dtype):
                problems.append(f"{name}: values as large as {float(abs(value).max()):.3g} do not fit its {p.dtype} "
                                f"(they would become inf)")
            else:
                values[name] = value
        for prefix, module in self.named_modules():  # what a layer knows is wrong (a negative variance)
            check = getattr(module, "check_state", None)
            if check is not None:
                problems += check({k[len(prefix) + 1:] if prefix else k: v for k, v in values.items()
                                   if not prefix or k.startswith(prefix + ".")}, prefix)
        if problems:
            raise ValueError(f"{where}: " + "; ".join(problems))
        for name, value in values.items():
            p = own[name]
            p.data = backend.to_device(value, p.device).astype(p.dtype, copy=True)
            p.bump_version()
        return missing, unexpected

    # ---- printing
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        if not self._modules:
            return lines[0] + ")"
        for name, child in self._modules.items():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return "\n".join(lines) + "\n)"


def _fits(value, dtype):
    """Whether every integer (or bool) in value is exactly representable in the integer dtype."""
    info = backend.numpy_host.iinfo(dtype)
    return info.min <= int(value.min()) and int(value.max()) <= info.max


class Sequential(Module):
    """Modules applied in order; children are named "0", "1", ... as in PyTorch."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], Mapping):  # Sequential(OrderedDict(name=module)), as PyTorch
            named = list(modules[0].items())
        else:
            named = [(str(i), m) for i, m in enumerate(modules)]
        for name, m in named:
            if not isinstance(m, Module):  # setattr would keep it as a plain attribute, skipped by forward
                raise TypeError(f"Sequential: {name!r} is a {type(m).__name__}, not a Module")
            setattr(self, name, m)

    def forward(self, x):
        for name, m in self._modules.items():
            if m is None:
                raise TypeError(f"Sequential: child {name!r} is None; put a module there before calling it")
            x = m(x)
        return x

    def __getitem__(self, index):
        items = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*items[index])
        return items[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        if not isinstance(module, Module):  # setattr would keep a non-module as a plain attribute, unused
            raise TypeError(f"Sequential.append: {module!r} is a {type(module).__name__}, not a Module")
        setattr(self, str(len(self)), module)
        return self
