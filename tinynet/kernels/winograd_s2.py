"""Winograd forward of a 3×3 convolution of stride 2: the polyphase F(4×4, 2×2).

Stride 2 skips every other input position, so the 3×3 Winograd matrices (winograd4.py)
do not apply. Split the padded input ``x`` by the parity of its rows and columns into four
phase planes, P_rc[i, j] = x[2i + r, 2j + c]. An output reads x[2i + a, 2j + b] for a, b in
0..2, so it is the sum of four stride-1 convolutions, one per phase, with the kernel's taps
of that parity: even rows and columns take the 2×2 kernel (w00 w02; w20 w22) on P_00; odd
ones a single tap (w11 on P_11), and the mixed phases two taps (w01 w21 on P_01; w10 w12 on
P_10). Each is a stride-1 convolution with a kernel of at most 2×2, which Winograd's
F(4, 2) computes: with the points 0, 1, −1, 2 and ∞,

    Bᵀ = [2 −1 −2  1  0]    G = [ 1/2    0  ]    Aᵀ = [1  1  1  1  0]
         [0 −2 −1  1  0]        [−1/2  −1/2 ]         [0  1 −1  2  0]
         [0  2 −3  1  0]        [−1/6   1/6 ]         [0  1  1  4  0]
         [0 −1  0  1  0]        [ 1/6   1/3 ]         [0  1 −1  8  1]
         [0  2 −1 −2  1]        [  0     1  ]

(derived as Lavin & Gray's, for correlation), so 4 outputs along an axis read 5 values of
the phase plane. A one-tap kernel (g0, 0) vanishes at the point ∞ (the last row of G), and
the first four rows of Bᵀ do not read the fifth value: along an axis, the 9 input values
x[0..8] under a row of 4 outputs give 5 domain values of the even phase and 4 of the odd
one, ``T`` below, 9 in all.

All four phases share one 5×5 domain and one output transform Aᵀ · M · A, so their
products add up before it: at domain point (a, b) the four phases' products are one matrix
product of depth 4·C (the phases' channels stacked), fewer where a phase vanishes (a or b
at ∞: depth 2·C, or C at (∞, ∞)). Per 4×4 output tile and pair of channels that is
16·4 + 8·2 + 1 = 81 multiplies against 16·9 = 144 for the direct sum: 1.78× fewer, in
25 products of depth mostly 128 (for 32 input channels), which BLAS runs near its peak.
The price is the transforms: 81 domain values per input channel and tile (from a 9×9
patch; patches overlap by one row and column) and a 5×5 → 4×4 output transform.

Layout: by tile, as winograd5.py's ``winograd5_forward`` (read winograd.py first for
chunks and blocks). Plane ξ = 5·a + b of V holds tiles × depth (row-major; a tile's row
holds the channels of the phases present at ξ, in the order P_00, P_01, P_10, P_11), u
(25, 4·C, Cout) likewise (its first depth rows used), and M[ξ] = V[ξ] @ u[ξ] (tiles ×
Cout). The transforms vectorise over channels: each tile line's 9 input rows are first
transposed to channels last (16 × 16 blocks in registers), and the output rows are
assembled channels last and transposed into the output the same way.

Where it pays (the layer's rule, with measurements: nn/conv_winograd.py): layers of 32+
input and 48+ output channels. Per stage, (64, 32, 32²) → 64, one thread, 5.2–5.6 ms in
all: input transform 1.3 (its transposes ~0.6), products 3.1 (OpenBLAS's single-thread
rate), output transform 0.8–0.9; the shifted products (conv_shifted.py) took 7.3. Measured
and not kept: V by channel (tiles last, as winograd.py: the transform per patch then runs
scalar, 2.0 ms against 0.85); M by channel from V by tile (sgemm with a transposed operand:
products 4.7 ms against 3.1); the batch padded channels last first, as winograd5.py does
(a copy written and read through memory: 1.2x slower forwards); the output read back from
M by tile one value at a time, Cout apart (1.4 ms against 0.9).

Backward (:func:`winograd_s2_backward`): the transpose of the same chain, as winograd.py's:
dM = A · dy · Aᵀ per tile, dU[ξ] += V[ξ]ᵀ @ dM[ξ] (V computed again from x), dV[ξ] =
dM[ξ] @ U[ξ]ᵀ, then Tᵀ · dV · T added onto each tile's 9×9 patch of the input's gradient,
and the weights' gradient from dU by the weight transform's transpose. Whole samples per
thread; a batch smaller than the thread count, or a layer of more than 4096 channel pairs
(nn/conv_winograd.py), takes the layer's other backward (it reads only x). Per stage,
(64, 32, 32²) → 64, one thread, ~12 ms in all: V 1.8, dM 0.7, the two sets of products
3.2 + 3.1, the input gradient's transform 1.4–3.0.

Accuracy: the transforms multiply by up to 8 and add 5 values a step, as F(4×4, 3×3):
float32 results differ from the direct sum by ~1e-6 of the output scale.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import config
from .blas import gemm
from .conv import row_sum, sum_blocks, zero_fill
from .vector import WIDTH, transpose_vector

# Output tile side, and the patch of padded input a tile reads (2·STEP + 1 per axis).
STEP = 4
PATCH = 2 * STEP + 1
# Domain points per axis (0, 1, −1, 2, ∞) and planes in all.
POINTS = 5
PLANES = POINTS * POINTS
# The deepest plane stacks all four phases: its product is of depth 4·C.
PLANES_DEPTH = 4


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _constants(dtype):
    """2, 3, 4, 8, 1/2 and 1/6 in ``dtype`` (a literal would turn float32 into float64)."""
    one = dtype.type(1)
    return (
        dtype.type(2),
        dtype.type(3),
        dtype.type(4),
        dtype.type(8),
        one / dtype.type(2),
        one / dtype.type(6),
    )


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _t(d, k):
    """T along one axis: the 9 values d[0..8] under 4 outputs → Bᵀ of the even ones
    (d0, d2, .., d8: 5 domain values) then the first four rows of Bᵀ of the odd ones
    (d1, .., d7: 4 values; the fifth row, for ∞, is where the odd phase's kernel is zero)."""
    d0, d1, d2, d3, d4, d5, d6, d7, d8 = d
    two, three = k[0], k[1]
    e3 = d6 - d2  # Bᵀ's row 3, e3 − e1, shared by rows 0, 1, 2 and 4 (e = the even values)
    o3 = d7 - d3  # the same for the odd values
    return (
        two * (d0 - d4) + e3,
        e3 - d2 - d4,
        e3 + three * (d2 - d4),
        e3,
        d8 - d4 - two * e3,
        two * (d1 - d5) + o3,
        o3 - d3 - d5,
        o3 + three * (d3 - d5),
        o3,
    )


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _g(g0, g1, k):
    """G applied to a 2-tap kernel (g0, g1): its values at the points 0, 1, −1, 2, ∞."""
    half, sixth = k[4], k[5]
    return half * g0, -half * (g0 + g1), sixth * (g1 - g0), sixth * (g0 + k[0] * g1), g1


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _at(m, k):
    """Aᵀ applied to a 5-tuple (the output transform along one axis)."""
    m0, m1, m2, m3, m4 = m
    two, four, eight = k[0], k[2], k[3]
    s12, d12 = m1 + m2, m1 - m2
    return m0 + s12 + m3, d12 + two * m3, s12 + four * m3, d12 + eight * m3 + m4


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _slot(row_phase, col_phase, a, b):
    """Which block of C rows phase (row_phase, col_phase) takes in plane (a, b): its rank
    among the phases present there (P_01 is absent at b = ∞, P_10 at a = ∞)."""
    ends = POINTS - 1  # the index of the point ∞
    if row_phase == 0:
        return col_phase
    if col_phase == 0:
        return 2 if b < ends else 1
    return 3


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def depth(a, b):
    """How many phases plane (a, b) stacks (its product's depth is that times C)."""
    ends = POINTS - 1
    return 1 + (a < ends) + (b < ends) + (a < ends and b < ends)


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _nine(x, q, w):
    """The 9 values x[q], x[q + w], ..., x[q + 8·w] (a patch's column or row; unsigned)."""
    w2 = w + w
    w4 = w2 + w2
    return (x[q], x[q + w], x[q + w2], x[q + w2 + w], x[q + w4], x[q + w4 + w],
            x[q + w4 + w2], x[q + w4 + w2 + w], x[q + w4 + w4])  # fmt: skip


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _store_nine(x, q, w, v):
    """x[q + i·w] = v[i] for i = 0 .. 8: the stores matching :func:`_nine`."""
    w2 = w + w
    w4 = w2 + w2
    x[q], x[q + w], x[q + w2], x[q + w2 + w] = v[0], v[1], v[2], v[3]
    x[q + w4], x[q + w4 + w], x[q + w4 + w2] = v[4], v[5], v[6]
    x[q + w4 + w2 + w], x[q + w4 + w4] = v[7], v[8]


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _places(a, row_phase, p, plane, c):
    """Where the 9 values of one row of a tile's 9×9 transform go in V (flat, planes
    ``plane`` apart, C = c channels; all unsigned): domain row a of phase row_phase, tile
    p. Value b < 5 (the even columns' points) to plane 5·a + b, b ≥ 5 (the odd columns')
    to plane 5·a + b − 5, each at tile p's row (depth·C long) and its phase's block of C."""
    u = np.uint64
    e0 = u(POINTS * a) * plane
    d0 = e0 + p * u(depth(a, 0)) * c
    d1 = e0 + plane + p * u(depth(a, 1)) * c
    d2 = e0 + u(2) * plane + p * u(depth(a, 2)) * c
    d3 = e0 + u(3) * plane + p * u(depth(a, 3)) * c
    d4 = e0 + u(4) * plane + p * u(depth(a, 4)) * c
    return (
        d0 + u(_slot(row_phase, 0, a, 0)) * c,
        d1 + u(_slot(row_phase, 0, a, 1)) * c,
        d2 + u(_slot(row_phase, 0, a, 2)) * c,
        d3 + u(_slot(row_phase, 0, a, 3)) * c,
        d4 + u(_slot(row_phase, 0, a, 4)) * c,
        d0 + u(_slot(row_phase, 1, a, 0)) * c,
        d1 + u(_slot(row_phase, 1, a, 1)) * c,
        d2 + u(_slot(row_phase, 1, a, 2)) * c,
        d3 + u(_slot(row_phase, 1, a, 3)) * c,
    )


@njit(parallel=True, fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def weight_transform(weight, u):
    """u[5·a + b, slot·C + c, o] = (G · k · Gᵀ)[a, b] for each phase's kernel k of
    weight[o, c] (its taps of that parity, a 2×2 with zeros for the missing ones), where
    the phase is present (slot: :func:`_slot`).

    Shapes: weight (Cout, C, 3, 3); u (25, 4·C, Cout): rows past a plane's depth are left
    as they were (unused). Parallel over input channels: each writes its own rows of u.
    """
    n_out, n_channels = weight.shape[0], weight.shape[1]
    k = _constants(u.dtype)
    # G as a matrix, its columns G applied to (1, 0) and (0, 1): the transform below indexes
    # arrays (a tuple indexed at run time goes through a stack copy: measured 6x slower).
    g = np.empty((POINTS, 2), dtype=u.dtype)
    one, zero = u.dtype.type(1), u.dtype.type(0)
    g[:, 0] = _g(one, zero, k)
    g[:, 1] = _g(zero, one, k)
    for c in prange(n_channels):
        gk = np.empty((POINTS, 2, n_out), dtype=u.dtype)  # G · kernel, for every output
        for rp in range(2):
            for cp in range(2):
                # The phase's kernel: rows rp, rp + 2 and columns cp, cp + 2 of the 3×3
                # weights, zero where that index is 3.
                for o in range(n_out):
                    w = weight[o, c]
                    k00 = w[rp, cp]
                    k01 = w[rp, cp + 2] if cp == 0 else zero
                    k10 = w[rp + 2, cp] if rp == 0 else zero
                    k11 = w[rp + 2, cp + 2] if rp == 0 and cp == 0 else zero
                    for a in range(POINTS):
                        gk[a, 0, o] = g[a, 0] * k00 + g[a, 1] * k10
                        gk[a, 1, o] = g[a, 0] * k01 + g[a, 1] * k11
                # · Gᵀ, a row of u (all outputs) at a time: u's planes are a multiple of
                # 4 KiB apart, and a pass writing all of them per output thrashed one L1
                # cache set (32 → 64: 0.65 ms against 0.05 on one thread).
                for a in range(POINTS - rp):  # an odd phase has no point ∞
                    for b in range(POINTS - cp):
                        dst = u[POINTS * a + b, _slot(rp, cp, a, b) * n_channels + c]
                        for o in range(n_out):
                            dst[o] = gk[a, 0, o] * g[b, 0] + gk[a, 1, o] * g[b, 1]


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _channels_last_row(xf, src, plane, n_channels, cols, dst, d):
    """dst[d + q·C + c] = xf[src + c·plane + q] for q < cols, c < C: one input row, its C
    channels ``plane`` apart, transposed to channels last. In 16 × 16 blocks transposed in
    registers (vector.py; the last block of each axis moved back to overlap the one before)
    given 16 or more channels and columns, else one value at a time. Offsets unsigned."""
    u = np.uint64
    c = u(n_channels)
    if n_channels >= WIDTH and cols >= WIDTH:
        for c0 in range(0, n_channels, WIDTH):
            i = u(min(c0, n_channels - WIDTH))
            for q0 in range(0, cols, WIDTH):
                j = u(min(q0, cols - WIDTH))
                transpose_vector(dst, d + j * c + i, c, xf, src + i * plane + j, plane)
    else:
        for i in range(c):
            for j in range(u(cols)):
                dst[d + j * c + i] = xf[src + i * plane + j]


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _input_transform(x, top, left, th, tw, line0, line1, v):
    """V[ξ][p, slot·C + c] = (T · d · Tᵀ) of the 9×9 patch d of channel c under tile p, at
    the domain point and phase that ξ and slot stand for, for the tiles of lines line0 ..
    line1 (by tile: plane ξ holds tiles × depth(ξ)·C row-major), d read from x padded by
    (top, left) zeros.

    Per tile line: the line's 9 rows of the padded input, channels last, into ``rows``
    (:func:`_channels_last_row`; zeros for padding); T down every column (all columns and
    channels in one flat loop, which LLVM vectorises) into ``band``; then T along each band
    row, per tile a flat loop over the channels (a destination row, depth·C long, differs
    from plane to plane, so tiles are not one run). Band rows 0..4 are the even input rows'
    domain points, 5..8 the odd ones'. (The whole batch padded channels last first, as
    winograd5.py does, wrote and read that copy through memory: 1.2x slower forwards.)
    Shapes: x (N, C, H, W), contiguous; th, tw: tile lines per sample, tiles per line;
    v (25, ≥ 4·C·tiles).
    """
    n_channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    xf, vf = x.reshape(-1), v.reshape(-1)
    k = _constants(x.dtype)
    u = np.uint64
    c, plane = u(n_channels), u(v.shape[1])
    padded = 2 * STEP * tw + 1  # columns of the padded rows
    row = u(padded * n_channels)
    cols = min(width, padded - left)  # x's columns inside them
    zero = x.dtype.type(0)
    rows = np.empty(PATCH * row, dtype=x.dtype)
    band = np.empty(PATCH * row, dtype=x.dtype)
    for line in range(line0, line1):
        n = line // th
        for i in range(PATCH):
            r = 2 * STEP * (line - n * th) + i - top  # x's row under padded row i
            first = u(i) * row
            inside = 0 <= r < height
            # Zeros left and right of x's columns, or the whole row.
            start = first + u(left) * c if inside else first + row
            end = first + u(left + cols) * c if inside else first + row
            for q in range(first, start):
                rows[q] = zero
            for q in range(end, first + row):
                rows[q] = zero
            if inside:
                src = u((n * n_channels * height + r) * width)
                _channels_last_row(xf, src, u(height * width), n_channels, cols, rows, start)
        for q in range(row):  # T down the columns
            _store_nine(band, q, row, _t(_nine(rows, q, row), k))
        for alpha in range(PATCH):
            a = alpha if alpha < POINTS else alpha - POINTS
            rp = 0 if alpha < POINTS else 1
            b0 = u(alpha) * row
            for tx in range(tw):
                p = u((line - line0) * tw + tx)
                src = b0 + u(2 * STEP * tx) * c  # the tile's first column
                d0, d1, d2, d3, d4, d5, d6, d7, d8 = _places(a, rp, p, plane, c)
                for i in range(n_channels):
                    r = _t(_nine(band, src + u(i), c), k)
                    vf[d0 + u(i)], vf[d1 + u(i)], vf[d2 + u(i)] = r[0], r[1], r[2]
                    vf[d3 + u(i)], vf[d4 + u(i)], vf[d5 + u(i)] = r[3], r[4], r[5]
                    vf[d6 + u(i)], vf[d7 + u(i)], vf[d8 + u(i)] = r[6], r[7], r[8]


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _relu(v, relu, zero):
    """max(v, 0) if ``relu`` ("zero if v <= 0": a NaN stays NaN, as in ReLU), else v."""
    return zero if relu and v <= 0 else v


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _output_transform(m, bias, relu, line0, line1, th, out):
    """out[n, o, 4×4 block of tile p] = Aᵀ · M[:][p, o] (as 5×5) · A + bias[o], then
    max(·, 0) if ``relu``, from M by tile (plane ξ holds tiles × Cout).

    Aᵀ down each column c of M into ``half`` rows 4c + i, one flat loop over the chunk's
    (tile, channel) values each, which LLVM vectorises; then per tile line, Aᵀ along each
    row i for each tile (a loop over the channels) into ``rows``, the line's output rows
    one after another, channels last ((rows · OW) × Cout: a cut tile's columns past the
    edge spill into the next row's start, rewritten after); then ``rows`` transposed into
    the output, whose line is one run of rows · OW values per channel, in 16 × 16 blocks
    in registers (vector.py; read one value at a time, Cout apart, this stage took 1.4 ms
    against 0.9 on (64, 32, 32²) → 64, one thread).
    Shapes: m (25, ≥ tiles·Cout); out (N, Cout, OH, OW).
    """
    n_out, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    tw = (ow + STEP - 1) // STEP
    k = _constants(out.dtype)
    u = np.uint64
    cout = u(n_out)
    size = u((line1 - line0) * tw) * cout
    mf, plane = m.reshape(-1), u(m.shape[1])
    five = u(POINTS)
    half = np.empty(POINTS * STEP * size, dtype=out.dtype)
    for c in range(POINTS):
        s0 = u(c) * plane  # M[5a + c] at s0 + 5a·plane
        s1 = s0 + five * plane
        s2, s3, s4 = s1 + five * plane, s1 + u(10) * plane, s1 + u(15) * plane
        d0 = u(STEP * c) * size
        d1, d2, d3 = d0 + size, d0 + u(2) * size, d0 + u(3) * size
        for t in range(size):
            col = (mf[s0 + t], mf[s1 + t], mf[s2 + t], mf[s3 + t], mf[s4 + t])
            half[d0 + t], half[d1 + t], half[d2 + t], half[d3 + t] = _at(col, k)
    rows = np.empty((STEP * (ow + STEP)) * n_out, dtype=out.dtype)
    zero = out.dtype.type(0)
    outf = out.reshape(-1)
    out_plane = u(oh * ow)
    for line in range(line0, line1):
        n = line // th
        i0 = STEP * (line - n * th)
        valid = min(STEP, oh - i0)
        p0 = u((line - line0) * tw) * cout
        for i in range(valid):
            q0 = u(i) * size + p0  # half row 4c + i, this line's first tile
            q1, q2, q3, q4 = (
                q0 + u(4) * size,
                q0 + u(8) * size,
                q0 + u(12) * size,
                q0 + u(16) * size,
            )
            for tx in range(tw):
                src = u(tx) * cout
                dst = u(i * ow + STEP * tx) * cout
                for o in range(cout):
                    q = src + o
                    row = (half[q0 + q], half[q1 + q], half[q2 + q], half[q3 + q], half[q4 + q])
                    r = _at(row, k)
                    b = bias[o]
                    rows[dst + o] = _relu(r[0] + b, relu, zero)
                    rows[dst + cout + o] = _relu(r[1] + b, relu, zero)
                    rows[dst + u(2) * cout + o] = _relu(r[2] + b, relu, zero)
                    rows[dst + u(3) * cout + o] = _relu(r[3] + b, relu, zero)
        count = valid * ow  # the line's output values per channel, one run in out
        base = u(n) * cout * out_plane + u(i0 * ow)
        if count >= WIDTH and n_out >= WIDTH:
            for o0 in range(0, n_out, WIDTH):
                o = u(min(o0, n_out - WIDTH))
                for j0 in range(0, count, WIDTH):
                    j = u(min(j0, count - WIDTH))
                    transpose_vector(
                        outf, base + o * out_plane + j, out_plane, rows, j * cout + o, cout
                    )
        else:
            for o in range(cout):
                for j in range(u(count)):
                    outf[base + o * out_plane + j] = rows[j * cout + o]


@njit(parallel=True, fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def winograd_s2_forward(x, u, bias, relu, padding, lines, out, v, m):
    """out = the 3×3 convolution of stride 2 of x + bias (then max(·, 0) if ``relu``), with
    u from :func:`weight_transform`.

    Shapes: x (N, C, H, W), contiguous; u (25, 4·C, Cout); bias (Cout,); padding (top, left);
    out (N, Cout, OH, OW), written. Work space: v (T, 25, ≥ 4·C·lines·tw); m (T, 25,
    ≥ Cout·lines·tw), tw = ⌈OW/4⌉, planes not a multiple of 4 KiB apart (see winograd.py).
    Loop nest as winograd.winograd_forward: for block t of tile lines (the batch's N·th
    lines, th = ⌈OH/4⌉, split into T even runs; parallel, each writing its own lines'
    output rows and v[t], m[t]), chunk by chunk of ``lines``: V (reading x), the 25
    products M[ξ] = V[ξ] @ u[ξ], the output transform.
    """
    n_batch, n_channels = x.shape[0], x.shape[1]
    n_out = u.shape[2]
    n_blocks = v.shape[0]
    th = (out.shape[2] + STEP - 1) // STEP
    tw = (out.shape[3] + STEP - 1) // STEP
    n_lines = n_batch * th
    for t in prange(n_blocks):
        last = ((t + 1) * n_lines) // n_blocks
        for line0 in range((t * n_lines) // n_blocks, last, lines):
            line1 = min(line0 + lines, last)
            tiles = (line1 - line0) * tw
            _input_transform(x, padding[0], padding[1], th, tw, line0, line1, v[t])
            for a in range(POINTS):
                for b in range(POINTS):
                    xi = POINTS * a + b
                    kd = depth(a, b) * n_channels
                    gemm(False, False, tiles, n_out, kd, v[t, xi], kd, u[xi].reshape(-1),
                         n_out, 0.0, m[t, xi], n_out)  # fmt: skip
            _output_transform(m[t], bias, relu, line0, line1, th, out)


# -- backward: the transpose of each step above ------------------------------------------------


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _tt(r, k):
    """Tᵀ: the transpose of :func:`_t` (9 domain values back onto the 9 input positions)."""
    r0, r1, r2, r3, r4, r5, r6, r7, r8 = r
    two, three = k[0], k[1]
    return (
        two * r0,
        two * r5,
        two * (r2 + r4 - r1) - r0 - r3,
        two * (r7 - r6) - r5 - r8,
        -two * r0 - r1 - three * r2 - r4,
        -two * r5 - r6 - three * r7,
        r0 + r1 + r2 + r3 - two * r4,
        r5 + r6 + r7 + r8,
        r4,
    )


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _a(g0, g1, g2, g3, k):
    """A applied to a 4-vector: the transpose of :func:`_at`."""
    two, four, eight = k[0], k[2], k[3]
    return g0, g0 + g1 + g2 + g3, g0 - g1 + g2 - g3, g0 + two * g1 + four * g2 + eight * g3, g3


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _channels_first_row(src, s, n_channels, cols, xf, dst, plane):
    """xf[dst + c·plane + q] = src[s + q·C + c] for q < cols, c < C: the transpose of
    :func:`_channels_last_row` (one row back to channels first). Offsets unsigned."""
    u = np.uint64
    c = u(n_channels)
    if n_channels >= WIDTH and cols >= WIDTH:
        for q0 in range(0, cols, WIDTH):
            i = u(min(q0, cols - WIDTH))
            for c0 in range(0, n_channels, WIDTH):
                j = u(min(c0, n_channels - WIDTH))
                transpose_vector(xf, dst + j * plane + i, plane, src, s + i * c + j, c)
    else:
        for q in range(u(cols)):
            for j in range(c):
                xf[dst + j * plane + q] = src[s + q * c + j]


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _grad_output_transform(grad_out, line0, line1, th, m):
    """dM[ξ][p, o] = (A · dy · Aᵀ)[ξ] for the 4×4 gradient block dy of tile p (zeros past
    the output's edges), by tile as the forward's M: the transpose of :func:`_output_transform`.

    Per tile line: its gradient rows transposed to channels last into ``rows`` (4 × 4·tw ×
    Cout; vector.py's register transposes, as the forward's last step), then A along each
    row i into ``half`` rows 5·i + b, then A down each column b into the planes 5·a + b:
    loops over the channels (or a line's (tile, channel) pairs), which LLVM vectorises.
    Shapes: grad_out (N, Cout, OH, OW); m (25, ≥ tiles·Cout).
    """
    n_out, oh, ow = grad_out.shape[1], grad_out.shape[2], grad_out.shape[3]
    tw = (ow + STEP - 1) // STEP
    k = _constants(grad_out.dtype)
    u = np.uint64
    cout = u(n_out)
    span = u(tw) * cout  # a line's (tile, channel) pairs
    width = u(STEP * tw) * cout  # a row of ``rows``
    rows = np.empty(STEP * STEP * tw * n_out, dtype=grad_out.dtype)
    half = np.empty(STEP * POINTS * tw * n_out, dtype=grad_out.dtype)
    zero = grad_out.dtype.type(0)
    gf, mf, plane = grad_out.reshape(-1), m.reshape(-1), u(m.shape[1])
    out_plane = u(oh * ow)
    for line in range(line0, line1):
        n = line // th
        i0 = STEP * (line - n * th)
        valid = min(STEP, oh - i0)
        for i in range(STEP):
            first = u(i) * width
            start = first + u(ow) * cout if i < valid else first
            for q in range(start, first + width):
                rows[q] = zero
            if i < valid:
                src = u(n) * cout * out_plane + u((i0 + i) * ow)
                _channels_last_row(gf, src, out_plane, n_out, ow, rows, first)
        for i in range(STEP):  # A along row i of each tile
            q0 = u(i) * width
            h0 = u(POINTS * i) * span
            h1, h2, h3, h4 = h0 + span, h0 + u(2) * span, h0 + u(3) * span, h0 + u(4) * span
            for tx in range(tw):
                q = q0 + u(STEP * tx) * cout
                t = u(tx) * cout
                for o in range(cout):
                    g = (rows[q + o], rows[q + cout + o], rows[q + u(2) * cout + o])
                    a = _a(g[0], g[1], g[2], rows[q + u(3) * cout + o], k)
                    half[h0 + t + o], half[h1 + t + o], half[h2 + t + o] = a[0], a[1], a[2]
                    half[h3 + t + o], half[h4 + t + o] = a[3], a[4]
        p0 = u((line - line0) * tw) * cout
        for b in range(POINTS):  # A down column b
            s0 = u(b) * span
            s1, s2, s3 = s0 + u(POINTS) * span, s0 + u(10) * span, s0 + u(15) * span
            e0 = u(b) * plane + p0  # plane 5·a + b at e0 + 5·a·plane
            e1, e2 = e0 + u(5) * plane, e0 + u(10) * plane
            e3, e4 = e0 + u(15) * plane, e0 + u(20) * plane
            for s in range(span):
                a = _a(half[s0 + s], half[s1 + s], half[s2 + s], half[s3 + s], k)
                mf[e0 + s], mf[e1 + s], mf[e2 + s], mf[e3 + s], mf[e4 + s] = a


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _input_transform_backward(v, top, left, th, tw, line0, line1, gbuf, grad_x):
    """The transpose of :func:`_input_transform`: Tᵀ · dV · T of each tile's domain values
    added onto its 9×9 patch of the padded input's gradient, for the lines line0 .. line1.

    The gradient of a sample is summed channels last in ``gbuf`` (patches of neighbouring
    tiles and lines share a row or column): after its last line, it is transposed into
    grad_x[n] (zeros where x lies outside the padded rows and
    columns that outputs read). Lines come in order, so one sample at a time is open. Per
    line: Tᵀ along each band row (per tile a loop over the channels, adding onto the 9
    columns), then Tᵀ down the columns (one flat loop) onto the sample's 9 rows.
    Shapes: v (25, ≥ 4·C·tiles) holding dV; gbuf ((8·th + 1)·(8·tw + 1)·C,); grad_x
    (N, C, H, W), contiguous.
    """
    n_channels, height, width = grad_x.shape[1], grad_x.shape[2], grad_x.shape[3]
    vf, gx = v.reshape(-1), grad_x.reshape(-1)
    k = _constants(v.dtype)
    u = np.uint64
    c, plane = u(n_channels), u(v.shape[1])
    padded = 2 * STEP * tw + 1
    row = u(padded * n_channels)
    cols = min(width, padded - left)
    rows_in = min(height, 2 * STEP * th + 1 - top)
    zero = v.dtype.type(0)
    band = np.empty(PATCH * row, dtype=v.dtype)
    edge = np.empty((tw + 1) * n_channels, dtype=v.dtype)  # each tile's last column
    carry = np.empty(row, dtype=v.dtype)  # the last row of the line above
    g = gbuf
    for line in range(line0, line1):
        n = line // th
        ty = line - n * th
        for alpha in range(PATCH):
            a = alpha if alpha < POINTS else alpha - POINTS
            rp = 0 if alpha < POINTS else 1
            b0 = u(alpha) * row
            for tx in range(tw):
                p = u((line - line0) * tw + tx)
                dst = b0 + u(2 * STEP * tx) * c
                d0, d1, d2, d3, d4, d5, d6, d7, d8 = _places(a, rp, p, plane, c)
                last = u(tx + 1) * c
                # Stores only (a loop adding onto 9 columns of one array ran scalar: LLVM
                # cannot rule out that they overlap): columns 0..7 of the tile, its column 8
                # (the next tile's column 0) into ``edge``, added below.
                for i in range(c):
                    r = (vf[d0 + i], vf[d1 + i], vf[d2 + i], vf[d3 + i], vf[d4 + i])
                    r = r + (vf[d5 + i], vf[d6 + i], vf[d7 + i], vf[d8 + i])
                    d = _tt(r, k)
                    q = dst + i
                    band[q], band[q + c], band[q + u(2) * c] = d[0], d[1], d[2]
                    band[q + u(3) * c], band[q + u(4) * c], band[q + u(5) * c] = d[3], d[4], d[5]
                    band[q + u(6) * c], band[q + u(7) * c], edge[last + i] = d[6], d[7], d[8]
            for tx in range(1, tw):
                q = b0 + u(2 * STEP * tx) * c
                e = u(tx) * c
                for i in range(c):
                    band[q + i] += edge[e + i]
            q = b0 + u(2 * STEP * tw) * c
            e = u(tw) * c
            for i in range(c):
                band[q + i] = edge[e + i]
        # Tᵀ down the columns onto the sample's rows 8·ty .. 8·ty + 7, the first plus the
        # line above's last (``carry``), stores only (adding onto the rows in place ran
        # scalar); then this line's last row, 8·ty + 8, which the next line adds to.
        base = u(2 * STEP * ty) * row
        for q in range(row):  # the line above's last row, kept in g (chunks end mid-sample)
            carry[q] = g[base + q] if ty > 0 else zero
        for q in range(row):
            d = _tt(_nine(band, q, row), k)
            s = base + q
            g[s], g[s + row], g[s + u(2) * row] = d[0] + carry[q], d[1], d[2]
            g[s + u(3) * row], g[s + u(4) * row], g[s + u(5) * row] = d[3], d[4], d[5]
            g[s + u(6) * row], g[s + u(7) * row], carry[q] = d[6], d[7], d[8]
        last = base + u(2 * STEP) * row
        for q in range(row):
            g[last + q] = carry[q]
        if ty == th - 1:  # the sample is complete: back to channels first
            xplane = u(height * width)
            first = u(n) * c * xplane
            # Zeros where x lies outside the rows and columns outputs read (if anywhere).
            for i in range(c):
                for r0 in range(height):
                    q0 = first + i * xplane + u(r0 * width)
                    for q in range(q0 + u(cols if r0 < rows_in else 0), q0 + u(width)):
                        gx[q] = zero
            for r0 in range(rows_in):
                src = (u(top + r0) * u(padded) + u(left)) * c
                _channels_first_row(g, src, n_channels, cols, gx, first + u(r0 * width), xplane)


@njit(parallel=True, fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def weight_transform_backward(grad_u, grad_w):
    """grad_w[o, c, rp + 2i, cp + 2j] = (Gᵀ · dU_phase · G)[i, j] for each phase (rp, cp)
    and its taps inside the 3×3 kernel: the transpose of :func:`weight_transform`.

    Shapes: grad_u (25, 4·C, Cout); grad_w (Cout, C, 3, 3), overwritten. Parallel over
    output channels (disjoint rows of grad_w).
    """
    n_out, n_channels = grad_w.shape[0], grad_w.shape[1]
    k = _constants(grad_w.dtype)
    one, zero = grad_w.dtype.type(1), grad_w.dtype.type(0)
    g = np.empty((POINTS, 2), dtype=grad_w.dtype)
    g[:, 0] = _g(one, zero, k)
    g[:, 1] = _g(zero, one, k)
    for o in prange(n_out):
        for c in range(n_channels):
            for rp in range(2):
                for cp in range(2):
                    for i in range(2 - rp):
                        for j in range(2 - cp):
                            total = zero
                            for a in range(POINTS - rp):
                                for b in range(POINTS - cp):
                                    slot = _slot(rp, cp, a, b)
                                    du = grad_u[POINTS * a + b, slot * n_channels + c, o]
                                    total += g[a, i] * du * g[b, j]
                            grad_w[o, c, rp + 2 * i, cp + 2 * j] = total


@njit(parallel=True, fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def winograd_s2_backward(
    x, u, ut, grad_out, padding, lines, grad_x, grad_u, grad_b, v, m, gbuf, partial_u, partial_b
):
    """All three gradients of :func:`winograd_s2_forward`, in the Winograd domain.

    Per chunk of tile lines: V again (:func:`_input_transform`), dM (the output gradient's
    transform), dU[ξ] += V[ξ]ᵀ @ dM[ξ], then dV[ξ] = dM[ξ] @ U[ξ]ᵀ into V's space, and dV
    back onto the input's gradient (:func:`_input_transform_backward`). grad_u (25, 4·C,
    Cout) is the gradient of u (weight_transform_backward turns it into the weight
    gradient). Shapes: ut (25, Cout, 4·C), u's planes transposed; gbuf (T, …), one per
    block (see _input_transform_backward); partial_u (T, 25, 4·C, Cout), partial_b (T, ≥ Cout).
    Parallel over blocks of whole samples (a sample's overlapping patches stay on one
    thread; the batch has at least one sample per block); the sums over samples go through
    the per-block partials, added in block order (race-free, deterministic).
    """
    n_batch, n_channels = x.shape[0], x.shape[1]
    n_out = u.shape[2]
    n_blocks = v.shape[0]
    th = (grad_out.shape[2] + STEP - 1) // STEP
    tw = (grad_out.shape[3] + STEP - 1) // STEP
    depth_max = u.shape[1]
    for t in prange(n_blocks):
        zero_fill(partial_u[t].reshape(-1))
        zero_fill(partial_b[t])
        n0 = (t * n_batch) // n_blocks
        n1 = ((t + 1) * n_batch) // n_blocks
        for n in range(n0, n1):
            for o in range(grad_b.shape[0]):
                partial_b[t, o] += row_sum(grad_out[n, o].reshape(-1))
        for line0 in range(n0 * th, n1 * th, lines):
            line1 = min(line0 + lines, n1 * th)
            tiles = (line1 - line0) * tw
            _input_transform(x, padding[0], padding[1], th, tw, line0, line1, v[t])
            _grad_output_transform(grad_out, line0, line1, th, m[t])
            for a in range(POINTS):
                for b in range(POINTS):
                    xi = POINTS * a + b
                    kd = depth(a, b) * n_channels
                    gemm(True, False, kd, n_out, tiles, v[t, xi], kd, m[t, xi], n_out, 1.0,
                         partial_u[t, xi].reshape(-1), n_out)  # fmt: skip
                    # V[ξ] is no longer needed: its space takes dV[ξ] (tiles × depth).
                    gemm(False, False, tiles, kd, n_out, m[t, xi], n_out,
                         ut[xi].reshape(-1), depth_max, 0.0, v[t, xi], kd)  # fmt: skip
            _input_transform_backward(
                v[t], padding[0], padding[1], th, tw, line0, line1, gbuf[t], grad_x
            )
    sum_blocks(partial_u.reshape(n_blocks, -1), grad_u.reshape(-1))
    sum_blocks(partial_b, grad_b)
