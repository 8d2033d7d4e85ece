"""The one place for tinynet's global settings: Numba flags, threads and the default dtype.

Kernels import ``FASTMATH`` and ``CACHE`` from here instead of writing literals, so a learner
can switch every kernel at once (for example ``TINYNET_FASTMATH=0`` to compare results).

Debugging a kernel: run with ``NUMBA_DISABLE_JIT=1`` and every ``@njit`` function becomes plain
Python that ``pdb`` can step into (slowly, but with the same results).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys

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

# The Winograd kernels (kernels/winograd*.py) are compiled without fast-math flags. With
# them, LLVM's choices (reassociating a sum, fusing a multiply and an add) came out
# differently for a kernel compiled in the running process and the same kernel loaded from
# the on-disk cache, so a first run (which compiles) and the runs after it gave results a few
# ulps apart: the Winograd layers' outputs and gradients, and so a LeNet-BN training run
# (tests/test_determinism.py). Their loops vectorise across tiles, with no reduction that
# needs reassociation, and the products are BLAS's: IEEE arithmetic cost them 0–8% (forward
# + backward, measured on AVX-512). The other kernels' results came out the same compiled or
# loaded (measured on all layer types and a LeNet-BN step), reductions and all.
WINOGRAD_FASTMATH: set[str] | bool = False

# Compiled kernels are cached on disk (in __pycache__) so the second start is fast.
CACHE: bool = os.environ.get("TINYNET_NUMBA_CACHE", "1") != "0"

_DEFAULT_DTYPE = np.dtype(np.float32)


def _keep_freed_memory() -> None:
    """Ask glibc's malloc to reuse freed blocks instead of returning them to the OS.

    Every layer allocates its output anew. By default glibc serves blocks this large (MBs)
    with mmap and gives them back on free, so the next step's arrays arrive as fresh pages
    that the kernel must zero on first touch: measured 10-25% of a LeNet training step. With
    higher thresholds the blocks stay in the heap and are reused, as a framework's caching
    allocator would; the process keeps its peak memory. ``TINYNET_MALLOC_TUNING=0`` opts out.
    """
    if os.environ.get("TINYNET_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
        libc.mallopt(m_mmap_threshold, 256 << 20)
        libc.mallopt(m_trim_threshold, 512 << 20)
    except (OSError, AttributeError):  # not glibc (musl, ...): keep the defaults
        pass


_keep_freed_memory()


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


# Kernels on fewer elements than this run on one thread. Starting a parallel region and
# meeting at its barrier costs microseconds, more than such small work saves; and on a busy
# laptop (or while BLAS worker threads still spin after a matrix product) the barrier waits for
# a worker the OS has not scheduled, which measured 100x slower for the BatchNorm paper's MLP
# (BatchNorm1d on (60, 100)). Results do not depend on the thread count, so this changes speed
# only.
SERIAL_BELOW = 1 << 15


def _fast_thread_count():
    """(get, set) of Numba's thread count for the calling thread, without the locking.

    ``numba.get_num_threads`` and ``set_num_threads`` take two locks on every call, to start
    Numba's threads the first time (~4 µs for a get and two sets, paid by every small kernel
    call below). Once the threads run, the C functions behind them are what they call; they
    are internal to Numba, so the public functions stand in if they move.
    """
    numba.get_num_threads()  # starts Numba's threads, once
    from numba.np.ufunc import parallel

    get = getattr(parallel, "_get_num_threads", None)
    set_ = getattr(parallel, "_set_num_threads", None)
    if get is None or set_ is None:  # pragma: no cover - a Numba that moved them
        return numba.get_num_threads, numba.set_num_threads
    return get, set_


class _OneThread:
    """Numba on one thread inside the ``with`` block, the previous count restored after."""

    __slots__ = ("_previous",)
    _get = _set = None  # _fast_thread_count(), found on first use

    def __enter__(self):
        if _OneThread._get is None:
            _OneThread._get, _OneThread._set = _fast_thread_count()
        self._previous = self._get()
        self._set(1)

    def __exit__(self, *exc):
        self._set(self._previous)


_UNCHANGED = contextlib.nullcontext()


def _kernel_blas():
    """threadpoolctl's handles on the BLAS that Numba's ``np.dot`` calls: SciPy's.

    NumPy may ship a BLAS of its own (NumPy's wheels do); that one serves the user's
    ``a @ b`` and is left alone. When no loaded BLAS lies in SciPy's folders (a shared
    system or conda BLAS), every BLAS is taken.
    """
    from threadpoolctl import ThreadpoolController

    blas = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
    scipy = [c for c in blas if "scipy" in os.path.dirname(c.filepath).lower()]
    return scipy or blas


class _SingleThreadedBlas:
    """SciPy's BLAS on one thread; see single_threaded_blas."""

    _libraries = None  # found once (threadpoolctl only sees libraries already loaded)

    def __enter__(self):
        if _SingleThreadedBlas._libraries is None:
            _SingleThreadedBlas._libraries = _kernel_blas()
        for library in self._libraries:
            if library.get_num_threads() != 1:
                library.set_num_threads(1)

    def __exit__(self, *exc):
        pass


_SINGLE_THREADED_BLAS = _SingleThreadedBlas()


def single_threaded_blas():
    """A context in which the BLAS that kernels call runs on the calling thread only.

    Kernels call BLAS from each of Numba's threads; a multi-threaded BLAS would start threads
    of its own on the same cores, which spin-wait after each call while Numba needs the cores
    (and OpenBLAS warns it may hang inside an OpenMP region: measured 8 ms instead of 30 µs
    for a small product). Numba's ``np.dot`` calls the BLAS SciPy ships, which ``tinynet.nn``
    imports first. That BLAS is left on one thread afterwards, not restored: switching it
    back and forth cost ~5 µs per layer call, and only SciPy's own linear algebra shares it
    (NumPy's ``a @ b`` uses NumPy's BLAS, which keeps its threads). One ``get`` per call
    (~1 µs) notices when something else raised it.
    """
    return _SINGLE_THREADED_BLAS


def one_thread_if(serial: bool):
    """A context that runs Numba on one thread when ``serial``, else changes nothing.

    For kernels whose work is split into one block: a ``prange`` over one block would still
    start every thread and wait for them at its barrier (see SERIAL_BELOW).
    """
    return _OneThread() if serial else _UNCHANGED


def threads_for(size: int):
    """A context for kernel calls on ``size`` elements: one thread when that is too few."""
    return one_thread_if(size < SERIAL_BELOW)
