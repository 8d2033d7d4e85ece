"""Conv3d as plane-wise unfolding + BLAS: the depth taps share each input plane's unfolding.

vol2col (``im2col.py``) copies kd·kh·kw·C values per output position; for a 3×3×3 kernel that
is 27 copies of every input value, and the copying cost as much as the matrix product. Here
each *input plane* z is unfolded once, as a 2-D convolution would unfold an image: rows_z
(P2 × K2), P2 = oh·ow output positions of a plane, K2 = kh·kw·C values under each position's
(kh × kw) window. Output plane d reads input planes z = d·sd + a − pd for the kd taps a, so

    out[:, d]ᵀ (P2 × Cout) = Σ_a rows_{d·sd + a − pd} (P2 × K2) @ W_a (K2 × Cout),

and every input plane is unfolded once instead of kd times. The rows of consecutive planes
sit side by side in a buffer of shape (P2, planes, K2), so the kd blocks an output plane
needs form one matrix (P2 × kd·K2) with a leading dimension (row stride) of planes·K2: the
whole sum is one BLAS call with K = kd·K2. ``np.dot`` takes only contiguous matrices (it
would copy this one), so these kernels call BLAS's gemm directly (``blas.gemm``), which also
adds into its output (beta = 1) where the backward accumulates.

Forward: the input is first copied channels-last and zero-padded in height and width, x_t
(D, Hp, Wp, C), so a window row (b, all e, all c) is one contiguous run of kw·C values; the
product comes out positions-major (P2 × Cout) and is transposed into ``out`` with the bias.
Backward: the planes are unfolded the vol2col way instead, cols_z (K2 × P2) with K2 in
(c, b, e) order, as its two products measured faster in that layout and read the output
gradient in place; the column gradients of the kd taps land on their input planes' slots,
add up there and go back onto grad_x with ``im2col.col2vol``. Layouts and speeds are in the
kernels' docstrings. Depth padding is never materialised: an output plane near the border
just uses fewer taps (a smaller K), so no flops are spent on zeros.

Notation: x (N, C, D, H, W); out, grad_out (N, Cout, od·P2); ``kernel``, ``stride``,
``padding`` (low side) and ``dilation`` are (depth, height, width) tuples; depth dilation must
be 1 (then an output plane's taps read consecutive input planes). Output planes are handled
in chunks of ``chunk`` planes, so the unfolded buffer (planes = (chunk − 1)·sd + kd input
planes) stays near the cache; the kd − sd planes two chunks share are unfolded twice.

Parallel over: fixed blocks of samples, T = the work buffers' first axis, as in ``conv.py``;
per-block partial weight gradients are added in block order, so the same input and thread
count give bit-identical results. BLAS must be single-threaded around these kernels.

Debugging: with ``NUMBA_DISABLE_JIT=1`` these are plain Python, and ``blas.gemm`` is replaced
by a NumPy version.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import config
from .blas import gemm
from .im2col import col2vol, valid_range


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _zero(a):
    """a[:] = 0 for a 1-D array. A serial helper: in a parallel kernel an array expression
    becomes a parallel loop of its own (slow to compile, and a barrier per call)."""
    for i in range(a.shape[0]):
        a[i] = 0


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _sum_blocks(partial, out):
    """out[j] = Σ_t partial[t, j], blocks added in order (deterministic); serial, as _zero."""
    for j in range(out.shape[0]):
        total = partial[0, j]
        for t in range(1, partial.shape[0]):
            total += partial[t, j]
        out[j] = total


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _channels_last(x, padding, x_t):
    """x_t[z, y + ph, w + pw, c] = x[c, z, y, w], zero elsewhere (the height/width padding).

    Shapes: x (C, D, H, W); x_t (D, Hp, Wp, C). Input rows and columns past Hp, Wp are never
    read by any output, so they are left out.
    """
    n_channels, depth, height, width = x.shape
    hp, wp = x_t.shape[1], x_t.shape[2]
    x_t[:] = 0
    for z in range(depth):
        for y in range(min(height, hp - padding[1])):
            for w in range(min(width, wp - padding[2])):
                for c in range(n_channels):
                    x_t[z, y + padding[1], w + padding[2], c] = x[c, z, y, w]


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _unfold_plane(x_t, z, kernel, stride, dilation, out_size, slot, planes, rows):
    """im2row of input plane z into slot ``slot`` of ``rows`` (P2, planes, K2).

    rows[p, slot, (b, e, c)] = x_t[z, i·sh + b·dh, q·sw + e·dw, c] for p = i·ow + q.
    """
    n_channels = x_t.shape[3]
    hp, wp = x_t.shape[1], x_t.shape[2]
    kh, kw = kernel[1], kernel[2]
    oh, ow = out_size[1], out_size[2]
    k2 = kh * kw * n_channels
    # Unit width dilation: a window row (all e, all c) is one run of kw·C values in x_t.
    run = kw * n_channels if dilation[2] == 1 else n_channels
    pieces = 1 if dilation[2] == 1 else kw
    xf = x_t.reshape(-1)
    for i in range(oh):
        for q in range(ow):
            dst = np.uint64(((i * ow + q) * planes + slot) * k2)
            for b in range(kh):
                y = i * stride[1] + b * dilation[1]
                for e in range(pieces):
                    w = q * stride[2] + e * dilation[2]
                    src = np.uint64(((z * hp + y) * wp + w) * n_channels)
                    for r in range(np.uint64(run)):
                        rows[dst + r] = xf[src + r]
                    dst += np.uint64(run)


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _taps(d, stride, padding, depth, kd):
    """Depth taps [a0, a1) of output plane d that read real input planes (not padding)."""
    base = d * stride - padding
    return max(0, -base), min(kd, depth - base)


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _unfold_chunk(x_t, d0, d1, kernel, stride, padding, dilation, out_size, planes, rows):
    """im2row of every real input plane that output planes d0 .. d1 read; slot 0 holds
    input plane d0·sd − pd."""
    z0 = d0 * stride[0] - padding[0]
    for slot in range((d1 - 1 - d0) * stride[0] + kernel[0]):
        if 0 <= z0 + slot < x_t.shape[0]:
            _unfold_plane(x_t, z0 + slot, kernel, stride, dilation, out_size, slot, planes, rows)


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def conv3d_planes_forward(
    x, weight_t, bias, kernel, stride, padding, dilation, out_size, chunk, out, xts, rows, tiles
):
    """out[n, :, d] = bias + (Σ_a rows_{d·sd + a − pd} @ W_a)ᵀ, one gemm per output plane.

    Shapes: x (N, C, D, H, W); weight_t (kd·K2, Cout); bias (Cout,) (zeros for none);
    out (N, Cout, od·P2) written. Work space, one row per block: xts (T, D, Hp, Wp, C),
    rows (T, ≥ P2·planes·K2), tiles (T, ≥ P2·Cout).
    Loop nest: for block t: for (sample n, chunk of output planes) in block: x_t =
    channels-last x[n] (once per sample); unfold the chunk's input planes; for d in chunk:
    tile (P2 × Cout) = gemm; out[n, :, d] = tileᵀ + bias.
    Parallel over: blocks of (sample, chunk) pairs (block t writes only its planes of out
    and its own work rows: race-free).
    """
    n_batch, depth = x.shape[0], x.shape[2]
    n_out = weight_t.shape[1]
    kd = kernel[0]
    od, p2 = out_size[0], out_size[1] * out_size[2]
    k2 = weight_t.shape[0] // kd
    planes = (chunk - 1) * stride[0] + kd
    n_blocks = rows.shape[0]
    wf = weight_t.reshape(-1)
    n_chunks = -(-od // chunk)  # per sample
    units = n_batch * n_chunks
    for t in prange(n_blocks):
        tile = tiles[t, : p2 * n_out].reshape(p2, n_out)
        # The blocks share out (sample, chunk) pairs, not whole samples: a batch smaller than
        # the thread count keeps every thread busy (each block that has a chunk of a sample
        # makes its own channels-last copy of it).
        current = -1
        for unit in range((t * units) // n_blocks, ((t + 1) * units) // n_blocks):
            n = unit // n_chunks
            if n != current:
                _channels_last(x[n], padding, xts[t])
                current = n
            d0 = (unit % n_chunks) * chunk
            d1 = min(d0 + chunk, od)
            _unfold_chunk(
                xts[t], d0, d1, kernel, stride, padding, dilation, out_size, planes, rows[t]
            )
            for d in range(d0, d1):
                a0, a1 = _taps(d, stride[0], padding[0], depth, kd)
                if a1 <= a0:  # the plane sees only padding: bias alone
                    _zero(tiles[t])
                else:
                    # Positions as rows (P2 × Cout) measured faster than (Cout × P2)
                    # straight into out (89 vs 40-68 GFLOP/s); the transpose is cheap.
                    gemm(
                        False, False, p2, n_out, (a1 - a0) * k2,
                        rows[t, (d - d0) * stride[0] * k2 + a0 * k2 :], planes * k2,
                        wf[a0 * k2 * n_out :], n_out,
                        0.0, tiles[t], n_out,
                    )  # fmt: skip
                for o in range(n_out):
                    for p in range(p2):
                        out[n, o, d * p2 + p] = tile[p, o] + bias[o]


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _plane_to_cols(x, z, kernel, stride, padding, dilation, out_size, col):
    """vol2col of input plane z alone: col[(c, b, e), (i, q)] = x[c, z, i·sh + b·dh − ph,
    q·sw + e·dw − pw], 0 in the padding. Shapes: x (C, D, H, W); col (C·kh·kw, P2).

    ``im2col.vol2col`` computes the same (for a depth padding of −z) but measured twice as
    slow on one plane, as it zeroes every row before copying; here only the padding is
    zeroed. Loop nest: for row (c, b, e): for output line i: zero the edges, copy a run of q.
    """
    n_channels, depth, height, width = x.shape
    kh, kw = kernel[1], kernel[2]
    oh, ow = out_size[1], out_size[2]
    xf = x.reshape(-1)
    cf = col.reshape(-1)
    step = np.uint64(stride[2])
    row = 0
    for c in range(n_channels):
        for b in range(kh):
            for e in range(kw):
                xoff = e * dilation[2] - padding[2]
                q_lo, q_hi = valid_range(ow, stride[2], xoff, width)
                for i in range(oh):
                    y = i * stride[1] + b * dilation[1] - padding[1]
                    dst = np.uint64((row * oh + i) * ow)
                    if y < 0 or y >= height:
                        for q in range(np.uint64(ow)):
                            cf[dst + q] = 0
                        continue
                    for q in range(np.uint64(q_lo)):
                        cf[dst + q] = 0
                    for q in range(np.uint64(q_hi), np.uint64(ow)):
                        cf[dst + q] = 0
                    src = np.uint64(((c * depth + z) * height + y) * width)
                    src += np.uint64(q_lo * stride[2] + xoff)
                    dst += np.uint64(q_lo)
                    for q in range(np.uint64(q_hi - q_lo)):
                        cf[dst + q] = xf[src + q * step]
                row += 1


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _cols_to_plane(col, z, kernel, stride, padding, dilation, out_size, x):
    """The transpose of :func:`_plane_to_cols`, added into x (C, D, H, W): ``im2col.col2vol``
    on a volume of depth 1 seen through a depth padding of −z (output plane 0 with the one
    depth tap then lands exactly on input plane z)."""
    out2 = (1, out_size[1], out_size[2])
    col2vol(
        col,
        0,
        (1, kernel[1], kernel[2]),
        (1, stride[1], stride[2]),
        (-z, padding[1], padding[2]),
        (1, dilation[1], dilation[2]),
        out2,
        0,
        out2[1],
        x,
        0,
    )


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def conv3d_planes_backward(
    x,
    weight_c,
    grad_out,
    kernel,
    stride,
    padding,
    dilation,
    out_size,
    chunk,
    grad_x,
    grad_wc,
    grad_b,
    cols,
    grad_cols,
    partial_w,
    partial_b,
):
    """All three gradients of :func:`conv3d_planes_forward`, on columns rather than rows.

    The backward's products measured faster with each plane unfolded the vol2col way, col_z
    (K2 × P2) with K2 in (c, b, e) order (dW: 95 against 71 GFLOP/s with rows), and they read
    dy in place.
    Shapes: x, grad_x (N, C, D, H, W); weight_c, grad_wc (kd·K2, Cout), the weight as
    (kd, C, kh, kw, Cout); grad_out (N, Cout, od·P2); grad_b (Cout,) or (0,); work space
    cols, grad_cols (T, ≥ planes·K2·P2), partial_w (T, ≥ kd·K2·Cout), partial_b (T, ≥ Cout).
    grad_x, grad_wc and grad_b are overwritten.
    Loop nest: for block t: for n in block: grad_x[n] = 0; for chunk of output planes:
    unfold its input planes into cols, grad_cols = 0; for d in chunk: partial_w[t] +=
    cols_d @ dy_dᵀ (gemm), grad_cols_d += W @ dy_d (gemm: the kd blocks land on their input
    planes' slots and add up there); col2vol every slot into grad_x[n].
    Parallel over: blocks of samples (block t writes grad_x[n] of its own samples and its own
    work rows; the sum over samples goes through the per-block partials: race-free).
    """
    n_batch, depth = x.shape[0], x.shape[2]
    n_out = weight_c.shape[1]
    kd = kernel[0]
    od, p2 = out_size[0], out_size[1] * out_size[2]
    k2 = weight_c.shape[0] // kd
    plane = k2 * p2
    n_blocks = cols.shape[0]
    wf = weight_c.reshape(-1)
    for t in prange(n_blocks):
        _zero(partial_w[t])
        _zero(partial_b[t])
        for n in range((t * n_batch) // n_blocks, ((t + 1) * n_batch) // n_blocks):
            _zero(grad_x[n].reshape(-1))
            dyf = grad_out[n].reshape(-1)
            for d0 in range(0, od, chunk):
                d1 = min(d0 + chunk, od)
                z0 = d0 * stride[0] - padding[0]  # the input plane in slot 0
                used = (d1 - 1 - d0) * stride[0] + kd
                for slot in range(used):
                    if 0 <= z0 + slot < depth:
                        col = cols[t, slot * plane : (slot + 1) * plane].reshape(k2, p2)
                        _plane_to_cols(
                            x[n], z0 + slot, kernel, stride, padding, dilation, out_size, col
                        )
                _zero(grad_cols[t, : used * plane])
                for d in range(d0, d1):
                    a0, a1 = _taps(d, stride[0], padding[0], depth, kd)
                    if a1 <= a0:
                        continue
                    k = (a1 - a0) * k2
                    start = ((d - d0) * stride[0] + a0) * plane
                    gemm(
                        False, True, k, n_out, p2,
                        cols[t, start:], p2,
                        dyf[d * p2 :], od * p2,
                        1.0, partial_w[t, a0 * k2 * n_out :], n_out,
                    )  # fmt: skip
                    gemm(
                        False, False, k, p2, n_out,
                        wf[a0 * k2 * n_out :], n_out,
                        dyf[d * p2 :], od * p2,
                        1.0, grad_cols[t, start:], p2,
                    )  # fmt: skip
                for slot in range(used):
                    if 0 <= z0 + slot < depth:
                        col = grad_cols[t, slot * plane : (slot + 1) * plane].reshape(k2, p2)
                        _cols_to_plane(
                            col, z0 + slot, kernel, stride, padding, dilation, out_size, grad_x[n]
                        )
            for o in range(grad_b.shape[0]):
                total = 0.0
                for p in range(od * p2):
                    total += grad_out[n, o, p]
                partial_b[t, o] += total
    _sum_blocks(partial_w, grad_wc.reshape(-1))
    _sum_blocks(partial_b, grad_b)
