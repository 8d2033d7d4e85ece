"""Conv3d's Winograd paths: when each applies, their buffers, forwards and backwards.

Two forms of a 3×3×3 stride-1 convolution: F(4×4, 3×3) per depth tap (the 2-D transforms of
``conv_winograd.py``'s 4×4 tiles on each input plane, three products per plane;
``tinynet/kernels/winograd3d4.py``) on planes of at least 7 × 7 outputs with enough of them,
and F(2×2×2, 3×3×3) (``tinynet/kernels/winograd3d.py``) on smaller ones; _winograd3d_form
picks. ``_ConvNd`` inherits these methods.
"""

from __future__ import annotations

import math

import numpy as np

from .. import config
from ..kernels import winograd3d, winograd3d4, winograd4
from .conv_small3d import _SMALL3D_MAX_CHANNELS
from .conv_winograd import _plane

# About this many 2×2×2 output tiles per chunk: a chunk's V and M (64 planes each) then stay
# near a core's 1 MB L2 (see _winograd3d_applies for the measurements).
_TILES = 128
# Where Winograd beats the plane path (see _winograd3d_applies): channels, tiles per batch,
# tiles per line (the transforms run along lines; shorter ones measured slower).
_MIN_CHANNELS = 4
_MIN_TILES = 512
_MIN_LINE = 8
# Shorter lines pay more for the transforms per tile. Enough channels outweigh that: the
# products grow with C·Cout, the transforms with C + Cout, and Winograd saves products, so
# h = C·Cout / (C + Cout) is the measure: (tiles per line at least, h at least). An odd output
# side also wastes half of each last tile: short lines need at least _SHORT_USE of the tiles'
# outputs used. The bar is set where the gain is clear, as the path costs a first run ~40 s
# of compilation (against ~12 s for the plane path; cached after). See _winograd3d2_fits.
_SHORT_LINES = ((5, 10), (4, 16), (2, 20))
_SHORT_USE = 0.8
# F(4×4, 3×3) per depth tap (winograd3d4.py): about this many 4×4 output tiles per chunk of
# output planes, and the output planes' least side (see _winograd3d_form). A chunk also
# transforms the two input planes above its last output plane, which large planes make
# dear: forward + backward, 2 threads, (1, 8, 8 × 64²) → 8 took 7.6 ms with chunks of 256
# tiles (one plane), 6.0 with 1024 (4 planes), 5.7 with 4096 (F(2×2×2): 5.7); (2, 16, 16 ×
# 48²) → 16 30.1, 23.6, 22.2 (23.1); on 16² planes (8, 16, 16³) → 32 all within noise.
_PLANE_TILES = 1024
# ... and at most about this many bytes of V and M per thread, so that very wide layers do not
# hold ~80 MB per thread (512 → 512 on 16² planes in float64). Not less: smaller chunks cost
# the wide layers time ((2, 128, 16³) → 128 with chunks of 8 planes instead of its 16:
# 1.06–1.12x forward, 1.06–1.10x forward + backward).
_PLANE_BYTES = 32 << 20
_F4_MIN_SIDE = 7
_F4_MIN_TILES = 128  # 4×4 output tiles in the batch (see _winograd3d_form)


