"""SGD and Adam with PyTorch's update rules, parameter groups, and the freeze contract:
a parameter that does not require grad (or has no gradient) is never touched."""

import math

from minitl import backend
from minitl.checks import check_number, is_int
from minitl.tensors import Tensor, would_overflow


def _options(group):
    """A group's options with their types: nesterov=1 is not the True it replaced, np.float64(0.1) not 0.1."""
    return tuple((k, type(v), v) for k, v in group.items() if k != "params")


def _describe(value):
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        kind = f"{type(value).__module__.split('.')[0]} {type(value).__name__}"
        return f"a {kind} of shape {tuple(value.shape)} ({value.dtype})"
    return f"a {type(value).__name__}"


class Optimizer:
    """Holds parameter groups (dicts with "params" and their own hyperparameters).

    Every group is checked once the defaults are merged into it, so a bad learning rate in
    one group is an error at construction, never a diverging run.
    """

    def __init__(self, params, defaults):
        name = type(self).__name__
        if isinstance(params, (Tensor, dict)) or not hasattr(params, "__iter__"):
            raise TypeError(f"{name}: params must be an iterable of tensors or of dicts (parameter groups), "
                            f"got a {type(params).__name__}")
        params = list(params)
        if not params:
            raise ValueError(f"{name}: got an empty parameter list")
        kinds = {isinstance(p, dict) for p in params}
        if len(kinds) > 1:
            raise TypeError(f"{name}: params mixes parameter groups (dicts) with bare tensors; "
                            f"give one kind or the other")
        groups = params if kinds == {True} else [{"params": params}]
        self.defaults = defaults
        self.param_groups = []
        seen = set()
        for i, group in enumerate(groups):
            where = f"{name}: parameter group {i}" if len(groups) > 1 else name
            if "params" not in group:
                raise ValueError(f"{where} has no 'params'")
            unknown = set(group) - set(defaults) - {"params"}
            if unknown:
                raise ValueError(f"{where}: unknown options {sorted(unknown)}; allowed: {sorted(defaults)}")
            ps = group["params"]
            ps = [ps] if isinstance(ps, Tensor) else list(ps)
            if not ps:
                raise ValueError(f"{where} has no parameters")
            group = {**defaults, **group, "params": ps}
            self.check_group(group, where)
            for p in ps:
                if not isinstance(p, Tensor):
                    raise TypeError(f"{where}: expected tensors, got {type(p).__name__}")
                if id(p) in seen:
                    raise ValueError(f"{where}: a parameter (shape {p.shape}) is given twice; each may appear once, "
                                     f"in one group")
                seen.add(id(p))
            self.param_groups.append(group)
        self.state = {}  # id(param) -> dict of arrays and counters
        self._checked = {}  # id(group) -> its options when last checked (step checks them again when they change)

    def check_group(self, group, where):
        """Each optimizer checks its own hyperparameters."""

    def _params(self):
        return [p for g in self.param_groups for p in g["params"]]

    def zero_grad(self):
        for p in self._params():
            p.grad = None

    def step(self):
        for i, group in enumerate(self.param_groups):  # a schedule may have edited a group since its last check
            options = _options(group)
            if self._checked.get(id(group)) != options:  # (a cheap comparison; the full check only on a change)
                self.check_group(group, f"{type(self).__name__}.step: parameter group {i}")
                self._checked[id(group)] = _options(group)
        todo = [(p, group) for group in self.param_groups for p in group["params"]
                if p.requires_grad and p.grad is not None]  # frozen: bit-identical, whatever the state
        for p, _ in todo:  # all checked before any parameter moves
            g = p.grad
            if type(g) is not type(p.data) or g.shape != p.data.shape or g.dtype != p.data.dtype:
                raise TypeError(f"{type(self).__name__}.step: a parameter of shape {p.shape} ({p.dtype}) has a .grad "
                                f"that is {_describe(g)}; a gradient is an array of the parameter's shape, dtype and "
                                f"device (assign tensor.data, not a Tensor)")
        for p, group in todo:
            self._update(p, p.grad, group, self._state_of(p))
            p.bump_version()  # a graph that saved p's old values can no longer backward

    def _state_of(self, p):
        """p's state, on p's device: after `model.to(device)` the next step moves the state
        (momentum, Adam's moments) to where the parameter now is, once."""
        state = self.state.setdefault(id(p), {})
        for name, value in state.items():  # (an array of p's own type is on p's device: no closer look)
            if type(value) is not type(p.data) and hasattr(value, "shape") and backend.device_of(value) != p.device:
                state[name] = backend.to_device(value, p.device)
        return state

    def state_dict(self):
        """Hyperparameters per group, and per-parameter state keyed by position (host arrays)."""
        index = {id(p): i for i, p in enumerate(self._params())}
        state = {index[k]: {n: (backend.to_host(v).copy() if hasattr(v, "shape") else v) for n, v in s.items()}
                 for k, s in self.state.items() if k in index}
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [index[id(p)] for p in g["params"]]}
                  for g in self.param_groups]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Take the hyperparameters and per-parameter state of state_dict() from an optimizer of the same
        kind over parameters of the same shapes. Everything is checked before anything changes."""
        where = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict) or not isinstance(state_dict.get("state"), dict) \
                or not isinstance(state_dict.get("param_groups"), list):
            raise ValueError(f"{where}: expected a dict with 'state' (a dict) and 'param_groups' (a list), "
                             f"as state_dict() returns")
        groups = state_dict["param_groups"]
        if not all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups):
            raise ValueError(f"{where}: every parameter group must be a dict with a list of 'params'")
        sizes = [len(g["params"]) for g in self.param_groups]
        if [len(g["params"]) for g in groups] != sizes:
            raise ValueError(f"{where}: the saved groups have {[len(g['params']) for g in groups]} parameters, "
                             f"this optimizer has {sizes}")
        params = self._params()
        for i, s in state_dict["state"].items():
            if not (isinstance(i, int) or (isinstance(i, str) and i.isdigit())) or not 0 <= int(i) < len(params):
                raise ValueError(f"{where}: state for parameter {i!r}, but there are {len(params)} parameters")
            if not isinstance(s, dict) or set(s) != set(self.STATE_KEYS):
                keys = sorted(s) if isinstance(s, dict) else type(s).__name__
                raise ValueError(f"{where}: parameter {i} has state {keys}, a {type(self).__name__} keeps "
                                 f"{sorted(self.STATE_KEYS)} (is it another optimizer's state?)")
            for name, v in s.items():
                if name == "step":
                    if not is_int(v) or v < 0:
                        raise ValueError(f"{where}: parameter {i} has step {v!r}, expected an integer >= 0")
                elif not backend.is_array(v) or backend.is_scalar(v):
                    raise ValueError(f"{where}: state {name!r} of parameter {i} is a {type(v).__name__}, not an "
                                     f"array (a tensor's .data)")
                elif tuple(v.shape) != params[int(i)].shape:
                    raise ValueError(f"{where}: state {name!r} of parameter {i} has shape "
                                     f"{tuple(getattr(v, 'shape', ()))}, the parameter has {params[int(i)].shape}")
                elif v.dtype.kind != "f" or not bool(backend.get_array_module(v).isfinite(v).all()):
                    raise ValueError(f"{where}: state {name!r} of parameter {i} must be finite floating-point "
                                     f"values, got {v.dtype}{'' if v.dtype.kind != 'f' else ' with NaN or infinity'}")
                elif would_overflow(v, params[int(i)].dtype):
                    raise ValueError(f"{where}: state {name!r} of parameter {i} has values as large as "
                                     f"{float(abs(v).max()):.3g}, which do not fit its {params[int(i)].dtype} "
                                     f"(they would become inf)")
                elif name == "exp_avg_sq" and bool((v < 0).any()):
                    raise ValueError(f"{where}: state 'exp_avg_sq' of parameter {i} has negative values: a mean of "
                                     f"squares cannot be negative (the weights would become NaN)")
        for i, (group, saved) in enumerate(zip(self.param_groups, groups)):
            unknown = set(saved) - set(self.defaults) - {"params"}
            if unknown:
                raise ValueError(f"{where}: parameter group {i} has options {sorted(unknown)} that a "
                                 f"{type(self).__name__} does not take")
            merged = {**group, **{k: v for k, v in saved.items() if k != "params"}}
            self.check_group(merged, f"{where}: parameter group {i}")
        for group, saved in zip(self.param_groups, groups):
            group.update({k: v for k, v in saved.items() if k != "params"})
        # state takes its parameter's device and dtype (float64 state would make a float32 step float64), as in PyTorch
        self.state = {id(p): {n: (int(v) if n == "step" else backend.to_device(v, p.device).astype(p.dtype, copy=True))
                              for n, v in s.items()}
                      for p, s in ((params[int(i)], s) for i, s in state_dict["state"].items())}


class SGD(Optimizer):
    """p -= lr * d, where g = grad + weight_decay * p and, with momentum,
    buf = momentum * buf + g and d = buf (or g + momentum * buf with nesterov)."""

    STATE_KEYS = ("momentum_buffer",)

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov))

    def check_group(self, group, where):
        check_number(where, "learning rate", group["lr"])
        check_number(where, "momentum value", group["momentum"])
        check_number(where, "weight_decay value", group["weight_decay"])
        for k in ("lr", "momentum", "weight_decay"):  # a NumPy float64 would make float32 state float64
            group[k] = float(group[k])
        if not isinstance(group["nesterov"], bool):
            raise TypeError(f"{where}: nesterov must be True or False, got {group['nesterov']!r}")
        if group["nesterov"] and group["momentum"] == 0:
            raise ValueError(f"{where}: Nesterov momentum requires a momentum > 0")

    def _update(self, p, g, group, state):
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p.data
        if group["momentum"]:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = g.copy()  # PyTorch starts the buffer at the first gradient
            else:
                buf = state["momentum_buffer"]
                buf *= group["momentum"]
                buf += g
            buf = state["momentum_buffer"]
            g = g + group["momentum"] * buf if group["nesterov"] else buf
        p.data -= group["lr"] * g


@backend.fuse
def _adam_update(p, g, m, v, one_minus_b1, one_minus_b2, step_size, eps_hat):
    """Adam's update of one parameter, in place: one fused kernel on the GPU (see backend.fuse)."""
    m += one_minus_b1 * (g - m)          # m = b1 m + (1 - b1) g
    v += one_minus_b2 * (g * g - v)      # v = b2 v + (1 - b2) g^2
    p -= step_size * m / (v ** 0.5 + eps_hat)


