"""BLAS's gemm on strided row-major matrices, callable from Numba kernels.

``np.dot`` inside a Numba kernel takes only contiguous matrices (it copies any other) and
always overwrites its output. Kernels that multiply a block of columns of a larger matrix,
read a matrix with a row stride (a "leading dimension"), or add into their output call
:func:`gemm` instead: the same BLAS routine, with its strides and beta exposed. Used by the
Conv3d plane kernels (``conv_planes.py``, ``winograd3d.py``) and Linear (``linear.py``).

Debugging: with ``NUMBA_DISABLE_JIT=1``, :func:`gemm` is replaced by a NumPy version
(:func:`_gemm_numpy`), as Python cannot call the C helper.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (the BLAS that Numba's gemm helper calls)
from numba import njit, types

from .. import config

# Numba's own C helper for BLAS gemm (what np.dot calls): it finds scipy's sgemm or dgemm,
# takes sizes by value and the scalars and matrices by pointer. Declared by its symbol name,
# unlike a ctypes pointer, it lets the kernels be cached on disk.
_xxgemm = types.ExternalFunction(
    "numba_xxgemm",
    types.intc(
        types.char,  # kind: "s" (float32) or "d" (float64)
        types.char,  # transa
        types.char,  # transb
        types.intp,  # m
        types.intp,  # n
        types.intp,  # k
        types.voidptr,  # alpha
        types.voidptr,  # a
        types.intp,  # lda
        types.voidptr,  # b
        types.intp,  # ldb
        types.voidptr,  # beta
        types.voidptr,  # c
        types.intp,  # ldc
    ),
)
_NO, _YES = 110, 116  # ord("n"), ord("t"): BLAS's "no transpose" and "transpose" flags


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def gemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc):
    """c = op(a) @ op(b) + beta·c on row-major matrices given by a flat start and a stride.

    op(a) is (m × k): a (m × k) read with row stride lda, or its transpose (trans_a) read
    from a (k × m) one. Likewise op(b) (k × n); c (m × n) with row stride ldc. a, b and c are
    1-D arrays starting at the matrices' first element (float32 or float64, all alike).
    BLAS is column-major, where a row-major matrix reads as its transpose, so this computes
    cᵀ = op(b)ᵀ @ op(a)ᵀ: the operands swap places, the flags stay.
    """
    scalars = np.empty(2, c.dtype)
    scalars[0] = 1.0
    scalars[1] = beta
    _xxgemm(
        115 if c.itemsize == 4 else 100,  # ord("s"), ord("d")
        _YES if trans_b else _NO,
        _YES if trans_a else _NO,
        n,
        m,
        k,
        scalars[0:].ctypes,
        b.ctypes,
        ldb,
        a.ctypes,
        lda,
        scalars[1:].ctypes,
        c.ctypes,
        ldc,
    )


def _gemm_numpy(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc):
    """:func:`gemm` in NumPy, for ``NUMBA_DISABLE_JIT=1`` (Python cannot call the C helper)."""

    def matrix(flat, rows, cols, ld, transposed):
        shape = (cols, rows) if transposed else (rows, cols)
        view = np.lib.stride_tricks.as_strided(flat, shape, (ld * flat.itemsize, flat.itemsize))
        return view.T if transposed else view

    out = matrix(c, m, n, ldc, False)
    product = matrix(a, m, k, lda, trans_a) @ matrix(b, k, n, ldb, trans_b)
    # As BLAS: with beta = 0 the old contents of c are not read (they may be uninitialised).
    out[...] = product if beta == 0 else product + beta * out


if numba.config.DISABLE_JIT:
    gemm = _gemm_numpy
