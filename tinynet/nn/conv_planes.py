"""Conv3d's plane-wise path: when it applies, its buffers, forward and backward.

vol2col copies every input value kd·kh·kw times; this path unfolds each input plane once and
lets the kd depth taps share it (see ``tinynet/kernels/conv_planes.py``). Kept apart from
``conv.py`` as the Winograd path is; ``_ConvNd`` inherits these methods.
"""

from __future__ import annotations

import math

import numpy as np

from .. import config
from ..kernels import conv_planes

# Output planes per chunk: as many as keep a block's unfolded planes (P2 × planes × K2) under
# about this many bytes. Measured (float32, 1 thread, forward + backward): fewer than ~6
# planes in the buffer is slower, as the kd − sd planes that chunks share are unfolded twice
# (16³ planes of 16 channels: 42 ms at 3 planes, 36 at 6, 36 at 57; 32³: 113, 95, 98 at 3,
# 6, 14); a larger buffer costs nothing measurable.
_ROWS_BYTES = 4 << 20


class PlanesMixin:
    """Conv3d's plane-wise methods; ``_buffer`` and the attributes come from _ConvNd."""

    def _planes_applies(self):
        """Whether this layer uses the plane-wise path: an ungrouped Conv3d whose depth taps
        are consecutive planes (depth dilation 1), not a 1×1×1 one.

        Measured (forward + backward, float32, 1 thread, medians, ms, planes vs vol2col, all
        3×3×3 padding 1 unless said): (8, 16, 16³) → 32: 36.6 vs 59.7; the same with stride
        2: 6.2 vs 9.2, with a (1, 3, 3) kernel: 17.1 vs 21.1; (8, 1, 16³) → 16: 2.3 vs 3.8;
        (8, 16, 8³) → 32: 4.2 vs 8.3; (4, 8, 12³) → 8: 1.6 vs 3.9. A 1×1×1 kernel has no
        window to share and its forward is a plain product, which vol2col (a copy there) does
        faster: 2.1 vs 1.6 (the backward: 1.3 vs 2.2), so it stays on vol2col.
        """
        return (
            self._dims == 3
            and self.groups == 1
            and self.dilation[0] == 1
            and self.kernel_size != (1, 1, 1)
        )

    def _planes_chunk(self, out_size, dtype):
        """Output planes per chunk, and the input planes (slots) a chunk's buffer holds."""
        kd, kh, kw = self.kernel_size
        slot_bytes = out_size[1] * out_size[2] * kh * kw * self.in_channels
        slot_bytes *= np.dtype(dtype).itemsize
        chunk = max(1, min(out_size[0], (_ROWS_BYTES // slot_bytes - kd) // self.stride[0] + 1))
        return chunk, (chunk - 1) * self.stride[0] + kd

    def _planes_work(self, n, out_size, dtype):
        """Output planes per chunk and the forward's per-block work arrays."""
        kh, kw = self.kernel_size[1:]
        sh, sw = self.stride[1:]
        dh, dw = self.dilation[1:]
        # Only the padded rows and columns some output reads: the windows' span.
        hp = (out_size[1] - 1) * sh + (kh - 1) * dh + 1
        wp = (out_size[2] - 1) * sw + (kw - 1) * dw + 1
        p2 = out_size[1] * out_size[2]
        chunk, planes = self._planes_chunk(out_size, dtype)
        threads = config.get_num_threads()
        if 0 < n < threads:  # chunks small enough for every thread to have one (a batch of one)
            chunk = max(1, min(chunk, -(-out_size[0] // -(-threads // n))))
            planes = (chunk - 1) * self.stride[0] + self.kernel_size[0]
        blocks = max(1, min(threads, n * -(-out_size[0] // chunk)))
        xts = self._buffer("xts", (blocks, self._x.shape[2], hp, wp, self.in_channels), dtype)
        rows = self._rows("rows", blocks, p2 * planes * kh * kw * self.in_channels, dtype)
        tiles = self._rows("tiles", blocks, p2 * self.out_channels, dtype)
        return chunk, xts, rows, tiles

    def _planes_weight(self, dtype):
        """The weight as (kd·kh·kw·C, Cout): rows in the (a, b, e, c) order of the unfolded
        planes' values, so each depth tap's block is a contiguous run of rows."""
        weight = self.weight.data.astype(dtype, copy=False).transpose(2, 3, 4, 1, 0)
        return np.ascontiguousarray(weight).reshape(-1, self.out_channels)

    def _planes_forward(self, x, out_size):
        n, dtype = x.shape[0], x.dtype
        bias = np.zeros(self.out_channels, dtype) if self.bias is None else self.bias.data
        bias = bias.astype(dtype, copy=False)
        chunk, xts, rows, tiles = self._planes_work(n, out_size, dtype)
        out = np.empty((n, self.out_channels, math.prod(out_size)), dtype=dtype)
        with config.single_threaded_blas():
            conv_planes.conv3d_planes_forward(
                x,
                self._planes_weight(dtype),
                bias,
                self.kernel_size,
                self.stride,
                self._pad_low,
                self.dilation,
                out_size,
                chunk,
                out,
                xts,
                rows,
                tiles,
            )
        return out.reshape(n, self.out_channels, *out_size)

    def _planes_backward(self, grad_out):
        x = self._x
        n, dtype = x.shape[0], x.dtype
        out_size = self._out_size
        chunk, planes = self._planes_chunk(out_size, dtype)
        kd, kh, kw = self.kernel_size
        plane = self.in_channels * kh * kw * out_size[1] * out_size[2]
        blocks = max(1, min(config.get_num_threads(), n))
        # The backward unfolds planes as columns, channels first: (kd, C, kh, kw, Cout).
        weight = self.weight.data.astype(dtype, copy=False).transpose(2, 1, 3, 4, 0)
        weight_c = np.ascontiguousarray(weight).reshape(-1, self.out_channels)
        cols = self._rows("cols", blocks, planes * plane, dtype)
        grad_cols = self._buffer("grad_cols", cols.shape, dtype)
        partial_w = self._rows("partial_w", blocks, weight_c.size, dtype)
        partial_b = self._rows("partial_b", blocks, self.out_channels, dtype)
        grad_wc = self._buffer("grad_wc", weight_c.shape, dtype)
        grad_b = self._buffer("grad_b", (0 if self.bias is None else self.out_channels,), dtype)
        grad_x = np.empty_like(x)
        with config.single_threaded_blas():
            conv_planes.conv3d_planes_backward(
                x,
                weight_c,
                grad_out.reshape(n, self.out_channels, math.prod(out_size)),
                self.kernel_size,
                self.stride,
                self._pad_low,
                self.dilation,
                out_size,
                chunk,
                grad_x,
                grad_wc,
                grad_b,
                cols,
                grad_cols,
                partial_w,
                partial_b,
            )
        # Back from (kd, C, kh, kw, Cout) to the layer's (Cout, C, kd, kh, kw).
        grad_w = grad_wc.reshape(kd, self.in_channels, kh, kw, self.out_channels)
        self.weight.grad += grad_w.transpose(4, 1, 0, 2, 3)
        if self.bias is not None:
            self.bias.grad += grad_b
        return grad_x
