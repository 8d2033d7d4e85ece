"""Shifted-product convolution: one matrix product per kernel tap, read straight from the
input's phase planes, with no vol2col copy.

Notation as in ``conv.py``. A convolution is a sum over its taps (a, b, e) of a pointwise
product: out[n, :, i, j, q] = Σ_taps W_tap (Cout × C) @ x[n, :, i·sd + a·dd − pd,
j·sh + b·dh − ph, q·sw + e·dw − pw]. In ``conv.py``'s phase planes (:func:`_phase_plane`:
each channel zero-padded, its rows and columns split by phase modulo the stride) the inputs
of one tap for a whole output plane lie in one run, at the same offset in every channel's
plane: the (C × run) matrix a tap multiplies is the planes themselves, read with a row
stride of one plane. So each tap is one BLAS call on memory already there,

    wide[:, i, ·] += W_tap @ planes[:, offsets[tap, i] + ·]     (Cout × C) @ (C × length),

into output rows ``wq`` wide (the planes' pitch, a column or two more than ow, dropped when
the result is stored). Against vol2col + one product of depth K = C·taps (``conv.py``),
this copies each input value once (into its phase plane) instead of once per tap, and the
products read a stride-1 matrix. Measured for stride 2 (32 → 64 3×3 on (64, 32, 32, 32),
one thread): the nine depth-32 products took 6.9 ms where the depth-288 one took 8.3, and
vol2col of a stride-2 sample, a run of 16 strided values per (row, line), was a third of
the forward. It needs enough input channels for a depth-C product to run well: nn/conv.py
takes it from _SHIFTED_MIN_CHANNELS. The backward is the transpose on the same runs: two
products per tap (the weight gradient's, of depth ``length``; the input gradient's, added
into the planes' gradient), then the planes' gradient taken back to the input's layout.

Determinism: (sample, group) tasks are split into fixed contiguous blocks, one per thread,
BLAS single-threaded (the caller's), products added in tap order, per-block weight
gradients added in block order.

Debugging: with ``NUMBA_DISABLE_JIT=1`` these are plain Python (slow) that pdb can step into.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import config
from .blas import gemm_few_rows, gemm_small_result
from .conv import _phase_layout, _phase_plane, row_sum, sum_blocks, zero_fill
from .conv_small import _store
from .vector import store_row


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def conv_forward_shifted(
    x, weight, bias, relu, groups, kernel, stride, padding, dilation, out_size, parts, out, blocks
):
    """out[n, g-block] = Σ_taps W_tap @ (a run of the phase planes of x[n]'s group g) + bias.

    Shapes: x (N, C, D, H, W); weight (taps, Cout, Cg): the layer's weight with the tap axis
    first, so that W_tap is a (Cout × Cg) matrix; bias (Cout,) (zeros for none); out
    (N, Cout, P) written, max(·, 0) applied with ``relu``; ``blocks``: how many blocks of work
    to share out (the thread count); ``parts``: into how many runs of output lines (od·oh
    lines of ow) each (sample, group) pair is cut, so that a batch smaller than the thread
    count keeps every thread busy (1: whole pairs).
    Loop nest: for block t of (sample n, group g, part) units: phase planes of x[n]'s
    channels of g (when n, g change); for output plane i of the part: for tap: the part's
    rows of wide[:, i] (+)= W_tap @ run (BLAS, the first tap overwrites); out[n, g-block,
    part's lines] = wide's first ow columns of each row + bias.
    Parallel over: blocks of units (each writes only its own lines of its own output
    channels, and its own planes and wide: race-free).
    """
    n_batch = x.shape[0]
    taps, n_out, cin_g = weight.shape
    cout_g = n_out // groups
    od, oh, ow = out_size
    n_lines = od * oh
    n_units = n_batch * groups * parts
    n_blocks = min(n_units, blocks)
    (dp, sh, sw, hq, wq), offsets, _ = _phase_layout(kernel, stride, dilation, out_size)
    size = dp * sh * sw * hq * wq  # one channel's planes
    pitch = oh * wq  # one wide output plane
    zero = x.dtype.type(0)
    for t in prange(n_blocks):
        # The padding is written once here and stays zero: every sample writes the same
        # positions of the planes (see _phase_plane).
        planes = np.zeros((cin_g, dp, sh, sw, hq, wq), dtype=x.dtype)
        wide = np.empty((cout_g, od * pitch), dtype=x.dtype)
        src = planes.reshape(-1)
        dst = wide.reshape(-1)
        flat_w = weight.reshape(-1)
        loaded = -1  # the (sample, group) pair whose planes are in planes
        for unit in range((t * n_units) // n_blocks, ((t + 1) * n_units) // n_blocks):
            task = unit // parts
            n = task // groups
            g = task % groups
            if task != loaded:
                loaded = task
                _planes_of(x[n], g * cin_g, padding, planes)
            line0 = ((unit % parts) * n_lines) // parts
            line1 = ((unit % parts + 1) * n_lines) // parts
            for i in range(line0 // oh, (line1 - 1) // oh + 1):
                # Rows j0 .. j1 of output plane i: one run of (j1 − j0 − 1)·wq + ow.
                j0 = max(0, line0 - i * oh)
                j1 = min(oh, line1 - i * oh)
                run = (j1 - j0 - 1) * wq + ow
                for tap in range(taps):
                    w0 = (tap * n_out + g * cout_g) * cin_g
                    gemm_few_rows(False, cout_g, run, cin_g, flat_w[w0:], cin_g,
                         src[int(offsets[tap, i]) + j0 * wq:], size,
                         zero if tap == 0 else zero + 1, dst[i * pitch + j0 * wq:],
                         od * pitch)  # fmt: skip
                for o in range(cout_g):  # rows j0 .. j1 without their extra columns
                    first = o * od * pitch + i * pitch + j0 * wq
                    _store(dst[first:], bias[g * cout_g + o], relu, j1 - j0, ow, wq,
                           out[n, g * cout_g + o, (i * oh + j0) * ow :])  # fmt: skip


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def conv_backward_shifted(
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
    """The three gradients of :func:`conv_forward_shifted`, on the same phase planes.

    The forward's tap product wide_i += W_tap @ run(tap, i) has the transposes
    dW_tap += dy_i @ run(tap, i)ᵀ (a (Cout × Cg) product of depth ``length``) and
    d run(tap, i) += W_tapᵀ @ dy_i, added into the planes' gradient along the same run, which
    :func:`_phase_plane` (``back``) then takes to grad_x[n]. dy is laid out ``wq`` wide as the
    forward's outputs, with zeros in the extra columns, so that they add nothing.
    Shapes: x, grad_x (N, C, D, H, W); weight, grad_w (taps, Cout, Cg) (see the forward);
    grad_out (N, Cout, P); grad_b (Cout,) or (0,); grad_x (if ``input_grad``), grad_w, grad_b
    overwritten; partial_w (T, taps, Cout, Cg), T the blocks (the thread count).
    Loop nest: for block t of (sample n, group g) pairs: for (n, g): phase planes of x[n]'s
    channels of g; dy of (n, g) into wide; for output plane i: for tap: partial_w[t, tap,
    g-block] += dy_i @ runᵀ; gradient planes' run += W_tapᵀ @ dy_i (BLAS); grad_x[n, g's
    channels] = the gradient planes taken back; then grad_w = Σ_t partial_w[t].
    Parallel over: blocks of (n, g) pairs (each writes grad_x[n] of its own channels and its
    own partial_w[t]: race-free; the partials are added in block order).
    """
    n_batch = x.shape[0]
    taps, n_out, cin_g = weight.shape
    cout_g = n_out // groups
    od, oh, ow = out_size
    n_tasks = n_batch * groups
    n_blocks = partial_w.shape[0]
    (dp, sh, sw, hq, wq), offsets, length = _phase_layout(kernel, stride, dilation, out_size)
    size = dp * sh * sw * hq * wq
    pitch = oh * wq
    one = x.dtype.type(1)
    for t in prange(n_blocks):
        planes = np.zeros((cin_g, dp, sh, sw, hq, wq), dtype=x.dtype)  # padding stays zero
        gplanes = np.empty((cin_g, dp, sh, sw, hq, wq), dtype=x.dtype)
        wide = np.zeros((cout_g, od * pitch), dtype=x.dtype)  # extra columns stay zero
        src = planes.reshape(-1)
        gsrc = gplanes.reshape(-1)
        dy = wide.reshape(-1)
        flat_w = weight.reshape(-1)
        pw = partial_w[t].reshape(-1)
        zero_fill(pw)
        for task in range((t * n_tasks) // n_blocks, ((t + 1) * n_tasks) // n_blocks):
            n = task // groups
            g = task % groups
            _planes_of(x[n], g * cin_g, padding, planes)
            _widen_rows(grad_out[n, g * cout_g : (g + 1) * cout_g].reshape(-1), od * oh, ow, wq,
                        dy)  # fmt: skip
            if input_grad:
                zero_fill(gsrc)
            for i in range(od):
                for tap in range(taps):
                    w0 = (tap * n_out + g * cout_g) * cin_g
                    run = int(offsets[tap, i])
                    gemm_small_result(cout_g, cin_g, length, dy[i * pitch:], od * pitch,
                                      src[run:], size, pw[w0:], cin_g)  # fmt: skip
                    if input_grad:
                        gemm_few_rows(True, cin_g, length, cout_g, flat_w[w0:], cin_g,
                             dy[i * pitch:], od * pitch, one, gsrc[run:], size)  # fmt: skip
            if input_grad:
                for cl in range(cin_g):
                    _phase_plane(grad_x[n, g * cin_g + cl], padding, gplanes[cl], True)
    sum_blocks(partial_w.reshape(n_blocks, -1), grad_w.reshape(-1))
    for oc in range(grad_b.shape[0]):
        grad_b[oc] = 0
        for n in range(n_batch):
            grad_b[oc] += row_sum(grad_out[n, oc])


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _planes_of(sample, c0, padding, planes):
    """planes[c] = the phase plane of sample's channel c0 + c (see _phase_plane), for each
    of planes' channels."""
    for c in range(planes.shape[0]):
        _phase_plane(sample[c0 + c], padding, planes[c])


# The forward's store (conv_small._store) and _widen_rows copy rows on flat arrays with
# unsigned offsets: a view per output row cost a reference-count update each, which measured
# two thirds of the store (32 → 64 3×3 s2 on (64, 32, 32²), one thread: 0.36 against 0.98 ms;
# the layer's forward on two threads 5.75 against 6.30 ms, interleaved; same bits).


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _widen_rows(dy, lines, ow, wq, wide):
    """wide[o·lines·wq + l·wq + q] = dy[o·lines·ow + l·ow + q]: each output channel's lines
    of ow values laid out wq apart (the columns between stay as they are, zero). Rows in
    vectors of 16 or 8 (vector.store_row: rows this short otherwise go one value at a time)."""
    for row in range(dy.shape[0] // ow):
        store_row(wide, row * wq, dy, row * ow, ow, None, False)
