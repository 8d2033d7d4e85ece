"""Winograd F(2×2, 5×5) convolution kernels: 5×5, stride 1, dilation 1, one group.

The same algorithm as ``winograd.py`` (read that module first: layout, chunks, backward),
for a 5×5 kernel: a 2×2 block of outputs reads a 6×6 input patch, and the elementwise product
lives in a 6×6 Winograd domain, so each chunk runs 36 matrix products (one per position ξ)
instead of 16. That is 36·Cout·C multiplies per 4 outputs instead of 100 for the direct sum:
2.8× fewer. The interpolation points are 0, ±1, ±2 and ∞, those of F(4×4, 3×3) (Lavin & Gray
2015), so Bᵀ is that algorithm's; Aᵀ and G follow from the points (the identity
Σ_ξ Aᵀ[i, ξ]·G[ξ, k]·Bᵀ[ξ, l] = [l = i + k] fixes them; tests check the 2-D result against the
direct sum):

    Bᵀ = [4  0 −5  0  1  0]    G = [ 1/4    0      0     0     0  ]    Aᵀ = [1  1  1  1  1  0]
         [0 −4 −4  1  1  0]        [−1/6  −1/6   −1/6  −1/6  −1/6 ]         [0  1 −1  2 −2  1]
         [0  4 −4 −1  1  0]        [−1/6   1/6   −1/6   1/6  −1/6 ]
         [0 −2 −1  2  1  0]        [1/24   1/12  1/6   1/3   2/3  ]
         [0  2 −1 −2  1  0]        [1/24  −1/12  1/6  −1/3   2/3  ]
         [0  4  0 −5  0  1]        [ 0      0      0     0     1  ]

Accuracy: the transforms multiply by up to 5 and add six values per step, so float32
results differ from the direct sum by more than F(2×2, 3×3)'s: measured 1e-6 to 7e-6 of the
output scale (the weight gradient the most), against ~1e-7; tests bound it by 3e-5.

Why a module of its own and not the 3×3 kernels with a size argument: a kernel compiles every
branch it has, and the 3×3 kernels are on the path of every small CNN's first cold start
(see conv_small.py for the same choice). The two drivers below repeat winograd.py's loop nest
with these transforms.

By tile, channels last: unlike winograd.py's, this forward pads the input channels last
with each row's columns sorted by parity (:func:`_pad_phases`), so that its input transform is
two long flat loops per tile line (:func:`_input_transform_phases`, 5–15x faster than one
6×6 transform per tile and channel, which ran scalar). V then holds tiles × C per plane,
the products are V[ξ] @ U[ξ]ᵀ (tiles × Cout), and the output transform ends in a transpose
into the output rows (:func:`_tiles_to_output`). The backward reads the same padded input
(its weight gradient wants V by tile anyway); its input gradient stays channels first. A
layer of more than two outputs per input works by channel instead
(:func:`winograd5_forward_by_channel`: there the output transform by tile costs more than the
input transform saves), and its backward pads the input channels last itself
(:func:`pad_phases`).

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


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _constants(dtype):
    """The numbers the transforms multiply by, in ``dtype``: a literal 2 or 1/6 would be an
    int64 or a float64 and turn float32 arithmetic into float64."""
    one = dtype.type(1)
    return (
        dtype.type(2),
        dtype.type(4),
        dtype.type(5),
        dtype.type(8),
        dtype.type(16),
        one / dtype.type(4),
        one / dtype.type(6),
        one / dtype.type(24),
    )


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _bt(d, k):
    """Bᵀ applied to a 6-tuple (the input transform along one axis); k: _constants."""
    d0, d1, d2, d3, d4, d5 = d
    two, four, five = k[0], k[1], k[2]
    return (
        four * d0 - five * d2 + d4,
        (d3 + d4) - four * (d1 + d2),
        (d4 - d3) + four * (d1 - d2),
        (d4 - d2) + two * (d3 - d1),
        (d4 - d2) - two * (d3 - d1),
        four * d1 - five * d3 + d5,
    )


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _b(w, k):
    """B applied to a 6-tuple: the transpose of :func:`_bt`."""
    w0, w1, w2, w3, w4, w5 = w
    two, four, five = k[0], k[1], k[2]
    return (
        four * w0,
        four * (w2 - w1 + w5) + two * (w4 - w3),
        -five * w0 - four * (w1 + w2) - w3 - w4,
        w1 - w2 + two * (w3 - w4) - five * w5,
        w0 + w1 + w2 + w3 + w4,
        w5,
    )


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _at(m, k):
    """Aᵀ applied to a 6-tuple (the output transform along one axis)."""
    m0, m1, m2, m3, m4, m5 = m
    return m0 + m1 + m2 + m3 + m4, m1 - m2 + k[0] * (m3 - m4) + m5


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _a(y0, y1, k):
    """A applied to a 2-vector: the transpose of :func:`_at`."""
    two = k[0] * y1
    return y0, y0 + y1, y0 - y1, y0 + two, y0 - two, y1


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _g(g, k):
    """G applied to a 5-tuple (the weight transform along one axis)."""
    g0, g1, g2, g3, g4 = g
    two, four, eight, sixteen = k[0], k[1], k[3], k[4]
    quarter, sixth, twenty_fourth = k[5], k[6], k[7]
    even, odd = g0 + g2 + g4, g1 + g3
    even2, odd2 = g0 + four * g2 + sixteen * g4, two * g1 + eight * g3
    return (
        quarter * g0,
        -sixth * (even + odd),
        sixth * (odd - even),
        twenty_fourth * (even2 + odd2),
        twenty_fourth * (even2 - odd2),
        g4,
    )


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _gt(u, k):
    """Gᵀ applied to a 6-tuple: the transpose of :func:`_g`."""
    u0, u1, u2, u3, u4, u5 = u
    two, four, eight, sixteen = k[0], k[1], k[3], k[4]
    quarter, sixth, twenty_fourth = k[5], k[6], k[7]
    s12, d12 = sixth * (u1 + u2), sixth * (u2 - u1)  # rows 1 and 2 of G
    s34, d34 = twenty_fourth * (u3 + u4), twenty_fourth * (u3 - u4)  # rows 3 and 4
    return (
        quarter * u0 - s12 + s34,
        d12 + two * d34,
        four * s34 - s12,
        d12 + eight * d34,
        sixteen * s34 - s12 + u5,
    )


@njit(parallel=True, fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def winograd5_weight_transform(weight, u):
    """u[ξ, o, c] = (G · weight[o, c] · Gᵀ)[ξ], ξ = 6·row + column.

    Shapes: weight (Cout, C, 5, 5); u (36, Cout, C), overwritten. Parallel over output
    channels, as winograd.winograd_weight_transform.
    """
    n_out, n_channels = weight.shape[0], weight.shape[1]
    k = _constants(u.dtype)
    for o in prange(n_out):
        rows = np.empty((n_channels, 36), dtype=u.dtype)  # see winograd._to_planes
        for i in range(n_channels):
            w = weight[o, i]
            # Columns of G·w (6×5), one per kernel column.
            c0 = _g((w[0, 0], w[1, 0], w[2, 0], w[3, 0], w[4, 0]), k)
            c1 = _g((w[0, 1], w[1, 1], w[2, 1], w[3, 1], w[4, 1]), k)
            c2 = _g((w[0, 2], w[1, 2], w[2, 2], w[3, 2], w[4, 2]), k)
            c3 = _g((w[0, 3], w[1, 3], w[2, 3], w[3, 3], w[4, 3]), k)
            c4 = _g((w[0, 4], w[1, 4], w[2, 4], w[3, 4], w[4, 4]), k)
            for r in range(6):
                row = _g((c0[r], c1[r], c2[r], c3[r], c4[r]), k)
                for j in range(6):
                    rows[i, 6 * r + j] = row[j]
        _to_planes(rows, u, o)


@njit(parallel=True, fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def winograd5_weight_transform_backward(grad_u, grad_w):
    """grad_w[o, c] = Gᵀ · grad_u[:, o, c] (as 6×6) · G: the transpose of the weight transform.

    Shapes: grad_u (36, Cout, C); grad_w (Cout, C, 5, 5), overwritten. Parallel as above.
    """
    n_out, n_channels = grad_w.shape[0], grad_w.shape[1]
    k = _constants(grad_w.dtype)
    for o in prange(n_out):
        for i in range(n_channels):
            d = grad_u[:, o, i]
            # Columns of Gᵀ·dU (5×6), one per Winograd-domain column.
            c0 = _gt((d[0], d[6], d[12], d[18], d[24], d[30]), k)
            c1 = _gt((d[1], d[7], d[13], d[19], d[25], d[31]), k)
            c2 = _gt((d[2], d[8], d[14], d[20], d[26], d[32]), k)
            c3 = _gt((d[3], d[9], d[15], d[21], d[27], d[33]), k)
            c4 = _gt((d[4], d[10], d[16], d[22], d[28], d[34]), k)
            c5 = _gt((d[5], d[11], d[17], d[23], d[29], d[35]), k)
            for r in range(5):
                row = _gt((c0[r], c1[r], c2[r], c3[r], c4[r], c5[r]), k)
                for j in range(5):
                    grad_w[o, i, r, j] = row[j]


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _column(x, q, w):
    """The six values x[q], x[q + w], ..., x[q + 5w] (one column of a 6×6 patch); q and w
    unsigned (see _input_transform)."""
    w2 = w + w
    w4 = w2 + w2
    return x[q], x[q + w], x[q + w2], x[q + w2 + w], x[q + w4], x[q + w4 + w]


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _add_column(x, q, w, col):
    """x[q + i·w] += col[i] for i = 0 .. 5: the transpose of :func:`_column`."""
    w2 = w + w
    w4 = w2 + w2
    x[q] += col[0]
    x[q + w] += col[1]
    x[q + w2] += col[2]
    x[q + w2 + w] += col[3]
    x[q + w4] += col[4]
    x[q + w4 + w] += col[5]


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _store(v, first, p, row):
    """v[first + j, p] = row[j] for j = 0 .. 5: one row of a 6×6 transform into its planes."""
    v[first, p] = row[0]
    v[first + 1, p] = row[1]
    v[first + 2, p] = row[2]
    v[first + 3, p] = row[3]
    v[first + 4, p] = row[4]
    v[first + 5, p] = row[5]


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _input_transform(xpad, line0, line1, step, v, by_tile=False):
    """V[ξ][c, p] = (Bᵀ d B)[ξ] for the 6×6 patch d of tile p in lines line0 .. line1.

    ``step``: the tiles' output size, 2 here (F(2×2, 5×5)) or 4 (F(4×4, 3×3), winograd4.py,
    whose Bᵀ is this one): patches start every ``step`` rows and columns.
    Shapes: xpad (N, C, step·th + 6 − step, step·tw + 6 − step); v (36, ≥ C·tiles), tiles =
    (line1 − line0)·tw: plane ξ holds V[ξ] (C × tiles) row-major in its first C·tiles entries,
    or with ``by_tile`` its transpose (tiles × C), as winograd._input_transform.
    """
    n_channels, height, width = xpad.shape[1], xpad.shape[2], xpad.shape[3]
    th = (height - 6 + step) // step
    tw = (width - 6 + step) // step
    tiles = (line1 - line0) * tw
    x = xpad.reshape(-1)  # flat, unsigned offsets: see winograd._input_transform
    k = _constants(xpad.dtype)
    u = np.uint64
    w = u(width)
    channel_step, tile_step = (1, n_channels) if by_tile else (tiles, 1)
    for c in range(n_channels):
        for line in range(line0, line1):
            n = line // th
            r = u(((n * n_channels + c) * height + step * (line - n * th)) * width)
            base = c * channel_step + (line - line0) * tw * tile_step
            for tx in range(tw):
                q = r + u(step * tx)
                p = base + tx * tile_step
                # Bᵀ down each of the patch's columns, then along each resulting row.
                a0 = _bt(_column(x, q, w), k)
                a1 = _bt(_column(x, q + u(1), w), k)
                a2 = _bt(_column(x, q + u(2), w), k)
                a3 = _bt(_column(x, q + u(3), w), k)
                a4 = _bt(_column(x, q + u(4), w), k)
                a5 = _bt(_column(x, q + u(5), w), k)
                # Written out: a loop over i would index the tuples at run time, which
                # Numba does through a stack copy (measured 5x slower transforms).
                _store(v, 0, p, _bt((a0[0], a1[0], a2[0], a3[0], a4[0], a5[0]), k))
                _store(v, 6, p, _bt((a0[1], a1[1], a2[1], a3[1], a4[1], a5[1]), k))
                _store(v, 12, p, _bt((a0[2], a1[2], a2[2], a3[2], a4[2], a5[2]), k))
                _store(v, 18, p, _bt((a0[3], a1[3], a2[3], a3[3], a4[3], a5[3]), k))
                _store(v, 24, p, _bt((a0[4], a1[4], a2[4], a3[4], a4[4], a5[4]), k))
                _store(v, 30, p, _bt((a0[5], a1[5], a2[5], a3[5], a4[5], a5[5]), k))


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _input_transform_backward(v, line0, line1, step, gxpad):
    """gxpad[n, c, patch of tile p] += B · dV[:][c, p] (as 6×6) · Bᵀ: the transpose above.

    Shapes and ``step`` as :func:`_input_transform`, with v holding dV; overlapping patches
    accumulate.
    """
    n_channels, height, width = gxpad.shape[1], gxpad.shape[2], gxpad.shape[3]
    th = (height - 6 + step) // step
    tw = (width - 6 + step) // step
    tiles = (line1 - line0) * tw
    g = gxpad.reshape(-1)
    k = _constants(gxpad.dtype)
    u = np.uint64
    w = u(width)
    for c in range(n_channels):
        for line in range(line0, line1):
            n = line // th
            r = u(((n * n_channels + c) * height + step * (line - n * th)) * width)
            base = c * tiles + (line - line0) * tw
            for tx in range(tw):
                q = r + u(step * tx)
                p = base + tx
                # B along each row of dV, then down each resulting column.
                h0 = _b((v[0, p], v[1, p], v[2, p], v[3, p], v[4, p], v[5, p]), k)
                h1 = _b((v[6, p], v[7, p], v[8, p], v[9, p], v[10, p], v[11, p]), k)
                h2 = _b((v[12, p], v[13, p], v[14, p], v[15, p], v[16, p], v[17, p]), k)
                h3 = _b((v[18, p], v[19, p], v[20, p], v[21, p], v[22, p], v[23, p]), k)
                h4 = _b((v[24, p], v[25, p], v[26, p], v[27, p], v[28, p], v[29, p]), k)
                h5 = _b((v[30, p], v[31, p], v[32, p], v[33, p], v[34, p], v[35, p]), k)
                # Written out, as in _input_transform.
                _add_column(g, q, w, _b((h0[0], h1[0], h2[0], h3[0], h4[0], h5[0]), k))
                _add_column(g, q + u(1), w, _b((h0[1], h1[1], h2[1], h3[1], h4[1], h5[1]), k))
                _add_column(g, q + u(2), w, _b((h0[2], h1[2], h2[2], h3[2], h4[2], h5[2]), k))
                _add_column(g, q + u(3), w, _b((h0[3], h1[3], h2[3], h3[3], h4[3], h5[3]), k))
                _add_column(g, q + u(4), w, _b((h0[4], h1[4], h2[4], h3[4], h4[4], h5[4]), k))
                _add_column(g, q + u(5), w, _b((h0[5], h1[5], h2[5], h3[5], h4[5], h5[5]), k))


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _pad_phases(x, padding, step, xpad):
    """xpad[r, φ, m, c] = x[c, r − top, step·m + φ − left], zero elsewhere: the sample
    padded, channels last, each row's columns sorted by their remainder φ mod ``step``.

    In this layout column step·tx + j of tile tx lies at a fixed offset from tile 0's
    column j, for every tile of a line, so :func:`_input_transform_phases` transforms all
    tiles and channels of a line in one flat loop. Shapes: x (C, H, W); xpad (H2, step, M, C).
    """
    n_channels, height, width = x.shape
    top, left = padding
    m_cols = xpad.shape[2]
    zero_fill(xpad.reshape(-1))
    # Each input row goes through a small contiguous copy first: read in place, the
    # transpose's reads are H·W apart, which for 32² planes is 4 KiB, one L1 set for all
    # channels (measured 1.45 ms against 0.5 for (64, 16, 32²) on one thread).
    rows = np.empty((n_channels, width), dtype=xpad.dtype)
    for r in range(height):
        for c in range(n_channels):
            rows[c] = x[c, r]
        dst = xpad[top + r]
        for phase in range(step):
            for m in range(m_cols):
                q = step * m + phase - left
                if 0 <= q < width:
                    d = dst[phase, m]
                    for c in range(n_channels):
                        d[c] = rows[c, q]


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _input_transform_phases(xpad, line0, line1, step, v):
    """V[ξ][p, c] = (Bᵀ d B)[ξ] for the 6×6 patch d of tile p in lines line0 .. line1, by
    tile (plane ξ holds tiles × C row-major), from the layout of :func:`_pad_phases`.

    Per tile line two passes, each one flat loop that LLVM vectorises: Bᵀ down every column
    of the line's six input rows (all channels and columns at once) into ``band``, then Bᵀ
    along band row i for all the line's tiles at once into planes 6i .. 6i + 5: tile tx's
    column j is at offset (j mod step)·M·C + (j div step)·C + tx·C of the band row, so the
    six reads are fixed offsets from s = tx·C + c. (The transform per tile and channel, of
    the NCHW layout, ran scalar: measured 5–15x slower, more with more channels.)
    ``step``: the tiles' output size, 2 (F(2×2, 5×5)) or 4 (F(4×4, 3×3), winograd4.py).
    Shapes: xpad (N, step·th + 6 − step rows, step, M, C), M = tw + (6 − 1) // step
    columns per phase; v (36, ≥ tiles·C), tiles = (line1 − line0)·tw.
    """
    height, m_cols, n_channels = xpad.shape[1], xpad.shape[3], xpad.shape[4]
    th = (height - 6 + step) // step
    tw = m_cols - 5 // step
    x, vf = xpad.reshape(-1), v.reshape(-1)
    k = _constants(xpad.dtype)
    u = np.uint64
    c, plane = u(n_channels), u(v.shape[1])
    row = u(step * m_cols * n_channels)  # one padded input row, all phases
    band = np.empty(6 * row, dtype=xpad.dtype)  # row i: Bᵀ down the columns, row i of it
    # Where column j of tile 0 lies in a band row.
    o1 = u(1 % step * m_cols + 1 // step) * c
    o2 = u(2 % step * m_cols + 2 // step) * c
    o3 = u(3 % step * m_cols + 3 // step) * c
    o4 = u(4 % step * m_cols + 4 // step) * c
    o5 = u(5 % step * m_cols + 5 // step) * c
    span = u(tw) * c  # a line's tiles × channels
    for line in range(line0, line1):
        n = line // th
        base = u(n * height + step * (line - n * th)) * row
        for s in range(row):
            q = base + s
            d = (x[q], x[q + row], x[q + u(2) * row], x[q + u(3) * row])
            a = _bt(d + (x[q + u(4) * row], x[q + u(5) * row]), k)
            band[s], band[row + s], band[u(2) * row + s] = a[0], a[1], a[2]
            band[u(3) * row + s], band[u(4) * row + s], band[u(5) * row + s] = a[3], a[4], a[5]
        p0 = u(line - line0) * span
        for i in range(6):
            b = u(i) * row
            d0 = u(6 * i) * plane + p0  # plane 6i + j at d0 + j·plane
            d1, d2, d3 = d0 + plane, d0 + u(2) * plane, d0 + u(3) * plane
            d4, d5 = d0 + u(4) * plane, d0 + u(5) * plane
            for s in range(span):
                q = b + s
                a = _bt((band[q], band[q + o1], band[q + o2], band[q + o3], band[q + o4],
                         band[q + o5]), k)  # fmt: skip
                vf[d0 + s], vf[d1 + s], vf[d2 + s] = a[0], a[1], a[2]
                vf[d3 + s], vf[d4 + s], vf[d5 + s] = a[3], a[4], a[5]


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _tiles_to_output(y, step, bias, relu, line0, line1, th, out):
    """out[n, o, step·ty + i, step·tx + j] = y[step·i + j][p·Cout + o] + bias[o] (then
    max(·, 0) if ``relu``; a NaN stays NaN) for tile p = (ty, tx) of lines line0 .. line1,
    cut at the output's edges: the last step of a by-tile output transform, from planes
    that hold each output position of every tile by tile (tiles × Cout). ``step``: the
    tile side, 2 or 4 (winograd4.py).

    A transpose: each output row is written in order, reading y every Cout values. The
    loop over a row's whole tiles names their ``step`` columns one by one (a loop over them
    with a run-time bound ran 3–5x slower), the cut last tile and ReLU come after.
    Shapes: y (step², ≥ tiles·Cout); out (N, Cout, OH, OW).
    """
    n_out, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    tw = (ow + step - 1) // step
    whole = ow // step  # tiles whose columns are all inside the output
    u = np.uint64
    size = u(y.shape[1])
    yf = y.reshape(-1)
    for line in range(line0, line1):
        n = line // th
        i0 = step * (line - n * th)
        p0 = (line - line0) * tw
        for i in range(min(step, oh - i0)):
            for o in range(n_out):
                b = bias[o]
                dst = out[n, o, i0 + i]
                src = u(step * i) * size + u(p0 * n_out + o)
                if step == 2:
                    for tx in range(whole):
                        q = src + u(tx * n_out)
                        dst[2 * tx] = yf[q] + b
                        dst[2 * tx + 1] = yf[q + size] + b
                else:
                    for tx in range(whole):
                        q = src + u(tx * n_out)
                        dst[4 * tx] = yf[q] + b
                        dst[4 * tx + 1] = yf[q + size] + b
                        dst[4 * tx + 2] = yf[q + u(2) * size] + b
                        dst[4 * tx + 3] = yf[q + u(3) * size] + b
                q = src + u(whole * n_out)
                for j in range(ow - whole * step):
                    dst[whole * step + j] = yf[q + u(j) * size] + b
                if relu:
                    for j in range(ow):
                        v = dst[j]
                        dst[j] = 0 if v <= 0 else v


# The by-tile output transform works on groups of tile lines of at least this many
# (tile, channel) values: scratch arrays of ~100 KB rather than a chunk's ~1 MB, loops still
# long enough to vectorise (measured, one thread, groups of one line up to the whole chunk:
# within 10%, 1024–2048 the fastest).
_OUTPUT_GROUP = 2048


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _at_down_columns(mf, first, plane, size, half, k):
    """half[(2c + i)·size + t] = (Aᵀ down column c of M)[i] for the ``size`` values from
    ``first`` in each of M's planes (flat mf, planes ``plane`` apart; all unsigned): the
    first pass of both output transforms, a flat loop per column that LLVM vectorises."""
    u = np.uint64
    for c in range(6):
        s0 = u(c) * plane + first  # M[6a + c] at s0 + 6a·plane
        s1 = s0 + u(6) * plane
        s2, s3 = s1 + u(6) * plane, s1 + u(12) * plane
        s4, s5 = s1 + u(18) * plane, s1 + u(24) * plane
        d0 = u(2 * c) * size
        d1 = d0 + size
        for t in range(size):
            col = (mf[s0 + t], mf[s1 + t], mf[s2 + t], mf[s3 + t], mf[s4 + t], mf[s5 + t])
            half[d0 + t], half[d1 + t] = _at(col, k)


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _output_transform_by_tile(m, bias, relu, line0, line1, th, out):
    """out[n, o, 2×2 block of tile p] = Aᵀ · M[:][p, o] (as 6×6) · A + bias[o], then
    max(·, 0) if ``relu``, from M by tile (plane ξ holds tiles × Cout, as the forward's
    products leave it after :func:`_input_transform_phases`).

    Per group of tile lines (whose tiles × Cout values are contiguous in each plane): Aᵀ
    down each column c into ``half`` rows 2c + i, then along each row i into ``y``'s four
    output planes, flat loops that LLVM vectorises; then :func:`_tiles_to_output`.
    """
    tw = (out.shape[3] + 1) // 2
    per_line = tw * out.shape[1]
    group = max(1, min(line1 - line0, -(-_OUTPUT_GROUP // per_line)))
    k = _constants(out.dtype)
    u = np.uint64
    mf, plane = m.reshape(-1), u(m.shape[1])
    half = np.empty(12 * group * per_line, dtype=out.dtype)  # row 2c + i: Aᵀ down column c
    y = np.empty(4 * group * per_line, dtype=out.dtype)  # plane 2i + j: output (i, j)
    for g0 in range(line0, line1, group):
        g1 = min(g0 + group, line1)
        size = u((g1 - g0) * per_line)
        first = u((g0 - line0) * per_line)  # the group's values in each plane of M
        yf = y[: 4 * (g1 - g0) * per_line]
        _at_down_columns(mf, first, plane, size, half, k)
        for i in range(2):
            q0 = u(i) * size  # half row 2c + i at q0 + 2c·size
            q1, q2, q3 = q0 + u(2) * size, q0 + u(4) * size, q0 + u(6) * size
            q4, q5 = q0 + u(8) * size, q0 + u(10) * size
            r = u(2 * i) * size
            for t in range(size):
                row = (half[q0 + t], half[q1 + t], half[q2 + t], half[q3 + t], half[q4 + t])
                yf[r + t], yf[r + size + t] = _at(row + (half[q5 + t],), k)
        _tiles_to_output(yf.reshape(4, -1), 2, bias, relu, g0, g1, th, out)


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _output_transform(m, bias, relu, line0, line1, th, out):
    """out[n, o, 2×2 block of tile p] = Aᵀ · M[:][o, p] (as 6×6) · A + bias[o], then
    max(·, 0) if ``relu``. As winograd._output_transform: the transform over the chunk's
    tiles into ``rows`` laid out as the output's rows, then a contiguous copy per row.

    The transform is two loops over the tiles, as winograd4's: Aᵀ down each column c of M
    into ``half`` rows 2·c + i, then along each row i; flat arrays, unsigned offsets, so
    that LLVM vectorises both (one loop reading all 36 planes per tile ran scalar: measured
    1.6–2.2x slower).
    """
    n_out, ow = out.shape[1], out.shape[3]
    tiles = (line1 - line0) * ((ow + 1) // 2)
    rows = np.empty((2, 2 * tiles), dtype=out.dtype)
    half = np.empty(12 * tiles, dtype=out.dtype)
    k = _constants(out.dtype)
    mf, rf = m.reshape(-1), rows.reshape(-1)
    u = np.uint64
    plane, n = u(m.shape[1]), u(tiles)
    two = u(2)
    for o in range(n_out):
        b = bias[o]
        _at_down_columns(mf, u(o) * n, plane, n, half, k)  # channel o's tiles in each plane
        for i in range(2):
            q0 = u(i) * n  # half row 2·c + i at q0 + 2·c·tiles
            q1, q2, q3 = q0 + two * n, q0 + u(4) * n, q0 + u(6) * n
            q4, q5 = q0 + u(8) * n, q0 + u(10) * n
            r = u(i) * two * n  # rows[i]
            for t in range(n):
                row = (half[q0 + t], half[q1 + t], half[q2 + t], half[q3 + t], half[q4 + t])
                y0, y1 = _at(row + (half[q5 + t],), k)
                rf[r + two * t] = y0 + b
                rf[r + two * t + u(1)] = y1 + b
        _rows_to_output(rows, relu, line0, line1, th, o, out)


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _grad_output_transform(grad_out, line0, line1, th, m):
    """dM[ξ][o, p] = (A · dy · Aᵀ)[ξ] for the 2×2 gradient block dy of tile p (0 past the edge).

    Shapes: grad_out (N, Cout, OH, OW); m (36, ≥ Cout·tiles). As winograd4's: the gradient
    rows copied into ``rows`` (2, 2·tiles), then two loops over the tiles that LLVM
    vectorises: A down each column j of the blocks into ``half`` rows 6·j + r, then A along
    each row r into planes 6·r + j. (One loop per r that took row r of A·dy by a run-time
    tuple index ran scalar: measured 2x slower.)
    """
    n_out, ow = grad_out.shape[1], grad_out.shape[3]
    tiles = (line1 - line0) * ((ow + 1) // 2)
    rows = np.empty((2, 2 * tiles), dtype=grad_out.dtype)
    half = np.empty(12 * tiles, dtype=grad_out.dtype)  # A·dy: row 6·j + r holds (r, j)
    k = _constants(grad_out.dtype)
    mf, rf = m.reshape(-1), rows.reshape(-1)
    u = np.uint64
    plane, n = u(m.shape[1]), u(tiles)
    two = u(2)
    for o in range(n_out):
        _output_to_rows(grad_out, line0, line1, th, o, rows)
        for j in range(2):
            s = u(j)  # tile t's column j: rows[0, 2·t + j] and rows[1, 2·t + j]
            d0 = u(6 * j) * n
            d1, d2, d3 = d0 + n, d0 + two * n, d0 + u(3) * n
            d4, d5 = d0 + u(4) * n, d0 + u(5) * n
            for t in range(n):
                q = s + two * t
                c = _a(rf[q], rf[two * n + q], k)
                half[d0 + t], half[d1 + t], half[d2 + t] = c[0], c[1], c[2]
                half[d3 + t], half[d4 + t], half[d5 + t] = c[3], c[4], c[5]
        for r in range(6):
            h0, h1 = u(r) * n, u(6 + r) * n
            e0 = u(6 * r) * plane + u(o) * n  # plane 6·r + j at e0 + j·plane
            e1, e2, e3 = e0 + plane, e0 + two * plane, e0 + u(3) * plane
            e4, e5 = e0 + u(4) * plane, e0 + u(5) * plane
            for t in range(n):
                y = _a(half[h0 + t], half[h1 + t], k)
                mf[e0 + t], mf[e1 + t], mf[e2 + t] = y[0], y[1], y[2]
                mf[e3 + t], mf[e4 + t], mf[e5 + t] = y[3], y[4], y[5]


@njit(parallel=True, fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def winograd5_forward(x, ut, bias, relu, padding, lines, out, xpad, v, m):
    """out = conv5×5(x, g) + bias (then max(·, 0) if ``relu``), ut = the transformed weights,
    each plane transposed: ut[ξ] = U[ξ]ᵀ (C × Cout).

    As winograd.winograd_forward, but by tile: the input padded channels last
    (:func:`_pad_phases`), V[ξ] (tiles × C) @ Uᵀ[ξ] gives M[ξ] (tiles × Cout). Shapes:
    ut (36, C, Cout), xpad (N, 2·th + 4, 2, tw + 2, C), v (T, 36, ≥ C·lines·tw),
    m (T, 36, ≥ Cout·lines·tw). Parallel over samples (padding), then blocks of tile lines
    (block t writes only its lines' output rows and v[t], m[t]).
    """
    n_batch, n_channels = x.shape[0], x.shape[1]
    n_out = ut.shape[2]
    n_blocks = v.shape[0]
    th = (xpad.shape[1] - 4) // 2
    tw = xpad.shape[3] - 2
    for n in prange(n_batch):
        _pad_phases(x[n], padding, 2, xpad[n])
    # The tile lines of the whole batch are shared out evenly, not whole samples: a batch of
    # one (inference) or of 3 on 2 threads keeps every thread busy.
    n_lines = n_batch * th
    for t in prange(n_blocks):
        last = ((t + 1) * n_lines) // n_blocks
        for line0 in range((t * n_lines) // n_blocks, last, lines):
            line1 = min(line0 + lines, last)
            tiles = (line1 - line0) * tw
            _input_transform_phases(xpad, line0, line1, 2, v[t])
            for k in range(36):
                gemm(False, False, tiles, n_out, n_channels, v[t, k], n_channels,
                     ut[k].reshape(-1), n_out, 0.0, m[t, k], n_out)  # fmt: skip
            _output_transform_by_tile(m[t], bias, relu, line0, line1, th, out)


@njit(parallel=True, fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def winograd5_forward_by_channel(x, u, bias, relu, padding, lines, out, xpad, v, m):
    """:func:`winograd5_forward` by channel, as winograd.winograd_forward: for layers of many
    more outputs than inputs, whose output transform by tile would cost more than the input
    transform saves (nn/conv_winograd.py, _BY_TILE_OUTPUTS_PER_INPUT). The backward then reads the
    input padded again by :func:`pad_phases`.

    As winograd.winograd_forward, with u (36, Cout, C), xpad (N, C, 2·th + 4, 2·tw + 4),
    v (T, 36, ≥ C·lines·tw), m (T, 36, ≥ Cout·lines·tw). Parallel over samples (padding),
    then blocks of tile lines (block t writes only its lines' output rows and v[t], m[t]).
    """
    n_batch, n_channels = x.shape[0], x.shape[1]
    n_out = u.shape[1]
    n_blocks = v.shape[0]
    th = (xpad.shape[2] - 4) // 2
    tw = (xpad.shape[3] - 4) // 2
    for n in prange(n_batch):
        _pad(x[n], padding, xpad[n])
    # The tile lines of the whole batch are shared out evenly, not whole samples: a batch of
    # one (inference) or of 3 on 2 threads keeps every thread busy.
    n_lines = n_batch * th
    for t in prange(n_blocks):
        last = ((t + 1) * n_lines) // n_blocks
        for line0 in range((t * n_lines) // n_blocks, last, lines):
            line1 = min(line0 + lines, last)
            tiles = (line1 - line0) * tw
            _input_transform(xpad, line0, line1, 2, v[t])
            for k in range(36):
                gemm_small_blocks(False, n_out, tiles, n_channels, u[k].reshape(-1), n_channels,
                                  v[t, k], tiles, 0.0, m[t, k], tiles)  # fmt: skip
            _output_transform(m[t], bias, relu, line0, line1, th, out)


@njit(parallel=True, fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def pad_phases(x, padding, xpad):
    """:func:`_pad_phases` (step 2) for a batch, parallel over samples: x (N, C, H, W); xpad
    (N, H2, 2, M, C). For the backward after :func:`winograd5_forward_by_channel`."""
    for n in prange(x.shape[0]):
        _pad_phases(x[n], padding, 2, xpad[n])


@njit(parallel=True, fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def winograd5_backward(
    xpad, u, grad_out, padding, lines, grad_x, grad_u, grad_b, gxpad, v, m, partial_u, partial_b
):
    """All three gradients of :func:`winograd5_forward`, in the Winograd domain.

    As winograd.winograd_backward, with 36 planes: xpad is the forward's (the layout of
    :func:`_pad_phases`), gxpad (N or T·N, C, 2·th + 4, 2·tw + 4) not; u (36, Cout, C);
    grad_u (36, Cout, C) is the gradient of u (winograd5_weight_transform_backward turns it
    into the weight gradient); partial_u (T, 36, Cout, C), partial_b (T, ≥ Cout). Parallel
    over blocks of samples; the sums over samples go through the per-block partials, added
    in block order (race-free, deterministic).
    """
    n_batch, n_channels = grad_x.shape[0], grad_x.shape[1]
    n_out = u.shape[1]
    n_blocks = v.shape[0]
    th = (gxpad.shape[2] - 4) // 2
    tw = (gxpad.shape[3] - 4) // 2
    for t in prange(n_blocks):
        zero_fill(partial_u[t].reshape(-1))
        # Whole samples per block, or tile lines into private copies for a small batch.
        first, last, target = _block_lines(t, n_blocks, th, grad_out, grad_b, gxpad, partial_b)
        for line0 in range(first, last, lines):
            line1 = min(line0 + lines, last)
            tiles = (line1 - line0) * tw
            # V by tile: dU[ξ] += dM[ξ] @ V[ξ]ᵀ multiplies two row-major matrices (see
            # winograd.winograd_backward).
            _input_transform_phases(xpad, line0, line1, 2, v[t])
            _grad_output_transform(grad_out, line0, line1, th, m[t])
            for k in range(36):
                mk = m[t, k, : n_out * tiles].reshape(n_out, tiles)
                gemm(False, False, n_out, n_channels, tiles, m[t, k], tiles, v[t, k],
                     n_channels, 1.0, partial_u[t, k].reshape(-1), n_channels)  # fmt: skip
                # V[ξ] is no longer needed: its space takes dV[ξ] (C × tiles).
                np.dot(u[k].T, mk, v[t, k, : n_channels * tiles].reshape(n_channels, tiles))
            _input_transform_backward(v[t], line0, line1, 2, target)
        if n_batch >= n_blocks:  # whole samples: this block's are complete
            for n in range(first // th, last // th):
                _crop(gxpad[n], padding, grad_x[n])
    if n_batch < n_blocks:
        _merge_blocks(n_blocks, grad_out, grad_b, gxpad, partial_b)
        for n in range(n_batch):
            _crop(gxpad[n], padding, grad_x[n])
    sum_blocks(partial_u.reshape(n_blocks, -1), grad_u.reshape(-1))
    sum_blocks(partial_b, grad_b)
