"""The one place for tinynet's global settings: Numba flags, threads and the default dtype.

Kernels import ``FASTMATH`` and ``CACHE`` from here instead of writing literals, so a learner
can switch every kernel at once (for example ``TINYNET_FASTMATH=0`` to compare results).

Debugging a kernel: run with ``NUMBA_DISABLE_JIT=1`` and every ``@njit`` function becomes plain
Python that ``pdb`` can step into (slowly, but with the same results).
"""

from __future__ import annotations

import os

import numba
import numpy as np

# LLVM fast-math flags for every kernel. We take the ones that let LLVM vectorise reductions
# (reassociation, contraction into FMA, reciprocal, signed zeros) but not "nnan"/"ninf":
# with those LLVM may assume no inf exists, and max pooling starts from -inf over padding.
FASTMATH: set[str] | bool = (
    {"nsz", "arcp", "contract", "reassoc"}
    if os.environ.get("TINYNET_FASTMATH", "1") != "0"
    else False
)

# Compiled kernels are cached on disk (in __pycache__) so the second start is fast.
CACHE: bool = os.environ.get("TINYNET_NUMBA_CACHE", "1") != "0"

_DEFAULT_DTYPE = np.dtype(np.float32)


def get_default_dtype() -> np.dtype:
    """The dtype new parameters are created with (float32 unless changed)."""
    return _DEFAULT_DTYPE


def set_default_dtype(dtype) -> None:
    """Set the dtype of newly created parameters: float32 or float64."""
    global _DEFAULT_DTYPE
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"set_default_dtype expected float32 or float64, got {dtype}")
    _DEFAULT_DTYPE = dtype


class set_num_threads:
    """Set the number of threads tinynet's kernels (Numba) and BLAS calls use.

    Use it as a call, ``tinynet.set_num_threads(2)``, or as a context that restores the
    previous count on exit::

        with tinynet.set_num_threads(1):
            model(x)

    Numba's threads and the BLAS library's threads are set together, so a kernel that runs
    a BLAS call never has ``n`` Numba threads each starting ``n`` BLAS threads.
    """

    def __init__(self, n: int):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"set_num_threads expected an int, got {type(n).__name__}")
        n = int(n)
        if not 1 <= n <= numba.config.NUMBA_NUM_THREADS:
            raise ValueError(
                f"set_num_threads expected 1 <= n <= {numba.config.NUMBA_NUM_THREADS} "
                f"(the cores Numba started with), got {n}"
            )
        self._previous = get_num_threads()
        _apply_threads(n)

    def __enter__(self) -> set_num_threads:
        return self

    def __exit__(self, *exc) -> None:
        _apply_threads(self._previous)


_blas_limiter = None


def _apply_threads(n: int) -> None:
    global _blas_limiter
    numba.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return
    # threadpool_limits applies on creation; keeping the object keeps nothing alive that matters.
    _blas_limiter = threadpool_limits(limits=n, user_api="blas")


def get_num_threads() -> int:
    """The number of threads tinynet's kernels use."""
    return numba.get_num_threads()
