"""Max, average and adaptive average pooling over images and volumes, as in torch.nn.

Each output is a reduction over a window of one channel of one example:

    max:      out[n, c, o] = max_{t in window(o)} x[n, c, t]          (padding counts as -inf)
    average:  out[n, c, o] = Σ_{t in window(o)} x[n, c, t] / divisor   (padding counts as 0)

Along each axis window o starts at o·stride − padding and has ``kernel_size`` taps spaced
``dilation`` apart. The layers turn this into a table per axis (first tap inside the input,
number of taps inside, divisor factor; see ``pooling_windows.py``) once per input size, and
the kernels in ``tinynet/kernels/pooling.py`` loop over the tables; an image is a volume of
depth 1. Pooling has no parameters, so float32 and float64 inputs keep their dtype.
"""

from __future__ import annotations

import math

import numpy as np

from .. import config
from ..kernels import pooling as kernels
from .module import Module
from .pooling_windows import (
    FLAT_AXIS,
    adaptive_window_table,
    avg_window_table,
    check_flag,
    check_padding,
    max_window_table,
    pooled_shape,
)
from .validation import check_grad, check_input, layer_name, ntuple, require_forward

_LAYOUTS = {2: "(N, C, H, W) or (C, H, W)", 3: "(N, C, D, H, W) or (C, D, H, W)"}


class _PoolNd(Module):
    """Input checks and saved state shared by every pooling layer.

    A subclass sets ``_dims`` (2 or 3) and defines ``_output_size(size)`` and
    ``_axis_table(axis, size, out)``, which describe its windows (see pooling_windows.py).
    """

    _dims = 0

    def __init__(self):
        super().__init__()
        self._tables = {}  # input spatial size -> (output size, window tables)
        self._saved = None  # (input shape, output shape, dtype) of the last forward
        self._window_tables = None  # the tables the last forward used

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
            tables = [
                self._axis_table(a, s, o)
                for a, (s, o) in enumerate(zip(size, out_size, strict=True))
            ]
            entry = (out_size, [FLAT_AXIS] * (3 - self._dims) + tables)
            self._tables[size] = entry
        return entry

    def _volume(self, shape):
        """(P, D, H, W) for a shape (..., *spatial): P = N·C planes, depth 1 for images."""
        d = self._dims
        return (math.prod(shape[:-d]),) + (1,) * (3 - d) + tuple(shape[-d:])

    def _planes(self, x, out_size):
        """x as (P, D, H, W) planes and an empty output of matching shape; saves the shapes."""
        out_shape = x.shape[: -self._dims] + tuple(out_size)
        self._saved = (x.shape, out_shape, x.dtype)
        return x.reshape(self._volume(x.shape)), np.empty(self._volume(out_shape), x.dtype)

    def _grad_out(self, grad_out) -> np.ndarray:
        require_forward(self, self._saved)
        _, out_shape, dtype = self._saved
        return np.ascontiguousarray(check_grad(self, grad_out, out_shape, dtype))

    def describe(self) -> str:
        return f"{type(self).__name__}(kernel_size={self.kernel_size})"

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class _MaxPoolNd(_PoolNd):
    def __init__(
        self,
        kernel_size,
        stride=None,
        padding=0,
        dilation=1,
        return_indices=False,
        ceil_mode=False,
    ):
        super().__init__()
        name, n = type(self).__name__, self._dims
        # torch.nn's argument order: a fifth positional argument is return_indices.
        self.return_indices = check_flag(name, "return_indices", return_indices)
        self.kernel_size = ntuple(name, "kernel_size", kernel_size, n, 1)
        self.stride = self.kernel_size if stride is None else ntuple(name, "stride", stride, n, 1)
        self.padding = ntuple(name, "padding", padding, n, 0)
        self.dilation = ntuple(name, "dilation", dilation, n, 1)
        self.ceil_mode = check_flag(name, "ceil_mode", ceil_mode)
        check_padding(name, self.kernel_size, self.padding)
        # MaxPool2d(2) and MaxPool3d(2): the commonest poolings in CNNs have kernels of their
        # own, with the taps unrolled (several times faster than the generic kernel).
        self._plain_2 = (
            self.kernel_size == self.stride == (2,) * n
            and self.padding == (0,) * n
            and self.dilation == (1,) * n
        )
        self._argmax = None

    def _output_size(self, size):
        args = (self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)
        return pooled_shape(layer_name(self), size, *args)

    def _axis_table(self, axis, size, out):
        args = (self.kernel_size, self.stride, self.padding, self.dilation)
        return max_window_table(size, out, *(a[axis] for a in args))

    def forward(self, x):
        x = self._check(x)
        size = x.shape[-self._dims :]
        out_size, tables = self._windows(size)
        planes, out = self._planes(x, out_size)
        if math.prod(planes.shape[1:]) > np.iinfo(np.int32).max:
            raise ValueError(f"{layer_name(self)} expected planes of fewer than 2**31 values")
        argmax = np.empty(out.shape, dtype=np.int32)  # flat index within the plane
        # A ceil-mode window hanging over an odd size is not a full 2×2 window.
        plain = self._plain_2 and all(2 * o <= s for o, s in zip(out_size, size))
        with config.threads_for(planes.size):
            if plain and self._dims == 2:
                kernels.max_pool2d_2x2_forward(planes[:, 0], out[:, 0], argmax[:, 0])
            elif plain:
                kernels.max_pool3d_2x2x2_forward(planes, out, argmax)
            else:
                dilation = (1,) * (3 - self._dims) + self.dilation
                kernels.max_pool_forward(planes, *tables, dilation, out, argmax)
        self._argmax = argmax
        out = out.reshape(self._saved[1])
        if self.return_indices:  # as torch: each maximum's flat index within its plane
            return out, argmax.astype(np.int64).reshape(out.shape)
        return out

    def backward(self, grad_out):
        grad_out = self._grad_out(grad_out)
        in_shape, _, dtype = self._saved
        planes = len(self._argmax)
        argmax = self._argmax.reshape(planes, math.prod(self._argmax.shape[1:]))
        grad_x = np.empty((planes, math.prod(in_shape[-self._dims :])), dtype)
        with config.threads_for(grad_x.size):
            kernels.max_pool_backward(grad_out.reshape(argmax.shape), argmax, grad_x)
        return grad_x.reshape(in_shape)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dilation={self.dilation}, ceil_mode={self.ceil_mode}"


