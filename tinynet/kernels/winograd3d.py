"""Winograd F(2×2×2, 3×3×3) convolution kernels for Conv3d: 3×3×3, stride 1, one group.

The 3-D form of ``winograd.py`` (read that first: the matrices Bᵀ, G, Aᵀ and the helpers
``_bt``, ``_g``, ``_at`` and their transposes come from there). A 2×2×2 block of outputs reads a
4×4×4 patch ``d`` of the input; the 1-D transforms are applied along each of the three axes
(depth, height, width), so the "Winograd domain" has 4³ = 64 positions ξ = 16·i + 4·j + k:

    M[ξ] (Cout × T) = U[ξ] (Cout × C) @ V[ξ] (C × T),   U = (G⊗G⊗G) g,  V = (Bᵀ⊗Bᵀ⊗Bᵀ) d,
    y (2×2×2 per tile) = (Aᵀ⊗Aᵀ⊗Aᵀ) M.

That is 64·Cout·C multiplies per 8 outputs instead of 216·Cout·C: 3.4× fewer, done by BLAS
(64 products per chunk of tiles; with K = C = 16 they measured ~95 GFLOP/s on one core for
T = 64 .. 512 tiles, as fast as large products). Backward is the transpose of the chain, as in
2-D: dM = (A⊗A⊗A) dy, dU[ξ] = Σ_T dM[ξ] @ V[ξ]ᵀ, dg = (Gᵀ⊗Gᵀ⊗Gᵀ) dU, dV[ξ] = U[ξ]ᵀ @ dM[ξ],
and (B⊗B⊗B) dV added onto the overlapping patches.

Layout. A "line" is one row of tiles (tw of them) at one (sample, tile depth, tile row); lines
are processed a chunk at a time (``lines`` of them). A chunk's V lives in v[t] (64, plane):
plane ξ holds V[ξ] (C × tiles) row-major; likewise M in m[t]; planes are padded by the caller
so that they are not a multiple of 4 KiB apart (see ``winograd.py``). The input is copied once
into a zero-padded ``xpad`` (N, C, 2·td + 2, 2·th + 2, 2·tw + 2), so every tile reads a full
patch; tiles hanging over an odd output edge compute values that are not stored.

The output transforms (forward, and the output gradient's in backward) run over all tiles of a
chunk at once, contiguous in each plane, so LLVM vectorises them; the input transforms work a
tile at a time through a small 4×4×4 scratch array.

Determinism: samples are split into fixed contiguous blocks, one per thread, and per-block
partial weight gradients are added in block order.

Debugging: with ``NUMBA_DISABLE_JIT=1`` these are plain Python (slow) that pdb can step into.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import config
from .conv import row_sum, sum_blocks, zero_fill
from .conv_planes import gemm
from .winograd import _a, _at, _b, _bt, _g, _gt


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def winograd3d_weight_transform(weight, u):
    """u[16·i + 4·j + k, o, c] = ((G⊗G⊗G) weight[o, c])[i, j, k].

    Shapes: weight (Cout, C, 3, 3, 3); u (64, Cout, C), overwritten.
    Serial: microseconds of work, less than starting a parallel region costs.
    """
    n_out, n_channels = weight.shape[0], weight.shape[1]
    half = u.dtype.type(0.5)  # a literal 0.5 would turn float32 arithmetic into float64
    s1 = np.empty((3, 3, 4), dtype=u.dtype)  # G along width
    s2 = np.empty((3, 4, 4), dtype=u.dtype)  # then along height
    for o in range(n_out):
        for c in range(n_channels):
            w = weight[o, c]
            for a in range(3):
                for b in range(3):
                    s1[a, b, 0], s1[a, b, 1], s1[a, b, 2], s1[a, b, 3] = _g(
                        w[a, b, 0], w[a, b, 1], w[a, b, 2], half
                    )
                for k in range(4):
                    s2[a, 0, k], s2[a, 1, k], s2[a, 2, k], s2[a, 3, k] = _g(
                        s1[a, 0, k], s1[a, 1, k], s1[a, 2, k], half
                    )
            for j in range(4):
                for k in range(4):
                    col = _g(s2[0, j, k], s2[1, j, k], s2[2, j, k], half)
                    for i in range(4):
                        u[16 * i + 4 * j + k, o, c] = col[i]


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def winograd3d_weight_transform_backward(grad_u, grad_w):
    """grad_w[o, c] = (Gᵀ⊗Gᵀ⊗Gᵀ) grad_u[:, o, c]: the transpose of the weight transform.

    Shapes: grad_u (64, Cout, C); grad_w (Cout, C, 3, 3, 3), overwritten. Serial, as above.
    """
    n_out, n_channels = grad_w.shape[0], grad_w.shape[1]
    half = grad_w.dtype.type(0.5)
    s1 = np.empty((4, 4, 3), dtype=grad_w.dtype)  # Gᵀ along width
    s2 = np.empty((4, 3, 3), dtype=grad_w.dtype)  # then along height
    for o in range(n_out):
        for c in range(n_channels):
            for i in range(4):
                for j in range(4):
                    p = 16 * i + 4 * j
                    s1[i, j, 0], s1[i, j, 1], s1[i, j, 2] = _gt(
                        grad_u[p, o, c], grad_u[p + 1, o, c], grad_u[p + 2, o, c],
                        grad_u[p + 3, o, c], half,
                    )  # fmt: skip
                for e in range(3):
                    s2[i, 0, e], s2[i, 1, e], s2[i, 2, e] = _gt(
                        s1[i, 0, e], s1[i, 1, e], s1[i, 2, e], s1[i, 3, e], half
                    )
            for b in range(3):
                for e in range(3):
                    col = _gt(s2[0, b, e], s2[1, b, e], s2[2, b, e], s2[3, b, e], half)
                    for a in range(3):
                        grad_w[o, c, a, b, e] = col[a]


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _line_origin(line, td, th):
    """(sample, first padded depth, first padded row) of tile line ``line``."""
    per_sample = td * th
    n = line // per_sample
    r = line - n * per_sample
    return n, 2 * (r // th), 2 * (r % th)


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _bt_column(d, y, w):
    """(Bᵀ⊗Bᵀ) of the 4×4 (depth, height) column d[0:4, y:y + 4, w]: 16 values, 4·i + j."""
    z0 = _bt(d[0, y, w], d[1, y, w], d[2, y, w], d[3, y, w])
    z1 = _bt(d[0, y + 1, w], d[1, y + 1, w], d[2, y + 1, w], d[3, y + 1, w])
    z2 = _bt(d[0, y + 2, w], d[1, y + 2, w], d[2, y + 2, w], d[3, y + 2, w])
    z3 = _bt(d[0, y + 3, w], d[1, y + 3, w], d[2, y + 3, w], d[3, y + 3, w])
    i0 = _bt(z0[0], z1[0], z2[0], z3[0])
    i1 = _bt(z0[1], z1[1], z2[1], z3[1])
    i2 = _bt(z0[2], z1[2], z2[2], z3[2])
    i3 = _bt(z0[3], z1[3], z2[3], z3[3])
    return i0 + i1 + i2 + i3


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _b_column_add(s, w, d, y, col):
    """d[0:4, y:y + 4, col] += (B⊗B) of the 16 values s[4·i + j, w]: the transpose above."""
    h0 = _b(s[0, w], s[1, w], s[2, w], s[3, w])
    h1 = _b(s[4, w], s[5, w], s[6, w], s[7, w])
    h2 = _b(s[8, w], s[9, w], s[10, w], s[11, w])
    h3 = _b(s[12, w], s[13, w], s[14, w], s[15, w])
    for b in range(4):
        z0, z1, z2, z3 = _b(h0[b], h1[b], h2[b], h3[b])
        d[0, y + b, col] += z0
        d[1, y + b, col] += z1
        d[2, y + b, col] += z2
        d[3, y + b, col] += z3


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _input_transform(xpad, line0, line1, eo, v):
    """V[ξ][c, p] = ((Bᵀ⊗Bᵀ⊗Bᵀ) d)[ξ] for the 4×4×4 patch d of tile p in lines line0 .. line1.

    Shapes: xpad (N, C, 2·td + 2, 2·th + 2, 2·tw + 2); eo (2, 16, tw + 1) scratch; v (64,
    ≥ C·tiles), tiles = (line1 − line0)·tw: plane ξ holds V[ξ] (C × tiles) row-major.
    Per line, two passes that LLVM vectorises: (Bᵀ⊗Bᵀ) down every (depth, height) column of
    the line's patches, even columns into eo[0] and odd ones into eo[1]; then Bᵀ along the
    width, where tile tx reads columns 2·tx .. 2·tx + 3 = eo[0][tx], eo[1][tx], eo[0][tx + 1],
    eo[1][tx + 1], contiguous across tiles. Indices are unsigned: Numba's negative-index test
    on signed ones measured 6× slower (it keeps LLVM from vectorising).
    """
    one, two = np.uint64(1), np.uint64(2)
    n_channels = xpad.shape[1]
    td, th = (xpad.shape[2] - 2) // 2, (xpad.shape[3] - 2) // 2
    tw = np.uint64((xpad.shape[4] - 2) // 2)
    tiles = np.uint64(line1 - line0) * tw
    even, odd = eo[0], eo[1]
    for c in range(n_channels):
        for line in range(line0, line1):
            n, z, y = _line_origin(line, td, th)
            d = xpad[n, c, z:]
            for w in range(tw + one):
                col = _bt_column(d, y, two * w)
                for r in range(16):
                    even[r, w] = col[r]
                col = _bt_column(d, y, two * w + one)
                for r in range(16):
                    odd[r, w] = col[r]
            base = np.uint64(c) * tiles + np.uint64(line - line0) * tw
            for r in range(16):
                e, o = even[r], odd[r]
                x = 4 * r
                for tx in range(tw):
                    p = base + tx
                    v[x, p], v[x + 1, p], v[x + 2, p], v[x + 3, p] = _bt(
                        e[tx], o[tx], e[tx + one], o[tx + one]
                    )


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _input_transform_backward(v, line0, line1, eo, gxpad):
    """gxpad[patch of tile p] += (B⊗B⊗B) dV[:][c, p]: the transpose of _input_transform.

    Shapes as :func:`_input_transform`, with v holding dV. Patches of neighbouring tiles
    overlap, so values accumulate (all in one sample: blocks of samples stay race-free).
    B along the width first: tile tx adds onto columns 2·tx .. 2·tx + 3; two passes (the
    first two columns, then the last two) keep each loop free of a carried dependence.
    """
    one, two = np.uint64(1), np.uint64(2)
    n_channels = gxpad.shape[1]
    td, th = (gxpad.shape[2] - 2) // 2, (gxpad.shape[3] - 2) // 2
    tw = np.uint64((gxpad.shape[4] - 2) // 2)
    tiles = np.uint64(line1 - line0) * tw
    even, odd = eo[0], eo[1]
    for c in range(n_channels):
        for line in range(line0, line1):
            n, z, y = _line_origin(line, td, th)
            d = gxpad[n, c, z:]
            base = np.uint64(c) * tiles + np.uint64(line - line0) * tw
            for r in range(16):
                e, o = even[r], odd[r]
                x = 4 * r
                for tx in range(tw):
                    p = base + tx
                    e[tx], o[tx], _, _ = _b(v[x, p], v[x + 1, p], v[x + 2, p], v[x + 3, p])
                e[tw] = 0
                o[tw] = 0
                for tx in range(tw):
                    p = base + tx
                    _, _, b2, b3 = _b(v[x, p], v[x + 1, p], v[x + 2, p], v[x + 3, p])
                    e[tx + one] += b2
                    o[tx + one] += b3
            for w in range(tw + one):
                _b_column_add(even, w, d, y, two * w)
                _b_column_add(odd, w, d, y, two * w + one)


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _out16(m, x, p):
    """(Aᵀ · M · A) of the 4×4 slice in planes x .. x + 15 at column p: (y, x) = (0, 0), (0, 1),
    (1, 0), (1, 1)."""
    a0 = _at(m[x, p], m[x + 4, p], m[x + 8, p], m[x + 12, p])
    a1 = _at(m[x + 1, p], m[x + 5, p], m[x + 9, p], m[x + 13, p])
    a2 = _at(m[x + 2, p], m[x + 6, p], m[x + 10, p], m[x + 14, p])
    a3 = _at(m[x + 3, p], m[x + 7, p], m[x + 11, p], m[x + 15, p])
    r0 = _at(a0[0], a1[0], a2[0], a3[0])
    r1 = _at(a0[1], a1[1], a2[1], a3[1])
    return r0[0], r0[1], r1[0], r1[1]


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _output_transform(m, bias, relu, line0, line1, blocks, out):
    """out[n, o, 2×2×2 block of tile p] = (Aᵀ⊗Aᵀ⊗Aᵀ) M[:][o, p] + bias[o], then max(·, 0) if
    ``relu``.

    Shapes: m (64, ≥ Cout·tiles); blocks (8, ≥ tiles) scratch; out (N, Cout, OD, OH, OW).
    Two passes per channel: the transform over all tiles of the chunk (contiguous: LLVM
    vectorises it) into blocks[4·z + 2·y + x], then a scatter of each output row from two
    rows of blocks (even and odd columns), dropping values past an odd output edge.
    """
    one, two = np.uint64(1), np.uint64(2)
    n_out, od, oh, ow = out.shape[1], out.shape[2], out.shape[3], out.shape[4]
    td, th, tw = (od + 1) // 2, (oh + 1) // 2, (ow + 1) // 2
    tiles = np.uint64((line1 - line0) * tw)
    pairs = np.uint64(ow // 2)
    zero = out.dtype.type(0)
    for o in range(n_out):
        b = bias[o]
        base = np.uint64(o) * tiles
        for t in range(tiles):
            p = base + t
            s0 = _out16(m, 0, p)
            s1 = _out16(m, 16, p)
            s2 = _out16(m, 32, p)
            s3 = _out16(m, 48, p)
            # Aᵀ along depth gives z = 0, 1 for each (y, x) of the block.
            z0, z1 = _at(s0[0], s1[0], s2[0], s3[0])
            blocks[0, t], blocks[4, t] = z0 + b, z1 + b
            z0, z1 = _at(s0[1], s1[1], s2[1], s3[1])
            blocks[1, t], blocks[5, t] = z0 + b, z1 + b
            z0, z1 = _at(s0[2], s1[2], s2[2], s3[2])
            blocks[2, t], blocks[6, t] = z0 + b, z1 + b
            z0, z1 = _at(s0[3], s1[3], s2[3], s3[3])
            blocks[3, t], blocks[7, t] = z0 + b, z1 + b
        for line in range(line0, line1):
            n, z, y = _line_origin(line, td, th)
            t0 = (line - line0) * tw
            for dz in range(min(2, od - z)):
                for dy in range(min(2, oh - y)):
                    row = out[n, o, z + dz, y + dy]
                    even = blocks[4 * dz + 2 * dy, t0:]
                    odd = blocks[4 * dz + 2 * dy + 1, t0:]
                    for q in range(pairs):
                        e, f = even[q], odd[q]
                        # max(·, 0) that keeps a NaN, as ReLU does
                        row[two * q] = zero if relu and e <= zero else e
                        row[two * q + one] = zero if relu and f <= zero else f
                    if ow % 2:
                        e = even[pairs]
                        row[ow - 1] = zero if relu and e <= zero else e


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _grad_output_transform(grad_out, line0, line1, blocks, m):
    """dM[ξ][o, p] = ((A⊗A⊗A) dy)[ξ] for the 2×2×2 gradient block dy of tile p (0 past edges).

    Shapes: grad_out (N, Cout, OD, OH, OW); blocks (8, ≥ tiles) scratch; m (64, ≥ Cout·tiles).
    Two passes per channel, the mirror of :func:`_output_transform`: a gather of the blocks,
    then the transform over all tiles (vectorised).
    """
    one, two = np.uint64(1), np.uint64(2)
    n_out, od, oh, ow = grad_out.shape[1], grad_out.shape[2], grad_out.shape[3], grad_out.shape[4]
    td, th, tw = (od + 1) // 2, (oh + 1) // 2, (ow + 1) // 2
    tiles = np.uint64((line1 - line0) * tw)
    pairs = np.uint64(ow // 2)
    for o in range(n_out):
        for r in range(8):
            zero_fill(blocks[r, :tiles])
        for line in range(line0, line1):
            n, z, y = _line_origin(line, td, th)
            t0 = (line - line0) * tw
            for dz in range(min(2, od - z)):
                for dy in range(min(2, oh - y)):
                    row = grad_out[n, o, z + dz, y + dy]
                    even = blocks[4 * dz + 2 * dy, t0:]
                    odd = blocks[4 * dz + 2 * dy + 1, t0:]
                    for q in range(pairs):
                        even[q] = row[two * q]
                        odd[q] = row[two * q + one]
                    if ow % 2:
                        even[pairs] = row[ow - 1]
        base = np.uint64(o) * tiles
        for t in range(tiles):
            p = base + t
            # A along width, for the blocks' four (z, y) rows.
            w00 = _a(blocks[0, t], blocks[1, t])
            w01 = _a(blocks[2, t], blocks[3, t])
            w10 = _a(blocks[4, t], blocks[5, t])
            w11 = _a(blocks[6, t], blocks[7, t])
            for k in range(4):
                h0 = _a(w00[k], w01[k])  # along height, depth 0
                h1 = _a(w10[k], w11[k])  # depth 1
                for j in range(4):
                    i0, i1, i2, i3 = _a(h0[j], h1[j])  # along depth
                    x = 4 * j + k
                    m[x, p], m[16 + x, p], m[32 + x, p], m[48 + x, p] = i0, i1, i2, i3


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _pad(x, padding, xpad):
    """xpad = x placed at (front, top, left) in zeros. Shapes: x (C, D, H, W); xpad (C, ...)."""
    n_channels, depth, height, width = x.shape
    front, top, left = padding
    zero_fill(xpad.reshape(-1))
    for c in range(n_channels):
        for z in range(depth):
            for i in range(height):
                src = x[c, z, i]
                dst = xpad[c, front + z, top + i, left:]
                for j in range(width):
                    dst[j] = src[j]


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _crop(xpad, padding, x):
    """x = the (D, H, W) window of xpad at (front, top, left): the transpose of _pad."""
    n_channels, depth, height, width = x.shape
    front, top, left = padding
    for c in range(n_channels):
        for z in range(depth):
            for i in range(height):
                src = xpad[c, front + z, top + i, left:]
                dst = x[c, z, i]
                for j in range(width):
                    dst[j] = src[j]


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def winograd3d_forward(x, u, bias, relu, padding, lines, out, xpad, v, m):
    """out = conv3×3×3(x, g) + bias (then max(·, 0) if ``relu``), with u = the transformed
    weights (winograd3d_weight_transform).

    Shapes: x (N, C, D, H, W); u (64, Cout, C); bias (Cout,) (zeros for none); padding the
    (front, top, left) zero padding; out (N, Cout, OD, OH, OW) written. Work space: xpad
    (N, C, 2·td + 2, 2·th + 2, 2·tw + 2) with td = ⌈OD/2⌉ (likewise th, tw);
    v (T, 64, ≥ C·lines·tw), m (T, 64, ≥ Cout·lines·tw): one per block of samples.
    Loop nest: for block t: pad its samples into xpad; for chunk of ``lines`` tile lines:
    V = (Bᵀ⊗Bᵀ⊗Bᵀ) d; M[ξ] = U[ξ] @ V[ξ] (64 BLAS calls); out = (Aᵀ⊗Aᵀ⊗Aᵀ) M + bias.
    Parallel over: blocks of samples (block t writes only xpad[n] and out[n] of its own
    samples and v[t], m[t]: race-free).
    """
    n_batch, n_channels = x.shape[0], x.shape[1]
    n_out = u.shape[1]
    n_blocks = v.shape[0]
    per_sample = ((xpad.shape[2] - 2) // 2) * ((xpad.shape[3] - 2) // 2)
    tw = (xpad.shape[4] - 2) // 2
    for t in prange(n_blocks):
        eo = np.empty((2, 16, tw + 1), dtype=x.dtype)
        blocks = np.empty((8, lines * tw), dtype=x.dtype)
        n0 = (t * n_batch) // n_blocks
        n1 = ((t + 1) * n_batch) // n_blocks
        for n in range(n0, n1):
            _pad(x[n], padding, xpad[n])
        for line0 in range(n0 * per_sample, n1 * per_sample, lines):
            line1 = min(line0 + lines, n1 * per_sample)
            tiles = (line1 - line0) * tw
            _input_transform(xpad, line0, line1, eo, v[t])
            for k in range(64):
                gemm(
                    False, False, n_out, tiles, n_channels,
                    u[k].reshape(-1), n_channels,
                    v[t, k], tiles,
                    0.0, m[t, k], tiles,
                )  # fmt: skip
            _output_transform(m[t], bias, relu, line0, line1, blocks, out)


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def winograd3d_backward(
    xpad, u, grad_out, padding, lines, grad_x, grad_u, grad_b, gxpad, v, m, partial_u, partial_b
):
    """All three gradients of :func:`winograd3d_forward`, in the Winograd domain.

    Shapes: xpad as the forward left it (the padded input); u (64, Cout, C); grad_out
    (N, Cout, OD, OH, OW); grad_x (N, C, D, H, W), grad_u (64, Cout, C) and grad_b (Cout,) or
    (0,) overwritten (grad_u is the gradient of u: winograd3d_weight_transform_backward turns
    it into the weight gradient). Work space: gxpad like xpad; v, m as in the forward;
    partial_u (T, 64·Cout·C), partial_b (T, Cout).
    Loop nest: for block t: for chunk of tile lines: V = (Bᵀ⊗Bᵀ⊗Bᵀ) d; dM = (A⊗A⊗A) dY;
    partial_u[t][ξ] += dM[ξ] @ V[ξ]ᵀ; dV[ξ] = U[ξ]ᵀ @ dM[ξ]; gxpad += (B⊗B⊗B) dV; then crop
    gxpad into grad_x, and grad_u = Σ_t partial_u[t] in block order.
    Parallel over: blocks of samples (block t writes gxpad[n] and grad_x[n] of its own samples
    and its own work rows; the sums over samples go through the per-block partials: race-free).
    """
    n_batch, n_channels = grad_x.shape[0], grad_x.shape[1]
    n_out = u.shape[1]
    n_blocks = v.shape[0]
    per_sample = ((xpad.shape[2] - 2) // 2) * ((xpad.shape[3] - 2) // 2)
    tw = (xpad.shape[4] - 2) // 2
    step = n_out * n_channels
    for t in prange(n_blocks):
        # Loops and serial helpers only: whole-array statements here would each become a
        # parallel loop of their own, slow to compile (see conv.py).
        eo = np.empty((2, 16, tw + 1), dtype=u.dtype)
        blocks = np.empty((8, lines * tw), dtype=u.dtype)
        zero_fill(partial_u[t])
        zero_fill(partial_b[t])
        n0 = (t * n_batch) // n_blocks
        n1 = ((t + 1) * n_batch) // n_blocks
        for n in range(n0, n1):
            zero_fill(gxpad[n].reshape(-1))
            for o in range(grad_b.shape[0]):
                partial_b[t, o] += row_sum(grad_out[n, o].reshape(-1))
        for line0 in range(n0 * per_sample, n1 * per_sample, lines):
            line1 = min(line0 + lines, n1 * per_sample)
            tiles = (line1 - line0) * tw
            _input_transform(xpad, line0, line1, eo, v[t])
            _grad_output_transform(grad_out, line0, line1, blocks, m[t])
            for k in range(64):
                # dU[ξ] += dM[ξ] (Cout × tiles) @ V[ξ]ᵀ (tiles × C)
                gemm(
                    False, True, n_out, n_channels, tiles,
                    m[t, k], tiles,
                    v[t, k], tiles,
                    1.0, partial_u[t, k * step :], n_channels,
                )  # fmt: skip
                # dV[ξ] = U[ξ]ᵀ (C × Cout) @ dM[ξ]: V[ξ] is no longer needed, its space
                # takes dV[ξ].
                gemm(
                    True, False, n_channels, tiles, n_out,
                    u[k].reshape(-1), n_channels,
                    m[t, k], tiles,
                    0.0, v[t, k], tiles,
                )  # fmt: skip
            _input_transform_backward(v[t], line0, line1, eo, gxpad)
        for n in range(n0, n1):
            _crop(gxpad[n], padding, grad_x[n])
    sum_blocks(partial_u, grad_u.reshape(-1))
    sum_blocks(partial_b, grad_b)
