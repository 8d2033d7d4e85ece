"""Winograd F(2×2, 3×3) convolution kernels: 3×3, stride 1, dilation 1, one group.

Lavin & Gray (2015), "Fast Algorithms for Convolutional Neural Networks". A 2×2 block of
outputs of a 3×3 convolution reads a 4×4 patch ``d`` of the input. With the constant matrices

    Bᵀ = [1  0 −1  0]      G = [ 1    0    0 ]      Aᵀ = [1  1  1  0]
         [0  1  1  0]          [ ½    ½    ½ ]           [0  1 −1 −1]
         [0 −1  1  0]          [ ½   −½    ½ ]
         [0  1  0 −1]          [ 0    0    1 ]

the block is Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A, exactly (in exact arithmetic). Summed over input
channels, the 4×4 elementwise product becomes 16 independent matrix products, one per
position ξ of the 4×4 "Winograd domain":

    M[ξ] (Cout × T) = U[ξ] (Cout × C) @ V[ξ] (C × T),   U = G g Gᵀ,  V = Bᵀ d B,

over T tiles. That is 16·Cout·C multiplies per 4 outputs instead of 36·Cout·C: 2.25× fewer,
done by BLAS. The transforms themselves are only additions (and halvings, for U).

Backward is the transpose of the same chain (no second convolution): with dM = A dY Aᵀ,
the weight gradient is dU[ξ] = Σ_T dM[ξ] @ V[ξ]ᵀ, then dg = Gᵀ dU G; the input gradient is
dV[ξ] = U[ξ]ᵀ @ dM[ξ], then d(patch) = B dV Bᵀ added onto the overlapping 4×4 patches.

Layout. Output tiles are 2×2 blocks; a "line" is one row of tiles (tw of them) of one sample.
Lines are processed a chunk at a time (``lines`` of them, so that V and M of a chunk stay in
cache). A chunk's V lives in a thread's work array v[t] (16, plane): plane ξ holds V[ξ]
(C × tiles) row-major in its first C·tiles entries; likewise M in m[t]. The planes must not
be a multiple of 4 KiB apart: the transforms write all 16 at once, and 16 streams mapping to
one L1 cache set thrash it (measured 5–20× slower transforms on 32×32 images), so the
caller rounds planes up to whole 4 KiB pages plus one cache line. The input is copied once
into a zero-padded array ``xpad`` (N, C, 2·th + 2, 2·tw + 2) so that every tile reads a full
4×4 patch without bounds tests; tiles hanging over an odd output edge compute an extra row
or column that is not stored.

Accuracy: the transforms add at most 4 values per step, so float32 results differ from the
direct sum by a few ulps of the output scale (measured ~1e-7 relative; tests bound it).

Determinism: samples are split into fixed contiguous blocks, one per thread (as in conv.py),
and per-block partial weight gradients are added in block order. A batch smaller than the
thread count is split by tile lines instead, in the backward as in the forward: each block
adds its input gradient into a private copy of the padded batch, and the copies are summed
in block order (:func:`_block_lines`; batch 1, 2 threads: 0.45–0.65 of the one-block
backward's time). Either way a thread count gives bit-identical results.

Debugging: with ``NUMBA_DISABLE_JIT=1`` these are plain Python (slow) that pdb can step into.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import config
from .blas import gemm, gemm_small_blocks
from .conv import row_sum, sum_blocks, zero_fill


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _bt(d0, d1, d2, d3):
    """Bᵀ applied to a 4-vector (the input transform along one axis)."""
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _b(w0, w1, w2, w3):
    """B applied to a 4-vector: the transpose of :func:`_bt`."""
    return w0, w1 - w2 + w3, w1 + w2 - w0, -w3


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _at(m0, m1, m2, m3):
    """Aᵀ applied to a 4-vector (the output transform along one axis)."""
    return m0 + m1 + m2, m1 - m2 - m3


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _a(y0, y1):
    """A applied to a 2-vector: the transpose of :func:`_at`."""
    return y0, y0 + y1, y0 - y1, -y1


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _g(g0, g1, g2, half):
    """G applied to a 3-vector (the weight transform along one axis); half = 0.5 in the dtype."""
    return g0, half * (g0 + g1 + g2), half * (g0 - g1 + g2), g2


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _gt(u0, u1, u2, u3, half):
    """Gᵀ applied to a 4-vector: the transpose of :func:`_g`."""
    return u0 + half * (u1 + u2), half * (u1 - u2), half * (u1 + u2) + u3


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _to_planes(rows, u, o):
    """u[k, o, c] = rows[c, k]: output channel o's transformed weights into u's planes.

    The weight transforms compute one (o, c) pair's (k + 1)² values at a time; storing them
    straight into u would write (k + 1)² planes at once, Cout·C values apart — often a
    multiple of 4 KiB, so all in one L1 cache set, which thrashes (measured 4x slower on
    128 → 128). They go to ``rows`` (C, planes) first, then into u one plane at a time.
    """
    for k in range(rows.shape[1]):
        for c in range(rows.shape[0]):
            u[k, o, c] = rows[c, k]


@njit(parallel=True, fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def winograd_weight_transform(weight, u):
    """u[ξ, o, c] = (G · weight[o, c] · Gᵀ)[ξ], ξ = 4·row + column.

    Shapes: weight (Cout, C, 3, 3); u (16, Cout, C), overwritten.
    Parallel over: output channels (each writes its own o); run on one thread for small layers
    (the caller's config.threads_for), where starting a parallel region costs more.
    """
    n_out, n_channels = weight.shape[0], weight.shape[1]
    # A literal 0.5 is a float64 and would turn float32 arithmetic into float64.
    half = u.dtype.type(0.5)
    for o in prange(n_out):
        rows = np.empty((n_channels, 16), dtype=u.dtype)  # see _to_planes
        for c in range(n_channels):
            w = weight[o, c]
            # Columns of G·w (4×3), one per kernel column.
            c0 = _g(w[0, 0], w[1, 0], w[2, 0], half)
            c1 = _g(w[0, 1], w[1, 1], w[2, 1], half)
            c2 = _g(w[0, 2], w[1, 2], w[2, 2], half)
            for i in range(4):
                row = _g(c0[i], c1[i], c2[i], half)
                for j in range(4):
                    rows[c, 4 * i + j] = row[j]
        _to_planes(rows, u, o)


@njit(parallel=True, fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def winograd_weight_transform_backward(grad_u, grad_w):
    """grad_w[o, c] = Gᵀ · grad_u[:, o, c] (as 4×4) · G: the transpose of the weight transform.

    Shapes: grad_u (16, Cout, C); grad_w (Cout, C, 3, 3), overwritten. Parallel as above.
    """
    n_out, n_channels = grad_w.shape[0], grad_w.shape[1]
    half = grad_w.dtype.type(0.5)
    for o in prange(n_out):
        # Reading from all planes at once measured fine (unlike writing: see _to_planes).
        for c in range(n_channels):
            # Columns of Gᵀ·dU (3×4), one per Winograd-domain column.
            c0 = _gt(grad_u[0, o, c], grad_u[4, o, c], grad_u[8, o, c], grad_u[12, o, c], half)
            c1 = _gt(grad_u[1, o, c], grad_u[5, o, c], grad_u[9, o, c], grad_u[13, o, c], half)
            c2 = _gt(grad_u[2, o, c], grad_u[6, o, c], grad_u[10, o, c], grad_u[14, o, c], half)
            c3 = _gt(grad_u[3, o, c], grad_u[7, o, c], grad_u[11, o, c], grad_u[15, o, c], half)
            for i in range(3):
                row = _gt(c0[i], c1[i], c2[i], c3[i], half)
                for j in range(3):
                    grad_w[o, c, i, j] = row[j]


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _transform_patch(x, q, w1, w2, w3, v, p):
    """v[ξ, p] = (Bᵀ d B)[ξ], ξ = 0 .. 15, for the 4×4 patch d at flat offset q of x, its rows
    w1 apart (w2 = 2·w1, w3 = 3·w1; all unsigned)."""
    one, two, three = np.uint64(1), np.uint64(2), np.uint64(3)
    w = w1
    # Bᵀ down each of the patch's columns, then along each resulting row.
    a0 = _bt(x[q], x[q + w], x[q + w2], x[q + w3])
    a1 = _bt(x[q + one], x[q + w + one], x[q + w2 + one], x[q + w3 + one])
    a2 = _bt(x[q + two], x[q + w + two], x[q + w2 + two], x[q + w3 + two])
    a3 = _bt(x[q + three], x[q + w + three], x[q + w2 + three], x[q + w3 + three])
    v[0, p], v[1, p], v[2, p], v[3, p] = _bt(a0[0], a1[0], a2[0], a3[0])
    v[4, p], v[5, p], v[6, p], v[7, p] = _bt(a0[1], a1[1], a2[1], a3[1])
    v[8, p], v[9, p], v[10, p], v[11, p] = _bt(a0[2], a1[2], a2[2], a3[2])
    v[12, p], v[13, p], v[14, p], v[15, p] = _bt(a0[3], a1[3], a2[3], a3[3])


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _input_transform(xpad, line0, line1, v, by_tile=False):
    """V[ξ][c, p] = (Bᵀ d B)[ξ] for the 4×4 patch d of tile p in lines line0 .. line1.

    Shapes: xpad (N, C, 2·th + 2, 2·tw + 2); v (16, ≥ C·tiles), tiles = (line1 − line0)·tw:
    plane ξ holds V[ξ] (C × tiles) row-major in its first C·tiles entries, or with
    ``by_tile`` its transpose (tiles × C), for the backward's weight gradient (see
    winograd_backward).
    """
    n_channels, height, width = xpad.shape[1], xpad.shape[2], xpad.shape[3]
    th = (height - 2) // 2
    tw = (width - 2) // 2
    tiles = (line1 - line0) * tw
    # Flat indexing with unsigned offsets: a view per (channel, line) costs a reference
    # count update each, and Numba tests signed indices for wrap-around.
    x = xpad.reshape(-1)
    u = np.uint64
    w1, w2, w3 = u(width), u(2 * width), u(3 * width)
    plane = u(height * width)
    # The inner loop is the one whose entries of v are consecutive: channels for by_tile,
    # else tiles (by_tile with the channels outside wrote each cache line of v once per
    # channel, spread over the whole chunk: measured 1.6–2.2x slower).
    if by_tile:
        for line in range(line0, line1):
            n = line // th
            r = u((n * n_channels * height + 2 * (line - n * th)) * width)
            for tx in range(tw):
                q = r + u(2 * tx)
                p = ((line - line0) * tw + tx) * n_channels
                for c in range(n_channels):
                    _transform_patch(x, q + u(c) * plane, w1, w2, w3, v, p + c)
    else:
        for c in range(n_channels):
            for line in range(line0, line1):
                n = line // th
                r = u(((n * n_channels + c) * height + 2 * (line - n * th)) * width)
                base = c * tiles + (line - line0) * tw
                for tx in range(tw):
                    _transform_patch(x, r + u(2 * tx), w1, w2, w3, v, base + tx)


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _input_transform_backward(v, line0, line1, gxpad):
    """gxpad[n, c, patch of tile p] += B · dV[:][c, p] (as 4×4) · Bᵀ: the transpose above.

    Shapes as :func:`_input_transform`, with v holding dV. Patches of neighbouring tiles
    overlap by two rows or columns, so values accumulate.
    """
    n_channels, height, width = gxpad.shape[1], gxpad.shape[2], gxpad.shape[3]
    th = (height - 2) // 2
    tw = (width - 2) // 2
    tiles = (line1 - line0) * tw
    g = gxpad.reshape(-1)  # flat, unsigned offsets: see _input_transform
    u = np.uint64
    w1, w2, w3 = u(width), u(2 * width), u(3 * width)
    for c in range(n_channels):
        for line in range(line0, line1):
            n = line // th
            r = u(((n * n_channels + c) * height + 2 * (line - n * th)) * width)
            base = c * tiles + (line - line0) * tw
            for tx in range(tw):
                q = r + u(2 * tx)
                p = base + tx
                # B along each row of dV, then down each resulting column.
                h0 = _b(v[0, p], v[1, p], v[2, p], v[3, p])
                h1 = _b(v[4, p], v[5, p], v[6, p], v[7, p])
                h2 = _b(v[8, p], v[9, p], v[10, p], v[11, p])
                h3 = _b(v[12, p], v[13, p], v[14, p], v[15, p])
                for j in range(4):
                    col = _b(h0[j], h1[j], h2[j], h3[j])
                    k = q + u(j)
                    g[k] += col[0]
                    g[k + w1] += col[1]
                    g[k + w2] += col[2]
                    g[k + w3] += col[3]


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _output_transform(m, bias, relu, line0, line1, th, out):
    """out[n, o, 2×2 block of tile p] = Aᵀ · M[:][o, p] (as 4×4) · A + bias[o], then
    max(·, 0) if ``relu`` (a fused ReLU).

    Shapes: m (16, ≥ Cout·tiles), planes as in :func:`_input_transform`; out
    (N, Cout, OH, OW). Two passes per channel: the transform over all tiles of the chunk
    (contiguous, so LLVM vectorises it; one line alone holds too few tiles) into ``rows``
    (2, 2·tiles), laid out as the output's rows: tile t's block goes to columns 2t and 2t + 1
    of rows 0 and 1, so a line's two output rows are contiguous runs there. Then each output
    row is one contiguous copy, which drops the column past an odd right edge by its length
    (1.1–1.3x faster than scattering the values one by one).
    """
    n_out, ow = out.shape[1], out.shape[3]
    tiles = (line1 - line0) * ((ow + 1) // 2)
    rows = np.empty((2, 2 * tiles), dtype=out.dtype)
    for o in range(n_out):
        b = bias[o]
        base = o * tiles
        for t in range(tiles):
            p = base + t
            a0 = _at(m[0, p], m[4, p], m[8, p], m[12, p])
            a1 = _at(m[1, p], m[5, p], m[9, p], m[13, p])
            a2 = _at(m[2, p], m[6, p], m[10, p], m[14, p])
            a3 = _at(m[3, p], m[7, p], m[11, p], m[15, p])
            row0 = _at(a0[0], a1[0], a2[0], a3[0])
            row1 = _at(a0[1], a1[1], a2[1], a3[1])
            rows[0, 2 * t] = row0[0] + b
            rows[0, 2 * t + 1] = row0[1] + b
            rows[1, 2 * t] = row1[0] + b
            rows[1, 2 * t + 1] = row1[1] + b
        _rows_to_output(rows, relu, line0, line1, th, o, out)


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _rows_to_output(rows, relu, line0, line1, th, o, out):
    """Channel o's output rows of tile lines line0 .. line1 from ``rows`` (s, s·tiles), in
    which an output transform with s×s tiles left them laid out as the output's rows (line
    ℓ's row i at columns s·(ℓ − line0)·tw ...): one contiguous copy per row, cut at the
    output's width and height (the overhang of the last tiles is dropped), through ReLU's
    max(·, 0) if ``relu``. Shared by the 2-D Winograd kernels."""
    step = rows.shape[0]
    oh, ow = out.shape[2], out.shape[3]
    tw = (ow + step - 1) // step
    for line in range(line0, line1):
        n = line // th
        i0 = step * (line - n * th)
        c0 = step * (line - line0) * tw  # this line's first column in rows
        for i in range(min(step, oh - i0)):
            src = rows[i, c0 : c0 + ow]
            dst = out[n, o, i0 + i]
            if relu:  # "0 if v <= 0": a NaN stays NaN, as in ReLU
                for j in range(ow):
                    v = src[j]
                    dst[j] = 0 if v <= 0 else v
            else:
                for j in range(ow):
                    dst[j] = src[j]


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _grad_output_transform(grad_out, line0, line1, th, m):
    """dM[ξ][o, p] = (A · dy · Aᵀ)[ξ] for the 2×2 gradient block dy of tile p (0 past the edge).

    Shapes: grad_out (N, Cout, OH, OW); m (16, ≥ Cout·tiles), planes as in
    :func:`_input_transform`. Two passes per channel, the mirror of _output_transform: each
    gradient row of the chunk's lines copied in one contiguous run into ``rows`` (2, 2·tiles),
    zeros past the edges (:func:`_output_to_rows`), then the transform over all tiles of the
    chunk, which LLVM vectorises (one pass writing 16 planes per tile ran scalar: 2x slower).
    """
    n_out, ow = grad_out.shape[1], grad_out.shape[3]
    tiles = (line1 - line0) * ((ow + 1) // 2)
    rows = np.empty((2, 2 * tiles), dtype=grad_out.dtype)
    for o in range(n_out):
        _output_to_rows(grad_out, line0, line1, th, o, rows)
        # Row r of A·dy (r = 0..3), then A along it into planes 4r .. 4r + 3: one loop per r,
        # so that each writes 4 planes; LLVM cannot tell the 16 planes of m apart and does
        # not vectorise a loop that stores into all of them.
        base = o * tiles
        for r in range(4):
            for t in range(tiles):
                c0 = _a(rows[0, 2 * t], rows[1, 2 * t])[r]
                c1 = _a(rows[0, 2 * t + 1], rows[1, 2 * t + 1])[r]
                p = base + t
                m[4 * r, p], m[4 * r + 1, p], m[4 * r + 2, p], m[4 * r + 3, p] = _a(c0, c1)


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _output_to_rows(grad_out, line0, line1, th, o, rows):
    """The transpose of :func:`_rows_to_output`: channel o's rows of grad_out for tile lines
    line0 .. line1 into ``rows`` (s, s·tiles), one contiguous copy per row, and zeros where
    the last tiles hang over the edges."""
    step = rows.shape[0]
    oh, ow = grad_out.shape[2], grad_out.shape[3]
    tw = (ow + step - 1) // step
    zero = rows.dtype.type(0)
    for line in range(line0, line1):
        n = line // th
        i0 = step * (line - n * th)
        c0 = step * (line - line0) * tw  # this line's first column in rows
        for i in range(step):
            dst = rows[i, c0 : c0 + step * tw]
            if i0 + i < oh:
                src = grad_out[n, o, i0 + i]
                for j in range(ow):
                    dst[j] = src[j]
                for j in range(ow, step * tw):
                    dst[j] = zero
            else:
                for j in range(step * tw):
                    dst[j] = zero


@njit(parallel=True, fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def winograd_forward(x, u, bias, relu, padding, lines, out, xpad, v, m):
    """out = conv3×3(x, g) + bias (then max(·, 0) if ``relu``), with u = the transformed
    weights (winograd_weight_transform).

    Shapes: x (N, C, H, W); u (16, Cout, C); bias (Cout,) (zeros for none); padding the
    (top, left) zero padding; out (N, Cout, OH, OW) written. Work space: xpad
    (N, C, 2·th + 2, 2·tw + 2) with th = ⌈OH/2⌉, tw = ⌈OW/2⌉; v (T, 16, ≥ C·lines·tw),
    m (T, 16, ≥ Cout·lines·tw): one per block (see the module docstring).
    Loop nest: pad every sample into xpad; then for block t of tile lines (the batch's
    N·th lines split into T even runs): for chunk of ``lines`` of them: V = Bᵀ d B;
    M[ξ] = U[ξ] @ V[ξ] (16 BLAS calls); out = Aᵀ M A + bias.
    Parallel over: samples (padding xpad[n]), then blocks of tile lines (block t writes only
    the output rows of its own lines, and v[t], m[t]: race-free).
    """
    n_batch, n_channels = x.shape[0], x.shape[1]
    n_out = u.shape[1]
    n_blocks = v.shape[0]
    th = (xpad.shape[2] - 2) // 2
    tw = (xpad.shape[3] - 2) // 2
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
            _input_transform(xpad, line0, line1, v[t])
            for k in range(16):
                gemm_small_blocks(False, n_out, tiles, n_channels, u[k].reshape(-1), n_channels,
                                  v[t, k], tiles, 0.0, m[t, k], tiles)  # fmt: skip
            _output_transform(m[t], bias, relu, line0, line1, th, out)


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _pad(x, padding, xpad):
    """xpad = x placed at (top, left) in zeros. Shapes: x (C, H, W); xpad (C, H2, W2)."""
    n_channels, height, width = x.shape
    top, left = padding
    flat = xpad.reshape(-1)
    for i in range(flat.shape[0]):
        flat[i] = 0
    for c in range(n_channels):
        for i in range(height):
            src = x[c, i]
            dst = xpad[c, top + i, left:]
            for j in range(width):
                dst[j] = src[j]


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _block_lines(t, n_blocks, th, grad_out, grad_b, gxpad, partial_b):
    """Block t of a Winograd backward: (first, last, target), its tile lines and where its
    input gradient goes; zeroes what it adds into and sums its samples' bias gradient. ``th``:
    tile lines per sample. Any rank (the 2-D kernels and Conv3d's F(2×2×2) share it).

    Whole samples per block when the batch has at least one per block: their lines, and the
    shared gxpad (a sample's overlapping patches stay on one thread). A smaller batch (one
    image) is shared out by tile lines, as the forward does, so that every thread works:
    block t adds its input gradient into a private copy of the padded batch, gxpad[t·N ..
    (t + 1)·N] (gxpad holds T copies), which :func:`_merge_blocks` sums afterwards. Shapes:
    grad_out (N, Cout, OH, OW); grad_b (Cout,) or (0,) for no bias (only its length is
    read: partial_b's rows are padded past Cout); gxpad (N or T·N, C, H2, W2); partial_b
    (T, ≥ Cout).
    """
    n_batch = grad_out.shape[0]
    zero_fill(partial_b[t])
    if n_batch < n_blocks:
        target = gxpad[t * n_batch : (t + 1) * n_batch]
        zero_fill(target.reshape(-1))
        n_lines = n_batch * th
        return (t * n_lines) // n_blocks, ((t + 1) * n_lines) // n_blocks, target
    n0 = (t * n_batch) // n_blocks
    n1 = ((t + 1) * n_batch) // n_blocks
    for n in range(n0, n1):
        zero_fill(gxpad[n].reshape(-1))
        for o in range(grad_b.shape[0]):
            partial_b[t, o] += row_sum(grad_out[n, o].reshape(-1))
    return n0 * th, n1 * th, gxpad


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _merge_blocks(n_blocks, grad_out, grad_b, gxpad, partial_b):
    """After the blocks of a batch smaller than their count (see :func:`_block_lines`): the
    blocks' private copies summed into the first, gxpad[0 .. N], in block order, and the
    bias gradient into partial_b[0] (serial: the batch is small). Any rank."""
    n_batch = grad_out.shape[0]
    for n in range(n_batch):
        total = gxpad[n].reshape(-1)
        for t in range(1, n_blocks):
            part = gxpad[t * n_batch + n].reshape(-1)
            for i in range(total.shape[0]):
                total[i] += part[i]
        for o in range(grad_b.shape[0]):
            partial_b[0, o] += row_sum(grad_out[n, o].reshape(-1))


@njit(parallel=True, fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def winograd_backward(
    xpad, u, grad_out, padding, lines, grad_x, grad_u, grad_b, gxpad, v, m, partial_u, partial_b
):
    """All three gradients of :func:`winograd_forward`, in the Winograd domain.

    Shapes: xpad as the forward left it (the padded input); u (16, Cout, C); grad_out
    (N, Cout, OH, OW); grad_x (N, C, H, W), grad_u (16, Cout, C) and grad_b (Cout,) or (0,)
    overwritten (grad_u is the gradient of u: winograd_weight_transform_backward turns it
    into the weight gradient). Work space: gxpad like xpad, v, m as in the forward,
    partial_u (T, 16, Cout, C), partial_b (T, ≥ Cout).
    Loop nest: for block t: for chunk of tile lines: V = Bᵀ d B; dM = A dY Aᵀ;
    partial_u[t][ξ] += dM[ξ] @ V[ξ]ᵀ; dV[ξ] = U[ξ]ᵀ @ dM[ξ]; gxpad += B dV Bᵀ; then crop
    gxpad into grad_x, and grad_u = Σ_t partial_u[t] in block order.
    Parallel over: blocks of samples (block t writes gxpad[n] and grad_x[n] of its own samples
    and its own work rows; the sums over samples go through the per-block partials: race-free).
    """
    n_batch, n_channels = grad_x.shape[0], grad_x.shape[1]
    n_out = u.shape[1]
    n_blocks = v.shape[0]
    th = (xpad.shape[2] - 2) // 2
    tw = (xpad.shape[3] - 2) // 2
    for t in prange(n_blocks):
        # Loops and serial helpers only: whole-array statements here would each become a
        # parallel loop of their own, slow to compile (see conv.py).
        zero_fill(partial_u[t].reshape(-1))
        first, last, target = _block_lines(t, n_blocks, th, grad_out, grad_b, gxpad, partial_b)
        for line0 in range(first, last, lines):
            line1 = min(line0 + lines, last)
            tiles = (line1 - line0) * tw
            # V stored by tile (tiles × C), so that dU[ξ] += dM[ξ] @ V[ξ]ᵀ multiplies two
            # row-major matrices: BLAS ran it from the (C × tiles) layout, transposed, at 2/3
            # of the speed (64×252 by 252×32, one core, AVX-512: 59 against 91 GFLOP/s).
            _input_transform(xpad, line0, line1, v[t], True)
            _grad_output_transform(grad_out, line0, line1, th, m[t])
            for k in range(16):
                mk = m[t, k, : n_out * tiles].reshape(n_out, tiles)
                gemm(False, False, n_out, n_channels, tiles, m[t, k], tiles, v[t, k],
                     n_channels, 1.0, partial_u[t, k].reshape(-1), n_channels)  # fmt: skip
                # V[ξ] is no longer needed: its space takes dV[ξ] (C × tiles).
                np.dot(u[k].T, mk, v[t, k, : n_channels * tiles].reshape(n_channels, tiles))
            _input_transform_backward(v[t], line0, line1, target)
        if n_batch >= n_blocks:  # whole samples: this block's are complete
            for n in range(first // th, last // th):
                _crop(gxpad[n], padding, grad_x[n])
    if n_batch < n_blocks:
        _merge_blocks(n_blocks, grad_out, grad_b, gxpad, partial_b)
        for n in range(n_batch):
            _crop(gxpad[n], padding, grad_x[n])
    sum_blocks(partial_u.reshape(n_blocks, -1), grad_u.reshape(-1))
    sum_blocks(partial_b, grad_b)


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _crop(xpad, padding, x):
    """x = the (H, W) window of xpad at (top, left): the transpose of :func:`_pad`."""
    n_channels, height, width = x.shape
    top, left = padding
    for c in range(n_channels):
        for i in range(height):
            src = xpad[c, top + i, left:]
            dst = x[c, i]
            for j in range(width):
                dst[j] = src[j]
