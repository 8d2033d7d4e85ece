"""The Winograd F(2×2, 3×3) path of Conv2d: when it applies, its buffers, forward and backward.

Kept apart from ``conv.py`` so that file reads as the general case (vol2col + BLAS); the
kernels themselves are in ``tinynet/kernels/winograd.py``. ``_ConvNd`` inherits these methods.
"""

from __future__ import annotations

import numpy as np

from .. import config
from ..kernels import winograd

# Winograd: about this many 2×2 output tiles per chunk, so that a chunk's 16 matrix products
# are large enough for BLAS (measured: 64×32 @ 32×T runs at ~100 GFLOP/s per core from T ≈ 100
# to 400, slower past ~800 as the chunk leaves the cache).
_WINOGRAD_TILES = 256
# Where Winograd starts to beat im2col (see _ConvNd._winograd_applies for the measurements).
_WINOGRAD_MIN_CHANNELS = 8
_WINOGRAD_MIN_TILES = 64


def _plane(size, dtype):
    """Entries per Winograd plane: at least ``size``, and 4 KiB + one cache line apart.

    The transforms write all 16 planes at once; planes a multiple of 4 KiB apart would all
    map to one L1 cache set and thrash it (see kernels/winograd.py).
    """
    per_page = 4096 // np.dtype(dtype).itemsize
    return -(-size // per_page) * per_page + 64 // np.dtype(dtype).itemsize


class WinogradMixin:
    """Conv2d's Winograd methods; the layer's ``_buffer`` and attributes come from _ConvNd."""

    def _winograd_applies(self):
        """Whether this layer may use Winograd F(2×2, 3×3) (forward also needs enough tiles).

        It needs a 3×3, stride-1, undilated, ungrouped 2-D kernel (padding ≤ 2; more would
        add tiles of pure zeros). Where it pays was measured (forward + backward, float32,
        medians, ms, Winograd vs im2col, 1 thread, all padding 1):
        (64, 32, 14, 14) → 64: 12.6 vs 21.5;  (64, 16, 32, 32) → 32: 19.8 vs 33.8;
        (64, 8, 28, 28) → 32: 10.4 vs 13.5;   (64, 4, 28, 28) → 32: 7.7 vs 6.1;
        (64, 1, 28, 28) → 32: 5.8 vs 2.6 (the channel products have K = C: too thin for BLAS);
        (2, 32, 14, 14) → 64, 98 tiles: 0.69 vs 0.74;  (1, 32, 14, 14) → 64, 49 tiles: 0.51 vs
        0.42 (one chunk of 16 tiny products). Hence in_channels ≥ 8 and ≥ 64 tiles per batch.
        """
        return (
            self._dims == 2
            and self.kernel_size == (3, 3)
            and self.stride == (1, 1)
            and self.dilation == (1, 1)
            and self.groups == 1
            and max(self._pad_low + self._pad_high) <= 2
            and self.in_channels >= _WINOGRAD_MIN_CHANNELS
        )

    def _winograd_fits(self, n, out_size) -> bool:
        """Whether this forward takes the Winograd path: the layer allows it, enough tiles."""
        tiles = n * ((out_size[0] + 1) // 2) * ((out_size[1] + 1) // 2)
        return self._winograd and tiles >= _WINOGRAD_MIN_TILES

    def _winograd_work(self, n, out_size, dtype):
        """Tile lines per chunk, the padded input and the per-block work arrays (V and M)."""
        th, tw = (out_size[0] + 1) // 2, (out_size[1] + 1) // 2
        lines = max(1, _WINOGRAD_TILES // tw)
        blocks = max(1, min(config.get_num_threads(), n))
        shape = (n, self.in_channels, 2 * th + 2, 2 * tw + 2)
        xpad = self._buffer("xpad", shape, dtype)
        v = self._buffer("v", (blocks, 16, _plane(self.in_channels * lines * tw, dtype)), dtype)
        m = self._buffer("m", (blocks, 16, _plane(self.out_channels * lines * tw, dtype)), dtype)
        return lines, xpad, v, m

    def _winograd_weights(self, dtype):
        """The weights in the Winograd domain, U = G g Gᵀ: (16, out_channels, in_channels)."""
        weight = np.ascontiguousarray(self.weight.data, dtype=dtype)
        u = self._buffer("u", (16, self.out_channels, self.in_channels), dtype)
        winograd.winograd_weight_transform(weight, u)
        return u

    def _winograd_forward(self, x, out_size, relu=False):
        n, dtype = x.shape[0], x.dtype
        bias = np.zeros(self.out_channels, dtype) if self.bias is None else self.bias.data
        bias = bias.astype(dtype, copy=False)
        lines, xpad, v, m = self._winograd_work(n, out_size, dtype)
        out = np.empty((n, self.out_channels, *out_size), dtype=dtype)
        with config.single_threaded_blas(), config.one_thread_if(v.shape[0] == 1):
            winograd.winograd_forward(
                x, self._winograd_weights(dtype), bias, relu, self._pad_low, lines, out, xpad, v, m
            )
        # The backward reads the input in this padded form (the buffer is rewritten only by
        # the next forward, which replaces self._x too).
        self._x_padded = xpad
        return out

    def _winograd_backward(self, grad_out):
        x = self._x
        n, dtype = x.shape[0], x.dtype
        lines, xpad, v, m = self._winograd_work(n, self._out_size, dtype)
        u = self._winograd_weights(dtype)
        gxpad = self._buffer("gxpad", xpad.shape, dtype)
        partial_u = self._buffer("partial_u", (v.shape[0], *u.shape), dtype)
        partial_b = self._buffer("partial_b", (v.shape[0], self.out_channels), dtype)
        grad_u = self._buffer("grad_u", u.shape, dtype)
        grad_b = self._buffer("grad_b", (0 if self.bias is None else self.out_channels,), dtype)
        grad_w = self._buffer("grad_w", self.weight.shape, dtype)
        grad_x = np.empty_like(x)
        with config.single_threaded_blas(), config.one_thread_if(v.shape[0] == 1):
            winograd.winograd_backward(
                self._x_padded,
                u,
                grad_out,
                self._pad_low,
                lines,
                grad_x,
                grad_u,
                grad_b,
                gxpad,
                v,
                m,
                partial_u,
                partial_b,
            )
        winograd.winograd_weight_transform_backward(grad_u, grad_w)
        self.weight.grad += grad_w
        if self.bias is not None:
            self.bias.grad += grad_b
        return grad_x
