"""Winograd F(2×2×2, 3×3×3) convolution kernels for Conv3d: 3×3×3, stride 1, one group.

The 3-D form of ``winograd.py`` (read that first: the matrices Bᵀ, G, Aᵀ and the helpers
``_g``, ``_gt`` come from there). A 2×2×2 block of outputs reads a
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
are processed a chunk at a time (``lines`` of them). Within a chunk, tile tx of line l is
p = l·(tw + 1) + tx: one spare tile per line (computed, never stored; its output gradient is
zero), which is what lets every transform run as long loops (below). A chunk's V lives in
v[t] (64, plane): plane ξ holds V[ξ] (C × tiles) row-major; likewise M in m[t]; planes are
padded by the caller so that they are not a multiple of 4 KiB apart (see ``winograd.py``).
The input is copied once into a zero-padded ``xpad`` (N, C, 2·td + 2, 4, th + 1, tw + 1) with
each depth plane split by (row, column) parity into four sub-planes, so every tile reads a
full patch, and tile p reads entries p + (a constant) of each sub-plane; tiles hanging over
an odd output edge compute values that are not stored.

Vectorising. A tile's transform touches 64 Winograd planes; LLVM will not vectorise a loop
that writes many arrays (it needs a runtime no-alias test per pair, and gives up past a few),
so each transform is split into separable 1-D passes, one axis at a time, through scratch
rows, and every loop writes one stream over all tiles of a run (measured 2–3× faster than a
tile at a time). Arrays are flattened and offsets unsigned (np.uint64): slices cost
reference counting, and Numba's negative-index test on signed offsets stops LLVM too.

Determinism: samples are split into fixed contiguous blocks, one per thread, and per-block
partial weight gradients are added in block order.

Debugging: with ``NUMBA_DISABLE_JIT=1`` these are plain Python (slow) that pdb can step into.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import config
from .blas import gemm
from .conv import sum_blocks, zero_fill
from .winograd import _block_lines, _g, _gt, _merge_blocks, _to_planes


@njit(parallel=True, fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def winograd3d_weight_transform(weight, u):
    """u[16·i + 4·j + k, o, c] = ((G⊗G⊗G) weight[o, c])[i, j, k].

    Shapes: weight (Cout, C, 3, 3, 3); u (64, Cout, C), overwritten.
    Parallel over output channels, as winograd.winograd_weight_transform.
    """
    n_out, n_channels = weight.shape[0], weight.shape[1]
    half = u.dtype.type(0.5)  # a literal 0.5 would turn float32 arithmetic into float64
    for o in prange(n_out):
        s1 = np.empty((3, 3, 4), dtype=u.dtype)  # G along width
        s2 = np.empty((3, 4, 4), dtype=u.dtype)  # then along height
        rows = np.empty((n_channels, 64), dtype=u.dtype)  # see winograd._to_planes
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
                        rows[c, 16 * i + 4 * j + k] = col[i]
        _to_planes(rows, u, o)


@njit(parallel=True, fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def winograd3d_weight_transform_backward(grad_u, grad_w):
    """grad_w[o, c] = (Gᵀ⊗Gᵀ⊗Gᵀ) grad_u[:, o, c]: the transpose of the weight transform.

    Shapes: grad_u (64, Cout, C); grad_w (Cout, C, 3, 3, 3), overwritten. Parallel as above.
    """
    n_out, n_channels = grad_w.shape[0], grad_w.shape[1]
    half = grad_w.dtype.type(0.5)
    for o in prange(n_out):
        s1 = np.empty((4, 4, 3), dtype=grad_w.dtype)  # Gᵀ along width
        s2 = np.empty((4, 3, 3), dtype=grad_w.dtype)  # then along height
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


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _line_origin(line, td, th):
    """(sample, first padded depth, first padded row) of tile line ``line``."""
    per_sample = td * th
    n = line // per_sample
    r = line - n * per_sample
    return n, 2 * (r // th), 2 * (r % th)


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _run(line, line1, td, th):
    """(sample, first padded depth, first tile row, count) of the run of tile lines from
    ``line`` (at most to line1) in one (sample, tile depth) slab: contiguous in xpad's
    sub-planes."""
    per_sample = td * th
    n = line // per_sample
    r = line - n * per_sample
    ty = r % th
    return n, 2 * (r // th), ty, min(line1 - line, th - ty)


# Bᵀ row i reads two of the four inputs: (Bᵀ d)[i] = d[a] + d[b] if plus, else d[a] − d[b].
_BT_ROWS = ((0, 2, False), (1, 2, True), (2, 1, False), (1, 3, False))


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE, inline="always")
def _pair(src, i, j, plus, out, k, size):
    """out[k + f] = src[i + f] ± src[j + f] for f < size: one output stream, so LLVM vectorises
    it. Arrays are flat and offsets unsigned (np.uint64): Numba's negative-index test on
    signed ones, and the reference counting of slices, measured several times slower.
    Inlined (a call per loop measured 1.7× slower), at few call sites (compile time)."""
    if plus:
        for f in range(size):
            out[k + f] = src[i + f] + src[j + f]
    else:
        for f in range(size):
            out[k + f] = src[i + f] - src[j + f]


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _input_transform(xpad, line0, line1, t, h, v):
    """V[ξ][c, p] = ((Bᵀ⊗Bᵀ⊗Bᵀ) d)[ξ] for the 4×4×4 patch d of tile p in lines line0 .. line1.

    Shapes: xpad (N, C, 2·td + 2, 4, th + 1, tw + 1), split by (row, column) parity (see
    :func:`_pad`); t (16, ≥ (lines + 1)·(tw + 1)) and h (32, ≥ lines·(tw + 1)) scratch;
    v (64, ≥ C·tiles), tiles = (line1 − line0)·(tw + 1): plane ξ holds V[ξ] (C × tiles).
    Tile tx of a line reads, from each parity sub-plane, entries tx and tx + 1 of two rows, so
    tile p = line·(tw + 1) + tx reads sub-plane entries p + constant: every pass is one long
    loop with one output stream (LLVM will not vectorise a loop that needs many runtime
    no-alias tests). The price is one spare tile per line (tx = tw, never stored; the run's
    last one, which would read past the rows, is set to zero). Per run of lines in one slab:
    Bᵀ along depth into t[4·i + sub-plane]; Bᵀ along height into h[2·(4·i + j) + column
    parity]; Bᵀ along width into the V planes.
    """
    u = np.uint64
    n_channels, depth = xpad.shape[1], xpad.shape[2]
    td, th, rowlen = (depth - 2) // 2, xpad.shape[4] - 1, xpad.shape[5]
    sub = (th + 1) * rowlen
    x, tf, hf, vf = xpad.reshape(-1), t.reshape(-1), h.reshape(-1), v.reshape(-1)
    ts, hs, vs = t.shape[1], h.shape[1], v.shape[1]
    tiles = (line1 - line0) * rowlen
    line = line0
    while line < line1:
        n, z, ty, count = _run(line, line1, td, th)
        size = u((count + 1) * rowlen)  # the sub-plane rows the run reads
        used = count * rowlen - 1  # its tiles but the last spare one
        for c in range(n_channels):
            plane0 = ((n * n_channels + c) * depth + z) * 4 * sub + ty * rowlen
            for i in range(16):  # depth: input a is padded plane z + a
                a, b, plus = _BT_ROWS[i // 4]
                s = i % 4
                pa, pb = plane0 + (4 * a + s) * sub, plane0 + (4 * b + s) * sub
                _pair(x, u(pa), u(pb), plus, tf, u(i * ts), size)
            for r in range(32):  # height: input a is row a // 2 of sub-plane parity a % 2
                i, j, col = r // 8, (r // 2) % 4, r % 2
                a, b, plus = _BT_ROWS[j]
                ra = (4 * i + 2 * (a % 2) + col) * ts + (a // 2) * rowlen
                rb = (4 * i + 2 * (b % 2) + col) * ts + (b // 2) * rowlen
                _pair(tf, u(ra), u(rb), plus, hf, u(r * hs), u(used + 1))
            base = c * tiles + (line - line0) * rowlen
            for r in range(16):  # width: input a is entry p + a // 2 of column parity a % 2
                d = 4 * r * vs + base
                for k in range(4):
                    a, b, plus = _BT_ROWS[k]
                    ea = (2 * r + a % 2) * hs + a // 2
                    eb = (2 * r + b % 2) * hs + b // 2
                    _pair(hf, u(ea), u(eb), plus, vf, u(d + k * vs), u(used))
                for k in range(4):
                    vf[d + k * vs + used] = 0
        line += count


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _input_transform_backward(v, line0, line1, t, h, gxpad):
    """gxpad[patch of tile p] += (B⊗B⊗B) dV[:][c, p]: the transpose of _input_transform.

    Shapes as :func:`_input_transform`, with v holding dV (zero on the spare tiles, whose dM
    is zero). Patches of neighbouring tiles overlap, so values accumulate (all in one sample:
    blocks of samples stay race-free). The passes run in reverse, each the transpose of its
    forward one (B's row b gathers the Bᵀ outputs that read input b): along width into h,
    along height into t, along depth onto gxpad. Flat arrays, unsigned offsets, one output
    stream per loop, as there.
    """
    u = np.uint64
    one = u(1)
    n_channels, depth = gxpad.shape[1], gxpad.shape[2]
    td, th, rowlen = (depth - 2) // 2, gxpad.shape[4] - 1, gxpad.shape[5]
    sub = (th + 1) * rowlen
    gx, tf, hf, vf = gxpad.reshape(-1), t.reshape(-1), h.reshape(-1), v.reshape(-1)
    ts, hs, vs = t.shape[1], h.shape[1], v.shape[1]
    tiles = (line1 - line0) * rowlen
    line = line0
    while line < line1:
        n, z, ty, count = _run(line, line1, td, th)
        size = u((count + 1) * rowlen)
        used = u(count * rowlen - 1)
        for c in range(n_channels):
            base = c * tiles + (line - line0) * rowlen
            for r in range(16):
                e, o = u(2 * r * hs), u((2 * r + 1) * hs)
                d0 = u(4 * r * vs + base)
                d1, d2, d3 = d0 + u(vs), d0 + u(2 * vs), d0 + u(3 * vs)
                for p in range(used):
                    hf[e + p] = vf[d0 + p]
                hf[e + used] = 0
                for p in range(used):
                    hf[e + one + p] += vf[d1 + p] + vf[d2 + p] - vf[d0 + p]
                for p in range(used):
                    hf[o + p] = vf[d1 + p] - vf[d2 + p] + vf[d3 + p]
                hf[o + used] = 0
                for p in range(used):
                    hf[o + one + p] -= vf[d3 + p]
            for f in range(u(16 * ts)):
                tf[f] = 0
            for i in range(4):
                for col in range(2):
                    g0 = u((8 * i + col) * hs)
                    g1, g2, g3 = g0 + u(2 * hs), g0 + u(4 * hs), g0 + u(6 * hs)
                    r0, r1 = u((4 * i + col) * ts), u((4 * i + 2 + col) * ts)
                    r2, r3 = r0 + u(rowlen), r1 + u(rowlen)
                    for p in range(used + one):
                        tf[r0 + p] += hf[g0 + p]
                    for p in range(used + one):
                        tf[r1 + p] += hf[g1 + p] - hf[g2 + p] + hf[g3 + p]
                    for p in range(used + one):
                        tf[r2 + p] += hf[g1 + p] + hf[g2 + p] - hf[g0 + p]
                    for p in range(used + one):
                        tf[r3 + p] -= hf[g3 + p]
            for s in range(4):
                p0 = u((((n * n_channels + c) * depth + z) * 4 + s) * sub + ty * rowlen)
                p1, p2, p3 = p0 + u(4 * sub), p0 + u(8 * sub), p0 + u(12 * sub)
                t0, t1, t2, t3 = u(s * ts), u((4 + s) * ts), u((8 + s) * ts), u((12 + s) * ts)
                for f in range(size):
                    gx[p0 + f] += tf[t0 + f]
                for f in range(size):
                    gx[p1 + f] += tf[t1 + f] - tf[t2 + f] + tf[t3 + f]
                for f in range(size):
                    gx[p2 + f] += tf[t1 + f] + tf[t2 + f] - tf[t0 + f]
                for f in range(size):
                    gx[p3 + f] -= tf[t3 + f]
        line += count


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _output_transform(m, bias, relu, line0, line1, w, y, blocks, out):
    """out[n, o, 2×2×2 block of tile p] = (Aᵀ⊗Aᵀ⊗Aᵀ) M[:][o, p] + bias[o], then max(·, 0) if
    ``relu``.

    Shapes: m (64, ≥ Cout·tiles), tiles = (line1 − line0)·(tw + 1) (one spare per line);
    w (32, ≥ tiles), y (16, ≥ tiles) and blocks (8, ≥ tiles) scratch; out (N, Cout, OD, OH,
    OW). Per channel, over all tiles of the chunk at once (flat arrays, unsigned offsets, one
    output stream per loop, as :func:`_input_transform`): Aᵀ along width into
    w[2·(4·i + j) + x], along height into y[4·i + 2·y + x], along depth (+ bias) into
    blocks, used as 4 rows of 2·tiles: row 2·z + y holds the block's x = 0, 1 values of tile
    p at 2p, 2p + 1, as in the output rows; then each output row is one contiguous copy,
    which drops the spare tiles and values past an odd output edge.
    """
    u = np.uint64
    one, two = u(1), u(2)
    n_out, od, oh, ow = out.shape[1], out.shape[2], out.shape[3], out.shape[4]
    td, th, tw = (od + 1) // 2, (oh + 1) // 2, (ow + 1) // 2
    tiles = (line1 - line0) * (tw + 1)
    size = u(tiles)
    mf, wf, yf, bf = m.reshape(-1), w.reshape(-1), y.reshape(-1), blocks.reshape(-1)
    ms, ws, ys, bs = m.shape[1], w.shape[1], y.shape[1], blocks.shape[1]
    zero = out.dtype.type(0)
    for o in range(n_out):
        b = bias[o]
        for r in range(16):
            m0 = u(4 * r * ms + o * tiles)
            m1, m2, m3 = m0 + u(ms), m0 + u(2 * ms), m0 + u(3 * ms)
            w0 = u(2 * r * ws)
            w1 = w0 + u(ws)
            for p in range(size):
                wf[w0 + p] = mf[m0 + p] + mf[m1 + p] + mf[m2 + p]
            for p in range(size):
                wf[w1 + p] = mf[m1 + p] - mf[m2 + p] - mf[m3 + p]
        for i in range(4):
            for x in range(2):
                a0 = u((8 * i + x) * ws)
                a1, a2, a3 = a0 + u(2 * ws), a0 + u(4 * ws), a0 + u(6 * ws)
                y0 = u((4 * i + x) * ys)
                y1 = y0 + u(2 * ys)
                for p in range(size):
                    yf[y0 + p] = wf[a0 + p] + wf[a1 + p] + wf[a2 + p]
                for p in range(size):
                    yf[y1 + p] = wf[a1 + p] - wf[a2 + p] - wf[a3 + p]
        # Along depth (+ bias), both columns of the block at once, interleaved: row
        # 2·z + y of blocks (2·tiles long) holds tile p's x = 0, 1 values at 2p, 2p + 1,
        # laid out as the output rows, so that each output row is then one contiguous copy
        # (a scatter of even and odd columns, 8 pairs a row at 16³, took 35% of this
        # function; the copy 1.2x faster in all).
        for yy in range(2):
            for z in range(2):
                e0 = u((2 * yy) * ys)  # y rows of (i = 0, y, x = 0); x = 1 is the next row
                e1, e2, e3 = e0 + u(4 * ys), e0 + u(8 * ys), e0 + u(12 * ys)
                d = u((2 * z + yy) * 2 * bs)
                if z == 0:
                    for p in range(size):
                        bf[d + two * p] = yf[e0 + p] + yf[e1 + p] + yf[e2 + p] + b
                        q = p + u(ys)
                        bf[d + two * p + one] = yf[e0 + q] + yf[e1 + q] + yf[e2 + q] + b
                else:
                    for p in range(size):
                        bf[d + two * p] = yf[e1 + p] - yf[e2 + p] - yf[e3 + p] + b
                        q = p + u(ys)
                        bf[d + two * p + one] = yf[e1 + q] - yf[e2 + q] - yf[e3 + q] + b
                if relu:  # max(·, 0) that keeps a NaN, as ReLU does
                    for p in range(two * size):
                        e = bf[d + p]
                        bf[d + p] = zero if e <= zero else e
        for line in range(line0, line1):
            n, z, yy = _line_origin(line, td, th)
            t0 = u(2 * (line - line0) * (tw + 1))
            for dz in range(min(2, od - z)):
                for dy in range(min(2, oh - yy)):
                    row = out[n, o, z + dz, yy + dy]
                    src = u((2 * dz + dy) * 2 * bs) + t0
                    for q in range(u(ow)):
                        row[q] = bf[src + q]


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _grad_output_transform(grad_out, line0, line1, w, y, blocks, m):
    """dM[ξ][o, p] = ((A⊗A⊗A) dy)[ξ] for the 2×2×2 gradient block dy of tile p (0 past edges
    and on the spare tiles).

    Shapes: grad_out (N, Cout, OD, OH, OW); w, y, blocks scratch and m (64, ≥ Cout·tiles) as
    :func:`_output_transform`, whose transpose this is: per channel a copy of the gradient
    rows into blocks, then A along depth, height and width, each over all tiles of the chunk.
    """
    u = np.uint64
    one, two = u(1), u(2)
    n_out, od, oh, ow = grad_out.shape[1], grad_out.shape[2], grad_out.shape[3], grad_out.shape[4]
    td, th, tw = (od + 1) // 2, (oh + 1) // 2, (ow + 1) // 2
    tiles = (line1 - line0) * (tw + 1)
    size = u(tiles)
    mf, wf, yf, bf = m.reshape(-1), w.reshape(-1), y.reshape(-1), blocks.reshape(-1)
    ms, ws, ys, bs = m.shape[1], w.shape[1], y.shape[1], blocks.shape[1]
    for o in range(n_out):
        # blocks as in _output_transform: 4 rows of 2·tiles, row 2·z + y holding the block's
        # x = 0, 1 values of tile p at 2p, 2p + 1, so each gradient row is one contiguous
        # copy (the gather of even and odd columns it replaces was as slow as the forward's).
        zero_fill(blocks.reshape(-1)[: 8 * bs])
        for line in range(line0, line1):
            n, z, yy = _line_origin(line, td, th)
            t0 = u(2 * (line - line0) * (tw + 1))
            for dz in range(min(2, od - z)):
                for dy in range(min(2, oh - yy)):
                    row = grad_out[n, o, z + dz, yy + dy]
                    dst = u((2 * dz + dy) * 2 * bs) + t0
                    for q in range(u(ow)):
                        bf[dst + q] = row[q]
        for yy in range(2):  # A along depth, both columns x of the block in each loop
            z0, z1 = u(yy * 2 * bs), u((2 + yy) * 2 * bs)
            for i in range(4):
                a = u((4 * i + 2 * yy) * ys)  # y row (i, yy, x = 0); x = 1 is the next
                b = a + u(ys)
                if i == 0:
                    for p in range(size):
                        yf[a + p] = bf[z0 + two * p]
                        yf[b + p] = bf[z0 + two * p + one]
                elif i == 1:
                    for p in range(size):
                        yf[a + p] = bf[z0 + two * p] + bf[z1 + two * p]
                        yf[b + p] = bf[z0 + two * p + one] + bf[z1 + two * p + one]
                elif i == 2:
                    for p in range(size):
                        yf[a + p] = bf[z0 + two * p] - bf[z1 + two * p]
                        yf[b + p] = bf[z0 + two * p + one] - bf[z1 + two * p + one]
                else:
                    for p in range(size):
                        yf[a + p] = -bf[z1 + two * p]
                        yf[b + p] = -bf[z1 + two * p + one]
        for i in range(4):
            for x in range(2):  # A along height
                y0 = u((4 * i + x) * ys)
                y1 = y0 + u(2 * ys)
                a0 = u((8 * i + x) * ws)
                a1, a2, a3 = a0 + u(2 * ws), a0 + u(4 * ws), a0 + u(6 * ws)
                for p in range(size):
                    wf[a0 + p] = yf[y0 + p]
                for p in range(size):
                    wf[a1 + p] = yf[y0 + p] + yf[y1 + p]
                for p in range(size):
                    wf[a2 + p] = yf[y0 + p] - yf[y1 + p]
                for p in range(size):
                    wf[a3 + p] = -yf[y1 + p]
        for r in range(16):  # A along width
            w0 = u(2 * r * ws)
            w1 = w0 + u(ws)
            m0 = u(4 * r * ms + o * tiles)
            m1, m2, m3 = m0 + u(ms), m0 + u(2 * ms), m0 + u(3 * ms)
            for p in range(size):
                mf[m0 + p] = wf[w0 + p]
            for p in range(size):
                mf[m1 + p] = wf[w0 + p] + wf[w1 + p]
            for p in range(size):
                mf[m2 + p] = wf[w0 + p] - wf[w1 + p]
            for p in range(size):
                mf[m3 + p] = -wf[w1 + p]


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _pad(x, padding, xpad):
    """xpad = x placed at (front, top, left) in zeros, each plane split by parity: padded
    (row, column) (y, w) at xpad[c, z, 2·(y % 2) + w % 2, y // 2, w // 2], so that the
    transforms read neighbouring tiles contiguously. Shapes: x (C, D, H, W); xpad (C, ...)."""
    n_channels, depth, height, width = x.shape
    front, top, left = padding
    first = left % 2  # x's first column that lands on an even padded one
    evens, odds = (width - first + 1) // 2, (width + first) // 2
    zero_fill(xpad.reshape(-1))
    for c in range(n_channels):
        for z in range(depth):
            for i in range(height):
                src = x[c, z, i]
                y = top + i
                even = xpad[c, front + z, 2 * (y % 2), y // 2, (left + first) // 2 :]
                odd = xpad[c, front + z, 2 * (y % 2) + 1, y // 2, (left + 1 - first) // 2 :]
                for q in range(evens):
                    even[q] = src[first + 2 * q]
                for q in range(odds):
                    odd[q] = src[1 - first + 2 * q]


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _crop(xpad, padding, x):
    """x = the (D, H, W) window of xpad at (front, top, left): the transpose of _pad."""
    n_channels, depth, height, width = x.shape
    front, top, left = padding
    first = left % 2
    evens, odds = (width - first + 1) // 2, (width + first) // 2
    for c in range(n_channels):
        for z in range(depth):
            for i in range(height):
                dst = x[c, z, i]
                y = top + i
                even = xpad[c, front + z, 2 * (y % 2), y // 2, (left + first) // 2 :]
                odd = xpad[c, front + z, 2 * (y % 2) + 1, y // 2, (left + 1 - first) // 2 :]
                for q in range(evens):
                    dst[first + 2 * q] = even[q]
                for q in range(odds):
                    dst[1 - first + 2 * q] = odd[q]


@njit(parallel=True, fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def winograd3d_forward(x, u, bias, relu, padding, lines, out, xpad, v, m):
    """out = conv3×3×3(x, g) + bias (then max(·, 0) if ``relu``), with u = the transformed
    weights (winograd3d_weight_transform).

    Shapes: x (N, C, D, H, W); u (64, Cout, C); bias (Cout,) (zeros for none); padding the
    (front, top, left) zero padding; out (N, Cout, OD, OH, OW) written. Work space: xpad
    (N, C, 2·td + 2, 4, th + 1, tw + 1) with td = ⌈OD/2⌉ (likewise th, tw), see :func:`_pad`;
    v (T, 64, ≥ C·lines·(tw + 1)), m (T, 64, ≥ Cout·lines·(tw + 1)): one per block.
    Loop nest: pad every sample into xpad; then for block t of tile lines (the batch's lines
    split into T even runs): for chunk of ``lines`` tile lines: V = (Bᵀ⊗Bᵀ⊗Bᵀ) d;
    M[ξ] = U[ξ] @ V[ξ] (64 BLAS calls); out = (Aᵀ⊗Aᵀ⊗Aᵀ) M + bias.
    Parallel over: samples (padding xpad[n]), then blocks of tile lines (block t writes only
    its own lines' outputs, and v[t], m[t]: race-free).
    """
    n_batch, n_channels = x.shape[0], x.shape[1]
    n_out = u.shape[1]
    n_blocks = v.shape[0]
    per_sample = ((xpad.shape[2] - 2) // 2) * (xpad.shape[4] - 1)
    rowlen = xpad.shape[5]  # tiles per line, the spare one included
    for n in prange(n_batch):
        _pad(x[n], padding, xpad[n])
    # The tile lines of the whole batch are shared out evenly, not whole samples: a batch of
    # one (inference) or of 3 on 2 threads keeps every thread busy.
    n_lines = n_batch * per_sample
    for t in prange(n_blocks):
        t_rows = np.empty((16, (lines + 1) * rowlen), dtype=x.dtype)
        h_rows = np.empty((32, lines * rowlen), dtype=x.dtype)
        blocks = np.empty((8, lines * rowlen), dtype=x.dtype)
        last = ((t + 1) * n_lines) // n_blocks
        for line0 in range((t * n_lines) // n_blocks, last, lines):
            line1 = min(line0 + lines, last)
            tiles = (line1 - line0) * rowlen
            _input_transform(xpad, line0, line1, t_rows, h_rows, v[t])
            for k in range(64):
                gemm(
                    False, False, n_out, tiles, n_channels,
                    u[k].reshape(-1), n_channels,
                    v[t, k], tiles,
                    0.0, m[t, k], tiles,
                )  # fmt: skip
            _output_transform(m[t], bias, relu, line0, line1, h_rows, t_rows, blocks, out)


@njit(parallel=True, fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def winograd3d_backward(
    xpad, u, grad_out, padding, lines, grad_x, grad_u, grad_b, gxpad, v, m, partial_u, partial_b
):
    """All three gradients of :func:`winograd3d_forward`, in the Winograd domain.

    Shapes: xpad as the forward left it (the padded input); u (64, Cout, C); grad_out
    (N, Cout, OD, OH, OW); grad_x (N, C, D, H, W), grad_u (64, Cout, C) and grad_b (Cout,) or
    (0,) overwritten (grad_u is the gradient of u: winograd3d_weight_transform_backward turns
    it into the weight gradient). Work space: gxpad like xpad; v, m as in the forward;
    partial_u (T, 64·Cout·C), partial_b (T, ≥ Cout).
    Loop nest: for block t: for chunk of tile lines: V = (Bᵀ⊗Bᵀ⊗Bᵀ) d; dM = (A⊗A⊗A) dY;
    partial_u[t][ξ] += dM[ξ] @ V[ξ]ᵀ; dV[ξ] = U[ξ]ᵀ @ dM[ξ]; gxpad += (B⊗B⊗B) dV; then crop
    gxpad into grad_x, and grad_u = Σ_t partial_u[t] in block order.
    Parallel over: blocks of samples (block t writes gxpad[n] and grad_x[n] of its own samples
    and its own work rows; the sums over samples go through the per-block partials: race-free),
    or for a batch smaller than the thread count blocks of tile lines, each adding into its
    own copy of gxpad (which then holds T copies), summed in block order afterwards.
    """
    n_batch, n_channels = grad_x.shape[0], grad_x.shape[1]
    n_out = u.shape[1]
    n_blocks = v.shape[0]
    per_sample = ((xpad.shape[2] - 2) // 2) * (xpad.shape[4] - 1)
    rowlen = xpad.shape[5]  # tiles per line, the spare one included
    step = n_out * n_channels
    for t in prange(n_blocks):
        # Loops and serial helpers only: whole-array statements here would each become a
        # parallel loop of their own, slow to compile (see conv.py).
        t_rows = np.empty((16, (lines + 1) * rowlen), dtype=u.dtype)
        h_rows = np.empty((32, lines * rowlen), dtype=u.dtype)
        blocks = np.empty((8, lines * rowlen), dtype=u.dtype)
        zero_fill(partial_u[t])
        # Whole samples per block, or tile lines into private copies for a small batch
        # (winograd._block_lines).
        first, last, target = _block_lines(
            t, n_blocks, per_sample, grad_out, grad_b, gxpad, partial_b
        )
        for line0 in range(first, last, lines):
            line1 = min(line0 + lines, last)
            tiles = (line1 - line0) * rowlen
            _input_transform(xpad, line0, line1, t_rows, h_rows, v[t])
            _grad_output_transform(grad_out, line0, line1, h_rows, t_rows, blocks, m[t])
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
            _input_transform_backward(v[t], line0, line1, t_rows, h_rows, target)
        if n_batch >= n_blocks:  # whole samples: this block's are complete
            for n in range(first // per_sample, last // per_sample):
                _crop(gxpad[n], padding, grad_x[n])
    if n_batch < n_blocks:
        _merge_blocks(n_blocks, grad_out, grad_b, gxpad, partial_b)
        for n in range(n_batch):
            _crop(gxpad[n], padding, grad_x[n])
    sum_blocks(partial_u, grad_u.reshape(-1))
    sum_blocks(partial_b, grad_b)
