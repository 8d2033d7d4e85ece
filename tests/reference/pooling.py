"""Slow, plain NumPy pooling (2-D and 3-D) to test tinynet's kernels against.

Written from PyTorch's documentation, sharing no code with tinynet: every output position is
visited in a Python loop, its window's taps are listed explicitly, and the taps that fall
outside the input (in the padding, or past it in ceil mode) are dropped. x is (N, C, *S) with
one int per spatial axis in every argument tuple; results are float64.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np


def output_size(size, kernel, stride, padding, dilation, ceil_mode) -> int:
    """⌊ or ⌈((size + 2·padding − dilation·(kernel − 1) − 1) / stride)⌉ + 1, as the PyTorch
    docs write it; in ceil mode a last window that would start in the right padding is
    dropped ("sliding windows that would start in the right padded region are ignored")."""
    room = Fraction(size + 2 * padding - dilation * (kernel - 1) - 1, stride)
    out = (math.ceil(room) if ceil_mode else math.floor(room)) + 1
    if ceil_mode and (out - 1) * stride - padding >= size:
        out -= 1
    return out


def _windows(shape, kernel, stride, padding, dilation, ceil_mode):
    """Yield (output index, taps inside the input, taps inside the input or its padding)."""
    spatial = shape[2:]
    outs = [output_size(*a, ceil_mode) for a in zip(spatial, kernel, stride, padding, dilation)]
    for o in itertools.product(*(range(n) for n in outs)):
        inside, padded = [], []
        for t in itertools.product(*(range(k) for k in kernel)):
            pos = tuple(
                oi * s - p + ti * d for oi, s, p, ti, d in zip(o, stride, padding, t, dilation)
            )
            if all(0 <= q < n for q, n in zip(pos, spatial)):
                inside.append(pos)
            if all(-p <= q < n + p for q, n, p in zip(pos, spatial, padding)):
                padded.append(pos)
        yield o, inside, padded


def _out_shape(x, kernel, stride, padding, dilation, ceil_mode):
    sizes = zip(x.shape[2:], kernel, stride, padding, dilation)
    return x.shape[:2] + tuple(output_size(*a, ceil_mode) for a in sizes)


def _at(pos):
    """Index every (n, c) at spatial position ``pos``."""
    return (slice(None), slice(None), *pos)


def max_pool(x, grad_out, kernel, stride, padding, dilation, ceil_mode):
    """(out, grad_x): the maximum over the window's taps inside the input, the first maximum
    in scan order on ties, and its gradient routed to that tap. A window with no tap inside
    the input gives −inf and no gradient. NaN inputs are not handled."""
    x = np.asarray(x, dtype=np.float64)
    shape = _out_shape(x, kernel, stride, padding, dilation, ceil_mode)
    out = np.full(shape, -np.inf)
    grad_x = np.zeros_like(x)
    g = None if grad_out is None else np.asarray(grad_out, dtype=np.float64)
    for o, inside, _ in _windows(x.shape, kernel, stride, padding, dilation, ceil_mode):
        if not inside:
            continue
        values = np.stack([x[_at(pos)] for pos in inside], axis=-1)  # (N, C, taps)
        first_max = np.argmax(values, axis=-1)  # np.argmax returns the first maximum
        out[_at(o)] = np.max(values, axis=-1)
        if g is not None:
            for t, pos in enumerate(inside):
                grad_x[_at(pos)] += np.where(first_max == t, g[_at(o)], 0.0)
    return out, grad_x


def avg_pool(
    x, grad_out, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override=None
):
    """(out, grad_x): the window's sum over taps inside the input, divided by
    divisor_override if given, else by the number of taps inside the input and (with
    count_include_pad) its padding, and the gradient spread back with the same weights."""
    x = np.asarray(x, dtype=np.float64)
    no_dilation = (1,) * len(kernel)
    shape = _out_shape(x, kernel, stride, padding, no_dilation, ceil_mode)
    out = np.zeros(shape)
    grad_x = np.zeros_like(x)
    windows = _windows(x.shape, kernel, stride, padding, no_dilation, ceil_mode)
    for o, inside, padded in windows:
        if divisor_override is not None:
            divisor = divisor_override
        else:
            divisor = len(padded) if count_include_pad else len(inside)
        out[_at(o)] = sum(x[_at(pos)] for pos in inside) / divisor
        if grad_out is not None:
            for pos in inside:
                grad_x[_at(pos)] += np.asarray(grad_out, dtype=np.float64)[_at(o)] / divisor
    return out, grad_x


def adaptive_avg_pool(x, grad_out, output_size):
    """(out, grad_x): output o along an axis of ``size`` inputs averages inputs
    floor(o·size/out) ≤ i < ceil((o + 1)·size/out); None keeps the input size."""
    x = np.asarray(x, dtype=np.float64)
    spatial = x.shape[2:]
    outs = [s if o is None else o for s, o in zip(spatial, output_size)]
    out = np.zeros(x.shape[:2] + tuple(outs))
    grad_x = np.zeros_like(x)
    for o in itertools.product(*(range(n) for n in outs)):
        box = tuple(
            slice(math.floor(oi * s / n), math.ceil((oi + 1) * s / n))
            for oi, s, n in zip(o, spatial, outs)
        )
        region = x[_at(box)]
        count = math.prod(region.shape[2:])
        out[_at(o)] = region.reshape(*x.shape[:2], count).sum(axis=-1) / count
        if grad_out is not None:
            g = np.asarray(grad_out, dtype=np.float64)[_at(o)] / count
            grad_x[_at(box)] += g.reshape(*x.shape[:2], *([1] * len(spatial)))
    return out, grad_x


def has_empty_window(shape, kernel, stride, padding, dilation, ceil_mode) -> bool:
    """Whether some max-pooling window has every tap in the padding (possible with dilation):
    PyTorch then reports an index outside the window and its backward writes out of bounds,
    so tests compare such configurations with the reference only."""
    windows = _windows(shape, kernel, stride, padding, dilation, ceil_mode)
    return any(not inside for _, inside, _ in windows)
