"""tinynet: a small, readable deep-learning framework for the CPU, with Numba kernels."""

from . import data, models, nn, optim
from .checkpoint import load_checkpoint, load_torch_state_dict, save_checkpoint
from .config import get_default_dtype, get_num_threads, set_default_dtype, set_num_threads
from .graph import Graph
from .kernel_cache import precompile
from .model_summary import summary
from .passes import fold_bn, fuse_relu, recalibrate_bn, remove_dropout
from .profiler import profile
from .random import manual_seed

__version__ = "0.1.0"

__all__ = [
    "Graph",
    "data",
    "fold_bn",
    "fuse_relu",
    "get_default_dtype",
    "get_num_threads",
    "load_checkpoint",
    "load_torch_state_dict",
    "manual_seed",
    "models",
    "nn",
    "optim",
    "precompile",
    "profile",
    "recalibrate_bn",
    "remove_dropout",
    "save_checkpoint",
    "set_default_dtype",
    "set_num_threads",
    "summary",
]
