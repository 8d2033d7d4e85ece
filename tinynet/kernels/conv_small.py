"""Direct 3×3 and 5×5 convolution for layers with few input channels per group (a CNN's first
layer; grouped and depthwise layers, where each output reads only its group's channels).

With C·3·3 small (1 → 32 channels: K = 9; RGB: 27) the vol2col path's matrix product is thin,
and BLAS runs a (Cout × 27) @ (27 × P) product far below its speed (measured 20–25 GFLOP/s
per core on AVX2, against ~80 for square products), after vol2col copied the input nine
times over. Here the nine taps are summed directly, which is cheap when C is small:

    out[o, i, j] = bias[o] + Σ_c Σ_(a,b) w[o, c, a, b] · xpad[c, i + a, j + b]

The trick that gives the inner loop a long, contiguous range: index the zero-padded plane
flat, with row length Wp. Output (i, j) reads xpad_flat[c·Hp·Wp + i·Wp + j + a·Wp + b], so
one loop over p = i·Wp + j covers every output row of the plane (plus Wp − OW junk columns
per row, dropped when the plane is copied out), and each tap is a fixed offset from p. The
nine products of one channel are summed in one expression, so the accumulator is loaded and
stored once per channel, not once per tap. LLVM vectorises the loop; its indices are
unsigned (``np.uint64``), as in im2col.py: with signed ones Numba tests each for Python's
negative wrap-around and the loop ran scalar, 5x slower.

Measured (float32, 2 threads, ms, this vs the vol2col + BLAS path vs PyTorch 2.13, AVX2):
(64, 1, 28, 28) → 32: 0.65 vs 0.87 vs 0.70; (64, 3, 32, 32) → 16: 0.96 vs 1.75 vs 1.09;
(64, 3, 32, 32) → 32: 1.35 vs 2.44 vs 1.53; (256, 1, 28, 28) → 32: 2.19 vs 3.35 vs 3.48.

Backward: the weight gradient is the same flat-plane trick turned around: for each output
and input channel, one pass over the plane computes all nine taps' dot products of the output
gradient with the shifted input (:func:`conv2d_small_backward_weight`). The input gradient is
a forward of this kernel itself (the layer flips the filters and swaps their channel axes; see
Conv2d._small_backward). Measured (float32, 2 threads, ms, this vs vol2col + BLAS, weight
gradient only / with the input gradient): (64, 1, 28, 28) → 32: 0.89 vs 1.32 / 1.83 vs 2.66;
(64, 3, 32, 32) → 16: 1.25 vs 2.72 / 2.66 vs 4.66. It also spares a LeNet-style model the
compilation of the vol2col kernels (~12 s cold).

5×5 kernels (LeNet-5's, a CIFAR stem's) take the same route, a channel's 25 taps as five
passes of one kernel row each (one expression of 25 would hold more weights than there are
vector registers), each pass for two output channels at once. Forward + backward with one
channel per pass, ms: (64, 1, 28, 28) → 6: 0.71 against 1.70 for
vol2col + BLAS; (64, 3, 32, 32) → 16, padding 2: 7.9 against 12.3; (64, 6, 14, 14) → 16:
2.9 against 3.5. With two channels per pass it wins up to 11 channels (see nn/conv.py,
_SMALL5_MAX_CHANNELS).

Grouped layers (measured in nn/conv.py, _SMALL_MAX_GROUP_CHANNELS): depthwise 64 channels
on (32, 64, 16, 16), forward + backward 2.1 ms against 4.9 for the general direct loops;
16 → 32 in 4 groups on 28²: 8.4 against 18.4 for a GEMM per group.

Depthwise layers padded to keep their size (3×3 padding 1, 5×5 padding 2) take
:func:`conv2d_depthwise_same_forward`: a plane at a time, in its own row length with zero
rows above and below, so that the copy in is one run and the taps write the output plane
directly (no padding columns to drop); taps that would cross a side edge read the
neighbouring row and are dropped by column. Forward 0.58–0.75 of the pairs path's time
(2 threads, (32, 64, 14² to 16²), (64, 32, 28²), 5×5 on 16²). The input gradient is the same
kernel; a 3×3 layer's weight gradient reads the same layout
(:func:`conv2d_depthwise_same_backward_weight`, no copy of dy into padded rows): forward +
backward 0.5–0.78.

3×3 "same" layers (padding 1) of up to four input channels per group take
:func:`conv2d_small_same_forward` instead (also as the input gradient of a layer of up to
four outputs per group): each channel is copied three times, shifted by each kernel column's
offset, in its own row length, so that the output planes are written directly; the padded
plane above has two padding columns a row, which its sums carry into a work plane that is
then copied out row by row, and LLVM ran much of that copy as scalar loops on rows of 28.
Forward 0.65–0.9 of the time above ((64, 1, 28²) → 32, (64, 2 to 6, 28²) → 16), forward +
backward of (64, 1, 28²) → 32 0.88.

Determinism: each output sums its channels in order, whatever the thread count; the weight
gradient goes through per-block partials added in block order (fixed for a thread count).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import config
from .conv import zero_fill
from .vector import store_row

# Output planes each forward kernel accumulates at once (two output channels): its acc work
# array holds that many rows of OH·wp values per block.
ACCUMULATORS = 2


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _padded_plane(out_h, out_w, k):
    """(hp, wp, length) for an OH × OW output of a k × k kernel: the padded plane's rows and
    row length, and how far the flat loops run (every output row in the padded row length,
    junk columns too)."""
    wp = out_w + k - 1
    return out_h + k - 1, wp, out_h * wp


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _pad_flat(x, top, left, hp, wp, xpad):
    """xpad[c·hp·wp + r·wp + q] = x[c, r − top, q − left], zero elsewhere (and in the tail).

    Shapes: x (C, H, W); xpad (≥ C·hp·wp,), flat.
    """
    n_channels, height, width = x.shape
    for i in range(xpad.shape[0]):
        xpad[i] = 0
    for c in range(n_channels):
        for r in range(height):
            dst = np.uint64(c * hp * wp + (r + top) * wp + left)
            row = x[c, r]
            for q in range(np.uint64(width)):
                xpad[dst + q] = row[q]


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _plane(xpad, weight, o, c0, hp, wp, length, acc, add):
    """acc[p] = Σ_c Σ_(a,b) weight[o, c, 3a + b] · xpad[(c0 + c)·hp·wp + a·wp + b + p],
    p < length: output channel o from the input channels c0, c0 + 1, ... of its group. With
    ``add`` the sum is added to acc (Conv3d's kernel sums several calls, conv_small3d.py).

    Shapes: weight (Cout, C/groups, 9); xpad flat (≥ C·hp·wp + 2); acc (≥ length,).
    """
    one = np.uint64(1)
    two = np.uint64(2)
    for c in range(weight.shape[1]):
        w = weight[o, c]
        w0, w1, w2, w3, w4, w5, w6, w7, w8 = w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8]
        r0 = np.uint64((c0 + c) * hp * wp)  # the first, second and third row of the window
        r1 = r0 + np.uint64(wp)
        r2 = r1 + np.uint64(wp)
        # The first channel stores instead of adding: no pass to zero acc first, and a
        # one-channel (depthwise, first-layer) plane never reads it. The test is the same for
        # the whole loop, so LLVM makes two loops of it.
        first = c == 0 and not add
        for p in range(np.uint64(length)):
            taps = (
                w0 * xpad[r0 + p]
                + w1 * xpad[r0 + p + one]
                + w2 * xpad[r0 + p + two]
                + w3 * xpad[r1 + p]
                + w4 * xpad[r1 + p + one]
                + w5 * xpad[r1 + p + two]
                + w6 * xpad[r2 + p]
                + w7 * xpad[r2 + p + one]
                + w8 * xpad[r2 + p + two]
            )
            acc[p] = taps if first else acc[p] + taps


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _plane_pair(xpad, weight, o, c0, hp, wp, length, acc, acc2, add):
    """:func:`_plane` for output channels o and o + 1 of one group at once, into acc and
    acc2: each of the nine shifted input values is loaded once for both channels' taps."""
    one = np.uint64(1)
    two = np.uint64(2)
    for c in range(weight.shape[1]):
        w = weight[o, c]
        v = weight[o + 1, c]
        w0, w1, w2, w3, w4, w5, w6, w7, w8 = w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8]
        v0, v1, v2, v3, v4, v5, v6, v7, v8 = v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]
        r0 = np.uint64((c0 + c) * hp * wp)
        r1 = r0 + np.uint64(wp)
        r2 = r1 + np.uint64(wp)
        first = c == 0 and not add  # stores: no zeroing pass (see _plane)
        for p in range(np.uint64(length)):
            x0, x1, x2 = xpad[r0 + p], xpad[r0 + p + one], xpad[r0 + p + two]
            x3, x4, x5 = xpad[r1 + p], xpad[r1 + p + one], xpad[r1 + p + two]
            x6, x7, x8 = xpad[r2 + p], xpad[r2 + p + one], xpad[r2 + p + two]
            taps = w0 * x0 + w1 * x1 + w2 * x2 + w3 * x3 + w4 * x4 + w5 * x5
            taps = taps + w6 * x6 + w7 * x7 + w8 * x8
            taps2 = v0 * x0 + v1 * x1 + v2 * x2 + v3 * x3 + v4 * x4 + v5 * x5
            taps2 = taps2 + v6 * x6 + v7 * x7 + v8 * x8
            acc[p] = taps if first else acc[p] + taps
            acc2[p] = taps2 if first else acc2[p] + taps2


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _plane5(xpad, weight, o, c0, hp, wp, length, acc):
    """:func:`_plane` for a 5 × 5 kernel (weight (Cout, C/groups, 25)): per channel, five
    passes over the plane, one per kernel row a, each adding its five taps."""
    one, two, three, four = np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4)
    for c in range(weight.shape[1]):
        w = weight[o, c]
        for a in range(5):
            r = np.uint64((c0 + c) * hp * wp + a * wp)
            w0, w1, w2, w3, w4 = w[5 * a], w[5 * a + 1], w[5 * a + 2], w[5 * a + 3], w[5 * a + 4]
            first = c == 0 and a == 0  # stores: no zeroing pass (see _plane)
            for p in range(np.uint64(length)):
                taps = (
                    w0 * xpad[r + p]
                    + w1 * xpad[r + p + one]
                    + w2 * xpad[r + p + two]
                    + w3 * xpad[r + p + three]
                    + w4 * xpad[r + p + four]
                )
                acc[p] = taps if first else acc[p] + taps


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _plane5_pair(xpad, weight, o, c0, hp, wp, length, acc, acc2):
    """:func:`_plane5` for output channels o and o + 1 of one group at once, into acc and
    acc2: each pass loads its five shifted input values once for both channels' taps."""
    one, two, three, four = np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4)
    for c in range(weight.shape[1]):
        w = weight[o, c]
        v = weight[o + 1, c]
        for a in range(5):
            r = np.uint64((c0 + c) * hp * wp + a * wp)
            w0, w1, w2, w3, w4 = w[5 * a], w[5 * a + 1], w[5 * a + 2], w[5 * a + 3], w[5 * a + 4]
            v0, v1, v2, v3, v4 = v[5 * a], v[5 * a + 1], v[5 * a + 2], v[5 * a + 3], v[5 * a + 4]
            first = c == 0 and a == 0
            for p in range(np.uint64(length)):
                x0, x1, x2 = xpad[r + p], xpad[r + p + one], xpad[r + p + two]
                x3, x4 = xpad[r + p + three], xpad[r + p + four]
                taps = w0 * x0 + w1 * x1 + w2 * x2 + w3 * x3 + w4 * x4
                taps2 = v0 * x0 + v1 * x1 + v2 * x2 + v3 * x3 + v4 * x4
                acc[p] = taps if first else acc[p] + taps
                acc2[p] = taps2 if first else acc2[p] + taps2


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _store(work, b, relu, out_h, out_w, wp, dst):
    """dst (flat OH × OW) = the plane ``work`` without its junk columns, + b (then max(·, 0)
    if ``relu``; a NaN stays NaN, as in ReLU). Row by row, 16 values at a time (rows of 16
    to 32 are too short for LLVM's vectoriser: see vector.py)."""
    for i in range(out_h):
        store_row(dst, i * out_w, work, i * wp, out_w, b, relu)


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def conv2d_small_forward(x, weight, bias, relu, padding, out, xpad, acc):
    """out = conv3×3(x, weight) + bias, stride 1 (then max(·, 0) if ``relu``), in groups.

    Shapes: x (N, C, H, W); weight (Cout, C/groups, 9) (the 3×3 taps row-major; the groups
    follow from C and the weight's second axis, as in torch: output channel o reads the input
    channels of group o // (Cout/groups)); bias (Cout,) (zeros for none); padding (top,
    left); out (N, Cout, OH, OW) written. The padded plane is
    hp × wp = (OH + k − 1) × (OW + k − 1), k = 3. Work space, one row per block of samples:
    xpad (T, ≥ C·hp·wp + k − 1) (the last row's junk columns read k − 1 values past the
    plane) and acc (T, ≥ 2·OH·wp): two accumulators, for two output channels of a group at
    once (:func:`_plane_pair`; an odd group's last channel alone).
    Loop nest: for block t: for n in block: pad x[n]; for each pair o, o + 1: acc = Σ_c 9 taps;
    out[n, o] = acc without its junk columns + bias. Parallel over: blocks of samples (block t
    writes out[n] of its own samples and xpad[t], acc[t] only: race-free).

    Two channels per pass load each input value once for 18 products instead of 9, measured
    (float32, ms, one pass vs two channels, 1 / 2 threads, batch 64) on AVX-512 (AMD Zen 4):
    1 → 32 on 28²: 0.75 / 0.46 vs 0.65 / 0.33; 3 → 16 on 32²: 1.09 / 0.58 vs 0.76 / 0.41;
    8 → 32 on 28²: 4.70 / 2.60 vs 3.44 / 1.79; and compiled for AVX2 (NUMBA_CPU_NAME=znver3,
    16 vector registers, so the 18 weights spill): 0.86 / 0.52 vs 0.87 / 0.45; 1.60 / 0.71 vs
    1.38 / 0.55; 5.11 / 3.13 vs 3.63 / 2.62.
    """
    n_batch, n_out, cin_g = x.shape[0], weight.shape[0], weight.shape[1]
    cout_g = n_out // (x.shape[1] // cin_g)
    hp, wp, length = _padded_plane(out.shape[2], out.shape[3], 3)
    n_blocks = xpad.shape[0]
    oh, ow = out.shape[2], out.shape[3]
    for t in prange(n_blocks):
        acc1, acc2 = acc[t, :length], acc[t, length : 2 * length]
        for n in range((t * n_batch) // n_blocks, ((t + 1) * n_batch) // n_blocks):
            _pad_flat(x[n], padding[0], padding[1], hp, wp, xpad[t])
            o = 0
            while o < n_out:
                c0 = (o // cout_g) * cin_g
                pair = o + 1 < n_out and (o + 1) // cout_g == o // cout_g  # o + 1: same group
                if pair:
                    _plane_pair(xpad[t], weight, o, c0, hp, wp, length, acc1, acc2, False)
                    _store(acc2, bias[o + 1], relu, oh, ow, wp, out[n, o + 1].reshape(-1))
                else:
                    _plane(xpad[t], weight, o, c0, hp, wp, length, acc1, False)
                _store(acc1, bias[o], relu, oh, ow, wp, out[n, o].reshape(-1))
                o += 2 if pair else 1


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def conv2d_small5_forward(x, weight, bias, relu, padding, out, xpad, acc):
    """:func:`conv2d_small_forward` for a 5×5 kernel: weight (Cout, C/groups, 25), k = 5,
    and acc (T, ≥ 2·OH·wp): two accumulators per block, for two output channels of a group
    at once (:func:`_plane5_pair`; an odd group's last channel alone). A kernel of its own,
    so that a 3×3 layer does not compile the 5×5 loops (3.6 s cold).

    Two channels per pass measured 1.2–1.45x faster than one (interleaved, 1 and 2 threads):
    LeNet-5's 6 → 16 on (64, 6, 14, 14) 0.58 against 0.75 ms on 2 threads; its input
    gradient, 16 → 6 on (64, 16, 18, 18) with padding 4, 1.77 against 2.38; (64, 3, 32, 32)
    → 16, padding 2, 1.77 against 2.22. (The 3×3 kernel pairs channels too.)
    """
    n_batch, n_out, cin_g = x.shape[0], weight.shape[0], weight.shape[1]
    cout_g = n_out // (x.shape[1] // cin_g)
    hp, wp, length = _padded_plane(out.shape[2], out.shape[3], 5)
    n_blocks = xpad.shape[0]
    oh, ow = out.shape[2], out.shape[3]
    for t in prange(n_blocks):
        acc1, acc2 = acc[t, :length], acc[t, length : 2 * length]
        for n in range((t * n_batch) // n_blocks, ((t + 1) * n_batch) // n_blocks):
            _pad_flat(x[n], padding[0], padding[1], hp, wp, xpad[t])
            o = 0
            while o < n_out:
                c0 = (o // cout_g) * cin_g
                pair = o + 1 < n_out and (o + 1) // cout_g == o // cout_g  # o + 1: same group
                if pair:
                    _plane5_pair(xpad[t], weight, o, c0, hp, wp, length, acc1, acc2)
                    _store(acc2, bias[o + 1], relu, oh, ow, wp, out[n, o + 1].reshape(-1))
                else:
                    _plane5(xpad[t], weight, o, c0, hp, wp, length, acc1)
                _store(acc1, bias[o], relu, oh, ow, wp, out[n, o].reshape(-1))
                o += 2 if pair else 1


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _column_copies(x, k, xs):
    """xs[(c·k + b)·plane + r·W + j] = x[c, r − h, j + b − h], zero outside x (h = (k − 1)/2,
    plane = (H + k − 1)·W): each channel copied k times, shifted by each kernel column's
    offset, between h zero rows above and below, in the input's own row length.

    Tap (a, b) of output p = i·W + j of a "same" convolution is then xs[b's copy + p + a·W]:
    one fixed offset for the whole plane, and no padding columns, so that the output plane
    is written directly. A shifted copy is one contiguous run; the values that came from the
    neighbouring row (the columns the shift moved across the edge) are then zeroed.
    Shapes: x (C, H, W); xs (≥ C·k·plane,).
    """
    n_channels, height, width = x.shape
    h = (k - 1) // 2
    size = height * width
    plane = size + 2 * h * width
    for c in range(n_channels):
        src = x[c].reshape(-1)
        for b in range(k):
            s = b - h  # column offset: xs[top + q] = src[q + s] for lo <= q < hi
            base = (c * k + b) * plane
            top = base + h * width
            lo, hi = max(0, -s), min(size, size - s)
            for i in range(base, top + lo):
                xs[i] = 0
            dst0, src0 = np.uint64(top + lo), np.uint64(lo + s)
            for q in range(np.uint64(hi - lo)):
                xs[dst0 + q] = src[src0 + q]
            for i in range(top + hi, base + plane):
                xs[i] = 0
            j0, j1 = (0, -s) if s < 0 else (width - s, width)  # the wrapped columns
            for r in range(height):
                for i in range(top + r * width + j0, top + r * width + j1):
                    xs[i] = 0


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _same3(xs, weight, o, c0, width, length, b, dst):
    """dst[p] = b + Σ_c Σ_(a,b) weight[o, c, 3a + b] · x[c0 + c, i + a − 1, j + b − 1] for
    p = i·W + j < length (x zero outside): output channel o of a 3×3 "same" convolution,
    from :func:`_column_copies`' xs. The first channel stores (no zeroing pass), the others
    add (the test is the same for a whole loop: LLVM makes two loops of it).
    """
    plane = np.uint64(length + 2 * width)
    row1, row2 = np.uint64(width), np.uint64(2 * width)
    for c in range(weight.shape[1]):
        w = weight[o, c]
        w0, w1, w2, w3, w4, w5, w6, w7, w8 = w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8]
        s0 = np.uint64((c0 + c) * 3) * plane  # the copies for kernel columns 0, 1, 2
        s1, s2 = s0 + plane, s0 + plane + plane
        first = c == 0
        for p in range(np.uint64(length)):
            taps = w0 * xs[s0 + p] + w1 * xs[s1 + p] + w2 * xs[s2 + p]
            taps += w3 * xs[s0 + p + row1] + w4 * xs[s1 + p + row1] + w5 * xs[s2 + p + row1]
            taps += w6 * xs[s0 + p + row2] + w7 * xs[s1 + p + row2] + w8 * xs[s2 + p + row2]
            dst[p] = (b if first else dst[p]) + taps


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _same3_pair(xs, weight, o, c0, width, length, b, b2, dst, dst2):
    """:func:`_same3` for output channels o and o + 1 of one group at once, into dst and
    dst2: each of the nine shifted input values is loaded once for both channels' taps."""
    plane = np.uint64(length + 2 * width)
    row1, row2 = np.uint64(width), np.uint64(2 * width)
    for c in range(weight.shape[1]):
        w = weight[o, c]
        u = weight[o + 1, c]
        w0, w1, w2, w3, w4, w5, w6, w7, w8 = w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8]
        u0, u1, u2, u3, u4, u5, u6, u7, u8 = u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8]
        s0 = np.uint64((c0 + c) * 3) * plane
        s1, s2 = s0 + plane, s0 + plane + plane
        first = c == 0
        for p in range(np.uint64(length)):
            x0, x1, x2 = xs[s0 + p], xs[s1 + p], xs[s2 + p]
            x3, x4, x5 = xs[s0 + p + row1], xs[s1 + p + row1], xs[s2 + p + row1]
            x6, x7, x8 = xs[s0 + p + row2], xs[s1 + p + row2], xs[s2 + p + row2]
            taps = w0 * x0 + w1 * x1 + w2 * x2 + w3 * x3 + w4 * x4 + w5 * x5
            taps = taps + w6 * x6 + w7 * x7 + w8 * x8
            taps2 = u0 * x0 + u1 * x1 + u2 * x2 + u3 * x3 + u4 * x4 + u5 * x5
            taps2 = taps2 + u6 * x6 + u7 * x7 + u8 * x8
            dst[p] = (b if first else dst[p]) + taps
            dst2[p] = (b2 if first else dst2[p]) + taps2


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _relu_plane(dst):
    """dst = max(dst, 0), a NaN staying NaN (as ReLU)."""
    for p in range(np.uint64(dst.shape[0])):
        v = dst[p]
        dst[p] = 0 if v <= 0 else v


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def conv2d_small_same_forward(x, weight, bias, relu, out, xs):
    """:func:`conv2d_small_forward` for a 3×3 layer padded to keep its size (padding 1 each
    side, stride 1): out (N, Cout, H, W) written, weight (Cout, C/groups, 9), bias (Cout,);
    work space xs (T, ≥ 3·C·(H + 2)·W), one row per block of samples.

    Each sample is laid out by :func:`_column_copies`: three shifted copies of each channel
    in its own row length, so that every tap of a whole output plane is one offset, with no
    padding columns in between, and the output planes are written directly. (The padded
    plane of :func:`conv2d_small_forward` has two padding columns a row, so its sums went
    through a work plane and were copied out row by row; rows of 28 or 32 values ran in
    part as scalar loops, as long as the sums themselves.) Loop nest and parallelism as
    there: blocks of samples, each writing its own samples' outputs and its own xs row.
    """
    n_batch, n_out, cin_g = x.shape[0], weight.shape[0], weight.shape[1]
    cout_g = n_out // (x.shape[1] // cin_g)
    width = x.shape[3]
    length = x.shape[2] * width
    n_blocks = xs.shape[0]
    for t in prange(n_blocks):
        for n in range((t * n_batch) // n_blocks, ((t + 1) * n_batch) // n_blocks):
            _column_copies(x[n], 3, xs[t])
            o = 0
            while o < n_out:
                c0 = (o // cout_g) * cin_g
                dst = out[n, o].reshape(-1)
                if o + 1 < n_out and (o + 1) // cout_g == o // cout_g:  # o + 1: same group
                    dst2 = out[n, o + 1].reshape(-1)
                    b, b2 = bias[o], bias[o + 1]
                    _same3_pair(xs[t], weight, o, c0, width, length, b, b2, dst, dst2)
                    if relu:
                        _relu_plane(dst2)
                    o += 1
                else:
                    _same3(xs[t], weight, o, c0, width, length, bias[o], dst)
                if relu:
                    _relu_plane(dst)
                o += 1


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _load_plane(plane, start, xp):
    """xp[start + q] = plane (H × W, C-contiguous) read flat: one contiguous run."""
    src = plane.reshape(-1)
    for q in range(np.uint64(src.shape[0])):
        xp[start + q] = src[q]


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _depthwise3(xp, w, b, relu, width, length, col, dst):
    """dst[p] = b + Σ_(a,c) w[3a + c] · plane[i + a − 1, j + c − 1] (zero outside the plane),
    p = i·W + j < length, then max(·, 0) if ``relu``.

    xp holds the plane with a zero row above and below, in its own row length W (no
    padding columns), after one guard value: tap (a, c) of output p is xp[p + a·W + c]. A
    left tap of column 0 or a right tap of column W − 1 reads the end of a neighbouring row
    instead of a zero; ``col`` (p mod W) drops those (a select, not a product by 0, so that
    an inf there cannot turn the sum into NaN). Shapes: w (9,); col, dst (≥ length,).
    """
    one, two, wd = np.uint64(1), np.uint64(2), np.uint64(width)
    wd2 = wd + wd
    w0, w1, w2, w3, w4, w5, w6, w7, w8 = w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8]
    last = width - 1
    zero = dst.dtype.type(0)
    for p in range(np.uint64(length)):
        j = col[p]
        left = w0 * xp[p] + w3 * xp[p + wd] + w6 * xp[p + wd2]
        mid = w1 * xp[p + one] + w4 * xp[p + one + wd] + w7 * xp[p + one + wd2]
        right = w2 * xp[p + two] + w5 * xp[p + two + wd] + w8 * xp[p + two + wd2]
        v = b + mid + (left if j > 0 else zero) + (right if j < last else zero)
        dst[p] = (zero if v <= 0 else v) if relu else v


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _depthwise5(xp, w, b, relu, width, length, col, dst):
    """:func:`_depthwise3` for a 5 × 5 kernel: two zero rows above and below, two guard
    values; the taps summed by kernel column, the two columns each side dropped by ``col``
    where they would cross the plane's edge. Shapes: w (25,)."""
    wd = np.uint64(width)
    zero = dst.dtype.type(0)
    for p in range(np.uint64(length)):
        j = col[p]
        s0 = s1 = s2 = s3 = s4 = zero
        for a in range(5):  # unrolled by LLVM: a constant trip count
            r = p + np.uint64(a) * wd
            s0 += w[5 * a] * xp[r]
            s1 += w[5 * a + 1] * xp[r + np.uint64(1)]
            s2 += w[5 * a + 2] * xp[r + np.uint64(2)]
            s3 += w[5 * a + 3] * xp[r + np.uint64(3)]
            s4 += w[5 * a + 4] * xp[r + np.uint64(4)]
        v = b + s2 + (s1 if j > 0 else zero) + (s3 if j < width - 1 else zero)
        v = v + (s0 if j > 1 else zero) + (s4 if j < width - 2 else zero)
        dst[p] = (zero if v <= 0 else v) if relu else v


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def conv2d_depthwise_same_forward(x, weight, bias, relu, col, out, xpad):
    """out[n, c] = depthwise k×k convolution of x[n, c] with weight[c] + bias[c], stride 1,
    padding (k − 1)/2 on every side (the output the input's size), then max(·, 0) if
    ``relu``; k = 3 or 5 (weight's k² taps).

    A depthwise plane is too little work to share a padded sample: each (sample, channel)
    plane is copied, in one contiguous run, between the zero rows of a padded plane in the
    input's own row length (:func:`_depthwise3`), which stays in L1, and the taps write the
    output plane directly. (The general path pads a whole sample with padding columns and
    copies each output row out of a wider plane: measured 1.6–1.9x slower.)
    Shapes: x (N, C, H, W), C-contiguous; weight (C, k²); bias (C,); col (H·W,) = p mod W;
    out (N, C, H, W); xpad (T, (H + k − 1)·W + k − 1), one row per block. Parallel over
    blocks of (sample, channel) planes, each writing its own output planes and xpad row.
    """
    n_batch, n_channels, height, width = x.shape
    k = 3 if weight.shape[1] == 9 else 5
    length = height * width
    start = np.uint64((k // 2) * (width + 1))  # the guard values, then the zero rows
    n_planes = n_batch * n_channels
    n_blocks = xpad.shape[0]
    for t in prange(n_blocks):
        xp = xpad[t]
        zero_fill(xp)  # the zero rows and guards stay zero: planes overwrite only their rows
        for item in range((t * n_planes) // n_blocks, ((t + 1) * n_planes) // n_blocks):
            n, c = item // n_channels, item % n_channels
            _load_plane(x[n, c], start, xp)
            dst = out[n, c].reshape(-1)
            if k == 3:
                _depthwise3(xp, weight[c], bias[c], relu, width, length, col, dst)
            else:
                _depthwise5(xp, weight[c], bias[c], relu, width, length, col, dst)


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _add_taps(partial, s):
    """partial[i] += s[i] for a 3×3 kernel's nine tap sums (written out: a run-time index
    into the tuple would go through a stack copy)."""
    partial[0] += s[0]
    partial[1] += s[1]
    partial[2] += s[2]
    partial[3] += s[3]
    partial[4] += s[4]
    partial[5] += s[5]
    partial[6] += s[6]
    partial[7] += s[7]
    partial[8] += s[8]


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _depthwise3_dots(gy, xp, width, length, col, partial):
    """partial[3a + c] += Σ_p gy[p] · plane[i + a − 1, j + c − 1] over p = i·W + j < length,
    and returns Σ_p gy[p]: the weight and bias gradients of :func:`_depthwise3` for one
    plane, read in the same layout (the products that would cross a side edge dropped by
    column, by a select: an inf there stays out of the sums). Shapes: partial (9,)."""
    one, two, wd = np.uint64(1), np.uint64(2), np.uint64(width)
    wd2 = wd + wd
    last = width - 1
    zero = gy.dtype.type(0)
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = s8 = sb = zero
    for p in range(np.uint64(length)):
        g = gy[p]
        j = col[p]
        sb += g
        s1 += g * xp[p + one]
        s4 += g * xp[p + one + wd]
        s7 += g * xp[p + one + wd2]
        s0 += g * xp[p] if j > 0 else zero
        s3 += g * xp[p + wd] if j > 0 else zero
        s6 += g * xp[p + wd2] if j > 0 else zero
        s2 += g * xp[p + two] if j < last else zero
        s5 += g * xp[p + two + wd] if j < last else zero
        s8 += g * xp[p + two + wd2] if j < last else zero
    _add_taps(partial, (s0, s1, s2, s3, s4, s5, s6, s7, s8))
    return sb


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def conv2d_depthwise_same_backward_weight(x, grad_out, col, partial_w, partial_b, xpad):
    """The weight and bias gradients of :func:`conv2d_depthwise_same_forward` (3×3), per
    block of (sample, channel) planes, laid out as there:

        partial_w[t, c, 3a + b] = Σ_(planes (n, c) in block t) Σ_(i,j) grad_out[n, c, i, j] ·
                                  x_padded[n, c, i + a, j + b],
        partial_b[t, c] = Σ_(planes (n, c) in block t) Σ_(i,j) grad_out[n, c, i, j].

    The caller adds the blocks in block order (deterministic for a thread count). Shapes:
    x, grad_out (N, C, H, W), C-contiguous; col (H·W,); partial_w (T, C, 9), partial_b
    (T, ≥ C) overwritten; xpad (T, (H + 2)·W + 2). Parallel over blocks (block t writes its
    own rows only: race-free).
    """
    n_batch, n_channels, height, width = x.shape
    length = height * width
    start = np.uint64(width + 1)
    n_planes = n_batch * n_channels
    n_blocks = xpad.shape[0]
    for t in prange(n_blocks):
        xp = xpad[t]
        zero_fill(xp)
        zero_fill(partial_w[t].reshape(-1))
        zero_fill(partial_b[t])
        for item in range((t * n_planes) // n_blocks, ((t + 1) * n_planes) // n_blocks):
            n, c = item // n_channels, item % n_channels
            _load_plane(x[n, c], start, xp)
            gy = grad_out[n, c].reshape(-1)
            partial_b[t, c] += _depthwise3_dots(gy, xp, width, length, col, partial_w[t, c])


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _taps_dot(gy, xpad, r0, wp, length, partial):
    """partial[3a + b] += Σ_p gy[p] · xpad[r0 + a·wp + b + p], p < length: one channel's nine
    weight-gradient taps in one pass over the plane (gy is read once for all nine).

    Shapes: gy (≥ length,), the output gradient in the padded row length wp (junk columns
    zero); xpad flat; partial (9,).
    """
    one = np.uint64(1)
    two = np.uint64(2)
    r0 = np.uint64(r0)
    r1 = r0 + np.uint64(wp)
    r2 = r1 + np.uint64(wp)
    zero = gy.dtype.type(0)
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = s8 = zero
    for p in range(np.uint64(length)):
        g = gy[p]
        s0 += g * xpad[r0 + p]
        s1 += g * xpad[r0 + p + one]
        s2 += g * xpad[r0 + p + two]
        s3 += g * xpad[r1 + p]
        s4 += g * xpad[r1 + p + one]
        s5 += g * xpad[r1 + p + two]
        s6 += g * xpad[r2 + p]
        s7 += g * xpad[r2 + p + one]
        s8 += g * xpad[r2 + p + two]
    _add_taps(partial, (s0, s1, s2, s3, s4, s5, s6, s7, s8))


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _taps_dot5(gy, xpad, r0, wp, length, partial):
    """:func:`_taps_dot` for a 5 × 5 kernel: partial (25,), one pass per kernel row a, each
    computing that row's five dot products."""
    one, two, three, four = np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4)
    zero = gy.dtype.type(0)
    for a in range(5):
        r = np.uint64(r0 + a * wp)
        s0 = s1 = s2 = s3 = s4 = zero
        for p in range(np.uint64(length)):
            g = gy[p]
            s0 += g * xpad[r + p]
            s1 += g * xpad[r + p + one]
            s2 += g * xpad[r + p + two]
            s3 += g * xpad[r + p + three]
            s4 += g * xpad[r + p + four]
        partial[5 * a] += s0
        partial[5 * a + 1] += s1
        partial[5 * a + 2] += s2
        partial[5 * a + 3] += s3
        partial[5 * a + 4] += s4


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _zero_partials(pw, pb):
    """A block's partial weight and bias gradients set to zero."""
    for i in range(pw.shape[0]):
        pb[i] = 0
        for c in range(pw.shape[1]):
            for k in range(pw.shape[2]):
                pw[i, c, k] = 0


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _load_gradient(plane, wp, gy):
    """gy = one output plane's gradient (OH × OW) in the padded row length wp (its junk
    columns stay as they are: zero); returns the plane's sum (the bias gradient's share)."""
    total = gy.dtype.type(0)
    for i in range(plane.shape[0]):
        src = plane[i]
        dst0 = np.uint64(i * wp)
        for j in range(np.uint64(plane.shape[1])):
            gy[dst0 + j] = src[j]
            total += src[j]
    return total


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def conv2d_small_backward_weight(x, grad_out, padding, partial_w, partial_b, xpad, gyw):
    """The weight and bias gradients of :func:`conv2d_small_forward`, per block of samples:

        partial_w[t, o, c, 3a + b] = Σ_(n in block t) Σ_(i,j) grad_out[n, o, i, j] ·
                                     xpad_n[c, i + a, j + b],
        partial_b[t, o] = Σ_(n in block t) Σ_(i,j) grad_out[n, o, i, j].

    (c counts the input channels of o's group, as the forward's weight does.) The caller
    adds the blocks in block order (deterministic for a thread count).
    Shapes: x (N, C, H, W); grad_out (N, Cout, OH, OW); padding (top, left); partial_w
    (T, Cout, C/groups, 9 or 25 taps) and partial_b (T, ≥ Cout) overwritten. Work space, one
    row per block: xpad (T, ≥ C·hp·wp + k − 1) as in the forward; gyw (T, ≥ OH·wp): one output
    plane's gradient in the padded row length, its junk columns zero, so that the taps are
    flat dot products.
    Loop nest: for block t: for n in block: pad x[n]; for o: gyw = grad_out[n, o]; for c:
    k² dots. Parallel over: blocks of samples (block t writes its own rows only: race-free).
    """
    n_batch, n_out, cin_g = x.shape[0], grad_out.shape[1], partial_w.shape[2]
    cout_g = n_out // (x.shape[1] // cin_g)
    hp, wp, length = _padded_plane(grad_out.shape[2], grad_out.shape[3], 3)
    n_blocks = xpad.shape[0]
    for t in prange(n_blocks):
        zero_fill(gyw[t])  # the junk columns stay zero from here on
        _zero_partials(partial_w[t], partial_b[t])
        for n in range((t * n_batch) // n_blocks, ((t + 1) * n_batch) // n_blocks):
            _pad_flat(x[n], padding[0], padding[1], hp, wp, xpad[t])
            for o in range(n_out):
                partial_b[t, o] += _load_gradient(grad_out[n, o], wp, gyw[t])
                c0 = (o // cout_g) * cin_g
                for c in range(cin_g):
                    _taps_dot(gyw[t], xpad[t], (c0 + c) * hp * wp, wp, length, partial_w[t, o, c])


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def conv2d_small5_backward_weight(x, grad_out, padding, partial_w, partial_b, xpad, gyw):
    """:func:`conv2d_small_backward_weight` for a 5×5 kernel: partial_w (T, Cout, C/groups,
    25). A kernel of its own, as conv2d_small5_forward."""
    n_batch, n_out, cin_g = x.shape[0], grad_out.shape[1], partial_w.shape[2]
    cout_g = n_out // (x.shape[1] // cin_g)
    hp, wp, length = _padded_plane(grad_out.shape[2], grad_out.shape[3], 5)
    n_blocks = xpad.shape[0]
    for t in prange(n_blocks):
        zero_fill(gyw[t])
        _zero_partials(partial_w[t], partial_b[t])
        for n in range((t * n_batch) // n_blocks, ((t + 1) * n_batch) // n_blocks):
            _pad_flat(x[n], padding[0], padding[1], hp, wp, xpad[t])
            for o in range(n_out):
                partial_b[t, o] += _load_gradient(grad_out[n, o], wp, gyw[t])
                c0 = (o // cout_g) * cin_g
                for c in range(cin_g):
                    _taps_dot5(gyw[t], xpad[t], (c0 + c) * hp * wp, wp, length, partial_w[t, o, c])
