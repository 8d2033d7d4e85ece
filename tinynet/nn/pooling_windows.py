"""Where the pooling windows lie: output sizes and one small table per spatial axis.

Along an axis of ``size`` inputs, window o starts at o·stride − padding and has ``kernel``
taps spaced ``dilation`` apart. Padding is never materialised. Instead each table row says,
for every output index o:

    row 0  the first tap that falls inside the input,
    row 1  how many taps fall inside (they are row0 + t·dilation, t < row 1),
    row 2  (average pooling) the window's size along this axis, which the mean divides by.

The kernels (``tinynet/kernels/pooling.py``) multiply the three axes' rows together, so a
skipped padded tap acts as −inf for max pooling and as 0 for average pooling. These
functions are plain NumPy, run once per input size and cached by the layers.
"""

from __future__ import annotations

import numpy as np

# The depth axis of a 2-D layer (an image is a volume of depth 1): one window, starting at 0,
# one tap, size 1.
FLAT_AXIS = np.array([[0], [1], [1]], dtype=np.int64)


def pooled_size(size, kernel, stride, padding, dilation, ceil_mode) -> int:
    """PyTorch's output size along one axis (``pooling_output_shape`` in ATen).

    In ceil mode the last window may hang over the padded input, but it must start inside
    the input or its left padding; a window starting in the right padding is dropped.
    """
    span = dilation * (kernel - 1) + 1
    out = (size + 2 * padding - span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def pooled_shape(name, size, kernel, stride, padding, dilation, ceil_mode) -> tuple[int, ...]:
    """The output's spatial shape for input ``size`` (tuples of one int per axis).

    Raises a ValueError naming the layer ``name`` when it would be empty, that is when the
    padded input is smaller than the dilated kernel (PyTorch's rule).
    """
    axes = zip(size, kernel, stride, padding, dilation, strict=True)
    out = tuple(pooled_size(*axis, ceil_mode) for axis in axes)
    if min(out) < 1:
        span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True))
        padded = tuple(s + 2 * p for s, p in zip(size, padding, strict=True))
        raise ValueError(
            f"{name} expected a padded input size (size + 2·padding) of at least {span} "
            f"(dilation·(kernel − 1) + 1), got {padded} for input size {tuple(size)}; "
            f"the output would be empty"
        )
    return out


def max_window_table(size, out, kernel, stride, padding, dilation) -> np.ndarray:
    """Rows 0 and 1 (first tap inside the input, taps inside) for max pooling.

    With dilation a window near the border can have no tap inside the input at all (every
    tap in the padding); its row 1 is 0, and the kernel reports −inf there, as PyTorch does.
    """
    start = np.arange(out) * stride - padding
    skip = np.where(start < 0, -(start // dilation), 0)  # taps in the left padding: ⌈−start/d⌉
    stop = np.minimum(kernel, -((start - size) // dilation))  # taps before the input's end
    return np.stack([start + skip * dilation, np.maximum(stop - skip, 0)])


def avg_window_table(size, out, kernel, stride, padding, count_include_pad) -> np.ndarray:
    """Rows 0, 1 and 2 for average pooling (no dilation, so the taps are consecutive).

    As PyTorch, count_include_pad counts the padding inside the window in the divisor but not
    the part of a ceil-mode window that hangs past the padding.
    """
    start = np.arange(out) * stride - padding
    end = np.minimum(start + kernel, size + padding)
    first = np.maximum(start, 0)
    count = np.minimum(end, size) - first
    return np.stack([first, count, end - start if count_include_pad else count])


def adaptive_window_table(size, out) -> np.ndarray:
    """Rows 0, 1 and 2 for adaptive average pooling.

    Bin o covers inputs [⌊o·size/out⌋, ⌈(o + 1)·size/out⌉), PyTorch's rule; neighbouring bins
    overlap by one input when out does not divide size.
    """
    o = np.arange(out)
    first = o * size // out
    count = -(-(o + 1) * size // out) - first
    return np.stack([first, count, count])


def check_padding(name, kernel_size, padding) -> None:
    """PyTorch's rule: with more padding than half the kernel a window could lie entirely in
    the padding."""
    if any(p > k // 2 for k, p in zip(kernel_size, padding, strict=True)):
        raise ValueError(
            f"{name} expected padding at most half the kernel size "
            f"({tuple(k // 2 for k in kernel_size)}), got padding={padding}"
        )


def check_flag(name, what, value) -> bool:
    """A constructor flag (ceil_mode, count_include_pad) must be a real bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} expected {what} to be a bool, got {value!r}")
    return bool(value)
