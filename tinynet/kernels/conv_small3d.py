"""Direct 3×3×3 convolution for Conv3d layers with few input channels per group (a 3-D CNN's
first layer: one channel of CT or MRI intensities, a few of a multi-modal scan; depthwise and
grouped layers).

The 3-D form of ``conv_small.py`` (read that first). With C·27 small the plane path's matrix
product is thin (1 → 16 channels: K = 27, N = 16), and BLAS runs it far below its speed.
Here the taps are summed directly. Index the zero-padded volume flat, with plane size
hp·wp and row length wp: output (d, i, j) is at p = d·hp·wp + i·wp + j and reads

    xpad[c·vol + a·hp·wp + b·wp + e + p]   for tap (a, b, e) of channel c,

a fixed offset from p. So one loop over p covers every output of every plane (and the junk
rows and columns of the padding, dropped when the output is copied out). The nine taps of one
depth tap a form conv_small's 3×3 pass over "plane" c·dp + a (its :func:`_plane_pair`, two
output channels at once): a channel's 27 taps are three such passes, each adding into the
accumulator.

Backward: the weight gradient is conv_small's flat dot products (``_taps_dot``), nine taps
per pass, three passes per channel. The input gradient is this forward run on the output
gradient with the filters flipped and their channel axes swapped (a full correlation, as in
Conv2d's direct path; the layer does that, nn/conv.py).

Parallel over: (sample, pair of output channels) items in the forward, output channels in
the weight gradient, so a batch of one uses every thread; each item writes only its own
outputs, and every sum runs in one fixed order, whatever the thread count: results are
bit-identical across thread counts.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import config
from .conv import zero_fill
from .conv_small import _load_gradient, _plane, _plane_pair, _store, _taps_dot


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _geometry(out_size):
    """(dp, hp, wp, plane, vol, length) of the padded grid of an OD × OH × OW output: its
    planes, rows and row length, a plane's and the volume's size, and how far the flat loops
    run (every output, with the junk rows and columns between them)."""
    od, oh, ow = out_size
    dp, hp, wp = od + 2, oh + 2, ow + 2
    plane = hp * wp
    return dp, hp, wp, plane, dp * plane, (od - 1) * plane + oh * wp


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _pad_volume(x, padding, dp, hp, wp, xpad):
    """xpad[c·vol + z·hp·wp + r·wp + q] = x[c, z − front, r − top, q − left], zero elsewhere
    and in the tail (the last outputs' taps read 2 values past the volume).

    Shapes: x (C, D, H, W); xpad (≥ C·vol + 2,), flat.
    """
    n_channels, depth, height, width = x.shape
    front, top, left = padding
    plane = hp * wp
    zero_fill(xpad)
    for c in range(n_channels):
        for z in range(depth):
            for r in range(height):
                dst = np.uint64((c * dp + z + front) * plane + (r + top) * wp + left)
                row = x[c, z, r]
                for q in range(np.uint64(width)):
                    xpad[dst + q] = row[q]


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def conv3d_small_forward(x, weight, bias, relu, padding, out, xpad, acc):
    """out = conv3×3×3(x, weight) + bias, stride 1 (then max(·, 0) if ``relu``).

    Shapes: x (N, C, D, H, W); weight (Cout, C/groups, 3, 9): the taps (a; b, e), depth
    first (the groups follow from C and the weight's second axis, as in conv_small.py);
    bias (Cout,) (zeros for none); padding (front, top, left); out (N, Cout, OD, OH, OW)
    written; the grid is (OD + 2) × (OH + 2) × (OW + 2). Work space: xpad (N, ≥ C·vol + 2),
    every sample's padded volume (the weight gradient reads them too); acc (T, ≥ 2·length),
    two accumulators per thread.
    Loop nest: pad every sample; for item (n, o-pair of a group): for c of the group: for a:
    9-tap pass into acc; out[n, o], out[n, o + 1] = acc without the junk + bias.
    Parallel over: samples for the padding (xpad[n] each), then items in fixed contiguous
    blocks (block t writes out[n, o], out[n, o + 1] of its items and acc[t]: race-free).
    """
    n_batch, cin_g = x.shape[0], weight.shape[1]
    n_out, od, oh, ow = out.shape[1], out.shape[2], out.shape[3], out.shape[4]
    cout_g = n_out // (x.shape[1] // cin_g)
    dp, hp, wp, plane, vol, length = _geometry((od, oh, ow))
    for n in prange(n_batch):
        _pad_volume(x[n], padding, dp, hp, wp, xpad[n])
    pairs = (cout_g + 1) // 2  # per group: a pair never spans two groups
    slots = (n_out // cout_g) * pairs  # per sample
    items = n_batch * slots
    n_blocks = acc.shape[0]
    for t in prange(n_blocks):
        acc1, acc2 = acc[t, :length], acc[t, length : 2 * length]
        for item in range((t * items) // n_blocks, ((t + 1) * items) // n_blocks):
            n = item // slots
            g = (item - n * slots) // pairs
            k = item - n * slots - g * pairs
            o = g * cout_g + 2 * k
            pair = 2 * k + 1 < cout_g
            for c in range(cin_g):
                # The depth taps of channel c0 + c are "channels" (c0 + c)·dp + a of the
                # 3×3 pass.
                first = (g * cin_g + c) * dp
                if pair:
                    _plane_pair(xpad[n], weight[:, c], o, first, hp, wp, length, acc1, acc2, c > 0)
                else:
                    _plane(xpad[n], weight[:, c], o, first, hp, wp, length, acc1, c > 0)
            for d in range(od):
                _store(acc1[d * plane :], bias[o], relu, oh, ow, wp, out[n, o, d].reshape(-1))
                if pair:
                    dst = out[n, o + 1, d].reshape(-1)
                    _store(acc2[d * plane :], bias[o + 1], relu, oh, ow, wp, dst)


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def conv3d_small_backward_weight(xpad, grad_out, groups, grad_w, grad_b, gy):
    """The weight and bias gradients of :func:`conv3d_small_forward`:

        grad_w[o, c, a, 3b + e] = Σ_n Σ_(d,i,j) grad_out[n, o, d, i, j] ·
                                  xpad_n[c, d + a, i + b, j + e],
        grad_b[o] = Σ_n Σ_(d,i,j) grad_out[n, o, d, i, j].

    Shapes: xpad (N, ≥ C·vol + 2) as the forward left it; grad_out (N, Cout, OD, OH, OW);
    grad_w (Cout, C/groups, 3, 9) and grad_b (Cout,) overwritten (c counts the input
    channels of o's group). Work space: gy (T, ≥ OD·hp·wp): one output channel's gradient
    in the padded grid, its junk rows and columns zero, so that the taps are flat dot
    products.
    Loop nest: for output channel o: for n: gy = grad_out[n, o]; for c: for a: 9 dots.
    Parallel over: output channels in fixed contiguous blocks (block t writes grad_w[o],
    grad_b[o] of its channels and gy[t]: race-free; each sums the samples in order).
    """
    n_batch, n_out = grad_out.shape[0], grad_out.shape[1]
    od, oh, ow = grad_out.shape[2], grad_out.shape[3], grad_out.shape[4]
    cin_g, cout_g = grad_w.shape[1], n_out // groups
    dp, hp, wp, plane, vol, length = _geometry((od, oh, ow))
    n_blocks = gy.shape[0]
    for t in prange(n_blocks):
        zero_fill(gy[t])  # the junk rows and columns stay zero from here on
        for o in range((t * n_out) // n_blocks, ((t + 1) * n_out) // n_blocks):
            c0 = (o // cout_g) * cin_g  # the group's first input channel
            total = grad_w.dtype.type(0)
            for c in range(cin_g):
                for a in range(3):
                    for k in range(9):
                        grad_w[o, c, a, k] = 0
            for n in range(n_batch):
                for d in range(od):
                    total += _load_gradient(grad_out[n, o, d], wp, gy[t, d * plane :])
                for c in range(cin_g):
                    for a in range(3):
                        r0 = (c0 + c) * vol + a * plane
                        _taps_dot(gy[t], xpad[n], r0, wp, length, grad_w[o, c, a])
            if grad_b.shape[0] > 0:
                grad_b[o] = total
