"""BLAS's gemm on strided row-major matrices, callable from Numba kernels.

``np.dot`` inside a Numba kernel takes only contiguous matrices (it copies any other) and
always overwrites its output. Kernels that multiply a block of columns of a larger matrix,
read a matrix with a row stride (a "leading dimension"), or add into their output call
:func:`gemm` instead: the same BLAS routine, with its strides and beta exposed. Used by the
Conv3d plane kernels (``conv_planes.py``, ``winograd3d.py``) and Linear (``linear.py``);
:func:`gemm_small_blocks`, :func:`gemm_few_rows` and :func:`gemm_small_result` cut a
product into smaller ones that OpenBLAS runs faster (the Winograd forwards, vol2col's forward
and the shifted products).

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


# OpenBLAS multiplies small matrices (m·n·k up to 10⁶, in its AVX-512 builds) with kernels
# that skip its packing step. For a product of few rows (the output channels of a
# convolution) and a deep k, those ran 1.6–2x faster than the packed path on this project's
# machine (Zen 4, one thread, float32, GFLOP/s, (m × k) @ (k × n): 32 × 392 @ n = 79: 103,
# n = 320: 62; 16 × 1600, n = 39: 85, n = 245: 46; transposed a alike; but 1600 × 16 @ 16 × n
# (many rows, shallow k) no faster). So :func:`gemm_few_rows` cuts such a product into
# column blocks under that size, where blocks stay at least _MIN_BLOCK_COLUMNS wide. Without
# those kernels (other builds) a block costs one more call, about a microsecond.
_SMALL_PRODUCT = 1_000_000
_FEW_ROWS = 32
_MIN_BLOCK_COLUMNS = 32


@njit(fastmath=config.FASTMATH, cache=config.CACHE, inline="always")
def gemm_small_blocks(trans_a, m, n, k, a, lda, b, ldb, beta, c, ldc):
    """:func:`gemm` (b not transposed) in column blocks of small products (see
    _SMALL_PRODUCT). Same arguments and result as gemm(trans_a, False, ...)."""
    blocks = 1
    if m * n * k > _SMALL_PRODUCT:
        widest = _SMALL_PRODUCT // (m * k)
        if widest >= _MIN_BLOCK_COLUMNS:
            blocks = -(-n // widest)
    if blocks == 1:  # no slices: a view costs a reference count, and these calls are many
        gemm(trans_a, False, m, n, k, a, lda, b, ldb, beta, c, ldc)
        return
    for i in range(blocks):
        j0, j1 = (i * n) // blocks, ((i + 1) * n) // blocks
        gemm(trans_a, False, m, j1 - j0, k, a, lda, b[j0:], ldb, beta, c[j0:], ldc)


@njit(fastmath=config.FASTMATH, cache=config.CACHE, inline="always")
def gemm_few_rows(trans_a, m, n, k, a, lda, b, ldb, beta, c, ldc):
    """:func:`gemm_small_blocks` for a product of few rows (m ≤ _FEW_ROWS), else one
    :func:`gemm`: the cut paid on those, not on products of many rows and a shallow k (the
    Winograd products, of C·Cout by tiles, take gemm_small_blocks: measured there)."""
    if m <= _FEW_ROWS:
        gemm_small_blocks(trans_a, m, n, k, a, lda, b, ldb, beta, c, ldc)
    else:
        gemm(trans_a, False, m, n, k, a, lda, b, ldb, beta, c, ldc)


@njit(fastmath=config.FASTMATH, cache=config.CACHE, inline="always")
def gemm_small_result(m, n, k, a, lda, b, ldb, c, ldc):
    """c += a @ bᵀ, a (m × k) and b (n × k): gemm(False, True, ..., beta = 1) cut along k
    into small products (see _SMALL_PRODUCT) when the result is small (m·n ≤ _FEW_ROWS², as
    a weight gradient's block: measured, one thread, 32 × 32 of depth 3192 94 against 53
    GFLOP/s, 16 × 16 of depth 8000 99 against 46; 64 × 32 78 either way)."""
    blocks = 1
    if m * n <= _FEW_ROWS * _FEW_ROWS and m * n * k > _SMALL_PRODUCT:
        deepest = _SMALL_PRODUCT // (m * n)
        if deepest >= _MIN_BLOCK_COLUMNS:
            blocks = -(-k // deepest)
    one = c.dtype.type(1)
    if blocks == 1:
        gemm(False, True, m, n, k, a, lda, b, ldb, one, c, ldc)
        return
    for i in range(blocks):
        k0, k1 = (i * k) // blocks, ((i + 1) * k) // blocks
        gemm(False, True, m, n, k1 - k0, a[k0:], lda, b[k0:], ldb, one, c, ldc)


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
