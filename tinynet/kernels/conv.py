"""Convolution kernels (Conv2d and Conv3d share them: an image is a volume of depth 1).

Notation: x (N, C, D, H, W) input; weight (Cout, K) with K = Cg·kd·kh·kw, the layer's
weight (Cout, Cg, kd, kh, kw) flattened; out and grad_out (N, Cout, P), P = od·oh·ow;
G groups of Cg = C/G input and Cog = Cout/G output channels. ``kernel``, ``stride``,
``padding`` (the low side), ``dilation`` and ``out_size`` are (depth, height, width) tuples.

Two algorithms, chosen by the layer:

* **vol2col + GEMM** (``conv_forward_gemm``, ``conv_backward_gemm``), for ordinary
  convolutions. Per sample and group: col = vol2col(x[n]) (K × P), out[n] = W @ col; in
  backward dW += dy[n] @ colᵀ and dx[n] = col2vol(Wᵀ @ dy[n]). The products go to BLAS via
  ``np.dot``, which reaches ~85 GFLOP/s per core on these shapes. Each thread handles a fixed
  block of samples with its own col buffer (a sample's col, ~200 KB for a 32-channel 14×14
  map, stays in L2 between vol2col and the product), so the caller must make BLAS
  single-threaded around these kernels. Measured against one whole-batch product with a
  threaded BLAS, this avoids the two (N, Cout, P) ↔ (Cout, N·P) transposes and keeps col in
  cache; the backward recomputes col rather than storing N of them.
* **direct** (``conv_*_direct``), for grouped convolutions with one input channel per group
  (depthwise). There each product would be a (Cog × kd·kh·kw) @ (kd·kh·kw × P) BLAS call of
  a few hundred flops; plain loops over the taps do better.

Determinism: samples are split into ``T`` contiguous blocks (T = the cols buffer's first
axis), not scheduled dynamically, and per-block partial sums are added in block order, so the
same input and thread count give bit-identical results.

Debugging: with ``NUMBA_DISABLE_JIT=1`` these are plain Python (slow) that pdb can step into.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import config
from .blas import gemm, gemm_few_rows
from .im2col import col2vol, valid_range, vol2col
from .vector import deinterleave_row, interleave_row, transpose


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def store_row(src, b, relu, dst):
    """dst = src + b, then max(·, 0) if ``relu`` (a fused ReLU). src and dst must not overlap.

    Two plain loops, not one with ``0 if relu and v <= 0 else v``, so each vectorises on
    every machine. "v <= 0" is false for NaN: a NaN stays NaN, as in ReLU.
    """
    if relu:
        for p in range(dst.shape[0]):
            v = src[p] + b
            dst[p] = 0 if v <= 0 else v
    else:
        for p in range(dst.shape[0]):
            dst[p] = src[p] + b


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def bias_row_in_place(row, b, relu):
    """row += b, then max(·, 0) if ``relu``: :func:`store_row` with src = dst.

    Its own function because LLVM guards a two-array loop with a runtime overlap test and
    runs a scalar copy when the arrays overlap: called on one array, store_row ran at one
    element per cycle (measured a third of a 1 → 32 channel convolution's forward).
    """
    if relu:
        for p in range(row.shape[0]):
            v = row[p] + b
            row[p] = 0 if v <= 0 else v
    else:
        for p in range(row.shape[0]):
            row[p] += b


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def pointwise(geometry):
    """Whether the convolution is 1×1(×1), stride 1, unpadded: then vol2col is the identity
    (col = the sample's (C, P) matrix) and the GEMM kernels skip it."""
    kernel, stride, padding = geometry[0], geometry[1], geometry[2]
    for axis in range(3):
        if kernel[axis] != 1 or stride[axis] != 1 or padding[axis] != 0:
            return False
    return True


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _cols_of_samples(x, n0, n1, c0, geometry, line0, line1, col):
    """vol2col of output lines line0 .. line1 of samples n0 .. n1 (channels from c0), side by
    side in col: sample n's columns start at (n − n0)·(line1 − line0)·ow."""
    kernel, stride, padding, dilation, out_size = geometry
    span = (line1 - line0) * out_size[2]
    for n in range(n0, n1):
        vol2col(
            x[n], c0, kernel, stride, padding, dilation, out_size, line0, line1, col,
            (n - n0) * span,
        )  # fmt: skip


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _add_cols_to_samples(col, n0, n1, c0, geometry, line0, line1, grad_x):
    """The transpose of :func:`_cols_of_samples`: col2vol of each sample's columns into
    grad_x[n] (added)."""
    kernel, stride, padding, dilation, out_size = geometry
    span = (line1 - line0) * out_size[2]
    for n in range(n0, n1):
        col2vol(
            col, c0, kernel, stride, padding, dilation, out_size, line0, line1, grad_x[n],
            (n - n0) * span,
        )  # fmt: skip


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def conv_forward_gemm(
    x,
    weight,
    bias,
    relu,
    groups,
    kernel,
    stride,
    padding,
    dilation,
    out_size,
    tile,
    samples,
    out,
    cols,
    tiles,
):
    """out[n, g-block] = weight[g-block] @ vol2col(x[n], group g) (+ bias), tile by tile.

    Shapes: x (N, C, D, H, W); weight (Cout, K); bias (Cout,) (zeros for none);
    out (N, Cout, P) written; with ``relu`` max(·, 0) is applied as each tile is written (a
    fused ReLU: the tile is still in the cache). A tile is ``tile`` output lines of ow
    positions (see vol2col) of one sample, or, when a sample's output is smaller than a tile
    (tile = all its lines), the whole outputs of up to ``samples`` samples side by side: one
    product for several small samples, which BLAS runs faster than several small products.
    cols (T, ≥ K·tile·ow·samples) and tiles (T, ≥ Cog·tile·ow·samples) are work space, one row
    per block.
    Loop nest: for block t: for (sample, output tile) of the block, or with samples > 1 for
    group of samples and output tile: for g: col = vol2col of each sample; y = W_g @ col
    (BLAS); out[n, g-block, tile] = y + bias (then max(·, 0) if relu).
    Parallel over: blocks of (sample, output tile) pairs, or of whole samples when several
    share a tile (block t writes only its tiles of out, cols[t] and tiles[t]: race-free).
    """
    n_batch = x.shape[0]
    n_blocks = cols.shape[0]
    n_lines = out_size[0] * out_size[1]
    n_tiles = -(-n_lines // tile)  # output tiles per sample
    for t in prange(n_blocks):
        # Built here, not before the prange: a tuple of tuples passed into a parallel loop's
        # body fails Numba's lowering.
        geometry = (kernel, stride, padding, dilation, out_size)
        if samples == 1:
            # The blocks share out (sample, output tile) pairs, not whole samples: a batch
            # smaller than the thread count (one image, at inference) keeps every thread busy.
            units = n_batch * n_tiles
            for unit in range((t * units) // n_blocks, ((t + 1) * units) // n_blocks):
                n = unit // n_tiles
                line0 = (unit % n_tiles) * tile
                line1 = min(line0 + tile, n_lines)
                _forward_tile(x, weight, bias, relu, groups, geometry, n, n + 1, line0, line1,
                              out, cols[t], tiles[t])  # fmt: skip
        else:
            last = ((t + 1) * n_batch) // n_blocks
            for n0 in range((t * n_batch) // n_blocks, last, samples):
                n1 = min(n0 + samples, last)
                for line0 in range(0, n_lines, tile):
                    line1 = min(line0 + tile, n_lines)
                    _forward_tile(x, weight, bias, relu, groups, geometry, n0, n1, line0,
                                  line1, out, cols[t], tiles[t])  # fmt: skip


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _forward_tile(x, weight, bias, relu, groups, geometry, n0, n1, line0, line1, out, cols, tiles):
    """Output lines line0 .. line1 of samples n0 .. n1, every group: col = vol2col of each
    sample; y = W_g @ col (BLAS); out = y + bias (then max(·, 0) if relu). Work space: cols,
    tiles (one block's rows of conv_forward_gemm's)."""
    n_channels = x.shape[1]
    cin_g = n_channels // groups
    cout_g = weight.shape[0] // groups
    k = weight.shape[1]
    ow = geometry[4][2]
    span = (line1 - line0) * ow  # columns per sample
    width = (n1 - n0) * span
    p0 = line0 * ow
    n_positions = out.shape[2]
    for g in range(groups):
        if n1 == n0 + 1 and pointwise(geometry):
            # col would be a copy of x's tile: BLAS reads it in place (rows P apart) and
            # writes into out likewise.
            gemm(False, False, cout_g, span, cin_g, weight[g * cout_g :].reshape(-1), k,
                 x[n0].reshape(-1)[g * cin_g * n_positions + p0 :], n_positions, 0.0,
                 out[n0].reshape(-1)[g * cout_g * n_positions + p0 :], n_positions)  # fmt: skip
            for oc in range(g * cout_g, (g + 1) * cout_g):
                bias_row_in_place(out[n0, oc, p0 : p0 + span], bias[oc], relu)
            continue
        col = cols[: k * width].reshape(k, width)
        _cols_of_samples(x, n0, n1, g * cin_g, geometry, line0, line1, col)
        w_g = weight[g * cout_g :].reshape(-1)
        if width == out.shape[2]:  # one sample in one tile: BLAS writes into out
            gemm_few_rows(False, cout_g, width, k, w_g, k, col.reshape(-1), width, 0.0,
                          out[n0, g * cout_g :].reshape(-1), width)  # fmt: skip
            for oc in range(g * cout_g, (g + 1) * cout_g):
                bias_row_in_place(out[n0, oc], bias[oc], relu)
        else:
            y = tiles[: cout_g * width].reshape(cout_g, width)
            gemm_few_rows(
                False, cout_g, width, k, w_g, k, col.reshape(-1), width, 0.0, tiles, width
            )
            for n in range(n0, n1):
                c0 = (n - n0) * span
                for o in range(cout_g):
                    oc = g * cout_g + o
                    store_row(y[o, c0 : c0 + span], bias[oc], relu, out[n, oc, p0 : p0 + span])


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def conv_backward_gemm(
    x,
    weight,
    grad_out,
    input_grad,
    groups,
    kernel,
    stride,
    padding,
    dilation,
    out_size,
    tile,
    samples,
    grad_x,
    grad_w,
    grad_b,
    cols,
    tiles,
    partial_w,
    partial_b,
):
    """All three gradients of :func:`conv_forward_gemm`.

    Shapes: x, grad_x (N, C, D, H, W); weight, grad_w (Cout, K); grad_out (N, Cout, P);
    grad_b (Cout,) or (0,); tile, samples and work space cols, tiles as in the forward,
    partial_w (T, Cout, K), partial_b (T, ≥ Cout). grad_x, grad_w and grad_b are overwritten
    (the layer adds them to the parameters' .grad); without ``input_grad`` grad_x is not
    computed (left as it is).
    Loop nest: for block t: for group of samples in block: for g: for output tile: dy =
    grad_out tile(s); col = vol2col of each sample; partial_w[t] += dy @ colᵀ; col = W_gᵀ @ dy;
    grad_x[n] += col2vol(col) for each sample; then grad_w = Σ_t partial_w[t] in block order.
    Parallel over: blocks of samples (block t writes grad_x[n] of its own samples and its own
    work rows; the sum over samples goes through the per-block partials: race-free).
    """
    n_batch, n_channels = x.shape[0], x.shape[1]
    n_blocks = cols.shape[0]
    n_lines = out_size[0] * out_size[1]
    cin_g = n_channels // groups
    cout_g = weight.shape[0] // groups
    k = weight.shape[1]
    for t in prange(n_blocks):
        product = np.empty((cout_g, k), dtype=x.dtype)
        zero_fill(partial_w[t].reshape(-1))
        zero_fill(partial_b[t])
        last = ((t + 1) * n_batch) // n_blocks
        for n0 in range((t * n_batch) // n_blocks, last, samples):
            n1 = min(n0 + samples, last)
            # Built here, not before the prange: a tuple of tuples passed into a parallel
            # loop's body fails Numba's lowering.
            geometry = (kernel, stride, padding, dilation, out_size)
            in_place = n1 == n0 + 1 and pointwise(geometry)
            for n in range(n0, n1):
                if input_grad and not in_place:
                    zero_fill(grad_x[n].reshape(-1))
                for oc in range(grad_b.shape[0]):
                    partial_b[t, oc] += row_sum(grad_out[n, oc])
            for g in range(groups):
                rows = slice(g * cout_g, (g + 1) * cout_g)
                for line0 in range(0, n_lines, tile):
                    line1 = min(line0 + tile, n_lines)
                    span = (line1 - line0) * out_size[2]
                    width = (n1 - n0) * span
                    p0 = line0 * out_size[2]
                    if in_place:
                        _pointwise_backward(x[n0], weight, grad_out[n0], input_grad, g,
                                            p0, span, grad_x[n0], partial_w[t])  # fmt: skip
                        continue
                    # BLAS wants a contiguous matrix: copy this tile of the gradient.
                    if width == grad_out.shape[2]:
                        dy = grad_out[n0, rows]
                    else:
                        dy = tiles[t, : cout_g * width].reshape(cout_g, width)
                        for n in range(n0, n1):
                            c0 = (n - n0) * span
                            for o in range(cout_g):
                                for p in range(span):
                                    dy[o, c0 + p] = grad_out[n, g * cout_g + o, p0 + p]
                    col = cols[t, : k * width].reshape(k, width)
                    _cols_of_samples(x, n0, n1, g * cin_g, geometry, line0, line1, col)
                    np.dot(dy, col.T, product)
                    add_into(product, partial_w[t, rows])
                    if not input_grad:
                        continue
                    # col is free again: reuse it for the column gradient.
                    np.dot(weight[rows].T, dy, col)
                    _add_cols_to_samples(col, n0, n1, g * cin_g, geometry, line0, line1, grad_x)
    sum_blocks(partial_w.reshape(n_blocks, -1), grad_w.reshape(-1))
    sum_blocks(partial_b, grad_b)


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def conv_backward_gemm_channels(
    x,
    weight,
    grad_out,
    input_grad,
    groups,
    kernel,
    stride,
    padding,
    dilation,
    out_size,
    tile,
    parts,
    grad_x,
    grad_w,
    grad_b,
    cols,
):
    """The gradients of :func:`conv_forward_gemm` for a batch smaller than the thread count,
    shared out by input channels instead of samples.

    A sample's input gradient is a sum over overlapping windows, so conv_backward_gemm keeps
    each sample on one thread: a batch of one would leave the other threads idle. But the
    rows of col, of the weight gradient's columns and of the column gradient belong to input
    channels, and each channel's input gradient only to its own rows. So each group's input
    channels are cut into ``parts`` runs, and a unit (group g, run c0 .. c1 of channels, the
    rows r0 .. r1 of the group's K) computes, for every sample and output tile:
    col = vol2col of its channels; grad_w[g-block, r0:r1] += dy @ colᵀ; col = W[g-block,
    r0:r1]ᵀ @ dy; grad_x[n, c0:c1] += col2vol(col). Every write is to the unit's own columns
    of grad_w, channels of grad_x and its block's cols row: race-free, and each value is
    summed over samples and tiles in the same order on any thread count.
    Shapes: as conv_backward_gemm; cols (T, ≥ rows·tile·ow) for the largest run's rows.
    """
    n_batch, n_channels = x.shape[0], x.shape[1]
    n_blocks = cols.shape[0]
    n_lines = out_size[0] * out_size[1]
    n_positions = grad_out.shape[2]
    taps = kernel[0] * kernel[1] * kernel[2]
    cin_g = n_channels // groups
    cout_g = weight.shape[0] // groups
    k = weight.shape[1]
    units = groups * parts
    for t in prange(n_blocks):
        for unit in range((t * units) // n_blocks, ((t + 1) * units) // n_blocks):
            g, part = unit // parts, unit % parts
            c0 = g * cin_g + (part * cin_g) // parts
            c1 = g * cin_g + ((part + 1) * cin_g) // parts
            r0 = (c0 - g * cin_g) * taps
            rows = (c1 - c0) * taps
            if rows == 0:
                continue
            w_block = weight.reshape(-1)[g * cout_g * k + r0 :]  # (cout_g × rows), stride k
            gw_block = grad_w.reshape(-1)[g * cout_g * k + r0 :]
            for o in range(cout_g):
                zero_fill(gw_block[o * k : o * k + rows])
            if part == 0:  # one unit per group sums its bias gradient
                for oc in range(g * cout_g, min((g + 1) * cout_g, grad_b.shape[0])):
                    grad_b[oc] = 0
                    for n in range(n_batch):
                        grad_b[oc] += row_sum(grad_out[n, oc])
            for n in range(n_batch):
                if input_grad:
                    zero_fill(grad_x[n, c0:c1].reshape(-1))
                for line0 in range(0, n_lines, tile):
                    line1 = min(line0 + tile, n_lines)
                    span = (line1 - line0) * out_size[2]
                    # dy: the group's rows of this tile of grad_out, read in place (stride P).
                    dy = grad_out[n].reshape(-1)[g * cout_g * n_positions + line0 * out_size[2] :]
                    col = cols[t, : rows * span].reshape(rows, span)
                    vol2col(x[n], c0, kernel, stride, padding, dilation, out_size, line0,
                            line1, col, 0)  # fmt: skip
                    gemm(False, True, cout_g, rows, span, dy, n_positions, col.reshape(-1),
                         span, 1.0, gw_block, k)  # fmt: skip
                    if not input_grad:
                        continue
                    # col is free again: it takes the column gradient.
                    gemm(True, False, rows, span, cout_g, w_block, k, dy, n_positions, 0.0,
                         col.reshape(-1), span)  # fmt: skip
                    col2vol(col, c0, kernel, stride, padding, dilation, out_size, line0,
                            line1, grad_x[n], 0)  # fmt: skip


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _pointwise_backward(x, weight, grad_out, input_grad, g, p0, span, grad_x, partial_w):
    """conv_backward_gemm's tile for a pointwise convolution (see :func:`pointwise`): the
    weight gradient partial_w[g-block] += dy @ xᵀ and grad_x = W_gᵀ @ dy on columns
    p0 .. p0 + span of one sample, all read and written in place (rows P apart): col is x
    itself, and col2vol the identity, each input position having one column."""
    n_positions = grad_out.shape[1]
    cin_g = weight.shape[1]
    cout_g = weight.shape[0] * cin_g // x.shape[0]
    dy = grad_out.reshape(-1)[g * cout_g * n_positions + p0 :]
    xs = x.reshape(-1)[g * cin_g * n_positions + p0 :]
    gemm(False, True, cout_g, cin_g, span, dy, n_positions, xs, n_positions, 1.0,
         partial_w[g * cout_g :].reshape(-1), cin_g)  # fmt: skip
    if input_grad:
        gemm(True, False, cin_g, span, cout_g, weight[g * cout_g :].reshape(-1), cin_g, dy,
             n_positions, 0.0, grad_x.reshape(-1)[g * cin_g * n_positions + p0 :],
             n_positions)  # fmt: skip


# Whole-array statements (``a[:] = 0``, ``a += b``, ``np.sum(a)``) inside a parallel=True
# kernel each become a parallel loop of their own, which Numba outlines and compiles
# separately: they made conv_backward_gemm alone take ~11 s to compile. The kernels call these
# small serial functions instead.


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def zero_fill(a):
    """a[:] = 0 for a 1-D array."""
    for i in range(a.shape[0]):
        a[i] = 0


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def add_into(a, out):
    """out += a for two matrices of the same shape (out may be a block of rows)."""
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] += a[i, j]


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def row_sum(a):
    """Σ a for a 1-D array, accumulated in a's dtype."""
    total = a.dtype.type(0)
    for i in range(a.shape[0]):
        total += a[i]
    return total


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def sum_blocks(partial, total):
    """total[j] = partial[0, j] + partial[1, j] + ..., added in block order (deterministic).

    Shapes: partial (T, ≥ M); total (M,). Only the first M columns are summed, so a (T, Cout)
    partial serves an empty (0,) bias gradient too. Serial: a few thousand additions.
    """
    m = total.shape[0]
    for j in range(m):
        total[j] = partial[0, j]
    for t in range(1, partial.shape[0]):
        for j in range(m):
            total[j] += partial[t, j]


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def conv_forward_direct(
    x, weight, bias, groups, kernel, stride, padding, dilation, out_size, out, blocks
):
    """Direct convolution: out[n, oc] = Σ_{c in oc's group} Σ_taps w[oc, c, tap] · shifted
    x[n, c] (+ bias). For depthwise layers (one input channel per group) and layers with few
    output channels per group, where a matrix product would have a few hundred flops or
    1 to 3 rows (see nn/conv.py).

    Shapes as :func:`conv_forward_gemm`; ``blocks``: how many blocks of work to share out
    (the thread count). The trick is in the layout. Each input channel's volume is first
    copied into a zero-padded "phase plane" (:func:`_phase_plane`) that splits its rows and
    columns by phase modulo the stride: row y goes to row phase y mod sh, at y // sh, and
    likewise columns. Then the inputs of one tap for a whole output plane (i fixed) lie in
    one phase sub-plane, at one offset, with the output's row pitch: a single contiguous
    run, which LLVM vectorises, whatever the stride, dilation and padding. The output rows
    are computed ``wq`` wide (the sub-plane's pitch, a few columns more than ow, dropped at
    the end). Measured against a run per output row, which is what short rows and strided
    reads otherwise give: 2–4x faster on 3×3 to 7×7 depthwise kernels, stride 1 and 2.
    Loop nest: for block t of (sample n, group g) pairs: for (n, g): wide = 0; for input
    channel c of g: phase plane of x[n, c]; for output channel oc of g: for tap: for output
    plane i: wide[oc] += w · one run of the phase plane; then out[n, oc] = wide's first ow
    columns + bias.
    Parallel over: blocks of (sample, group) pairs (each writes only its own output
    channels and its own work arrays: race-free).
    """
    n_batch, n_channels = x.shape[0], x.shape[1]
    n_out = weight.shape[0]
    cin_g = n_channels // groups
    cout_g = n_out // groups
    taps = kernel[0] * kernel[1] * kernel[2]
    od, oh, ow = out_size
    n_tasks = n_batch * groups
    n_blocks = min(n_tasks, blocks)
    (dp, sh, sw, hq, wq), offsets, length = _phase_layout(kernel, stride, dilation, out_size)
    shape = (dp, sh, sw, hq, wq)  # rebuilt: a tuple passed through fails parfor lowering
    for t in prange(n_blocks):
        plane = np.zeros(shape, dtype=x.dtype)  # the padding stays zero (see _phase_plane)
        wide = np.empty((cout_g, od, oh * wq), dtype=x.dtype)
        for task in range((t * n_tasks) // n_blocks, ((t + 1) * n_tasks) // n_blocks):
            n = task // groups
            g = task % groups
            zero_fill(wide.reshape(-1))
            for cl in range(cin_g):
                _phase_plane(x[n, g * cin_g + cl], padding, plane)
                for o in range(cout_g):
                    w = weight[g * cout_g + o, cl * taps : (cl + 1) * taps]
                    _taps(plane.reshape(-1), offsets, w, length, wide[o])
            for o in range(cout_g):
                oc = g * cout_g + o
                b = bias[oc] if bias.shape[0] > 0 else x.dtype.type(0)
                dst = out[n, oc].reshape(od, oh, ow)
                for i in range(od):
                    for j in range(oh):
                        src = wide[o, i, j * wq : j * wq + ow]
                        row = dst[i, j]
                        for q in range(ow):
                            row[q] = src[q] + b


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def conv_backward_direct(
    x,
    weight,
    grad_out,
    input_grad,
    groups,
    kernel,
    stride,
    padding,
    dilation,
    out_size,
    grad_x,
    grad_w,
    grad_b,
    partial_w,
):
    """The three gradients of :func:`conv_forward_direct`, on the same phase planes.

    The forward adds w · (one run of x's phase plane) into each output plane, so its
    transpose reads the same runs: grad_w[oc, (c, tap)] = Σ_n Σ_i dy_i · run(tap, i) (a dot
    product per tap and output plane), and the phase plane's gradient gets w · dy_i added
    along each run, which :func:`_phase_plane` (``back``) then takes to grad_x[n, c]. dy is laid
    out ``wq`` wide as the forward's outputs, with zeros in the extra columns, so that they
    add nothing. No vol2col copy nor matrix product of 1 to 3 rows (measured, 2 threads:
    see nn/conv.py).
    Shapes: x, grad_x (N, C, D, H, W); weight, grad_w (Cout, K); grad_out (N, Cout, P);
    grad_b (Cout,) or (0,); grad_x (if ``input_grad``), grad_w, grad_b overwritten;
    partial_w (T, Cout, K), T the blocks (the thread count).
    Loop nest: for block t of (sample n, input channel c) pairs: for (n, c): dy of (n, c's
    group) into wide (when it changes); phase plane of x[n, c]; for oc in the group: for
    tap: partial_w[t, oc, (c, tap)] += Σ_i dy_i · run; gradient plane += w · dy_i along the
    runs; grad_x[n, c] = the gradient plane taken back; then grad_w = Σ_t partial_w[t].
    Parallel over: blocks of (n, c) pairs (each writes grad_x[n, c] of its own pairs and its
    own partial_w[t]: race-free; the partials are added in block order).
    """
    n_batch, n_channels = x.shape[0], x.shape[1]
    n_out = weight.shape[0]
    cin_g = n_channels // groups
    cout_g = n_out // groups
    taps = kernel[0] * kernel[1] * kernel[2]
    od, oh, ow = out_size
    n_tasks = n_batch * n_channels
    n_blocks = partial_w.shape[0]
    (dp, sh, sw, hq, wq), offsets, length = _phase_layout(kernel, stride, dilation, out_size)
    shape = (dp, sh, sw, hq, wq)  # rebuilt: a tuple passed through fails parfor lowering
    for t in prange(n_blocks):
        plane = np.zeros(shape, dtype=x.dtype)  # the padding stays zero (see _phase_plane)
        gplane = np.empty(shape, dtype=x.dtype)
        wide = np.zeros((cout_g, od, oh * wq), dtype=x.dtype)  # extra columns stay zero
        zero_fill(partial_w[t].reshape(-1))
        loaded = -1  # the (sample, group) whose dy is in wide
        for task in range((t * n_tasks) // n_blocks, ((t + 1) * n_tasks) // n_blocks):
            n = task // n_channels
            c = task % n_channels
            g = c // cin_g
            cl = c % cin_g
            if n * groups + g != loaded:
                loaded = n * groups + g
                for o in range(cout_g):
                    src = grad_out[n, g * cout_g + o].reshape(od, oh, ow)
                    for i in range(od):
                        for j in range(oh):
                            row = wide[o, i, j * wq : j * wq + ow]
                            for q in range(ow):
                                row[q] = src[i, j, q]
            _phase_plane(x[n, c], padding, plane)
            if input_grad:
                zero_fill(gplane.reshape(-1))
            for o in range(cout_g):
                oc = g * cout_g + o
                _taps_dot(plane.reshape(-1), offsets, wide[o], length,
                          partial_w[t, oc, cl * taps : (cl + 1) * taps])  # fmt: skip
                if input_grad:
                    _taps_scatter(wide[o], offsets, weight[oc, cl * taps : (cl + 1) * taps],
                                  length, gplane.reshape(-1))  # fmt: skip
            if input_grad:
                _phase_plane(grad_x[n, c], padding, gplane, True)
    sum_blocks(partial_w.reshape(n_blocks, -1), grad_w.reshape(-1))
    for oc in range(grad_b.shape[0]):
        grad_b[oc] = 0
        for n in range(n_batch):
            grad_b[oc] += row_sum(grad_out[n, oc])


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def conv_forward_depthwise_small(
    x, weight, bias, kernel, stride, padding, dilation, out_size, out, blocks
):
    """Depthwise convolution (``groups`` = C) for small output planes, vectorised across the
    channels instead of along the plane: out[n, c·m + k] = Σ_taps w[c·m + k, tap] · shifted
    x[n, c] (+ bias), m = Cout / C the channel multiplier.

    A plane of a few dozen outputs is too little work for :func:`conv_forward_direct`'s
    runs (measured 6–7x PyTorch's time on 4×4 outputs, whose oneDNN kernels vectorise across
    channels). Here each sample is copied channels-last into a zero-padded volume, and every
    output position accumulates its taps as whole vectors of channels.
    Shapes as :func:`conv_forward_gemm`; ``blocks`` as conv_forward_direct's.
    Loop nest: for block t of samples: for n: x_t = channels-last padded x[n]; for output
    position p: for tap: acc[p, k, :] += w[:, k, tap] · x_t[input position, :]; then
    out[n, c·m + k, p] = acc[p, k, c] + bias.
    Parallel over: blocks of samples (each writes only out[n] of its samples and its own
    work arrays: race-free).
    """
    n_batch, n_channels = x.shape[0], x.shape[1]
    depth, height, width = x.shape[2], x.shape[3], x.shape[4]
    multiplier = weight.shape[0] // n_channels
    kd, kh, kw = kernel
    od, oh, ow = out_size
    positions = od * oh * ow
    # The padded extents the outputs read.
    dp = (od - 1) * stride[0] + (kd - 1) * dilation[0] + 1
    hp = (oh - 1) * stride[1] + (kh - 1) * dilation[1] + 1
    wp = (ow - 1) * stride[2] + (kw - 1) * dilation[2] + 1
    # The weights as (k, tap, c): a tap's weights for all channels, contiguous.
    w_t = np.empty((multiplier, kd * kh * kw, n_channels), dtype=x.dtype)
    for c in range(n_channels):
        for k in range(multiplier):
            for tap in range(kd * kh * kw):
                w_t[k, tap, c] = weight[c * multiplier + k, tap]
    n_blocks = min(n_batch, blocks)
    u = np.uint64
    lanes = u(n_channels)
    taps = kd * kh * kw
    wf = w_t.reshape(-1)
    for t in prange(n_blocks):
        # Zeroed once: each sample writes the same (interior) positions, the padding stays 0.
        x_t = np.zeros((dp, hp, wp, n_channels), dtype=x.dtype)
        x_cl = np.empty(depth * height * width * n_channels, dtype=x.dtype)
        acc = np.empty((positions, multiplier, n_channels), dtype=x.dtype)
        # Flat arrays, unsigned offsets: a view per row or tap in these loops would cost a
        # reference count update each (measured 4x slower), and signed indices keep LLVM
        # from vectorising (see _taps).
        xf = x_t.reshape(-1)
        af = acc.reshape(-1)
        run = u(max(0, min(width, wp - padding[2])) * n_channels)  # a row's values x_t holds
        for n in range((t * n_batch) // n_blocks, ((t + 1) * n_batch) // n_blocks):
            # Channels last: a (C × positions) to (positions × C) transpose in 16 × 16 blocks
            # (vector.transpose; the strided copy it replaced was most of this kernel's time),
            # then each row into the zero-padded volume, one contiguous run.
            transpose(x[n].reshape(-1), 0, n_channels, depth * height * width, x_cl, 0)
            for z in range(min(depth, dp - padding[0])):
                for y in range(min(height, hp - padding[1])):
                    d0 = u(
                        (((z + padding[0]) * hp + y + padding[1]) * wp + padding[2]) * n_channels
                    )
                    s0 = u((z * height + y) * width) * lanes
                    for i in range(run):
                        xf[d0 + i] = x_cl[s0 + i]
            zero_fill(af)
            p = 0
            for i in range(od):
                for j in range(oh):
                    for q in range(ow):
                        tap = 0
                        for a in range(kd):
                            z = i * stride[0] + a * dilation[0]
                            for b in range(kh):
                                y = j * stride[1] + b * dilation[1]
                                for e in range(kw):
                                    col = q * stride[2] + e * dilation[2]
                                    v0 = u(((z * hp + y) * wp + col) * n_channels)
                                    for k in range(multiplier):
                                        w0 = u((k * taps + tap) * n_channels)
                                        r0 = u((p * multiplier + k) * n_channels)
                                        for c in range(lanes):
                                            af[r0 + c] += wf[w0 + c] * xf[v0 + c]
                                    tap += 1
                        p += 1
            for c in range(n_channels):
                for k in range(multiplier):
                    oc = c * multiplier + k
                    b = bias[oc] if bias.shape[0] > 0 else x.dtype.type(0)
                    dst = out[n, oc]
                    for p in range(positions):
                        dst[p] = acc[p, k, c] + b


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _phase_plane(x, padding, plane, back=False):
    """plane[z, ry, rx, y, k] = x[z − pd, y·sh + ry − ph, k·sw + rx − pw] (0 in the padding):
    one channel's volume zero-padded, rows and columns split by phase modulo the stride.
    Shapes: x (D, H, W); plane (dp, sh, sw, hq, wq). Parts of x past the padded extent
    (which no output reads) are left out. Only the positions of x's values are written, the
    same ones for every channel: the padding's zeros are the caller's, set once.
    With ``back``, the transpose: x = those positions of plane, 0 past the padded extent
    (the input gradient from the plane's gradient)."""
    dp, sh, sw, hq, wq = plane.shape
    depth, height, width = x.shape
    if back:
        zero_fill(x.reshape(-1))
    rows = min(height, hq * sh - padding[1])  # the input rows inside the padded extent
    flat_x, flat_plane = x.reshape(-1), plane.reshape(-1)
    if sw == 2:
        _phase_rows2(flat_x, depth, height, width, padding, plane.shape, rows, flat_plane, back)
        return
    for rx in range(sw):
        # Column k of phase rx holds input column k·sw + rx − pw: k from k0 to k1 hold
        # columns 0 .. width − 1 (unsigned offsets, as in _taps). The same for every row,
        # so the integer divisions are done once per phase (per row they measured as long
        # as the copy itself).
        k0 = (padding[2] - rx + sw - 1) // sw if padding[2] > rx else 0
        k1 = min(wq, (width - 1 - rx + padding[2]) // sw + 1)
        first = np.uint64(k0 * sw + rx - padding[2])
        step, start = np.uint64(sw), np.uint64(k0)
        count = np.uint64(max(0, k1 - k0))
        for z in range(min(depth, dp - padding[0])):
            ry, yq = padding[1] % sh, padding[1] // sh  # row yy = y + ph is yq·sh + ry
            for y in range(rows):
                # Flat offsets, not views: a view per row costs a reference count update.
                src = np.uint64((z * height + y) * width) + first
                dst = np.uint64(((((z + padding[0]) * sh + ry) * sw + rx) * hq + yq) * wq) + start
                if back:
                    for k in range(count):
                        flat_x[src + k * step] = flat_plane[dst + k]
                else:
                    for k in range(count):
                        flat_plane[dst + k] = flat_x[src + k * step]
                ry += 1
                if ry == sh:
                    ry, yq = 0, yq + 1


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _phase_rows2(flat_x, depth, height, width, padding, shape, rows, flat_plane, back):
    """:func:`_phase_plane` for column stride 2: each row's even and odd columns split apart
    16 pairs at a time (vector.deinterleave_row; with ``back`` put back together,
    vector.interleave_row), not read or written one by one with a stride. Input column 2m
    goes to phase pw mod 2, column m + pw // 2; column 2m + 1 to the other phase, column
    m + (pw + 1) // 2. Pairs m < the row's whole pairs that fit in the phase (wq columns) go
    together; a last odd column, or columns past the padded extent, one at a time."""
    dp, sh, sw, hq, wq = shape
    pw = padding[2]
    rx_even = pw % 2
    k_even, k_odd = pw // 2, (pw + 1) // 2
    pairs = max(0, min(width // 2, wq - k_odd))
    for z in range(min(depth, dp - padding[0])):
        ry, yq = padding[1] % sh, padding[1] // sh
        for y in range(rows):
            src = (z * height + y) * width
            sub = (((z + padding[0]) * sh + ry) * sw * hq + yq) * wq  # phase 0's row
            even = sub + rx_even * hq * wq + k_even
            odd = sub + (1 - rx_even) * hq * wq + k_odd
            if back:
                interleave_row(flat_x, src, flat_plane, even, flat_plane, odd, pairs)
            else:
                deinterleave_row(flat_plane, even, flat_plane, odd, flat_x, src, pairs)
            for c in range(2 * pairs, width):  # what is left: one column at a time
                k = (c + pw) // 2
                if k < wq:
                    at = sub + ((c + pw) % 2) * hq * wq + k
                    if back:
                        flat_x[src + c] = flat_plane[at]
                    else:
                        flat_plane[at] = flat_x[src + c]
            ry += 1
            if ry == sh:
                ry, yq = 0, yq + 1


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _phase_layout(kernel, stride, dilation, out_size):
    """The phase plane's shape (dp, sh, sw, hq, wq) for this geometry (the padded extent the
    outputs read, rows and columns split by phase), the taps' run offsets
    (:func:`_tap_offsets`) and an output plane's run length (oh − 1 rows of pitch wq, then
    ow)."""
    od, oh, ow = out_size
    sh, sw = stride[1], stride[2]
    dp = (od - 1) * stride[0] + (kernel[0] - 1) * dilation[0] + 1
    hq = -(-((oh - 1) * sh + (kernel[1] - 1) * dilation[1] + 1) // sh)
    wq = -(-((ow - 1) * sw + (kernel[2] - 1) * dilation[2] + 1) // sw)
    shape = (dp, sh, sw, hq, wq)
    return shape, _tap_offsets(shape, kernel, stride, dilation, od), (oh - 1) * wq + ow


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _tap_offsets(shape, kernel, stride, dilation, od):
    """offsets[tap, i]: where tap (a, b, e)'s run for output plane i starts in the flat phase
    plane of ``shape`` (dp, sh, sw, hq, wq): sub-plane (i·sd + a·dd, b·dh mod sh, e·dw mod
    sw), row b·dh // sh, column e·dw // sw. The same for every plane of a call: computed once
    (the integer divisions cost more than a short run)."""
    kd, kh, kw = kernel
    sh, sw, hq, wq = shape[1], shape[2], shape[3], shape[4]
    offsets = np.empty((kd * kh * kw, od), dtype=np.uint64)
    tap = 0
    for a in range(kd):
        for b in range(kh):
            row = b * dilation[1]
            for e in range(kw):
                col = e * dilation[2]
                for i in range(od):
                    z = i * stride[0] + a * dilation[0]
                    sub = ((z * sh + row % sh) * sw + col % sw) * hq * wq
                    offsets[tap, i] = sub + (row // sh) * wq + col // sw
                tap += 1
    return offsets


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _taps(src, offsets, w, length, wide):
    """wide[i, ·] += Σ_taps w[tap] · src[offsets[tap, i] + ·]: one input channel's share of
    one output channel, from the input's phase plane (see conv_forward_direct), each output
    plane i one run of ``length`` values (rows of pitch wq; the columns past ow are garbage).
    Shapes: src the flat phase plane; offsets (taps, od) (:func:`_tap_offsets`); w (taps,);
    wide (od, ≥ length)."""
    od = wide.shape[0]
    out = wide.reshape(-1)
    pitch = np.uint64(wide.shape[1])
    for tap in range(offsets.shape[0]):
        weight = w[tap]
        for i in range(od):
            # Unsigned offsets: Numba tests signed indices for wrap-around, which keeps LLVM
            # from vectorising the loop (measured 8x slower).
            s0 = offsets[tap, i]
            d0 = np.uint64(i) * pitch
            for q in range(np.uint64(length)):
                out[d0 + q] += weight * src[s0 + q]


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _taps_dot(src, offsets, wide, length, total):
    """total[tap] += Σ_i Σ_q wide[i, q] · src[offsets[tap, i] + q]: the transpose of
    :func:`_taps` with respect to w (one output and one input channel's weight gradient)."""
    od = wide.shape[0]
    dy = wide.reshape(-1)
    pitch = np.uint64(wide.shape[1])
    for tap in range(offsets.shape[0]):
        acc = total.dtype.type(0)
        for i in range(od):
            s0 = offsets[tap, i]  # unsigned: see _taps
            d0 = np.uint64(i) * pitch
            for q in range(np.uint64(length)):
                acc += dy[d0 + q] * src[s0 + q]
        total[tap] += acc


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _taps_scatter(wide, offsets, w, length, dst):
    """dst[offsets[tap, i] + q] += w[tap] · wide[i, q]: the transpose of :func:`_taps` with
    respect to the input (one output channel's share of one input channel's gradient, into
    its flat phase plane). Kept apart from _taps, not a flag of it: the shared form measured
    5–10% slower on the direct backward."""
    od = wide.shape[0]
    dy = wide.reshape(-1)
    pitch = np.uint64(wide.shape[1])
    for tap in range(offsets.shape[0]):
        weight = w[tap]
        for i in range(od):
            s0 = offsets[tap, i]
            d0 = np.uint64(i) * pitch
            for q in range(np.uint64(length)):
                dst[s0 + q] += weight * dy[d0 + q]


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def conv_backward_input_direct(
    weight, grad_out, groups, kernel, stride, padding, dilation, out_size, grad_x
):
    """Input gradient of :func:`conv_forward_direct`: each dy value scatters w · dy back.

    Shapes: weight (Cout, K); grad_out (N, Cout, P); grad_x (N, C, D, H, W), overwritten.
    Loop nest: for (n, c): for oc in the group: for tap: for valid (i, j): a run of q,
    grad_x[n, c, window] += w · dy[n, oc].
    Parallel over: (sample, input channel) planes. Overlapping windows add into the same
    grad_x elements, but all of them lie in plane (n, c), owned by one task: race-free.
    """
    n_batch, n_channels, depth, height, width = grad_x.shape
    n_out = weight.shape[0]
    kd, kh, kw = kernel
    od, oh, ow = out_size
    cin_g = n_channels // groups
    cout_g = n_out // groups
    step = np.uint64(stride[2])
    for task in prange(n_batch * n_channels):
        n = task // n_channels
        c = task % n_channels
        xf = grad_x[n, c].reshape(-1)
        xf[:] = 0
        g = c // cin_g
        for oc in range(g * cout_g, (g + 1) * cout_g):
            yf = grad_out[n, oc]
            tap = (c % cin_g) * kd * kh * kw
            for a in range(kd):
                zoff = a * dilation[0] - padding[0]
                i_lo, i_hi = valid_range(od, stride[0], zoff, depth)
                for b in range(kh):
                    yoff = b * dilation[1] - padding[1]
                    j_lo, j_hi = valid_range(oh, stride[1], yoff, height)
                    for e in range(kw):
                        xoff = e * dilation[2] - padding[2]
                        q_lo, q_hi = valid_range(ow, stride[2], xoff, width)
                        w = weight[oc, tap]
                        tap += 1
                        for i in range(i_lo, i_hi):
                            z = i * stride[0] + zoff
                            for j in range(j_lo, j_hi):
                                y = j * stride[1] + yoff
                                src = np.uint64((i * oh + j) * ow + q_lo)
                                dst = np.uint64((z * height + y) * width)
                                dst += np.uint64(q_lo * stride[2] + xoff)
                                for q in range(np.uint64(q_hi - q_lo)):
                                    xf[dst + q * step] += w * yf[src + q]


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def conv_backward_weight_direct(
    x, grad_out, groups, kernel, stride, padding, dilation, out_size, grad_w, grad_b
):
    """Weight and bias gradients of :func:`conv_forward_direct`.

    grad_w[oc, (c, a, b, e)] = Σ_n Σ_(i,j,q) dy[n, oc, i, j, q] · x[n, c, window];
    grad_b[oc] = Σ_n Σ_p dy[n, oc, p]. Shapes: x (N, C, D, H, W); grad_out (N, Cout, P);
    grad_w (Cout, K), grad_b (Cout,) or (0,), both overwritten.
    Loop nest: for oc: for tap: Σ over n and valid (i, j, q).
    Parallel over: output channels (task oc writes only grad_w[oc] and grad_b[oc], and sums
    over the batch inside the task: race-free, and the order of the sum is fixed).
    """
    n_batch, n_channels, depth, height, width = x.shape
    n_out = grad_w.shape[0]
    kd, kh, kw = kernel
    od, oh, ow = out_size
    cin_g = n_channels // groups
    cout_g = n_out // groups
    step = np.uint64(stride[2])
    for oc in prange(n_out):
        if grad_b.shape[0] > 0:
            grad_b[oc] = np.sum(grad_out[:, oc])
        for cl in range(cin_g):
            c = (oc // cout_g) * cin_g + cl
            tap = cl * kd * kh * kw
            for a in range(kd):
                zoff = a * dilation[0] - padding[0]
                i_lo, i_hi = valid_range(od, stride[0], zoff, depth)
                for b in range(kh):
                    yoff = b * dilation[1] - padding[1]
                    j_lo, j_hi = valid_range(oh, stride[1], yoff, height)
                    for e in range(kw):
                        xoff = e * dilation[2] - padding[2]
                        q_lo, q_hi = valid_range(ow, stride[2], xoff, width)
                        total = 0.0
                        for n in range(n_batch):
                            xf = x[n, c].reshape(-1)
                            yf = grad_out[n, oc]
                            for i in range(i_lo, i_hi):
                                z = i * stride[0] + zoff
                                for j in range(j_lo, j_hi):
                                    y = j * stride[1] + yoff
                                    src = np.uint64((i * oh + j) * ow + q_lo)
                                    pos = np.uint64((z * height + y) * width)
                                    pos += np.uint64(q_lo * stride[2] + xoff)
                                    for q in range(np.uint64(q_hi - q_lo)):
                                        total += yf[src + q] * xf[pos + q * step]
                        grad_w[oc, tap] = total
                        tap += 1
