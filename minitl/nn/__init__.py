"""minitl.nn: Module, Parameter and the layers, with PyTorch's names."""

from minitl.nn.layers import (
           AvgPool2d,
           BatchNorm1d,
           BatchNorm2d,
           Conv2d,
           CrossEntropyLoss,
           Dropout,
           Flatten,
           Linear,
           MaxPool2d,
           MSELoss,
           ReLU,
)
from minitl.nn.module import Module, Parameter, Sequential

__all__ = ["Module", "Parameter", "Sequential", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "ReLU",
           "Flatten", "Dropout", "BatchNorm1d", "BatchNorm2d", "CrossEntropyLoss", "MSELoss"]
