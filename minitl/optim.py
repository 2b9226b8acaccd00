"""SGD and Adam with PyTorch's update rules, parameter groups, and the freeze contract:
a parameter that does not require grad (or has no gradient) is never touched."""

import math

from minitl import backend
from minitl.autograd import Tensor


class Optimizer:
    """Holds parameter groups (dicts with "params" and their own hyperparameters)."""

    def __init__(self, params, defaults):
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = defaults
        self.param_groups = []
        seen = set()
        for group in groups:
            unknown = set(group) - set(defaults) - {"params"}
            if unknown:
                raise ValueError(f"{type(self).__name__}: unknown options {sorted(unknown)} in a parameter group; "
                                 f"allowed: {sorted(defaults)}")
            group = {**defaults, **group, "params": list(group["params"])}
            for p in group["params"]:
                if not isinstance(p, Tensor):
                    raise TypeError(f"{type(self).__name__}: expected tensors, got {type(p).__name__}")
                if id(p) in seen:
                    raise ValueError(f"{type(self).__name__}: a parameter appears in more than one group")
                seen.add(id(p))
            self.param_groups.append(group)
        self.state = {}  # id(param) -> dict of arrays and counters

    def _params(self):
        return [p for g in self.param_groups for p in g["params"]]

    def zero_grad(self):
        for p in self._params():
            p.grad = None

    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.requires_grad and p.grad is not None:  # frozen: bit-identical, whatever the state
                    self._update(p, p.grad, group, self._state_of(p))

    def _state_of(self, p):
        """p's state, on p's device: after `model.to(device)` the next step moves the state
        (momentum, Adam's moments) to where the parameter now is, once."""
        state = self.state.setdefault(id(p), {})
        for name, value in state.items():
            if hasattr(value, "shape") and backend.device_of(value) != p.device:
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
        groups = state_dict["param_groups"]
        sizes = [len(g["params"]) for g in self.param_groups]
        if [len(g["params"]) for g in groups] != sizes:
            raise ValueError(f"{type(self).__name__}.load_state_dict: the saved groups have "
                             f"{[len(g['params']) for g in groups]} parameters, this optimizer has {sizes}")
        params = self._params()
        for i, s in state_dict["state"].items():
            for name, v in s.items():
                if hasattr(v, "shape") and tuple(v.shape) != params[int(i)].shape:
                    raise ValueError(f"{type(self).__name__}.load_state_dict: state {name!r} of parameter {i} has "
                                     f"shape {tuple(v.shape)}, the parameter has {params[int(i)].shape}")
        for group, saved in zip(self.param_groups, groups):
            group.update({k: v for k, v in saved.items() if k != "params"})
        self.state = {id(params[int(i)]): {n: (backend.to_device(v, params[int(i)].device).copy()
                                               if hasattr(v, "shape") else v) for n, v in s.items()}
                      for i, s in state_dict["state"].items()}


class SGD(Optimizer):
    """p -= lr * d, where g = grad + weight_decay * p and, with momentum,
    buf = momentum * buf + g and d = buf (or g + momentum * buf with nesterov)."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}")
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov needs a momentum > 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov))

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

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"Adam: invalid lr={lr}, betas={betas}, eps={eps} or weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def _update(self, p, g, group, state):
        xp = backend.get_array_module(p.data)
        b1, b2 = group["betas"]
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p.data
        if not state:
            state.update(step=0, exp_avg=xp.zeros_like(p.data), exp_avg_sq=xp.zeros_like(p.data))
        state["step"] += 1
        t = state["step"]
        c1, c2 = 1 - b1 ** t, math.sqrt(1 - b2 ** t)
        _adam_update(p.data, g, state["exp_avg"], state["exp_avg_sq"], float(1 - b1), float(1 - b2),
                     float(group["lr"] * c2 / c1), float(group["eps"] * c2))
