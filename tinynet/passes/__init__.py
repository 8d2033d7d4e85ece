"""Passes over a model.

Rewrites (fold_bn, remove_dropout) return a new model and leave their input untouched;
recalibrate_bn updates BatchNorm statistics in place, as the paper's Algorithm 2 does.
"""

from .recalibrate_bn import recalibrate_bn

__all__ = [
    "recalibrate_bn",
]