class Winograd3dMixin:
    """Conv3d's Winograd methods; the layer's ``_buffer`` and attributes come from _ConvNd."""

    def _winograd3d_applies(self):
        """Whether this layer may use a Winograd path (a forward also needs tiles: see
        _winograd3d_form).

        It needs a 3×3×3, stride-1, undilated, ungrouped Conv3d (padding ≤ 2 per side).
        Measured with F(2×2×2, 3×3×3) (float32, 2 threads, padding 1, medians, ms, forward +
        backward, Winograd vs planes; torch 2.13 alongside): (8, 16, 16³) → 32: 4.0 + 6.7 vs
        6.7 + 12.2 (torch 4.0 + 8.6); (8, 8, 16³) → 16: 1.6 + 2.5 vs 2.1 + 3.9; (4, 4, 16³)
        → 8: 0.38 + 0.55 vs 0.53 + 0.56; (1, 8, 16³) → 8: 0.28 + 0.43 vs 0.40 + 0.68. On
        lines of 4 tiles (8³ outputs) the forward loses with 16 channels ((16, 16, 8³) → 32:
        1.5 + 2.3 vs 1.3 + 3.2; (2, 16, 8³) → 16: 0.23 + 0.37 vs 0.18 + 0.42) and on 3 (6³)
        both do. Hence in_channels ≥ 4, lines of ≥ 8 tiles and ≥ 512 tiles per batch, or
        shorter lines with more channels (see _winograd3d2_fits). Not for 1 or 2 outputs, as
        in 2-D (the input transform outweighs the products; the direct loops won, forward +
        backward, 2 threads:
        (4, 16, 16³) → 1 2.1 vs 4.0 ms, → 2 3.6 vs 4.5, (8, 8, 16³) → 1 2.4 vs 4.6; → 3 even).
        """
        return (
            self._dims == 3
            and self.kernel_size == (3, 3, 3)
            and self.stride == (1, 1, 1)
            and self.dilation == (1, 1, 1)
            and self.groups == 1
            and max(self._pad_low + self._pad_high) <= 2
            and self.in_channels >= _MIN_CHANNELS
            and self.out_channels > 2
        )

    def _winograd3d_fits(self, n, out_size) -> bool:
        """Whether this forward takes one of the Winograd paths (see _winograd3d_form)."""
        return self._winograd3d_form(n, out_size) > 0

    def _winograd3d_form(self, n, out_size) -> int:
        """Which Winograd path this forward takes: 4 for F(4×4, 3×3) per depth tap
        (winograd3d4.py), 2 for F(2×2×2, 3×3×3) (winograd3d.py), 0 for neither.

        F(4×4, 3×3) per depth tap needs output planes of ≥ _F4_MIN_SIDE on each side: below,
        4×4 tiles waste too much (5 and 6: 39% and 56% of the outputs used) or a plane is
        one tile. Where F(2×2×2) fits it takes those planes (measured, float32, 2 threads,
        padding 1, F(4×4) / F(2×2×2) time, forward and forward + backward: (8, 16, 16³) → 32
        0.66 and 0.79, (4, 16, 24³) → 32 0.72 and 0.76, (2, 32, 10³) → 64 0.72 and 0.75, (2,
        64, 8³) → 64 0.66 and 0.75, (4, 8, 16³) → 3 0.56 and 0.65, (2, 32, 13³) → 32 0.90
        and 0.91, (1, 8, 32³) → 8 0.83 and 1.00, (4, 8, 16 × 32²) → 8 0.79 and 0.89, (1, 8,
        8 × 64²) → 8 0.95 and 0.98, (2, 16, 16 × 48²) → 16 0.96 and 1.04; kept: (1, 64, 4³)
        → 64 1.26 and 1.22). It also takes the plane path's layers with more input channels
        than the direct path's (against planes + BLAS: (16, 16, 8³) → 32 0.84 and 0.54, (8,
        32, 7³) → 32 0.84 and 0.70, (4, 16, 16 × 8²) → 16 0.76 and 0.54, (4, 8, 14³) → 16
        0.85 and 0.75, (4, 16, 9³) → 32 0.90 and 0.87, (1, 8, 12³) → 8 1.00 and 0.74; the
        direct path kept: (8, 4, 8³) → 8 1.38 and 1.42, (8, 4, 12³) → 4 1.54 and 1.50; 6³
        lost: (8, 16, 6³) → 32 1.53 and 1.07).

        And ≥ _F4_MIN_TILES 4×4 tiles in the batch: with fewer, each of the chunk's 108
        products is tiny and the forward lost (against the path taken before, forward and
        forward + backward: 32 tiles, (1, 64, 8³) → 64 1.25 and 0.95, (1, 32, 8³) → 16 1.30
        and 0.88; 64, (2, 16, 8³) → 16 1.28 and 0.82; 108, (1, 16, 12³) → 8 1.25 and 0.81,
        → 16 1.02 and 0.63; from 128 on it won both: (4, 16, 8³) → 16 0.96 and 0.67, (4, 64,
        8³) → 64 0.74 and 0.62, (2, 16, 12³) → 16 0.80 and 0.58). A forward + backward of so
        small a layer gains there, its forward alone loses: the bar keeps the forward.
        """
        if not self._winograd3d:  # Conv2d among others: out_size has two axes there
            return 0
        tiles = n * out_size[0] * math.prod(-(-s // winograd4.STEP) for s in out_size[1:])
        wide = min(out_size[1:]) >= _F4_MIN_SIDE and tiles >= _F4_MIN_TILES
        if self._winograd3d2_fits(n, out_size):
            return 4 if wide else 2
        return 4 if wide and self.in_channels > _SMALL3D_MAX_CHANNELS else 0

    def _winograd3d2_fits(self, n, out_size) -> bool:
        """Whether F(2×2×2, 3×3×3) beats the other paths: its lines of
        tiles are long enough (_MIN_LINE, with _MIN_TILES in the batch), or shorter with
        channels enough for the line length (_SHORT_LINES) and few outputs wasted.

        Measured on shorter lines (Zen 4, 2 threads, float32, padding 1, batch 8 unless said;
        Winograd / planes time, fastest of 9 samples, forward and forward + backward):
        8³ outputs (4 tiles a line): 32 → 32 0.68 and 0.71, 32 → 64 0.69 and 0.77, batch 2
        64 → 64 0.62 and 0.80, batch 1 32 → 32 0.77 and 0.86 (few tiles do not matter with
        these channels); not taken: 24 → 24 0.98 and 0.77, 16 → 32 1.01–1.16 and 0.83–1.07
        (cnn3d_bn's second layer: its train step 5–10% faster, its first run's compilation
        14 → 45 s), 16 → 16 1.12 and 0.84. 12³ and 10³ (6 and 5 tiles): batch 4 16 → 32
        0.76 and 0.62 (10³: 0.91 and 0.74), 32 → 32 0.71 and 0.68; 16 → 16 1.06 and 0.87,
        8 → 16 1.04–1.11 and 0.79–0.81 (not taken). 6³ (3 tiles
        a line): 32 → 64 0.75 and 0.81, 64 → 64 0.80 and 0.88; 32 → 32 1.51–1.57 and 0.93–1.16
        (not taken). 4³ (2 tiles a line): 64 → 64 0.87 and 0.91, 64 → 128 0.68 and 0.84,
        128 → 128 0.80 and 0.92; 32 → 32 2.05 and 1.39 (not taken). Odd sides: 64 → 64 on 5³
        1.23 and 1.27, on 3³ 2.2 and 1.6; 32 → 32 on 7³ 0.95 and 0.94, 16 → 32 1.47 and 1.04,
        32 → 64 on 9³ 1.04 and 1.05 (none taken: 58–73% of the tiles' outputs used).
        """
        td, th, tw = ((s + 1) // 2 for s in out_size)
        if tw >= _MIN_LINE:
            return n * td * th * tw >= _MIN_TILES
        used = math.prod(out_size) / (8 * td * th * tw)
        h = self.in_channels * self.out_channels / (self.in_channels + self.out_channels)
        enough = any(tw >= line and h >= least for line, least in _SHORT_LINES)
        return enough and used >= _SHORT_USE

    def _winograd3d_work(self, n, out_size, dtype):
        """Tile lines per chunk, the padded input and the per-block work arrays (V and M)."""
        td, th, tw = ((s + 1) // 2 for s in out_size)
        lines = max(1, _TILES // tw)
        # The forward shares tile lines among all threads; the backward whole samples (its
        # input gradient adds overlapping patches: a sample's lines stay on one thread).
        blocks = max(1, config.get_num_threads())
        # The padded input split by (row, column) parity, see winograd3d._pad.
        shape = (n, self.in_channels, 2 * td + 2, 4, th + 1, tw + 1)
        xpad = self._buffer("xpad", shape, dtype)
        tiles = lines * (tw + 1)  # one spare tile per line
        v = self._buffer("v", (blocks, 64, _plane(self.in_channels * tiles, dtype)), dtype)
        m = self._buffer("m", (blocks, 64, _plane(self.out_channels * tiles, dtype)), dtype)
        return lines, xpad, v, m

    def _winograd3d_weights(self, dtype):
        """The weights in the Winograd domain, (G⊗G⊗G) g: (64, out_channels, in_channels)."""
        weight = np.ascontiguousarray(self.weight.data, dtype=dtype)
        u = self._buffer("u", (64, self.out_channels, self.in_channels), dtype)
        with config.threads_for(weight.size):
            winograd3d.winograd3d_weight_transform(weight, u)
        self._u_forward = u  # the backward's U: see conv_winograd.WinogradMixin._winograd_u
        return u

    def _winograd3d_forward(self, x, out_size, relu=False):
        n, dtype = x.shape[0], x.dtype
        self._winograd3d_f4 = self._winograd3d_form(n, out_size) == 4
        if self._winograd3d_f4:  # chunks of output planes; F(2×2×2): of tile lines
            chunk, xpad, v, m = self._winograd3d4_work(n, out_size, dtype)
            u, forward = self._winograd3d4_weights(dtype), winograd3d4.winograd3d4_forward
        else:
            chunk, xpad, v, m = self._winograd3d_work(n, out_size, dtype)
            u, forward = self._winograd3d_weights(dtype), winograd3d.winograd3d_forward
        bias = np.zeros(self.out_channels, dtype) if self.bias is None else self.bias.data
        bias = bias.astype(dtype, copy=False)
        out = np.empty((n, self.out_channels, *out_size), dtype=dtype)
        with config.single_threaded_blas(), config.one_thread_if(v.shape[0] == 1):
            forward(x, u, bias, relu, self._pad_low, chunk, out, xpad, v, m)
        # The backward reads the input in this padded form (rewritten only by the next
        # forward, which replaces self._x too); conv.py's backward dispatches on it.
        self._x_padded = xpad
        return out

    def _winograd3d_backward(self, grad_out):
        x = self._x
        n, dtype = x.shape[0], x.dtype
        f4 = self._winograd3d_f4
        work = self._winograd3d4_work if f4 else self._winograd3d_work
        chunk, xpad, v, m = work(n, self._out_size, dtype)
        u = self._u_forward
        blocks = v.shape[0]
        # F(2×2×2) shares a batch smaller than the thread count out by tile lines, each block
        # adding its input gradient into a private copy of the padded batch: T copies.
        copies = blocks if n < blocks and not f4 else 1
        gxpad = self._buffer("gxpad", (copies * n, *xpad.shape[1:]), dtype)
        partial_u = self._buffer("partial_u", (blocks, u.size), dtype)
        partial_b = self._rows("partial_b", blocks, self.out_channels, dtype)
        grad_u = self._buffer("grad_u", u.shape, dtype)
        grad_b = self._buffer("grad_b", (0 if self.bias is None else self.out_channels,), dtype)
        grad_w = self._buffer("grad_w", self.weight.shape, dtype)
        grad_x = np.empty_like(x)
        args = (self._x_padded, u, grad_out, self._pad_low, chunk, grad_x, grad_u, grad_b, gxpad)
        with config.single_threaded_blas(), config.one_thread_if(blocks == 1):
            if f4:
                # Input-gradient planes of a block's first chunk, for batches smaller than
                # the thread count (whose samples' chunks are shared out among the threads).
                private = 0 if n >= blocks else chunk + 2
                private = self._buffer("private", (blocks, private, *xpad.shape[2:]), dtype)
                winograd3d4.winograd3d4_backward(*args, v, m, partial_u, partial_b, private)
            else:
                winograd3d.winograd3d_backward(*args, v, m, partial_u, partial_b)
        with config.threads_for(grad_w.size):
            if f4:  # grad_u[kd] is the gradient of U_kd = winograd4's transform of g[:, :, kd]
                grad_kd = self._buffer("grad_w_kd", (3, *self.weight.shape[:2], 3, 3), dtype)
                for kd in range(3):
                    winograd4.winograd4_weight_transform_backward(grad_u[kd], grad_kd[kd])
                grad_w[...] = grad_kd.transpose(1, 2, 0, 3, 4)
            else:
                winograd3d.winograd3d_weight_transform_backward(grad_u, grad_w)
        self.weight.grad += grad_w
        if self.bias is not None:
            self.bias.grad += grad_b
        return grad_x

    def _winograd3d4_work(self, n, out_size, dtype):
        """Output planes per chunk, the padded input (plane by plane) and the per-block work
        arrays (V and M)."""
        od, oh, ow = out_size
        th, tw = -(-oh // winograd4.STEP), -(-ow // winograd4.STEP)
        per_plane = th * tw
        blocks = max(1, config.get_num_threads())
        # V and M of one output plane (with its share of the input planes' V).
        plane_bytes = 36 * per_plane * (self.in_channels + self.out_channels)
        plane_bytes *= np.dtype(dtype).itemsize
        # Chunks enough for every thread: a batch of one takes half its planes each on two.
        enough = od // -(-blocks // n)
        planes = max(1, min(_PLANE_TILES // per_plane, _PLANE_BYTES // plane_bytes, enough))
        planes = -(-od // -(-od // planes))  # chunks of even length: 16 planes as 8 + 8
        # The padded input plane by plane, with room for whole tiles (see winograd3d4._pad).
        shape = (n, od + 2, self.in_channels, winograd4.STEP * th + 2, winograd4.STEP * tw + 2)
        xpad = self._buffer("xpad", shape, dtype)
        v_size = self.in_channels * (planes + 2) * per_plane
        v = self._buffer("v", (blocks, 36, _plane(v_size, dtype)), dtype)
        m_size = self.out_channels * planes * per_plane
        m = self._buffer("m", (blocks, 36, _plane(m_size, dtype)), dtype)
        return planes, xpad, v, m

    def _winograd3d4_weights(self, dtype):
        """U_kd = G g[:, :, kd] Gᵀ for each kernel depth kd: (3, 36, out_channels, in_channels)."""
        weight = np.asarray(self.weight.data, dtype=dtype)
        u = self._buffer("u4", (3, 36, self.out_channels, self.in_channels), dtype)
        with config.threads_for(weight.size):
            for kd in range(3):
                winograd4.winograd4_weight_transform(np.ascontiguousarray(weight[:, :, kd]), u[kd])
        self._u_forward = u
        return u
