"""The Winograd paths of Conv2d, F(2×2, 3×3), F(4×4, 3×3) and F(2×2, 5×5): when they
apply, their buffers, forward and backward.

Kept apart from ``conv.py`` so that file reads as the general case (vol2col + BLAS); the
kernels themselves are in ``tinynet/kernels/winograd.py``, ``winograd4.py`` and
``winograd5.py``. F(s×s, k×k) takes s×s output tiles; each reads an (s + k − 1)² input patch,
and the products run in a Winograd domain of (s + k − 1)² planes. ``_ConvNd`` inherits these
methods.
"""

from __future__ import annotations

import numpy as np

from .. import config
from ..kernels import winograd, winograd4, winograd5, winograd_s2

# Winograd: about this many 2×2 output tiles per chunk, so that a chunk's 16 (3×3) or 36 (5×5)
# matrix products are large enough for BLAS (measured: 64×32 @ 32×T runs at ~100 GFLOP/s per
# core from T ≈ 100 to 400, slower past ~800 as the chunk leaves the cache; for 5×5, 128 and
# 512 tiles measured the same as 256).
_WINOGRAD_TILES = 256
_WINOGRAD4_TILES = 128  # F(4×4, 3×3): 36 planes a tile instead of 16
# Where Winograd starts to beat im2col (see _ConvNd._winograd_applies for the measurements).
_WINOGRAD_MIN_CHANNELS = 8
_WINOGRAD5_MIN_CHANNELS = 12
_WINOGRAD_MIN_TILES = 64
# F(4×4, 3×3) from this many 4×4 tiles per thread (see WinogradMixin._winograd_tile).
_WINOGRAD4_MIN_TILES = 128
# Stride-2 3×3 layers (kernels/winograd_s2.py): chunks of about this many values of V (81·C
# per 4×4 tile: 32 tiles for 32 channels, a third of a core's L2), of 8 to 32 tiles. Measured
# (float32, 2 threads, forward, ms, tiles per chunk): (16, 128, 16²) → 128: 8: 1.61, 16:
# 2.26, 32: 2.02; (32, 64, 16²) → 128: 8: 1.47, 16: 1.45, 32: 1.90.
_WINOGRAD_S2_CHUNK = 81 * 1024
# ... from this many input channels, this many outputs and 4×4 tiles per batch, and where
# the tiles overhang the output by at most this fraction (unless the layer's other forward
# is vol2col + BLAS). Measured (float32, 2 threads, forward, ms, the layer's forward before
# this path / this path / PyTorch; padding 1):
#   (64, 64, 8²) → 64      1.18 / 0.46 / 0.42    (32, 64, 16²) → 128    2.14 / 1.28 / 1.46
#   (16, 128, 16²) → 128   2.13 / 1.47 / 1.44    (64, 48, 16²) → 48     2.10 / 1.35 / 1.05
#   (64, 64, 28²) → 64     8.10 / 5.30 / 4.88    (4, 64, 32²) → 64      0.59 / 0.45 / 0.45
#   (1, 64, 64²) → 64      0.61 / 0.43 / 0.48    (8, 32, 64²) → 64      2.13 / 1.55 / 1.72
#   (64, 32, 32²) → 64     3.39 / 3.01 / 3.28    (32, 32, 32²) → 64     1.72 / 1.57 / 1.57
#   (64, 32, 14²) → 64     1.20 / 0.86 / 0.71    (64, 32, 28²) → 64     2.71 / 2.80 / 2.45
# Lost with fewer outputs, whose products are too thin for the transforms' cost: (64, 32,
# 32²) → 32 1.86 / 2.11, (64, 64, 28²) → 32 2.85 / 3.35, (32, 32, 16²) → 32 0.42 / 0.50,
# (16, 64, 32²) → 16 0.52 / 0.67; and with fewer inputs: (64, 16, 32²) → 32 1.00 / 1.23,
# (64, 8, 28²) → 16 0.43 / 0.87. The overhang: (64, 32, 28²) → 64 (14² outputs in 4×4
# tiles: 31% more) lost to the shifted products.
_WINOGRAD_S2_MIN_CHANNELS = 32
_WINOGRAD_S2_MIN_OUTPUTS = 48
_WINOGRAD_S2_MIN_TILES = 64
_WINOGRAD_S2_MAX_OVERHANG = 0.15
# Its backward up to this many input × output channels: more make the weight gradient's
# partial sums (25 × 4·C × Cout per thread) large against the work of a batch. Measured
# (float32, 2 threads, forward + backward, ms, the layer's other backward / this one):
# (64, 32, 32²) → 64 12.4 / 10.6; (64, 64, 8²) → 64 3.9 / 2.7; (64, 48, 16²) → 48 7.6 /
# 5.1; (8, 32, 64²) → 64 6.4 / 5.6; but (32, 64, 16²) → 128 7.8 / 8.2 and (16, 128, 16²)
# → 128 7.3 / 11.9.
_WINOGRAD_S2_BACKWARD_MAX_WEIGHTS = 4096
# Per (kernel size, tile size): the kernels' functions (weight transform, its transpose,
# forward, backward).
_KERNELS = {
    (3, 2): (
        winograd.winograd_weight_transform,
        winograd.winograd_weight_transform_backward,
        winograd.winograd_forward,
        winograd.winograd_backward,
    ),
    (3, 4): (
        winograd4.winograd4_weight_transform,
        winograd4.winograd4_weight_transform_backward,
        winograd4.winograd4_forward,
        winograd4.winograd4_backward,
    ),
    (5, 2): (
        winograd5.winograd5_weight_transform,
        winograd5.winograd5_weight_transform_backward,
        winograd5.winograd5_forward,
        winograd5.winograd5_backward,
    ),
}

