"""Winograd F(4×4, 3×3) convolution kernels: 3×3, stride 1, dilation 1, one group.

The same algorithm as ``winograd.py`` (read that module first: layout, chunks, backward)
with 4×4 output tiles instead of 2×2: a tile reads a 6×6 input patch, and the elementwise
product lives in a 6×6 Winograd domain, so each chunk runs 36 matrix products. That is
36·Cout·C multiplies per 16 outputs, against 16·Cout·C per 4 for F(2×2, 3×3) and 9·Cout·C
per output for the direct sum: 4× fewer than direct, 1.78× fewer than F(2×2, 3×3). The
transforms also move fewer values per output (36 in and 36 out per 16 outputs, against 16
per 4). Lavin & Gray (2015) give the matrices, for the points 0, ±1, ±2 and ∞:

    Bᵀ = [4  0 −5  0  1  0]    G = [ 1/4    0     0  ]    Aᵀ = [1  1  1  1  1  0]
         [0 −4 −4  1  1  0]        [−1/6  −1/6  −1/6 ]         [0  1 −1  2 −2  0]
         [0  4 −4 −1  1  0]        [−1/6   1/6  −1/6 ]         [0  1  1  4  4  0]
         [0 −2 −1  2  1  0]        [1/24  1/12  1/6  ]         [0  1 −1  8 −8  1]
         [0  2 −1 −2  1  0]        [1/24 −1/12  1/6  ]
         [0  4  0 −5  0  1]        [ 0      0     1  ]

Bᵀ is F(2×2, 5×5)'s (same points), so the input transforms are ``winograd5``'s, called with
tiles 4 apart. The weight transforms and the two drivers below repeat ``winograd5``'s shape
with this module's matrices rather than share code through branches: a kernel compiles
every branch it has, and each path's first cold start should pay only for its own.

Where it pays: a map whose side is not a multiple of 4 computes the last tiles' overhang for
nothing (14×14 outputs take 4×4 tiles of 16×16: 31% more products than needed), so the
layer picks F(2×2, 3×3) or this by the products each needs (``nn/conv_winograd.py``).

Accuracy: the transforms multiply by up to 8 and add six values per step, so float32
results differ from the direct sum by ~1e-6 of the output scale (as F(2×2, 5×5), which uses
the same points), against ~1e-7 for F(2×2, 3×3); tests bound it by 3e-5. Float64 runs
differ by ~1e-15.

Debugging: with ``NUMBA_DISABLE_JIT=1`` these are plain Python (slow) that pdb can step into.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import config
from .blas import gemm, gemm_small_blocks
from .conv import sum_blocks, zero_fill
from .winograd import (
    _block_lines,
    _crop,
    _merge_blocks,
    _output_to_rows,
    _pad,
    _rows_to_output,
    _to_planes,
)
from .winograd5 import _constants, _input_transform, _input_transform_backward

# Output tile side: patches start every STEP rows and columns of the padded input.
STEP = 4


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _g(g0, g1, g2, k):
    """G applied to a 3-vector (the weight transform along one axis); k: _constants."""
    two, four, quarter, sixth, twenty_fourth = k[0], k[1], k[5], k[6], k[7]
    even = g0 + g2
    return (
        quarter * g0,
        -sixth * (even + g1),
        sixth * (g1 - even),
        twenty_fourth * (g0 + four * g2 + two * g1),
        twenty_fourth * (g0 + four * g2 - two * g1),
        g2,
    )


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _gt(u, k):
    """Gᵀ applied to a 6-tuple: the transpose of :func:`_g`."""
    u0, u1, u2, u3, u4, u5 = u
    two, four, quarter, sixth, twenty_fourth = k[0], k[1], k[5], k[6], k[7]
    s12 = sixth * (u1 + u2)
    s34, d34 = twenty_fourth * (u3 + u4), twenty_fourth * (u3 - u4)
    return quarter * u0 - s12 + s34, sixth * (u2 - u1) + two * d34, four * s34 - s12 + u5


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _at(m, k):
    """Aᵀ applied to a 6-tuple (the output transform along one axis)."""
    m0, m1, m2, m3, m4, m5 = m
    two, four, eight = k[0], k[1], k[3]
    s12, d12 = m1 + m2, m1 - m2
    s34, d34 = m3 + m4, m3 - m4
    return m0 + s12 + s34, d12 + two * d34, s12 + four * s34, d12 + eight * d34 + m5


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _a(y0, y1, y2, y3, k):
    """A applied to a 4-vector: the transpose of :func:`_at`."""
    two, four, eight = k[0], k[1], k[3]
    even, odd = y0 + y2, y1 + y3
    even4, odd2 = y0 + four * y2, two * y1 + eight * y3
    return y0, even + odd, even - odd, even4 + odd2, even4 - odd2, y3


@njit(parallel=True, fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def winograd4_weight_transform(weight, u):
    """u[ξ, o, c] = (G · weight[o, c] · Gᵀ)[ξ], ξ = 6·row + column.

    Shapes: weight (Cout, C, 3, 3); u (36, Cout, C), overwritten. Parallel over output
    channels, as winograd.winograd_weight_transform.
    """
    n_out, n_channels = weight.shape[0], weight.shape[1]
    k = _constants(u.dtype)
    for o in prange(n_out):
        rows = np.empty((n_channels, 36), dtype=u.dtype)  # see winograd._to_planes
        for i in range(n_channels):
            w = weight[o, i]
            # Columns of G·w (6×3), one per kernel column.
            c0 = _g(w[0, 0], w[1, 0], w[2, 0], k)
            c1 = _g(w[0, 1], w[1, 1], w[2, 1], k)
            c2 = _g(w[0, 2], w[1, 2], w[2, 2], k)
            for r in range(6):
                row = _g(c0[r], c1[r], c2[r], k)
                for j in range(6):
                    rows[i, 6 * r + j] = row[j]
        _to_planes(rows, u, o)


@njit(parallel=True, fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def winograd4_weight_transform_backward(grad_u, grad_w):
    """grad_w[o, c] = Gᵀ · grad_u[:, o, c] (as 6×6) · G: the transpose of the weight transform.

    Shapes: grad_u (36, Cout, C); grad_w (Cout, C, 3, 3), overwritten. Parallel as above.
    """
    n_out, n_channels = grad_w.shape[0], grad_w.shape[1]
    k = _constants(grad_w.dtype)
    for o in prange(n_out):
        for i in range(n_channels):
            d = grad_u[:, o, i]
            # Columns of Gᵀ·dU (3×6), one per Winograd-domain column.
            c0 = _gt((d[0], d[6], d[12], d[18], d[24], d[30]), k)
            c1 = _gt((d[1], d[7], d[13], d[19], d[25], d[31]), k)
            c2 = _gt((d[2], d[8], d[14], d[20], d[26], d[32]), k)
            c3 = _gt((d[3], d[9], d[15], d[21], d[27], d[33]), k)
            c4 = _gt((d[4], d[10], d[16], d[22], d[28], d[34]), k)
            c5 = _gt((d[5], d[11], d[17], d[23], d[29], d[35]), k)
            for r in range(3):
                row = _gt((c0[r], c1[r], c2[r], c3[r], c4[r], c5[r]), k)
                for j in range(3):
                    grad_w[o, i, r, j] = row[j]


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _plus(r, b):
    """The 4-tuple r with b added to each value."""
    return r[0] + b, r[1] + b, r[2] + b, r[3] + b


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _output_transform(m, bias, relu, line0, line1, th, out):
    """out[n, o, 4×4 block of tile p] = Aᵀ · M[:][o, p] (as 6×6) · A + bias[o], then
    max(·, 0) if ``relu``.

    As winograd._output_transform: the transform over the chunk's tiles into ``rows``
    (4, 4·tiles), laid out as the output's rows (tile t's row i at columns 4t .. 4t + 3 of
    row i), then a contiguous copy per output row that drops the values past the edges.
    """
    n_out, ow = out.shape[1], out.shape[3]
    tiles = (line1 - line0) * ((ow + STEP - 1) // STEP)
    rows = np.empty((STEP, STEP * tiles), dtype=out.dtype)  # as the output's rows
    half = np.empty((24, tiles), dtype=out.dtype)  # Aᵀ·M: row 4·c + i holds (i, c)
    k = _constants(out.dtype)
    # The column pass indexes M and half flat, with unsigned offsets (see
    # winograd._input_transform): with 2-D indexing LLVM vectorised little of it, and it ran
    # 3–4x slower (64 × 32 × 32² output, one thread: 1.7 ms against 0.45).
    mf, hf = m.reshape(-1), half.reshape(-1)
    u = np.uint64
    plane, n = u(m.shape[1]), u(tiles)
    for o in range(n_out):
        b = bias[o]
        # Aᵀ down each column c of M, then along each row i of the result: one short loop
        # over the tiles per column and per row, each simple enough for LLVM to vectorise
        # (one loop doing all 36 loads and 16 stores per tile ran scalar: 2x slower).
        for c in range(6):
            s0 = u(c) * plane + u(o) * n  # M[6·a + c][o, t] is at s0 + 6·a·plane + t
            s1 = s0 + u(6) * plane
            s2, s3 = s1 + u(6) * plane, s1 + u(12) * plane
            s4, s5 = s1 + u(18) * plane, s1 + u(24) * plane
            d0 = u(4 * c) * n  # half row 4·c + i at d0 + i·tiles
            d1, d2, d3 = d0 + n, d0 + n + n, d0 + n + n + n
            for t in range(n):
                col = (mf[s0 + t], mf[s1 + t], mf[s2 + t], mf[s3 + t], mf[s4 + t], mf[s5 + t])
                hf[d0 + t], hf[d1 + t], hf[d2 + t], hf[d3 + t] = _at(col, k)
        for i in range(4):
            for t in range(tiles):
                row = (half[i, t], half[4 + i, t], half[8 + i, t], half[12 + i, t])
                row = row + (half[16 + i, t], half[20 + i, t])
                r = _plus(_at(row, k), b)
                c = STEP * t
                rows[i, c], rows[i, c + 1], rows[i, c + 2], rows[i, c + 3] = r
        _rows_to_output(rows, relu, line0, line1, th, o, out)


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _grad_output_transform(grad_out, line0, line1, th, m):
    """dM[ξ][o, p] = (A · dy · Aᵀ)[ξ] for the 4×4 gradient block dy of tile p (0 past the edge).

    Shapes: grad_out (N, Cout, OH, OW); m (36, ≥ Cout·tiles).
    The mirror of :func:`_output_transform`: per channel, the chunk's gradient rows copied
    into ``rows`` (4, 4·tiles), laid out as the output's (zeros past the edges:
    winograd._output_to_rows), then two loops over all the chunk's tiles, which LLVM
    vectorises: A along row i of each block into ``half`` rows 6·i + c, then A down each
    column c of that into planes 6·r + c. Flat arrays, unsigned offsets, as there. (One
    pass per tile, reading its block from grad_out and writing all 36 planes, ran scalar:
    measured 2–3x slower.)
    """
    n_out, ow = grad_out.shape[1], grad_out.shape[3]
    tiles = (line1 - line0) * ((ow + STEP - 1) // STEP)
    rows = np.empty((STEP, STEP * tiles), dtype=grad_out.dtype)
    half = np.empty(24 * tiles, dtype=grad_out.dtype)  # dy·Aᵀ: row 6·i + c holds (i, c)
    k = _constants(grad_out.dtype)
    rf, mf = rows.reshape(-1), m.reshape(-1)
    u = np.uint64
    plane, n = u(m.shape[1]), u(tiles)
    four = u(STEP)
    for o in range(n_out):
        _output_to_rows(grad_out, line0, line1, th, o, rows)
        for i in range(4):
            s = u(i) * four * n  # tile t's row i at s + 4·t
            d0 = u(6 * i) * n
            d1, d2, d3, d4, d5 = d0 + n, d0 + u(2) * n, d0 + u(3) * n, d0 + four * n, d0 + u(5) * n
            for t in range(n):
                q = s + four * t
                h = _a(rf[q], rf[q + u(1)], rf[q + u(2)], rf[q + u(3)], k)
                half[d0 + t], half[d1 + t], half[d2 + t] = h[0], h[1], h[2]
                half[d3 + t], half[d4 + t], half[d5 + t] = h[3], h[4], h[5]
        for c in range(6):
            s0 = u(c) * n  # half row 6·i + c at s0 + 6·i·tiles
            s1, s2, s3 = s0 + u(6) * n, s0 + u(12) * n, s0 + u(18) * n
            e0 = u(c) * plane + u(o) * n  # plane 6·r + c at e0 + 6·r·plane
            e1, e2, e3 = e0 + u(6) * plane, e0 + u(12) * plane, e0 + u(18) * plane
            e4, e5 = e0 + u(24) * plane, e0 + u(30) * plane
            for t in range(n):
                r = _a(half[s0 + t], half[s1 + t], half[s2 + t], half[s3 + t], k)
                mf[e0 + t], mf[e1 + t], mf[e2 + t] = r[0], r[1], r[2]
                mf[e3 + t], mf[e4 + t], mf[e5 + t] = r[3], r[4], r[5]


@njit(parallel=True, fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def winograd4_forward(x, u, bias, relu, padding, lines, out, xpad, v, m):
    """out = conv3×3(x, g) + bias (then max(·, 0) if ``relu``), u = the transformed weights.

    As winograd.winograd_forward, with u (36, Cout, C), xpad (N, C, 4·th + 2, 4·tw + 2),
    th = ⌈OH/4⌉, tw = ⌈OW/4⌉, v (T, 36, ≥ C·lines·tw), m (T, 36, ≥ Cout·lines·tw).
    Parallel over samples (padding), then blocks of tile lines (block t writes only its
    lines' output rows and v[t], m[t]).
    """
    n_batch, n_channels = x.shape[0], x.shape[1]
    n_out = u.shape[1]
    n_blocks = v.shape[0]
    th = (xpad.shape[2] - 2) // STEP
    tw = (xpad.shape[3] - 2) // STEP
    for n in prange(n_batch):
        _pad(x[n], padding, xpad[n])
    n_lines = n_batch * th  # shared out evenly, as in winograd.winograd_forward
    for t in prange(n_blocks):
        last = ((t + 1) * n_lines) // n_blocks
        for line0 in range((t * n_lines) // n_blocks, last, lines):
            line1 = min(line0 + lines, last)
            tiles = (line1 - line0) * tw
            _input_transform(xpad, line0, line1, STEP, v[t])
            for k in range(36):
                gemm_small_blocks(False, n_out, tiles, n_channels, u[k].reshape(-1), n_channels,
                                  v[t, k], tiles, 0.0, m[t, k], tiles)  # fmt: skip
            _output_transform(m[t], bias, relu, line0, line1, th, out)


@njit(parallel=True, fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def winograd4_backward(
    xpad, u, grad_out, padding, lines, grad_x, grad_u, grad_b, gxpad, v, m, partial_u, partial_b
):
    """All three gradients of :func:`winograd4_forward`, in the Winograd domain.

    As winograd.winograd_backward, with 36 planes: grad_u (36, Cout, C) is the gradient of u
    (winograd4_weight_transform_backward turns it into the weight gradient); partial_u
    (T, 36, Cout, C), partial_b (T, ≥ Cout). Parallel over blocks of samples; the sums over
    samples go through the per-block partials, added in block order (race-free, deterministic).
    """
    n_batch, n_channels = grad_x.shape[0], grad_x.shape[1]
    n_out = u.shape[1]
    n_blocks = v.shape[0]
    th = (xpad.shape[2] - 2) // STEP
    tw = (xpad.shape[3] - 2) // STEP
    for t in prange(n_blocks):
        zero_fill(partial_u[t].reshape(-1))
        # Whole samples per block, or tile lines into private copies for a small batch.
        first, last, target = _block_lines(t, n_blocks, th, grad_out, grad_b, gxpad, partial_b)
        for line0 in range(first, last, lines):
            line1 = min(line0 + lines, last)
            tiles = (line1 - line0) * tw
            # V by tile: dU[ξ] += dM[ξ] @ V[ξ]ᵀ multiplies two row-major matrices (see
            # winograd.winograd_backward).
            _input_transform(xpad, line0, line1, STEP, v[t], True)
            _grad_output_transform(grad_out, line0, line1, th, m[t])
            for k in range(36):
                mk = m[t, k, : n_out * tiles].reshape(n_out, tiles)
                gemm(False, False, n_out, n_channels, tiles, m[t, k], tiles, v[t, k],
                     n_channels, 1.0, partial_u[t, k].reshape(-1), n_channels)  # fmt: skip
                # V[ξ] is no longer needed: its space takes dV[ξ] (C × tiles).
                np.dot(u[k].T, mk, v[t, k, : n_channels * tiles].reshape(n_channels, tiles))
            _input_transform_backward(v[t], line0, line1, STEP, target)
        if n_batch >= n_blocks:  # whole samples: this block's are complete
            for n in range(first // th, last // th):
                _crop(gxpad[n], padding, grad_x[n])
    if n_batch < n_blocks:
        _merge_blocks(n_blocks, grad_out, grad_b, gxpad, partial_b)
        for n in range(n_batch):
            _crop(gxpad[n], padding, grad_x[n])
    sum_blocks(partial_u.reshape(n_blocks, -1), grad_u.reshape(-1))
    sum_blocks(partial_b, grad_b)
