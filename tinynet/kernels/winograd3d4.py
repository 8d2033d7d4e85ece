"""Conv3d 3×3×3 as 2-D Winograd F(4×4, 3×3) planes summed over the kernel's depth.

A 3×3×3 convolution is three 2-D 3×3 convolutions, one per kernel depth kd, output plane z
reading input plane z + kd: y[z] = Σ_kd conv2d(x[z + kd], g[:, :, kd]) (padded
coordinates). In the Winograd domain of ``winograd4.py`` (read that first: its matrices, and
``winograd5.py``'s input transforms, are used here unchanged) that is, per output plane z,

    M_z[ξ] (Cout × P) = Σ_kd U_kd[ξ] (Cout × C) @ V_{z+kd}[ξ] (C × P),   y[z] = Aᵀ M_z A,

with P tiles of 4×4 outputs a plane, U_kd = G g[:, :, kd] Gᵀ and V_d = Bᵀ x[d] B. Each input
plane d is transformed once and read by the three output planes d − 2, d − 1, d, so per 16 outputs
the transforms move 36 values in and 36 out, and the products cost 3·36 = 108 multiplies per
(C, Cout) pair: against F(2×2×2, 3×3×3)'s (``winograd3d.py``) 64 in, 64 out and 64
multiplies per 8 outputs, that is 3.6× less transform traffic and 16% fewer products (the
direct sum: 27 per output, 432 per 16). The layer's A/B on (8, 16, 16³) → 32, 2 threads: 0.66–0.74
of F(2×2×2)'s forward time, 0.68–0.79 of its forward + backward (``nn/conv_winograd3d.py``
says where each is taken).

Accuracy: F(4×4, 3×3)'s transforms multiply by up to 8 (see winograd4.py): float32 results
differ from the float64 sum by 3–10e-6 of the result's largest magnitude (F(2×2×2, 3×3×3):
2–5e-7; PyTorch's float32 Conv3d: 0.6–3.5e-6), float64 ones by ~1e-14.

Layout. A sample's padded input is stored plane by plane, (Dp, C, Hp, Wp): to winograd5's
input transform a stack of 2-D images, whose tile lines (ty of plane d) follow each other, so
a chunk of consecutive planes has V[ξ] (C × planes·P) with plane d + kd's columns kd·P after
plane d's. The three products of an output chunk read one V at three column offsets, with no
copies; the output transform writes the chunk's planes through a (OD, Cout, OH, OW) view of
the sample's output. A chunk of output planes z0 .. z0 + planes transforms input planes
z0 .. z0 + planes + 2: the two past its end are transformed again by the next chunk.

Determinism: the forward splits the batch's chunks into fixed contiguous blocks, one per
thread; the backward whole samples (the input gradient adds the chunks' overlapping planes),
or, for a batch smaller than the thread count, fixed blocks of chunks with each block's
first chunk in private planes added in block order; per-block partial weight gradients are
added in block order too.

Debugging: with ``NUMBA_DISABLE_JIT=1`` these are plain Python (slow) that pdb can step into.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import config
from .blas import gemm, gemm_small_blocks
from .conv import row_sum, sum_blocks, zero_fill
from .winograd4 import STEP, _grad_output_transform, _output_transform
from .winograd5 import _input_transform, _input_transform_backward


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _copy_rows(src, start, src_step, dst, first, dst_step, rows, length):
    """dst[first + r·dst_step + j] = src[start + r·src_step + j] for r < rows, j < length.

    Flat arrays and unsigned offsets, as in winograd5: a view per row (these rows are short,
    16 values on a 16² map) cost more than the copy (a crop through row views took 1.0 of a
    13.8 ms backward on one core)."""
    u = np.uint64
    s, d, n = u(start), u(first), u(length)
    for _ in range(rows):
        for j in range(n):
            dst[d + j] = src[s + j]
        s += u(src_step)
        d += u(dst_step)


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _pad(x, padding, xpad):
    """xpad[front + z, c, top + i, left + j] = x[c, z, i, j], zeros elsewhere: one sample's
    padded input plane by plane. Shapes: x (C, D, H, W) and xpad (Dp, C, Hp, Wp), contiguous."""
    n_channels, depth, height, width = x.shape
    padded_height, padded_width = xpad.shape[2], xpad.shape[3]
    front, top, left = padding
    src, dst = x.reshape(-1), xpad.reshape(-1)
    zero_fill(dst)
    for z in range(depth):
        for c in range(n_channels):
            start = (c * depth + z) * height * width
            first = (((front + z) * n_channels + c) * padded_height + top) * padded_width + left
            _copy_rows(src, start, width, dst, first, padded_width, height, width)


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _crop(xpad, padding, x):
    """x = the window of xpad that :func:`_pad` filled: its transpose."""
    n_channels, depth, height, width = x.shape
    padded_height, padded_width = xpad.shape[2], xpad.shape[3]
    front, top, left = padding
    src, dst = xpad.reshape(-1), x.reshape(-1)
    for z in range(depth):
        for c in range(n_channels):
            start = (((front + z) * n_channels + c) * padded_height + top) * padded_width + left
            first = (c * depth + z) * height * width
            _copy_rows(src, start, padded_width, dst, first, width, height, width)


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _chunk(j, chunks, planes, od):
    """(sample, first output plane, planes) of chunk j; a sample has ``chunks`` of them."""
    n = j // chunks
    z0 = (j - n * chunks) * planes
    return n, z0, min(planes, od - z0)


@njit(parallel=True, fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def winograd3d4_forward(x, u, bias, relu, padding, planes, out, xpad, v, m):
    """out = conv3×3×3(x, g) + bias (then max(·, 0) if ``relu``), u = the transformed weights.

    Shapes: x (N, C, D, H, W); u (3, 36, Cout, C): U_kd = winograd4's transform of
    g[:, :, kd]; bias (Cout,) (zeros for none); padding (front, top, left); out (N, Cout, OD,
    OH, OW) written. Work space: xpad (N, OD + 2, C, 4·th + 2, 4·tw + 2), th = ⌈OH/4⌉,
    tw = ⌈OW/4⌉ (see :func:`_pad`); v (T, 36, ≥ C·(planes + 2)·th·tw), m (T, 36,
    ≥ Cout·planes·th·tw): one per block.
    Loop nest: pad every sample; then for block t of chunks (the batch's chunks of ``planes``
    output planes split into T even runs): V = Bᵀ d B for the chunk's planes + 2 input
    planes; M[ξ] = Σ_kd U_kd[ξ] @ V[ξ] (columns kd·P on); out = Aᵀ M A + bias.
    Parallel over: samples (padding xpad[n]), then blocks of chunks (block t writes only its
    chunks' output planes, and v[t], m[t]: race-free).
    """
    n_batch, n_channels = x.shape[0], x.shape[1]
    n_out, od = out.shape[1], out.shape[2]
    n_blocks = v.shape[0]
    depth, height, width = xpad.shape[1], xpad.shape[3], xpad.shape[4]
    th, tw = (height - 2) // STEP, (width - 2) // STEP
    per_plane = th * tw
    for n in prange(n_batch):
        _pad(x[n], padding, xpad[n])
    stack = xpad.reshape(n_batch * depth, n_channels, height, width)  # images for winograd5
    chunks = (od + planes - 1) // planes
    total = n_batch * chunks
    for t in prange(n_blocks):
        for j in range((t * total) // n_blocks, ((t + 1) * total) // n_blocks):
            n, z0, count = _chunk(j, chunks, planes, od)
            line0 = (n * depth + z0) * th
            _input_transform(stack, line0, line0 + (count + 2) * th, STEP, v[t])
            tiles_in, tiles = (count + 2) * per_plane, count * per_plane
            for k in range(36):
                for kd in range(3):
                    gemm_small_blocks(
                        False, n_out, tiles, n_channels,
                        u[kd, k].reshape(-1), n_channels,
                        v[t, k, kd * per_plane :], tiles_in,
                        0.0 if kd == 0 else 1.0, m[t, k], tiles,
                    )  # fmt: skip
            # The sample's output as a stack of 2-D outputs (OD, Cout, OH, OW): a view.
            planes_out = out[n].transpose((1, 0, 2, 3))
            _output_transform(m[t], bias, relu, z0 * th, (z0 + count) * th, th, planes_out)


@njit(fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def _chunk_backward(stack, grad_out, u, n, z0, count, v, m, partial_u, target, line):
    """One chunk of the backward: output planes z0 .. z0 + count of sample n.

    V by tile of the chunk's input planes (from ``stack``, the padded input as images); dM
    from the chunk's gradient, read as a stack of 2-D gradients (planes z0 .. z0 + count,
    each Cout × OH × OW: a transposed view, as the forward writes its output); per ξ:
    partial_u[kd, ξ] += dM[ξ] @ V[ξ]ᵀ (rows kd·P on),
    dV[ξ] = Σ_kd U_kd[ξ]ᵀ @ dM[ξ] into columns kd·P on (in V's space, V[ξ] being used up);
    then B dV Bᵀ added into ``target`` (images) from image line ``line`` on.
    Shapes: v (36, ≥ C·(count + 2)·P), m (36, ≥ Cout·count·P), partial_u (3·36·Cout·C,).
    """
    n_out, od = grad_out.shape[1], grad_out.shape[2]
    n_channels, height, width = stack.shape[1], stack.shape[2], stack.shape[3]
    depth = od + 2  # padded input planes a sample
    th, tw = (height - 2) // STEP, (width - 2) // STEP
    per_plane = th * tw
    step = n_out * n_channels
    line0 = (n * depth + z0) * th
    line1 = line0 + (count + 2) * th
    tiles_in, tiles = (count + 2) * per_plane, count * per_plane
    _input_transform(stack, line0, line1, STEP, v, True)
    planes = grad_out[n, :, z0 : z0 + count].transpose((1, 0, 2, 3))  # (count, Cout, ...)
    _grad_output_transform(planes, 0, count * th, th, m)
    for k in range(36):
        for kd in range(3):
            # dU_kd[ξ] += dM[ξ] (Cout × tiles) @ V[ξ]ᵀ's rows kd·P on (tiles × C)
            gemm(
                False, False, n_out, n_channels, tiles,
                m[k], tiles,
                v[k, kd * per_plane * n_channels :], n_channels,
                1.0, partial_u[(36 * kd + k) * step :], n_channels,
            )  # fmt: skip
        dv = v[k, : n_channels * tiles_in]
        zero_fill(dv)
        for kd in range(3):
            # dV[ξ][:, kd·P on] += U_kd[ξ]ᵀ (C × Cout) @ dM[ξ] (Cout × tiles)
            gemm(
                True, False, n_channels, tiles, n_out,
                u[kd, k].reshape(-1), n_channels,
                m[k], tiles,
                1.0, dv[kd * per_plane :], tiles_in,
            )  # fmt: skip
    _input_transform_backward(v, line, line + (count + 2) * th, STEP, target)


@njit(parallel=True, fastmath=config.WINOGRAD_FASTMATH, cache=config.CACHE)
def winograd3d4_backward(
    xpad, u, grad_out, padding, planes, grad_x, grad_u, grad_b, gxpad, v, m, partial_u,
    partial_b, private,
):  # fmt: skip
    """All three gradients of :func:`winograd3d4_forward`, in the Winograd domain.

    Shapes: xpad as the forward left it; u (3, 36, Cout, C); grad_out (N, Cout, OD, OH, OW);
    grad_x (N, C, D, H, W), grad_u (3, 36, Cout, C) and grad_b (Cout,) or (0,) overwritten
    (grad_u is the gradient of u: winograd4's weight transform backward turns each kd's into
    the weight gradient). Work space: gxpad like xpad; v, m as in the forward;
    partial_u (T, 3·36·Cout·C), partial_b (T, ≥ Cout); private
    (T, planes + 2, C, Hp, Wp) when N < T (else any, unused).
    Loop nest: for block t: for each of its chunks, :func:`_chunk_backward`; crop gxpad into
    grad_x; grad_u = Σ_t partial_u[t] and grad_b likewise, in block order.
    Parallel over: blocks of whole samples when N ≥ T (block t writes gxpad[n] and grad_x[n]
    of its samples, its own work rows, its partials). With fewer samples than blocks, blocks
    of chunks: neighbouring chunks of a sample add into two common input planes, so a block's
    first chunk (unless a sample's first) goes into private[t], added into gxpad in block
    order after the parallel loop; the crop follows (few samples: serial).
    """
    n_batch, n_channels = grad_x.shape[0], grad_x.shape[1]
    n_out, od = grad_out.shape[1], grad_out.shape[2]
    n_blocks = v.shape[0]
    depth, height, width = xpad.shape[1], xpad.shape[3], xpad.shape[4]
    th = (height - 2) // STEP
    stack = xpad.reshape(n_batch * depth, n_channels, height, width)
    gstack = gxpad.reshape(n_batch * depth, n_channels, height, width)
    plane = grad_out.shape[3] * grad_out.shape[4]
    chunks = (od + planes - 1) // planes
    # Chunks of one plane would also overlap the chunk after next: whole samples then.
    by_sample = n_batch >= n_blocks or planes < 2
    if not by_sample:  # zeroed before any block adds into them
        for n in range(n_batch):
            zero_fill(gxpad[n].reshape(-1))
    total = n_batch * chunks
    for t in prange(n_blocks):
        # Loops and serial helpers only: whole-array statements here would each become a
        # parallel loop of their own, slow to compile (see conv.py).
        zero_fill(partial_u[t])
        zero_fill(partial_b[t])
        # Work units are chunks: whole samples' worth of them when by_sample.
        per = chunks if by_sample else 1
        j0 = ((t * total // per) // n_blocks) * per
        j1 = ((((t + 1) * total) // per) // n_blocks) * per
        for j in range(j0, j1):
            n, z0, count = _chunk(j, chunks, planes, od)
            if by_sample and z0 == 0:
                zero_fill(gxpad[n].reshape(-1))
            # One call site for the chunk (LLVM would optimise an inlined copy per site):
            # into gxpad, or a block's first chunk that shares planes, into private[t].
            target, line = gstack, (n * depth + z0) * th
            if not by_sample and j == j0 and z0 > 0:
                zero_fill(private[t].reshape(-1))
                target, line = private[t], 0
            _chunk_backward(stack, grad_out, u, n, z0, count, v[t], m[t], partial_u[t],
                            target, line)  # fmt: skip
            for o in range(grad_b.shape[0]):
                start = ((n * n_out + o) * od + z0) * plane
                partial_b[t, o] += row_sum(grad_out.reshape(-1)[start : start + count * plane])
            if by_sample and z0 + count == od:
                _crop(gxpad[n], padding, grad_x[n])
    if not by_sample:
        for t in range(n_blocks):  # the private chunks, in block order
            j0 = (t * total) // n_blocks
            if j0 < ((t + 1) * total) // n_blocks:
                n, z0, count = _chunk(j0, chunks, planes, od)
                if z0 > 0:
                    size = (count + 2) * n_channels * height * width
                    first = (n * depth + z0) * n_channels * height * width
                    src, dst = private[t].reshape(-1), gxpad.reshape(-1)
                    for q in range(size):
                        dst[first + q] += src[q]
        for n in range(n_batch):
            _crop(gxpad[n], padding, grad_x[n])
    sum_blocks(partial_u, grad_u.reshape(-1))
    sum_blocks(partial_b, grad_b)