# F(2×2, 5×5)'s forward works by tile, on the input padded channels last (see
# kernels/winograd5.py, _input_transform_phases), for layers of up to this many outputs per
# input channel; with more, its output transform by tile costs more than the input
# transform saves, and it works by channel (winograd5_forward_by_channel). Measured
# (float32, 2 threads, forward, by tile / by channel): (64, 32, 14²) → 64 0.71–0.86,
# (16, 12, 32²) → 24 0.82–0.91, (32, 32, 16²) → 32 0.71, (8, 64, 28²) → 64 0.87–0.97;
# but (1, 32, 32²) → 128 1.21, (4, 32, 32²) → 128 1.18.
_BY_TILE_OUTPUTS_PER_INPUT = 2


def _plane(size, dtype):
    """Entries per Winograd plane: at least ``size``, and 4 KiB + one cache line apart.

    The transforms write all planes at once; planes a multiple of 4 KiB apart would all
    map to one L1 cache set and thrash it (see kernels/winograd.py).
    """
    per_page = 4096 // np.dtype(dtype).itemsize
    return -(-size // per_page) * per_page + 64 // np.dtype(dtype).itemsize


class WinogradMixin:
    """Conv2d's Winograd methods; the layer's ``_buffer`` and attributes come from _ConvNd."""

    def _winograd_applies(self):
        """Whether this layer may use Winograd F(2×2, 3×3) or F(2×2, 5×5) (forward also needs
        enough tiles).

        It needs a 3×3 or 5×5, stride-1, undilated, ungrouped 2-D kernel (padding ≤ k − 1;
        more would add tiles of pure zeros). Where it pays was measured (forward + backward,
        float32, medians, ms, Winograd vs im2col, 1 thread, all padding 1):
        (64, 32, 14, 14) → 64: 12.6 vs 21.5;  (64, 16, 32, 32) → 32: 19.8 vs 33.8;
        (64, 8, 28, 28) → 32: 10.4 vs 13.5;   (64, 4, 28, 28) → 32: 7.7 vs 6.1;
        (64, 1, 28, 28) → 32: 5.8 vs 2.6 (the channel products have K = C: too thin for BLAS);
        (2, 32, 14, 14) → 64, 98 tiles: 0.69 vs 0.74;  (1, 32, 14, 14) → 64, 49 tiles: 0.51 vs
        0.42 (one chunk of 16 tiny products). Hence in_channels ≥ 8 and ≥ 64 tiles per batch.
        5×5 (2 threads, padding 2 unless said): (64, 32, 14²) → 64: 31 vs 46; (32, 32, 16²) →
        32: 15.5 vs 23.8; (64, 16, 28²) → 16: 39 vs 51; (16, 12, 32²) → 24: 15.6 vs 17.3; but
        (32, 8, 32²) → 32: 21.6 vs 19.9 and (64, 6, 28²) → 16: 20.6 vs 17.0 (its 6×6
        transforms cost 4–5x the 4×4 ones and are shared by fewer channels). Hence ≥ 12.
        Not for 1 or 2 outputs (3×3) or up to 3 (5×5): the input transform, the same for any
        output count, then outweighs the products, and the direct loops win (forward +
        backward, 2 threads, direct vs Winograd): 64 → 1 on (32, 64, 28²) 5.4 vs 10.0 ms,
        64 → 2 7.3 vs 10.5, 128 → 1 on (8, 128, 14²) 1.0 vs 1.2, 32 → 2 on 16² even;
        5×5 16 → 2 on (32, 16, 32²) 5.9 vs 15.6, 16 → 3 6.4 vs 12.0, 32 → 3 on 16² 8.7 vs
        11.8; but 3×3 with 3 outputs Winograd won: 32 → 3 on (64, 32, 16²) 2.8 vs 4.4,
        128 → 3 on 14² 1.8 vs 2.2.
        """
        k = self.kernel_size[0]
        return (
            self._dims == 2
            and self.kernel_size in ((3, 3), (5, 5))
            and self.stride == (1, 1)
            and self.dilation == (1, 1)
            and self.groups == 1
            and max(self._pad_low + self._pad_high) <= k - 1
            and self.in_channels >= (_WINOGRAD_MIN_CHANNELS if k == 3 else _WINOGRAD5_MIN_CHANNELS)
            and self.out_channels > (2 if k == 3 else 3)
        )

    def _winograd_tile(self, n, out_size) -> int:
        """The output tile side for a batch of ``n`` with this output size: 4 (F(4×4, 3×3))
        where it pays, else 2 (F(2×2, 3×3), and always for 5×5).

        F(4×4, 3×3) runs 36 products per 4×4 tile, F(2×2, 3×3) 16 per 2×2 tile: 56% of the
        products where the sides are multiples of 4, but a side that is not computes the
        overhang for nothing, the 6×6 transforms cost more per tile, and fewer, larger tiles
        make thinner matrix products. Measured (float32, 2 threads, forward / backward time
        of F(2×2) over F(4×4), above 1: F(4×4) faster): (64, 16, 32²) → 32: 0.98 / 1.33;
        (64, 32, 28²) → 32: 1.04 / 1.33; (8, 64, 56²) → 64: 1.37 / 1.37; (32, 32, 16²) → 32:
        1.00 / 1.17–1.20; but (64, 32, 14²) → 64 (73% of the products): 0.92–0.96 / 0.99, and
        (16, 128, 8²) → 128 (64 tiles of 4×4 in all): 0.78 / 0.74. Hence: at most 60% of the
        products and at least _WINOGRAD4_MIN_TILES 4×4 tiles per thread.
        """
        if self.kernel_size[0] != 3:
            return 2
        th4, tw4 = -(-out_size[0] // 4), -(-out_size[1] // 4)
        th2, tw2 = -(-out_size[0] // 2), -(-out_size[1] // 2)
        fewer = 36 * th4 * tw4 <= 0.6 * 16 * th2 * tw2
        enough = n * th4 * tw4 >= _WINOGRAD4_MIN_TILES * max(1, config.get_num_threads())
        return 4 if fewer and enough else 2

    def _winograd_fits(self, n, out_size) -> bool:
        """Whether this forward takes the Winograd path: the layer allows it, enough tiles."""
        tiles = n * ((out_size[0] + 1) // 2) * ((out_size[1] + 1) // 2)
        return self._winograd and tiles >= _WINOGRAD_MIN_TILES

    def _winograd_s2_applies(self):
        """Whether this layer may take the polyphase Winograd forward (kernels/winograd_s2.py):
        a 3×3, stride-2, undilated, ungrouped 2-D kernel of enough channels both ways."""
        return (
            self._dims == 2
            and self.kernel_size == (3, 3)
            and self.stride == (2, 2)
            and self.dilation == (1, 1)
            and self.groups == 1
            and self.in_channels >= _WINOGRAD_S2_MIN_CHANNELS
            and self.out_channels >= _WINOGRAD_S2_MIN_OUTPUTS
        )

    def _winograd_s2_fits(self, n, out_size) -> bool:
        """Whether this forward takes the polyphase Winograd path: the layer allows it, the
        batch has enough 4×4 output tiles (fewer make thin products), and they overhang
        the output little or the layer's other forward would be vol2col's."""
        if not self._winograd_s2:
            return False
        th, tw = -(-out_size[0] // 4), -(-out_size[1] // 4)
        overhang = 16 * th * tw / (out_size[0] * out_size[1]) - 1
        return n * th * tw >= _WINOGRAD_S2_MIN_TILES and (
            overhang <= _WINOGRAD_S2_MAX_OVERHANG or not self._shifted_fits(n, out_size)
        )

    def _winograd_s2_forward(self, x, out_size, relu):
        """The stride-2 3×3 forward as the polyphase F(4×4, 2×2) (kernels/winograd_s2.py).
        The backward is the one the layer would take otherwise (it reads only x)."""
        n, dtype = x.shape[0], x.dtype
        tw = -(-out_size[1] // 4)
        lines = self._winograd_s2_lines(tw)
        blocks = max(1, config.get_num_threads())
        depth = winograd_s2.PLANES_DEPTH * self.in_channels
        v = self._buffer(
            "v", (blocks, winograd_s2.PLANES, _plane(depth * lines * tw, dtype)), dtype
        )
        m_plane = _plane(self.out_channels * lines * tw, dtype)
        m = self._buffer("m", (blocks, winograd_s2.PLANES, m_plane), dtype)
        weight = np.ascontiguousarray(self.weight.data, dtype=dtype)
        u = self._buffer("u", (winograd_s2.PLANES, depth, self.out_channels), dtype)
        with config.threads_for(weight.size):
            winograd_s2.weight_transform(weight, u)
        bias = np.zeros(self.out_channels, dtype) if self.bias is None else self.bias.data
        out = np.empty((n, self.out_channels, *out_size), dtype=dtype)
        with config.single_threaded_blas(), config.one_thread_if(blocks == 1):
            winograd_s2.winograd_s2_forward(
                x, u, bias.astype(dtype, copy=False), relu, self._pad_low, lines, out, v, m
            )
        return out

    def _winograd_s2_backward_fits(self, n) -> bool:
        """Whether the backward after a stride-2 Winograd forward stays in its domain: a
        sample per thread (whole samples per thread) and few enough channel pairs."""
        weights = self.in_channels * self.out_channels
        return n >= config.get_num_threads() and weights <= _WINOGRAD_S2_BACKWARD_MAX_WEIGHTS

    def _winograd_s2_backward(self, grad_out):
        """The backward of the polyphase Winograd forward (kernels/winograd_s2.py): all three
        gradients in its 5×5 domain, from the forward's U (_winograd_s2_backward_fits)."""
        x = self._x
        dtype = x.dtype
        th, tw = -(-self._out_size[0] // 4), -(-self._out_size[1] // 4)
        blocks = max(1, config.get_num_threads())
        lines = self._winograd_s2_lines(tw)
        depth = winograd_s2.PLANES_DEPTH * self.in_channels
        planes = winograd_s2.PLANES
        v = self._buffer("v", (blocks, planes, _plane(depth * lines * tw, dtype)), dtype)
        m_plane = _plane(self.out_channels * lines * tw, dtype)
        m = self._buffer("m", (blocks, planes, m_plane), dtype)
        u = self._work["u"]  # the forward's (rewritten only by the next forward)
        ut = self._buffer("ut", (planes, self.out_channels, depth), dtype)
        np.copyto(ut, u.transpose(0, 2, 1))
        size = (8 * th + 1) * (8 * tw + 1) * self.in_channels
        gbuf = self._buffer("gbuf", (blocks, size), dtype)
        partial_u = self._buffer("partial_u", (blocks, *u.shape), dtype)
        partial_b = self._rows("partial_b", blocks, self.out_channels, dtype)
        grad_u = self._buffer("grad_u", u.shape, dtype)
        grad_b = self._buffer("grad_b", (0 if self.bias is None else self.out_channels,), dtype)
        grad_w = self._buffer("grad_w", self.weight.shape, dtype)
        grad_x = np.empty_like(x)
        with config.single_threaded_blas(), config.one_thread_if(blocks == 1):
            winograd_s2.winograd_s2_backward(
                x,
                u,
                ut,
                grad_out,
                self._pad_low,
                lines,
                grad_x,
                grad_u,
                grad_b,
                v,
                m,
                gbuf,
                partial_u,
                partial_b,
            )
        with config.threads_for(grad_w.size):
            winograd_s2.weight_transform_backward(grad_u, grad_w)
        self.weight.grad += grad_w
        if self.bias is not None:
            self.bias.grad += grad_b
        return grad_x

    def _winograd_s2_lines(self, tw):
        """Tile lines per chunk of the stride-2 Winograd path (see _WINOGRAD_S2_CHUNK)."""
        tiles = min(32, max(8, _WINOGRAD_S2_CHUNK // (81 * self.in_channels)))
        return max(1, tiles // tw)

    def _winograd_work(self, n, out_size, tile, dtype):
        """Tile lines per chunk, the padded input and the per-block work arrays (V and M)."""
        k = self.kernel_size[0]
        s = tile
        planes = (s + k - 1) ** 2
        tw = -(-out_size[1] // s)
        lines = max(1, (_WINOGRAD_TILES if s == 2 else _WINOGRAD4_TILES) // tw)
        # The forward shares tile lines among all threads; the backward whole samples when
        # there is one per thread (a sample's overlapping input-gradient patches stay on one
        # thread), else tile lines into private copies (_winograd_backward).
        blocks = max(1, config.get_num_threads())
        shape = self._winograd_xpad_shape(n, out_size, tile, self._winograd_by_tile(tile))
        xpad = self._buffer("xpad", shape, dtype)
        v_plane = _plane(self.in_channels * lines * tw, dtype)
        m_plane = _plane(self.out_channels * lines * tw, dtype)
        v = self._buffer("v", (blocks, planes, v_plane), dtype)
        m = self._buffer("m", (blocks, planes, m_plane), dtype)
        return lines, xpad, v, m

    def _winograd_by_tile(self, tile) -> bool:
        """Whether the forward works by tile on the input padded channels last (F(2×2, 5×5)
        with few enough outputs per input: see _BY_TILE_OUTPUTS_PER_INPUT)."""
        return (self.kernel_size[0], tile) == (5, 2) and (
            self.out_channels <= _BY_TILE_OUTPUTS_PER_INPUT * self.in_channels
        )

    def _winograd_xpad_shape(self, n, out_size, tile, channels_last):
        """The padded input's shape: (N, C, rows, columns), or channels last with each row's
        columns sorted by their remainder mod the tile (kernels/winograd5.py, _pad_phases):
        (N, rows, tile, columns / tile, C)."""
        k = self.kernel_size[0]
        th, tw = -(-out_size[0] // tile), -(-out_size[1] // tile)
        height, width = tile * th + k - 1, tile * tw + k - 1
        if channels_last:
            return (n, height, tile, -(-width // tile), self.in_channels)
        return (n, self.in_channels, height, width)

    def _winograd_u(self, tile, dtype):
        """The weights in the Winograd domain, U = G g Gᵀ: (planes, out_channels, in_channels).

        Kept as ``_u_forward`` for the backward, which uses the forward's U rather than
        transforming the weights again: the gradient is that of the function the forward
        computed (PyTorch's saved tensors likewise), and a transform is not free on layers
        with many channels and small maps (128 → 128 on 8×8: 0.13 ms on one thread, 10% of
        the forward's products).
        """
        weight = np.ascontiguousarray(self.weight.data, dtype=dtype)
        planes = (tile + self.kernel_size[0] - 1) ** 2
        u = self._buffer("u", (planes, self.out_channels, self.in_channels), dtype)
        with config.threads_for(weight.size):
            _KERNELS[self.kernel_size[0], tile][0](weight, u)
        self._u_forward = u
        return u

    def _winograd_forward(self, x, out_size, relu=False):
        n, dtype = x.shape[0], x.dtype
        bias = np.zeros(self.out_channels, dtype) if self.bias is None else self.bias.data
        bias = bias.astype(dtype, copy=False)
        # The backward must use this forward's tile (its padded input has that layout), even
        # if the thread count changes in between.
        tile = self._winograd_tile_used = self._winograd_tile(n, out_size)
        lines, xpad, v, m = self._winograd_work(n, out_size, tile, dtype)
        out = np.empty((n, self.out_channels, *out_size), dtype=dtype)
        u = self._winograd_u(tile, dtype)
        forward = _KERNELS[self.kernel_size[0], tile][2]
        if self._winograd_by_tile(tile):  # its products take U[ξ]ᵀ
            ut = self._buffer("ut", (u.shape[0], u.shape[2], u.shape[1]), dtype)
            np.copyto(ut, u.transpose(0, 2, 1))
            u = ut
        elif self.kernel_size[0] == 5:
            forward = winograd5.winograd5_forward_by_channel
        with config.single_threaded_blas(), config.one_thread_if(v.shape[0] == 1):
            forward(
                x,
                u,
                bias,
                relu,
                self._pad_low,
                lines,
                out,
                xpad,
                v,
                m,
            )
        # The backward reads the input in this padded form (the buffer is rewritten only by
        # the next forward, which replaces self._x too).
        self._x_padded = xpad
        return out

    def _winograd_backward(self, grad_out):
        x = self._x
        n, dtype = x.shape[0], x.dtype
        tile = self._winograd_tile_used
        lines, xpad, v, m = self._winograd_work(n, self._out_size, tile, dtype)
        u = self._u_forward
        # The kernels index the forward's padded input and U without bounds checks: a layout
        # that no longer matches them must stop here, not read past their ends.
        planes = (tile + self.kernel_size[0] - 1) ** 2
        if self._x_padded.shape != xpad.shape or u.shape[0] != planes:
            raise RuntimeError(
                f"{self.describe()}: the backward's Winograd layout {xpad.shape}, {planes} "
                f"planes does not match its forward's {self._x_padded.shape}, {u.shape[0]} "
                "planes (a bug in tinynet: please report it)"
            )
        kernels = _KERNELS[self.kernel_size[0], tile]
        # A batch smaller than the thread count is shared out by tile lines, each block
        # adding its input gradient into a private copy of the padded batch (see
        # kernels/winograd.py, _block_lines): T copies.
        blocks = v.shape[0]
        copies = blocks if n < blocks else 1
        shape = self._winograd_xpad_shape(copies * n, self._out_size, tile, False)
        gxpad = self._buffer("gxpad", shape, dtype)
        xpad = self._x_padded
        if self.kernel_size[0] == 5 and not self._winograd_by_tile(tile):
            # F(2×2, 5×5)'s backward reads the input channels last; this forward did not.
            shape = self._winograd_xpad_shape(n, self._out_size, tile, True)
            xpad = self._buffer("xpad_phases", shape, dtype)
            with config.threads_for(x.size):
                winograd5.pad_phases(x, self._pad_low, xpad)
        partial_u = self._buffer("partial_u", (v.shape[0], *u.shape), dtype)
        partial_b = self._rows("partial_b", v.shape[0], self.out_channels, dtype)
        grad_u = self._buffer("grad_u", u.shape, dtype)
        grad_b = self._buffer("grad_b", (0 if self.bias is None else self.out_channels,), dtype)
        grad_w = self._buffer("grad_w", self.weight.shape, dtype)
        grad_x = np.empty_like(x)
        with config.single_threaded_blas(), config.one_thread_if(v.shape[0] == 1):
            kernels[3](
                xpad,
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
        with config.threads_for(grad_w.size):
            kernels[1](grad_u, grad_w)
        self.weight.grad += grad_w
        if self.bias is not None:
            self.bias.grad += grad_b
        return grad_x