class MaxPool2d(_MaxPoolNd):
    """2-D max pooling over (N, C, H, W), as ``torch.nn.MaxPool2d``.

    out[n, c, i, j] = max over a, b < kernel of x[n, c, i·sh − ph + a·dh, j·sw − pw + b·dw],
    padding counting as -inf. stride defaults to kernel_size; padding ≤ kernel_size / 2.
    Ties go to the first maximum in scan order, and a NaN in the window gives NaN, as in
    PyTorch; backward routes each output gradient to that one input. With dilation a window
    can have every tap in the padding: its output is -inf and it passes no gradient (PyTorch
    reports an index outside the window there). With ``return_indices`` the forward returns
    (output, indices), indices (int64, the output's shape) each maximum's flat index within
    its input plane, as torch's.

    Shape: input (N, C, H, W) or (C, H, W); output (N, C, H_out, W_out) with
    H_out = ⌊(H + 2·ph − dh·(kh − 1) − 1) / sh⌋ + 1 (rounded up with ceil_mode, as torch).
    """

    _dims = 2


class MaxPool3d(_MaxPoolNd):
    """3-D max pooling over (N, C, D, H, W), as ``torch.nn.MaxPool3d``; see MaxPool2d.

    Shape: input (N, C, D, H, W) or (C, D, H, W); output (N, C, D_out, H_out, W_out).
    """

    _dims = 3


class _AvgPoolNd(_PoolNd):
    def __init__(
        self,
        kernel_size,
        stride=None,
        padding=0,
        ceil_mode=False,
        count_include_pad=True,
        divisor_override=None,
    ):
        super().__init__()
        name, n = type(self).__name__, self._dims
        self.kernel_size = ntuple(name, "kernel_size", kernel_size, n, 1)
        self.stride = self.kernel_size if stride is None else ntuple(name, "stride", stride, n, 1)
        self.padding = ntuple(name, "padding", padding, n, 0)
        self.ceil_mode = check_flag(name, "ceil_mode", ceil_mode)
        self.count_include_pad = check_flag(name, "count_include_pad", count_include_pad)
        if divisor_override is not None and (
            isinstance(divisor_override, bool)
            or not isinstance(divisor_override, (int, np.integer))
            or divisor_override == 0
        ):
            raise ValueError(
                f"{name} expected divisor_override to be None or a non-zero int, "
                f"got {divisor_override!r}"
            )
        self.divisor_override = None if divisor_override is None else int(divisor_override)
        check_padding(name, self.kernel_size, self.padding)

    def _output_size(self, size):
        no_dilation = (1,) * self._dims
        args = (self.kernel_size, self.stride, self.padding, no_dilation, self.ceil_mode)
        return pooled_shape(layer_name(self), size, *args)

    def _axis_table(self, axis, size, out):
        args = (self.kernel_size, self.stride, self.padding)
        return avg_window_table(size, out, *(a[axis] for a in args), self.count_include_pad)

    def forward(self, x):
        x = self._check(x)
        out_size, tables = self._windows(x.shape[-self._dims :])
        planes, out = self._planes(x, out_size)
        divisor = self.divisor_override or 0  # 0: the kernel uses the tables' factors
        with config.threads_for(planes.size):
            kernels.avg_pool_forward(planes, *tables, divisor, out)
        self._window_tables = tables
        return out.reshape(self._saved[1])

    def backward(self, grad_out):
        grad_out = self._grad_out(grad_out)
        in_shape, _, dtype = self._saved
        grad_x = np.empty(self._volume(in_shape), dtype)
        divisor = self.divisor_override or 0
        grad_out = grad_out.reshape(self._volume(grad_out.shape))
        with config.threads_for(grad_x.size):
            kernels.avg_pool_backward(grad_out, *self._window_tables, divisor, grad_x)
        return grad_x.reshape(in_shape)

    def extra_repr(self) -> str:
        s = f"{super().extra_repr()}, ceil_mode={self.ceil_mode}"
        s += f", count_include_pad={self.count_include_pad}"
        if self.divisor_override is not None:
            s += f", divisor_override={self.divisor_override}"
        return s