class Adam(Optimizer):
    """m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps),
    with g = grad + weight_decay * p (L2 penalty, as torch.optim.Adam).

    The update is written as p -= lr sqrt(c2)/c1 * m / (sqrt(v) + eps sqrt(c2)) with c1 = 1-b1^t,
    c2 = 1-b2^t: the same number, with the bias corrections folded into two scalars.
    """

    STATE_KEYS = ("step", "exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def check_group(self, group, where):
        check_number(where, "learning rate", group["lr"])
        check_number(where, "epsilon value", group["eps"])
        check_number(where, "weight_decay value", group["weight_decay"])
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{where}: betas must be a pair (beta1, beta2), got {betas!r}")
        for i, b in enumerate(betas):
            check_number(where, f"beta parameter at index {i}", b, high=1)
        group["betas"] = tuple(float(b) for b in betas)
        for k in ("lr", "eps", "weight_decay"):  # a NumPy float64 would make float32 state float64
            group[k] = float(group[k])

    def _update(self, p, g, group, state):
        xp = backend.get_array_module(p.data)
        b1, b2 = group["betas"]
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p.data
        if not state:
            state.update(step=0, exp_avg=xp.zeros_like(p.data), exp_avg_sq=xp.zeros_like(p.data))
        state["step"] += 1
        t = state["step"]
        c1, root_c2 = 1 - b1 ** t, math.sqrt(1 - b2 ** t)
        _adam_update(p.data, g, state["exp_avg"], state["exp_avg_sq"], float(1 - b1), float(1 - b2),
                     float(group["lr"] * root_c2 / c1), float(group["eps"] * root_c2))
