"""Layers, containers and losses, named as in torch.nn."""

from .activation import ReLU, Sigmoid, Tanh
from .affine import ChannelAffine
from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .conv import Conv2d, Conv3d
from .dropout import Dropout
from .flatten import Flatten
from .fused import FusedReLU
from .linear import Linear
from .loss import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from .merge import Add, Concat, Identity
from .module import Module, Parameter, Sequential
from .pooling import (
    AdaptiveAvgPool2d,
    AdaptiveAvgPool3d,
    AvgPool2d,
    AvgPool3d,
    MaxPool2d,
    MaxPool3d,
)

__all__ = [
    "AdaptiveAvgPool2d",
    "Add",
    "AdaptiveAvgPool3d",
    "AvgPool2d",
    "AvgPool3d",
    "BCEWithLogitsLoss",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "ChannelAffine",
    "Concat",
    "Conv2d",
    "Conv3d",
    "CrossEntropyLoss",
    "Dropout",
    "Flatten",
    "FusedReLU",
    "Identity",
    "Linear",
    "MSELoss",
    "MaxPool2d",
    "MaxPool3d",
    "Module",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
]