class AvgPool2d(_AvgPoolNd):
    """2-D average pooling over (N, C, H, W), as ``torch.nn.AvgPool2d``.

    out[n, c, i, j] = Σ over the window of x / divisor, padding counting as 0. The divisor is
    divisor_override when given, else the window's size: with count_include_pad (default)
    including its padding, without it only the inputs it covers. stride defaults to
    kernel_size; padding ≤ kernel_size / 2. Backward gives each input g / divisor of every
    window containing it.

    Shape: input (N, C, H, W) or (C, H, W); output (N, C, H_out, W_out) with
    H_out = ⌊(H + 2·ph − kh) / sh⌋ + 1 (rounded up with ceil_mode, as torch).
    """

    _dims = 2


class AvgPool3d(_AvgPoolNd):
    """3-D average pooling over (N, C, D, H, W), as ``torch.nn.AvgPool3d``; see AvgPool2d.

    Unlike torch, which refuses an input smaller than the kernel here even when the padding
    makes up the difference, the rule is AvgPool2d's: the padded input must hold the kernel.

    Shape: input (N, C, D, H, W) or (C, D, H, W); output (N, C, D_out, H_out, W_out).
    """

    _dims = 3


class _AdaptiveAvgPoolNd(_PoolNd):
    def __init__(self, output_size):
        super().__init__()
        name, n = type(self).__name__, self._dims
        # None keeps that axis's input size, as in torch.
        sizes = (output_size,) * n if not isinstance(output_size, (tuple, list)) else output_size
        if len(sizes) != n or any(
            s is not None and (isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1)
            for s in sizes
        ):
            raise ValueError(
                f"{name} expected output_size to be an int >= 1 or a tuple of {n} of them "
                f"(or None), got {output_size!r}"
            )
        self.output_size = tuple(None if s is None else int(s) for s in sizes)

    def _output_size(self, size):
        return tuple(s if o is None else o for s, o in zip(size, self.output_size, strict=True))

    def _axis_table(self, axis, size, out):
        return adaptive_window_table(size, out)

    def forward(self, x):
        x = self._check(x)
        out_size, tables = self._windows(x.shape[-self._dims :])
        planes, out = self._planes(x, out_size)
        with config.threads_for(planes.size):
            if math.prod(out_size) == 1:
                # Global average pooling: a contiguous sum per plane, which vectorises.
                flat = planes.reshape(len(planes), math.prod(planes.shape[1:]))
                kernels.global_avg_pool_forward(flat, out.reshape(-1))
            else:
                kernels.avg_pool_forward(planes, *tables, 0, out)
        self._window_tables = tables
        return out.reshape(self._saved[1])

    def backward(self, grad_out):
        grad_out = self._grad_out(grad_out)
        in_shape, out_shape, dtype = self._saved
        grad_x = np.empty(self._volume(in_shape), dtype)
        with config.threads_for(grad_x.size):
            if math.prod(out_shape[-self._dims :]) == 1:
                flat = grad_x.reshape(len(grad_x), math.prod(grad_x.shape[1:]))
                kernels.global_avg_pool_backward(grad_out.reshape(-1), flat)
            else:
                grad_out = grad_out.reshape(self._volume(out_shape))
                kernels.avg_pool_backward(grad_out, *self._window_tables, 0, grad_x)
        return grad_x.reshape(in_shape)

    def describe(self) -> str:
        return f"{type(self).__name__}(output_size={self.output_size})"

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveAvgPool2d(_AdaptiveAvgPoolNd):
    """Average pooling to a fixed output size, as ``torch.nn.AdaptiveAvgPool2d``.

    Output (i, j) is the mean of input rows [⌊i·H/OH⌋, ⌈(i + 1)·H/OH⌉) and the likewise
    columns; output_size 1 is global average pooling. Shape: input (N, C, H, W) or (C, H, W);
    output (N, C, OH, OW).
    """

    _dims = 2


class AdaptiveAvgPool3d(_AdaptiveAvgPoolNd):
    """Average pooling to a fixed output size over (N, C, D, H, W), as
    ``torch.nn.AdaptiveAvgPool3d``; see AdaptiveAvgPool2d. Output (N, C, OD, OH, OW)."""

    _dims = 3
