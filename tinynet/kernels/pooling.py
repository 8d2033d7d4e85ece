"""Pooling kernels: max, average and global average pooling, forward and backward.

Every kernel sees the batch as P = N·C independent planes, and an image as a volume of depth 1:
x has shape (P, D, H, W) and pools to (P, OD, OH, OW). The layers (``tinynet/nn/pooling.py``)
describe the windows along each axis with a small table (``tinynet/nn/pooling_windows.py``),
so the kernels need no padding logic: row 0 holds, for each output index, the first input
index inside the input, row 1 how many taps of the window fall inside the input (the taps are
``first + t·dilation``), and row 2 (average pooling only) the size the mean divides by along
that axis. Padded taps are simply never visited, which is the same as padding with -inf (max)
or 0 (average).

Parallel over: planes. A plane's outputs depend only on the same plane's inputs, and backward
writes the input gradient of that plane only, so the planes are race-free, and each plane is
computed in the same order whatever the thread count (results are bit-identical).

Debugging: with ``NUMBA_DISABLE_JIT=1`` these are plain Python functions ``pdb`` can step into.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import config


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _challenge(best, best_i, v, i):
    """The running maximum after tap value ``v`` (at flat index ``i``) challenges it.

    ``v`` wins only when strictly greater, so among ties the first maximum in scan order
    wins (PyTorch's CPU rule). NaN is left to :func:`_challenge_nan`: the two tests in one
    select made LLVM emit a branch per tap on AVX2 machines, mispredicted on random data
    (measured 6x slower 2x2 pooling); the kernels instead watch the window's sum and redo
    the rare window that holds a NaN.
    """
    take = v > best
    return (v if take else best), (i if take else best_i)


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _challenge_nan(best, best_i, v, i):
    """:func:`_challenge` with PyTorch's NaN rule: a NaN always wins, so a NaN in the window
    gives NaN (and the index of the last NaN). ``v != v`` is a reliable NaN test because
    config.FASTMATH leaves out the "nnan" flag."""
    take = (v > best) | (v != v)
    return (v if take else best), (i if take else best_i)


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def max_pool_forward(x, win_d, win_h, win_w, dilation, out, argmax):
    """The largest value in each window, and where it is.

    Shapes: x (P, D, H, W); win_d (2+, OD), win_h (2+, OH), win_w (2+, OW) window tables;
    dilation (dd, dh, dw); outputs out (P, OD, OH, OW) and argmax (same shape, int32): the
    flat index (z·H + y)·W + x of the maximum within its plane, -1 for a window with no tap.
    Loop nest: for p, od, oh, ow: for the taps (z, y, x) in scan order: keep the maximum.
    Parallel over: planes (each iteration writes out[p] and argmax[p] only: race-free).
    """
    planes, depth, height, width = x.shape
    out_d = out.shape[1]
    out_h = out.shape[2]
    out_w = out.shape[3]
    dd, dh, dw = dilation
    for p in prange(planes):
        for od in range(out_d):
            z0 = win_d[0, od]
            taps_d = win_d[1, od]
            for oh in range(out_h):
                y0 = win_h[0, oh]
                taps_h = win_h[1, oh]
                for ow in range(out_w):
                    x0 = win_w[0, ow]
                    taps_w = win_w[1, ow]
                    # PyTorch reports the first tap when no value beats -inf (all are -inf).
                    best_i = (z0 * height + y0) * width + x0
                    if taps_d == 0 or taps_h == 0 or taps_w == 0:
                        best_i = -1  # every tap is padding: backward skips this output
                    first_i = best_i
                    best = -np.inf
                    total = 0.0  # NaN after a NaN tap (or +inf and -inf): then redo the window
                    for i in range(taps_d):
                        z = z0 + i * dd
                        for j in range(taps_h):
                            y = y0 + j * dh
                            row = (z * height + y) * width
                            for k in range(taps_w):
                                xx = x0 + k * dw
                                v = x[p, z, y, xx]
                                total += v
                                best, best_i = _challenge(best, best_i, v, row + xx)
                    if total != total:
                        # The tap loop again, with NaN's rule. Written out twice on purpose:
                        # one helper taking the rule as a flag measured 40% slower.
                        best_i = first_i
                        best = -np.inf
                        for i in range(taps_d):
                            z = z0 + i * dd
                            for j in range(taps_h):
                                y = y0 + j * dh
                                row = (z * height + y) * width
                                for k in range(taps_w):
                                    xx = x0 + k * dw
                                    v = x[p, z, y, xx]
                                    best, best_i = _challenge_nan(best, best_i, v, row + xx)
                    out[p, od, oh, ow] = best
                    argmax[p, od, oh, ow] = best_i


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def max_pool2d_2x2_forward(x, out, argmax):
    """max_pool_forward for the commonest case in CNNs: 2×2 windows, stride 2, no padding.

    Shapes: x (P, H, W); outputs out and argmax (P, OH, OW) with 2·OH ≤ H and 2·OW ≤ W, so
    every window lies inside the input; argmax as in max_pool_forward.
    Loop nest: for p, oh, ow: the four taps, unrolled, in scan order.
    Parallel over: planes (each iteration writes out[p] and argmax[p] only: race-free).

    Why a kernel of its own: with the taps unrolled the innermost loop over ow is straight-
    line selects with no inner loop of unknown length; the generic kernel's variable-length
    tap loops make it several times slower.
    """
    planes, height, width = x.shape
    out_h = out.shape[1]
    out_w = out.shape[2]
    # int32 flat indices (argmax's type): with int64 ones LLVM vectorised the loop into
    # slower code on AVX2 (rows of 14 outputs leave the vector loop little to do).
    w = np.int32(width)
    one = np.int32(1)
    for p in prange(planes):
        for oh in range(out_h):
            top = x[p, 2 * oh]
            bottom = x[p, 2 * oh + 1]
            row = np.int32(2 * oh * width)  # flat index of the top row's first input
            for ow in range(out_w):
                j = np.int32(2 * ow)
                t0, t1, b0, b1 = top[j], top[j + 1], bottom[j], bottom[j + 1]
                best, best_i = _challenge(t0, row + j, t1, row + j + one)
                best, best_i = _challenge(best, best_i, b0, row + w + j)
                best, best_i = _challenge(best, best_i, b1, row + w + j + one)
                total = t0 + t1 + b0 + b1
                if total != total:  # a NaN (or +inf and -inf) in the window: rare
                    best, best_i = _challenge_nan(t0, row + j, t1, row + j + one)
                    best, best_i = _challenge_nan(best, best_i, b0, row + w + j)
                    best, best_i = _challenge_nan(best, best_i, b1, row + w + j + one)
                out[p, oh, ow] = best
                argmax[p, oh, ow] = best_i


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _best_of_8(challenge, taps, where, where2):
    """The maximum of eight taps (scan order) and its index, by ``challenge``'s rule."""
    best, best_i = taps[0], where[0]
    best, best_i = challenge(best, best_i, taps[1], where[1])
    best, best_i = challenge(best, best_i, taps[2], where[2])
    best, best_i = challenge(best, best_i, taps[3], where[3])
    best, best_i = challenge(best, best_i, taps[4], where2[0])
    best, best_i = challenge(best, best_i, taps[5], where2[1])
    best, best_i = challenge(best, best_i, taps[6], where2[2])
    return challenge(best, best_i, taps[7], where2[3])


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def max_pool3d_2x2x2_forward(x, out, argmax):
    """max_pool_forward for 2×2×2 windows, stride 2, no padding: the 3-D max_pool2d_2x2_forward.

    Shapes: x (P, D, H, W); outputs out and argmax (P, OD, OH, OW) with 2·O ≤ size on every
    axis. Loop nest: for p, od, oh, ow: the eight taps, unrolled, in scan order (depth, then
    rows, then columns). Parallel over: planes (iteration p writes out[p], argmax[p] only).
    """
    planes, depth, height, width = x.shape
    out_d, out_h, out_w = out.shape[1], out.shape[2], out.shape[3]
    w = np.int32(width)
    plane = np.int32(height * width)
    one = np.int32(1)
    for p in prange(planes):
        for od in range(out_d):
            for oh in range(out_h):
                a = x[p, 2 * od, 2 * oh]  # rows (z, y), (z, y + 1), (z + 1, y), (z + 1, y + 1)
                b = x[p, 2 * od, 2 * oh + 1]
                c = x[p, 2 * od + 1, 2 * oh]
                d = x[p, 2 * od + 1, 2 * oh + 1]
                ia = np.int32((2 * od * height + 2 * oh) * width)  # flat index of a[0]
                ib = ia + w
                ic = ia + plane
                id_ = ic + w
                for ow in range(out_w):
                    j = np.int32(2 * ow)
                    taps = (a[j], a[j + 1], b[j], b[j + 1], c[j], c[j + 1], d[j], d[j + 1])
                    where = (ia + j, ia + j + one, ib + j, ib + j + one)
                    where2 = (ic + j, ic + j + one, id_ + j, id_ + j + one)
                    best, best_i = _best_of_8(_challenge, taps, where, where2)
                    total = taps[0] + taps[1] + taps[2] + taps[3]
                    total += taps[4] + taps[5] + taps[6] + taps[7]
                    if total != total:  # a NaN (or +inf and -inf) in the window: rare
                        best, best_i = _best_of_8(_challenge_nan, taps, where, where2)
                    out[p, od, oh, ow] = best
                    argmax[p, od, oh, ow] = best_i


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def max_pool_backward(grad_out, argmax, grad_x):
    """Route each output's gradient to the input that was the maximum.

    Shapes: grad_out, argmax (P, O) with O = OD·OH·OW; output grad_x (P, S), S = D·H·W.
    Loop nest: for p: zero grad_x[p]; for o: grad_x[p, argmax[p, o]] += grad_out[p, o].
    Parallel over: planes. Overlapping windows can share a maximum, hence the +=, but argmax
    indexes within the plane, so iteration p writes grad_x[p] only: race-free.
    """
    planes, size = grad_x.shape
    outputs = grad_out.shape[1]
    for p in prange(planes):
        for s in range(size):
            grad_x[p, s] = 0
        for o in range(outputs):
            i = argmax[p, o]
            if i >= 0:
                grad_x[p, i] += grad_out[p, o]


# Average pooling is separable: a window's sum is a sum along W of sums along H of sums along
# D, and its divisor (without divisor_override) is a product of one factor per axis. So the
# kernels make two passes per plane instead of visiting every window tap by tap: one along the
# rows (W) and one over the D and H taps of whole rows of outputs, a contiguous loop over ow
# that vectorises. Along W, the windows away from the edges are all full and evenly spaced
# (_regular_run), so that stretch is summed tap by tap over all its outputs at once (strided
# loads, which vectorise), the edges window by window. Sums are float64, rounded once.
# Measured (float32, 1 thread, forward + backward, ms, these kernels against the earlier
# tap-by-tap loops): AvgPool2d(2) on (64, 32, 28, 28) 4.2 against 7.0; AvgPool2d(3, 1, 1) on
# (32, 32, 16, 16) 2.1 against 6.5; AdaptiveAvgPool2d(7) on (64, 32, 28, 28) 2.6 against 4.9.


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _regular_run(win):
    """(lo, hi, step, taps): windows lo .. hi of table ``win`` all have ``taps`` taps and start
    ``step`` apart (the windows clear of the padding; empty when there are none)."""
    n = win.shape[1]
    taps = 0
    for o in range(n):
        taps = max(taps, win[1, o])
    lo = 0
    while lo < n and win[1, lo] != taps:
        lo += 1
    step = win[0, lo + 1] - win[0, lo] if lo + 1 < n else 1
    if step < 1:  # adaptive pooling to more outputs than inputs: windows that repeat
        return lo, lo + 1, 1, taps
    hi = lo
    while hi < n and win[1, hi] == taps and win[0, hi] == win[0, lo] + (hi - lo) * step:
        hi += 1
    return lo, hi, step, taps


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _sum_rows(x, win_w, run, rows):
    """rows[(z, y, ow)] = Σ_{xx in window ow} x[z, y, xx]: the pass along W.

    Shapes: x (D, H, W); win_w (3, OW); run = _regular_run(win_w); rows (D·H·OW,), float64.
    """
    depth, height, width = x.shape
    out_w = win_w.shape[1]
    lo, hi, step, taps = run
    xf = x.reshape(-1)
    # Unsigned offsets: a signed index gets Numba's wrap-around test, which stops LLVM from
    # vectorising (see im2col.py).
    u = np.uint64
    first = u(win_w[0, lo]) if lo < hi else u(0)
    if lo == 0 and hi == out_w and first == 0 and width == out_w * step:
        # The windows tile every row exactly (AvgPool2d(2) on an even size): the rows join
        # into one run.
        n = u(depth * height * out_w)
        for q in range(n):
            rows[q] = 0.0
        for t in range(u(taps)):
            for q in range(n):
                rows[q] += xf[q * u(step) + t]
        return
    for r in range(depth * height):
        src, dst = u(r * width), u(r * out_w)
        for edge in range(2):  # the windows before lo and from hi on, one by one
            for ow in range(0, lo) if edge == 0 else range(hi, out_w):
                total = 0.0
                for xx in range(win_w[0, ow], win_w[0, ow] + win_w[1, ow]):
                    total += xf[src + u(xx)]
                rows[dst + u(ow)] = total
        row = dst + u(lo)
        for q in range(u(hi - lo)):
            rows[row + q] = 0.0
        for t in range(u(taps)):
            start = src + first + t
            for q in range(u(hi - lo)):
                rows[row + q] += xf[start + q * u(step)]


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _divide(src, s0, divisor, size, w_size, dst, d0):
    """dst[d0 + q] = src[s0 + q] / divisor for one row of OW = len(w_size) outputs; with
    divisor 0 the divisor is size · w_size[q] (the D and H factors times the W one)."""
    n = np.uint64(w_size.shape[0])
    if divisor != 0:
        for q in range(n):
            dst[d0 + q] = src[s0 + q] / divisor
    else:
        for q in range(n):
            dst[d0 + q] = src[s0 + q] / (size * w_size[q])


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def avg_pool_forward(x, win_d, win_h, win_w, divisor, out):
    """The sum of each window divided by its divisor (average and adaptive average pooling).

    Shapes: x (P, D, H, W); win_d (3, OD), win_h (3, OH), win_w (3, OW) window tables (taps
    are consecutive); out (P, OD, OH, OW). The divisor is ``divisor`` when it is not 0, else
    the product of the three row-2 entries.
    Loop nest: for p: the pass along W into rows (D, H, OW); for od, oh: add the window's
    rows of ``rows`` (vectorised over ow), then divide.
    Parallel over: planes (iteration p writes out[p] and its own rows only: race-free).
    """
    planes, depth, height = x.shape[0], x.shape[1], x.shape[2]
    out_d, out_h, out_w = out.shape[1], out.shape[2], out.shape[3]
    run = _regular_run(win_w)
    # As float64 once here: AVX2 has no vector int64 → float conversion.
    w_size = win_w[2].astype(np.float64)
    u = np.uint64
    for p in prange(planes):
        rows = np.empty(depth * height * out_w)
        _sum_rows(x[p], win_w, run, rows)
        acc = np.empty(out_w)
        dst = out[p].reshape(-1)
        for od in range(out_d):
            z0 = win_d[0, od]
            for oh in range(out_h):
                y0 = win_h[0, oh]
                for q in range(u(out_w)):
                    acc[q] = 0.0
                for z in range(z0, z0 + win_d[1, od]):
                    for y in range(y0, y0 + win_h[1, oh]):
                        row = u((z * height + y) * out_w)
                        for q in range(u(out_w)):
                            acc[q] += rows[row + q]
                size = np.float64(win_d[2, od] * win_h[2, oh])
                _divide(acc, u(0), divisor, size, w_size, dst, u((od * out_h + oh) * out_w))


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _spread_rows(rows, win_w, run, line, grad_x):
    """grad_x[z, y, xx] = Σ of rows[(z, y, ow)] over the windows ow containing xx: the
    transpose of :func:`_sum_rows`. Shapes: rows (D·H·OW,) float64; line (W,) float64 work
    space; grad_x (D, H, W), written."""
    depth, height, width = grad_x.shape
    out_w = win_w.shape[1]
    lo, hi, step, taps = run
    gf = grad_x.reshape(-1)
    u = np.uint64
    first = u(win_w[0, lo]) if lo < hi else u(0)
    if lo == 0 and hi == out_w and first == 0 and width == out_w * step and taps == step:
        # Windows tiling every row exactly, side by side: each input is in one window.
        n = u(depth * height * out_w)
        for t in range(u(taps)):
            for q in range(n):
                gf[q * u(step) + t] = rows[q]
        return
    for r in range(depth * height):
        src, dst = u(r * out_w), u(r * width)
        for xx in range(u(width)):
            line[xx] = 0.0
        for edge in range(2):
            for ow in range(0, lo) if edge == 0 else range(hi, out_w):
                g = rows[src + u(ow)]
                for xx in range(win_w[0, ow], win_w[0, ow] + win_w[1, ow]):
                    line[xx] += g
        row = src + u(lo)
        for t in range(u(taps)):
            start = first + t
            for q in range(u(hi - lo)):
                line[start + q * u(step)] += rows[row + q]
        for xx in range(u(width)):
            gf[dst + xx] = line[xx]


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def avg_pool_backward(grad_out, win_d, win_h, win_w, divisor, grad_x):
    """Spread each output's gradient evenly (1/divisor each) over its window.

    Shapes: grad_out (P, OD, OH, OW); window tables and divisor as in avg_pool_forward;
    output grad_x (P, D, H, W).
    Loop nest (the forward's two passes transposed): for p: rows (D, H, OW) = 0; for od, oh:
    add g / divisor into the window's rows of ``rows`` (vectorised over ow); then for each
    input row, grad_x[z, y, xx] = Σ of rows[z, y, ow] over the windows ow containing xx.
    Parallel over: planes (iteration p writes grad_x[p] and its own buffers only: race-free).
    """
    planes, depth, height, width = grad_x.shape
    out_d, out_h, out_w = grad_out.shape[1], grad_out.shape[2], grad_out.shape[3]
    run = _regular_run(win_w)
    w_size = win_w[2].astype(np.float64)  # see avg_pool_forward
    u = np.uint64
    for p in prange(planes):
        rows = np.empty(depth * height * out_w)
        for q in range(u(rows.size)):
            rows[q] = 0.0
        scaled = np.empty(out_w)
        line = np.empty(width)
        g = grad_out[p].reshape(-1)
        for od in range(out_d):
            z0 = win_d[0, od]
            for oh in range(out_h):
                y0 = win_h[0, oh]
                size = np.float64(win_d[2, od] * win_h[2, oh])
                _divide(g, u((od * out_h + oh) * out_w), divisor, size, w_size, scaled, u(0))
                for z in range(z0, z0 + win_d[1, od]):
                    for y in range(y0, y0 + win_h[1, oh]):
                        row = u((z * height + y) * out_w)
                        for q in range(u(out_w)):
                            rows[row + q] += scaled[q]
        _spread_rows(rows, win_w, run, line, grad_x[p])


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def global_avg_pool_forward(x, out):
    """The mean of each plane (adaptive average pooling to size 1).

    Shapes: x (P, S); out (P,). Loop nest: for p: Σ_s x[p, s] (a float64 sum) / S.
    Parallel over: planes (iteration p writes out[p] only: race-free). The plane is
    contiguous, so the sum vectorises (fastmath allows reassociating it).
    """
    planes, size = x.shape
    for p in prange(planes):
        total = 0.0
        for s in range(size):
            total += x[p, s]
        out[p] = total / size


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def global_avg_pool_backward(grad_out, grad_x):
    """Every input of a plane receives 1/S of the plane's output gradient.

    Shapes: grad_out (P,); output grad_x (P, S). Loop nest: for p, s: grad_x[p, s] = g[p] / S.
    Parallel over: planes (iteration p writes grad_x[p] only: race-free).
    """
    planes, size = grad_x.shape
    for p in prange(planes):
        g = grad_out[p] / size
        for s in range(size):
            grad_x[p, s] = g
