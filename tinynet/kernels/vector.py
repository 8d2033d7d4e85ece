"""Sixteen values at a time: fixed-width vector loads and stores, written as LLVM IR.

LLVM's loop vectoriser handles a loop of unknown length by running a vector body over as
many iterations as it can (16 float32 values per AVX-512 register, and usually several
registers per iteration) and the rest one by one. The rows a convolution copies are short,
16 to 32 values: for them the vector body often never runs, and the copy goes one value at a
time. Two such copies measured (one thread, 32 → 64 3×3 stride 2 on (64, 32, 32²)): the
output rows of 16 taken out of a wider work plane (``conv_small._store``) 0.35 ms of a 7.8 ms
forward, the input split into the stride's phases (``conv._phase_plane``) 1.26 ms.

The intrinsics here (:func:`store_vector`, :func:`deinterleave_vector` and its inverse
:func:`interleave_vector`, :func:`transpose_vector`) each emit vector loads (of 16 or 8
values, twice that to split by parity, or 16 rows of 16 to transpose), the arithmetic or
shuffles on whole vectors, and vector stores, whatever the surrounding loop. The caller
checks the bounds (they read and write exactly the positions named, unaligned); the row
functions below do, covering a row of 16 or more in chunks of 16 with the last one moved
back to end at the row's end, overlapping the one before (a copy writes those values twice,
the same both times), a row of 8 to 15 with two overlapping chunks of 8, and shorter rows
with plain loops. :func:`transpose` likewise covers a matrix in 16 × 16 blocks: the
channels-last copy of the depthwise kernel for small planes (``conv_forward_depthwise_small``),
a strided copy one value at a time before, took the layer's forward on (64, 64, 16²), 5×5
stride 2 dilation 2, from 0.54 to 0.25 ms.

Where this did not help: the Winograd kernels' output rows (``_rows_to_output``, 8 to 32
values) took as long vectorised, though leaving the copy out saved 6–17% of a forward: its
cost seems to be the output's first writes to memory, which that copy makes.

Debugging: with ``NUMBA_DISABLE_JIT=1`` each is replaced by the same operation in NumPy.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .. import config

WIDTH = 16  # values per load or store; a chunk


def _contiguous(*array_types):
    """Whether these Numba types are 1-D contiguous arrays (a vector load reads its values
    side by side: a strided view must not type-check)."""
    return all(isinstance(a, types.Array) and a.ndim == 1 and a.layout in "CF" for a in array_types)


def _width(lanes, *array_types):
    """The constant ``lanes`` as an int, or None (Numba then reports a typing error) when it
    is not a constant or the arrays are not 1-D contiguous."""
    if not isinstance(lanes, types.IntegerLiteral) or not _contiguous(*array_types):
        return None
    return lanes.literal_value


def _pointer(context, builder, array_type, array, index, lanes):
    """A pointer to ``lanes`` values of array (a Numba array value) from flat ``index``."""
    data = context.make_array(array_type)(context, builder, array).data
    vector = ir.VectorType(context.get_data_type(array_type.dtype), lanes)
    return builder.bitcast(builder.gep(data, [index]), vector.as_pointer())


@intrinsic
def store_vector(typingctx, dst, d, src, s, b, relu, lanes):
    """dst[d + q] = src[s + q] (+ b unless b is None) for q < lanes, then max(·, 0) if
    ``relu`` (a NaN stays NaN, as in ReLU). dst and src: 1-D contiguous arrays of one float
    type; d, s: uint64; lanes: a constant (16, or 8 for rows shorter than 16)."""
    width = _width(lanes, dst, src)
    if width is None:
        return None
    sig = types.void(dst, d, src, s, b, relu, lanes)

    def codegen(context, builder, signature, args):
        dst_v, d_v, src_v, s_v, b_v, relu_v, _ = args
        dtype = signature.args[0].dtype
        source = _pointer(context, builder, signature.args[2], src_v, s_v, width)
        value = builder.load(source, align=1)
        vector = value.type
        if signature.args[4] != types.none:
            bias = context.cast(builder, b_v, signature.args[4], dtype)
            lane0 = ir.Constant(ir.IntType(32), 0)
            bias = builder.insert_element(ir.Constant(vector, ir.Undefined), bias, lane0)
            splat = ir.Constant(ir.VectorType(ir.IntType(32), width), [0] * width)
            bias = builder.shuffle_vector(bias, ir.Constant(vector, ir.Undefined), splat)
            value = builder.fadd(value, bias)
        zero = ir.Constant(vector, [0.0] * width)
        clipped = builder.select(builder.fcmp_ordered("<=", value, zero), zero, value)
        value = builder.select(relu_v, clipped, value)
        target = _pointer(context, builder, signature.args[0], dst_v, d_v, width)
        builder.store(value, target, align=1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def deinterleave_vector(typingctx, even, e, odd, o, src, s, lanes):
    """even[e + q] = src[s + 2q], odd[o + q] = src[s + 2q + 1] for q < lanes: 2·lanes
    consecutive values split by parity (one load, two shuffles, two stores). even, odd and
    src: 1-D contiguous arrays of one float type (even and odd may be the same array); e, o,
    s: uint64; lanes: a constant (16, or 8)."""
    width = _width(lanes, even, odd, src)
    if width is None:
        return None
    sig = types.void(even, e, odd, o, src, s, lanes)

    def codegen(context, builder, signature, args):
        even_v, e_v, odd_v, o_v, src_v, s_v, _ = args
        source = _pointer(context, builder, signature.args[4], src_v, s_v, 2 * width)
        pairs = builder.load(source, align=1)
        undefined = ir.Constant(pairs.type, ir.Undefined)
        mask = ir.VectorType(ir.IntType(32), width)
        for parity, array, index, out in ((0, 0, e_v, even_v), (1, 2, o_v, odd_v)):
            picks = ir.Constant(mask, list(range(parity, 2 * width, 2)))
            half = builder.shuffle_vector(pairs, undefined, picks)
            target = _pointer(context, builder, signature.args[array], out, index, width)
            builder.store(half, target, align=1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def interleave_vector(typingctx, dst, d, even, e, odd, o, lanes):
    """dst[d + 2q] = even[e + q], dst[d + 2q + 1] = odd[o + q] for q < lanes: the inverse of
    :func:`deinterleave_vector` (two loads, one shuffle, one store of 2·lanes values). dst,
    even and odd: 1-D contiguous arrays of one float type (even and odd may be the same
    array, not dst); d, e, o: uint64; lanes: a constant (16, or 8)."""
    width = _width(lanes, dst, even, odd)
    if width is None:
        return None
    sig = types.void(dst, d, even, e, odd, o, lanes)

    def codegen(context, builder, signature, args):
        dst_v, d_v, even_v, e_v, odd_v, o_v, _ = args
        halves = []
        for array, index, values in ((2, e_v, even_v), (4, o_v, odd_v)):
            pointer = _pointer(context, builder, signature.args[array], values, index, width)
            halves.append(builder.load(pointer, align=1))
        evens, odds = halves
        picks = [i // 2 + (width if i % 2 else 0) for i in range(2 * width)]
        pairs = builder.shuffle_vector(
            evens, odds, ir.Constant(ir.VectorType(ir.IntType(32), 2 * width), picks)
        )
        target = _pointer(context, builder, signature.args[0], dst_v, d_v, 2 * width)
        builder.store(pairs, target, align=1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def transpose_vector(typingctx, dst, d, dstride, src, s, sstride):
    """dst[d + j·dstride + i] = src[s + i·sstride + j] for i, j < 16: a 16 × 16 block
    transposed in registers (16 loads, 4 × 16 two-vector shuffles, 16 stores: a strided
    copy would read or write one value at a time). dst and src: 1-D contiguous arrays of one
    float type, not overlapping; d, dstride, s, sstride: uint64."""
    if not _contiguous(dst, src):
        return None
    sig = types.void(dst, d, dstride, src, s, sstride)

    def codegen(context, builder, signature, args):
        dst_v, d_v, dstride_v, src_v, s_v, sstride_v = args
        rows = []
        for i in range(WIDTH):
            index = builder.add(s_v, builder.mul(sstride_v, ir.Constant(s_v.type, i)))
            pointer = _pointer(context, builder, signature.args[3], src_v, index, WIDTH)
            rows.append(builder.load(pointer, align=1))
        # Swap the off-diagonal b × b blocks of every 2b × 2b block, for b = 8, 4, 2, 1:
        # row r (bit b clear) keeps its lanes c without bit b and takes row r + b's lanes
        # c − b; row r + b takes row r's lanes c + b and keeps its own lanes c with bit b.
        mask = ir.VectorType(ir.IntType(32), WIDTH)
        b = WIDTH // 2
        while b:
            low = [c if not c & b else WIDTH + c - b for c in range(WIDTH)]
            high = [c + b if not c & b else WIDTH + c for c in range(WIDTH)]
            for r in range(WIDTH):
                if not r & b:
                    top, bottom = rows[r], rows[r + b]
                    rows[r] = builder.shuffle_vector(top, bottom, ir.Constant(mask, low))
                    rows[r + b] = builder.shuffle_vector(top, bottom, ir.Constant(mask, high))
            b //= 2
        for j in range(WIDTH):
            index = builder.add(d_v, builder.mul(dstride_v, ir.Constant(d_v.type, j)))
            pointer = _pointer(context, builder, signature.args[0], dst_v, index, WIDTH)
            builder.store(rows[j], pointer, align=1)
        return context.get_dummy_value()

    return sig, codegen


def _store_vector_numpy(dst, d, src, s, b, relu, lanes):
    """:func:`store_vector` in NumPy, for ``NUMBA_DISABLE_JIT=1``."""
    d, s = int(d), int(s)
    v = src[s : s + lanes] if b is None else src[s : s + lanes] + b
    dst[d : d + lanes] = np.where(v <= 0, 0, v) if relu else v


def _deinterleave_vector_numpy(even, e, odd, o, src, s, lanes):
    """:func:`deinterleave_vector` in NumPy, for ``NUMBA_DISABLE_JIT=1``."""
    e, o, s = int(e), int(o), int(s)
    pairs = src[s : s + 2 * lanes].copy()  # even and odd may overlap src's array
    even[e : e + lanes] = pairs[0::2]
    odd[o : o + lanes] = pairs[1::2]


def _interleave_vector_numpy(dst, d, even, e, odd, o, lanes):
    """:func:`interleave_vector` in NumPy, for ``NUMBA_DISABLE_JIT=1``."""
    d, e, o = int(d), int(e), int(o)
    dst[d : d + 2 * lanes : 2] = even[e : e + lanes]
    dst[d + 1 : d + 2 * lanes : 2] = odd[o : o + lanes]


def _transpose_vector_numpy(dst, d, dstride, src, s, sstride):
    """:func:`transpose_vector` in NumPy, for ``NUMBA_DISABLE_JIT=1``."""
    d, dstride, s, sstride = int(d), int(dstride), int(s), int(sstride)
    block = np.lib.stride_tricks.as_strided(
        src[s:], (WIDTH, WIDTH), (sstride * src.itemsize, src.itemsize)
    ).copy()
    for j in range(WIDTH):
        dst[d + j * dstride : d + j * dstride + WIDTH] = block[:, j]


if numba.config.DISABLE_JIT:
    store_vector = _store_vector_numpy
    deinterleave_vector = _deinterleave_vector_numpy
    transpose_vector = _transpose_vector_numpy
    interleave_vector = _interleave_vector_numpy


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def store_row(dst, d, src, s, length, b, relu):
    """dst[d + q] = src[s + q] (+ b unless b is None) for q < length, then max(·, 0) if
    ``relu``: in vectors of 16 (the last one overlapping) from 16 values, two overlapping
    vectors of 8 from 8, one value at a time below. dst and src must be different arrays."""
    d, s = np.uint64(d), np.uint64(s)
    if length >= WIDTH:
        for q0 in range(0, length, WIDTH):
            q = np.uint64(min(q0, length - WIDTH))
            store_vector(dst, d + q, src, s + q, b, relu, 16)
    elif length >= WIDTH // 2:
        q = np.uint64(length - WIDTH // 2)
        store_vector(dst, d, src, s, b, relu, 8)
        if q:  # a row of exactly 8 is one vector
            store_vector(dst, d + q, src, s + q, b, relu, 8)
    elif b is None:
        for q in range(np.uint64(length)):
            v = src[s + q]
            dst[d + q] = (0 if v <= 0 else v) if relu else v
    else:
        for q in range(np.uint64(length)):
            v = src[s + q] + b
            dst[d + q] = (0 if v <= 0 else v) if relu else v


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def deinterleave_row(even, e, odd, o, src, s, pairs):
    """even[e + q] = src[s + 2q], odd[o + q] = src[s + 2q + 1] for q < pairs: in chunks of 16
    pairs (the last one overlapping) from 16 pairs, two overlapping chunks of 8 from 8, one
    pair at a time below. even and odd must not overlap src."""
    e, o, s = np.uint64(e), np.uint64(o), np.uint64(s)
    if pairs >= WIDTH:
        for q0 in range(0, pairs, WIDTH):
            q = np.uint64(min(q0, pairs - WIDTH))
            deinterleave_vector(even, e + q, odd, o + q, src, s + q + q, 16)
    elif pairs >= WIDTH // 2:
        q = np.uint64(pairs - WIDTH // 2)
        deinterleave_vector(even, e, odd, o, src, s, 8)
        if q:  # exactly 8 pairs are one vector
            deinterleave_vector(even, e + q, odd, o + q, src, s + q + q, 8)
    else:
        two = np.uint64(2)
        for q in range(np.uint64(pairs)):
            even[e + q] = src[s + two * q]
            odd[o + q] = src[s + two * q + np.uint64(1)]


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def interleave_row(dst, d, even, e, odd, o, pairs):
    """dst[d + 2q] = even[e + q], dst[d + 2q + 1] = odd[o + q] for q < pairs: the inverse of
    :func:`deinterleave_row`, in the same chunks. dst must not overlap even or odd."""
    d, e, o = np.uint64(d), np.uint64(e), np.uint64(o)
    if pairs >= WIDTH:
        for q0 in range(0, pairs, WIDTH):
            q = np.uint64(min(q0, pairs - WIDTH))
            interleave_vector(dst, d + q + q, even, e + q, odd, o + q, 16)
    elif pairs >= WIDTH // 2:
        q = np.uint64(pairs - WIDTH // 2)
        interleave_vector(dst, d, even, e, odd, o, 8)
        if q:  # exactly 8 pairs are one vector
            interleave_vector(dst, d + q + q, even, e + q, odd, o + q, 8)
    else:
        two = np.uint64(2)
        for q in range(np.uint64(pairs)):
            dst[d + two * q] = even[e + q]
            dst[d + two * q + np.uint64(1)] = odd[o + q]


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def transpose(src, s, rows, cols, dst, d):
    """dst[d + j·rows + i] = src[s + i·cols + j] for i < rows, j < cols: a (rows × cols)
    matrix stored flat from s, transposed into dst from d. In 16 × 16 blocks (the last block
    of each axis moved back to overlap the one before) when both sides are 16 or more, else
    one value at a time. dst and src must not overlap."""
    s, d = np.uint64(s), np.uint64(d)
    r, c = np.uint64(rows), np.uint64(cols)
    if rows < WIDTH or cols < WIDTH:
        for i in range(r):
            for j in range(c):
                dst[d + j * r + i] = src[s + i * c + j]
        return
    for i0 in range(0, rows, WIDTH):
        i = np.uint64(min(i0, rows - WIDTH))
        for j0 in range(0, cols, WIDTH):
            j = np.uint64(min(j0, cols - WIDTH))
            transpose_vector(dst, d + j * r + i, r, src, s + i * c + j, c)
