"""Max, average and adaptive average pooling over images and volumes, as in torch.nn.

Each output is a reduction over a window of one channel of one example:

    max:      out[n, c, o] = max_{t in window(o)} x[n, c, t]          (padding counts as -inf)
    average:  out[n, c, o] = Σ_{t in window(o)} x[n, c, t] / divisor   (padding counts as 0)

Along each axis window o starts at o·stride − padding and has ``kernel_size`` taps spaced
``dilation`` apart. The layers turn this into a table per axis (first tap inside the input,
number of taps inside, divisor factor) once per input size, and the kernels in
``tinynet/kernels/pooling.py`` loop over the tables; an image is a volume of depth 1.
Pooling has no parameters, so float32 and float64 inputs keep their dtype.
"""

from __future__ import annotations

import math

import numpy as np

from ..kernels import pooling as kernels
from .module import Module
from .validation import check_grad, check_input, layer_name, ntuple, require_forward

_LAYOUTS = {2: "(N, C, H, W) or (C, H, W)", 3: "(N, C, D, H, W) or (C, D, H, W)"}
# A 2-D layer's depth axis: one window, starting at 0, one tap, divisor factor 1.
_FLAT = np.ones((3, 1), dtype=np.int64) * np.array([[0], [1], [1]])


def pooled_size(size, kernel, stride, padding, dilation, ceil_mode) -> int:
    """PyTorch's output size along one axis (``pooling_output_shape``).

    In ceil mode the last window may hang over the padded input, but it must start inside
    the input or its left padding; a window starting in the right padding is dropped.
    """
    span = dilation * (kernel - 1) + 1
    out = (size + 2 * padding - span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


class _PoolNd(Module):
    """Input checks and saved state shared by every pooling layer."""

    _dims = 0

    def __init__(self):
        super().__init__()
        self._tables = {}  # input spatial size -> (output size, window tables)
        self._saved = None  # (input shape, output shape, dtype) of the last forward

    def _check(self, x) -> np.ndarray:
        """Cast and validate ``x``: (N, C, *spatial) or unbatched (C, *spatial), non-empty."""
        d = self._dims
        x = check_input(self, x, (d + 1, d + 2), _LAYOUTS[d])
        if 0 in x.shape[-d - 1 :]:
            raise ValueError(
                f"{layer_name(self)} expected non-empty channel and spatial sizes, "
                f"got shape {x.shape}"
            )
        return np.ascontiguousarray(x)

    def _windows(self, size):
        """(output size, window tables) for an input of spatial ``size``, cached per size."""
        entry = self._tables.get(size)
        if entry is None:
            out_size = self._output_size(size)
            tables = [self._axis_table(a, s, o) for a, (s, o) in enumerate(zip(size, out_size))]
            entry = (out_size, [_FLAT] * (3 - self._dims) + tables)
            self._tables[size] = entry
        return entry

    def _output_size(self, size):
        args = zip(size, self.kernel_size, self.stride, self.padding, self._dilation())
        out = tuple(pooled_size(*a, self.ceil_mode) for a in args)
        if min(out) < 1:
            span = tuple(d * (k - 1) + 1 for k, d in zip(self.kernel_size, self._dilation()))
            padded = tuple(s + 2 * p for s, p in zip(size, self.padding))
            raise ValueError(
                f"{layer_name(self)} expected a padded input size (size + 2·padding) of at "
                f"least {span} (dilation·(kernel − 1) + 1), got {padded} for input size "
                f"{tuple(size)}; the output would be empty"
            )
        return out

    def _dilation(self):
        return (1,) * self._dims

    def _planes(self, x, out_size):
        """x as (P, D, H, W) planes, P = N·C, and an empty output of matching shape."""
        d = self._dims
        planes = math.prod(x.shape[:-d])
        depth = (1,) * (3 - d)
        out = np.empty((planes, *depth, *out_size), dtype=x.dtype)
        self._saved = (x.shape, x.shape[:-d] + tuple(out_size), x.dtype)
        return x.reshape(planes, *depth, *x.shape[-d:]), out

    def _grad_out(self, grad_out) -> np.ndarray:
        require_forward(self, self._saved)
        _, out_shape, dtype = self._saved
        return np.ascontiguousarray(check_grad(self, grad_out, out_shape, dtype))

    def describe(self) -> str:
        return f"{type(self).__name__}(kernel_size={self.kernel_size})"

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


def _check_padding(name, kernel_size, padding):
    # PyTorch's rule: with more padding a window could lie entirely in the padding.
    if any(p > k // 2 for k, p in zip(kernel_size, padding)):
        raise ValueError(
            f"{name} expected padding at most half the kernel size "
            f"({tuple(k // 2 for k in kernel_size)}), got padding={padding}"
        )


def _check_flag(name, what, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} expected {what} to be a bool, got {value!r}")
    return bool(value)


class _MaxPoolNd(_PoolNd):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__()
        name, n = type(self).__name__, self._dims
        self.kernel_size = ntuple(name, "kernel_size", kernel_size, n, 1)
        self.stride = self.kernel_size if stride is None else ntuple(name, "stride", stride, n, 1)
        self.padding = ntuple(name, "padding", padding, n, 0)
        self.dilation = ntuple(name, "dilation", dilation, n, 1)
        self.ceil_mode = _check_flag(name, "ceil_mode", ceil_mode)
        _check_padding(name, self.kernel_size, self.padding)
        self._argmax = None

    def _dilation(self):
        return self.dilation

    def _axis_table(self, axis, size, out):
        """Rows: first tap inside the input, number of taps inside."""
        k, s, p, d = self.kernel_size[axis], self.stride[axis], self.padding[axis], self.dilation[axis]
        start = np.arange(out) * s - p
        skip = np.where(start < 0, -(start // d), 0)  # taps in the left padding: ⌈−start/d⌉
        stop = np.minimum(k, -((start - size) // d))  # taps before the input's end
        return np.stack([start + skip * d, np.maximum(stop - skip, 0)])

    def forward(self, x):
        x = self._check(x)
        out_size, tables = self._windows(x.shape[-self._dims :])
        planes, out = self._planes(x, out_size)
        if math.prod(planes.shape[1:]) > np.iinfo(np.int32).max:
            raise ValueError(f"{layer_name(self)} expected planes of fewer than 2**31 values")
        argmax = np.empty(out.shape, dtype=np.int32)  # flat index within the plane
        dilation = (1,) * (3 - self._dims) + self.dilation
        kernels.max_pool_forward(planes, *tables, dilation, out, argmax)
        self._argmax = argmax
        return out.reshape(self._saved[1])

    def backward(self, grad_out):
        grad_out = self._grad_out(grad_out)
        in_shape, _, dtype = self._saved
        argmax = self._argmax.reshape(len(self._argmax), -1)
        grad_x = np.empty((len(argmax), math.prod(in_shape) // max(len(argmax), 1)), dtype)
        kernels.max_pool_backward(grad_out.reshape(argmax.shape), argmax, grad_x)
        return grad_x.reshape(in_shape)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, dilation={self.dilation}, ceil_mode={self.ceil_mode}"
        )


class MaxPool2d(_MaxPoolNd):
    """2-D max pooling over (N, C, H, W), as ``torch.nn.MaxPool2d``.

    out[n, c, i, j] = max over a, b < kernel of x[n, c, i·sh − ph + a·dh, j·sw − pw + b·dw],
    padding counting as -inf. stride defaults to kernel_size; padding ≤ kernel_size / 2.
    Ties go to the first maximum in scan order, and a NaN in the window gives NaN, as in
    PyTorch; backward routes each output gradient to that one input.

    Shape: input (N, C, H, W) or (C, H, W); output (N, C, H_out, W_out) with
    H_out = ⌊(H + 2·ph − dh·(kh − 1) − 1) / sh⌋ + 1 (rounded up with ceil_mode, as torch).
    """

    _dims = 2


class MaxPool3d(_MaxPoolNd):
    """3-D max pooling over (N, C, D, H, W), as ``torch.nn.MaxPool3d``; see MaxPool2d.

    Shape: input (N, C, D, H, W) or (C, D, H, W); output (N, C, D_out, H_out, W_out).
    """

    _dims = 3
