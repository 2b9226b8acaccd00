"""minitl: a small deep-learning engine on NumPy and CuPy, written to be read,
that teaches transfer learning end to end. The API follows PyTorch's names."""

# tensors first: the ops and the backward pass are built on Tensor (see the end of minitl/tensors.py)
from minitl.tensors import Tensor, empty, manual_seed, ones, tensor, zeros  # isort: skip

from minitl import data, functional, nn, optim, training, transfer
from minitl.autograd import Function, is_grad_enabled, no_grad
from minitl.backend import float32, float64, int64
from minitl.gradcheck import GradcheckError, gradcheck
from minitl.io import load, save

__version__ = "0.1.0"

__all__ = ["Tensor", "Function", "tensor", "zeros", "ones", "empty", "no_grad", "is_grad_enabled", "manual_seed",
           "gradcheck", "GradcheckError", "save", "load", "float32", "float64", "int64",
           "functional", "nn", "optim", "data", "training", "transfer"]
