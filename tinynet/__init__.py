"""tinynet: a small, readable deep-learning framework for the CPU, with Numba kernels."""

from . import nn, optim
from .config import get_default_dtype, get_num_threads, set_default_dtype, set_num_threads
from .random import manual_seed

__version__ = "0.1.0"

__all__ = [
    "get_default_dtype",
    "get_num_threads",
    "manual_seed",
    "nn",
    "optim",
    "set_default_dtype",
    "set_num_threads",
]
