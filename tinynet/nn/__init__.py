"""Layers, containers and losses, named as in torch.nn."""

from .activation import ReLU, Sigmoid, Tanh
from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .conv import Conv2d, Conv3d
from .dropout import Dropout
from .flatten import Flatten
from .linear import Linear
from .loss import CrossEntropyLoss, MSELoss
from .module import Module, Parameter, Sequential

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "Conv2d",
    "Conv3d",
    "CrossEntropyLoss",
    "Dropout",
    "Flatten",
    "Linear",
    "MSELoss",
    "Module",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
]
