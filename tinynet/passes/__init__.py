"""Passes over a model.

Rewrites (fold_bn, fuse_relu, remove_dropout) return a new model and leave their input untouched;
recalibrate_bn updates BatchNorm statistics in place, as the paper's Algorithm 2 does.
"""

from .fold_bn import FoldReport, fold_bn, fold_bn_weights
from .fuse_relu import fuse_relu
from .recalibrate_bn import recalibrate_bn
from .remove_dropout import remove_dropout

__all__ = [
    "FoldReport",
    "fold_bn",
    "fold_bn_weights",
    "fuse_relu",
    "recalibrate_bn",
    "remove_dropout",
]
