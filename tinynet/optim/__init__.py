"""Optimizers and learning-rate schedules with torch.optim's update rules."""

from . import lr_scheduler
from .adam import Adam, AdamW
from .lr_scheduler import CosineAnnealingLR, ExponentialLR, LRScheduler, MultiStepLR, StepLR
from .optimizer import Optimizer
from .sgd import SGD

__all__ = [
    "Adam",
    "AdamW",
    "CosineAnnealingLR",
    "ExponentialLR",
    "LRScheduler",
    "MultiStepLR",
    "Optimizer",
    "SGD",
    "StepLR",
    "lr_scheduler",
]
