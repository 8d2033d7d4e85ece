"""Conv2d and Conv3d: learned filters slid over images and volumes, as in torch.nn.

out[n, o, p] = bias[o] + Σ_{c in o's group} Σ_{taps t} weight[o, c, t] · x[n, c, p·stride +
t·dilation − padding] (a cross-correlation, as in every deep-learning framework), with the
input zero-padded. The layers only validate, keep state and pick a kernel; the loops live in
``tinynet/kernels/conv.py`` (vol2col + BLAS, or direct loops for other depthwise layers),
``tinynet/kernels/winograd.py`` (Winograd F(2×2, 3×3) for 3×3 stride-1 convolutions),
``winograd4.py`` (F(4×4, 3×3), for those on larger maps) and ``winograd5.py`` (F(2×2, 5×5),
for 5×5 ones),
``tinynet/kernels/winograd3d4.py`` (Conv3d 3×3×3 as F(4×4, 3×3) on each input plane, one
product per depth tap) and ``winograd3d.py`` (F(2×2×2, 3×3×3), for Conv3d on small planes),
``tinynet/kernels/conv_planes.py`` (Conv3d: each input plane unfolded once for all depth taps),
``tinynet/kernels/conv_shifted.py`` (a product per kernel tap, for layers of many channels),
``tinynet/kernels/conv_small.py`` (direct 3×3 and 5×5 loops for few input channels per group:
first layers, grouped and depthwise layers) and ``conv_small3d.py`` (direct 3×3×3 loops for a
Conv3d of few input channels).
Each path's conditions and buffers are in a mixin beside this file (``conv_winograd.py``,
``conv_winograd3d.py``, ``conv_planes.py``, ``conv_small3d.py``); which path a layer takes was
decided by measurement.
"""

from __future__ import annotations

import math

import numpy as np

# Numba's np.dot calls the BLAS that scipy ships; import it now so that threadpoolctl, which
# only sees loaded libraries, can make it single-threaded around our parallel kernels.
import scipy.linalg.cython_blas  # noqa: F401

from .. import config
from ..kernels import conv as kernels
from ..kernels import conv_shifted, conv_small
from ..random import get_generator
from .conv_dilated import DilatedMixin
from .conv_planes import PlanesMixin
from .conv_small3d import Small3dMixin
from .conv_winograd import WinogradMixin
from .conv_winograd3d import Winograd3dMixin
from .module import Module, Parameter
from .validation import check_grad, check_input, ntuple, positive_int, require_forward

_LAYOUTS = {2: "(N, {C}, H, W)", 3: "(N, {C}, D, H, W)"}
# Output tiles for the GEMM kernels: about this many bytes of col (half a core's L2), at least
# this many columns (tuned by measurement on the Conv3d and CIFAR shapes).
_TILE_BYTES = 512 * 1024
_MIN_TILE_COLUMNS = 256
# Outputs per sample below which the GEMM kernels put several samples into one product: a
# product with fewer columns runs far below BLAS's rate (measured, float32, 2 threads, ms,
# forward + backward, several samples against one: 256 → 256 3×3 on (8, 256, 4, 4), 16
# outputs: 5.2 vs 7.6 and 7.9 vs 9.9; but with 64 or 100 outputs per sample (6 → 16 5×5 on
# 14², 64 → 128 stride 2 on 16²) the forward was 1.3x slower: the larger col leaves the L2
# cache and the results no longer go straight into the output).
_MIN_SAMPLE_COLUMNS = 64
# A forward splits one sample's output tiles among threads from this many multiply-adds.
_SPLIT_SAMPLE_MACS = 2_000_000
# Output channels per group up to which the forward takes the direct loops (see __init__).
_FEW_OUTPUTS = 3
# Depthwise output planes up to this many positions take the kernel vectorised across
# channels (conv_forward_depthwise_small), larger ones the phase-plane runs. Measured
# forwards, 2 threads, channels vs phase planes: 64 channels 5×5 s2 d2 16² → 4²: 1.05 vs
# 2.23 ms; 3×3 s2 → 7²: 0.51 vs 0.95; → 8²: 0.87 vs 1.01; → 14²: 1.81 vs 1.86; → 16²:
# 1.35 vs 1.16; 3-D 5³ s2 → 6³: 1.71 vs 2.15; → 4³: 0.28 vs 0.47. Since the channels-last
# copy goes by 16 × 16 blocks (vector.transpose; 2026-12-04): 5×5 s2 d2 → 4², (64, 64, 16²)
# 0.25 vs 0.78 ms; 3×3 s2 → 7², (32, 64, 14²) 0.14 vs 0.38; → 8² 0.19 vs 0.34.
_SMALL_PLANE = 216
# Input channels up to which a 3×3 stride-1 forward is computed directly (conv_small.py):
# its cost grows with the channels, the GEMM's efficiency with them too. Measured (float32, 2
# threads, AVX2, batch 64, ms, direct vs vol2col + BLAS): 4 → 16 on 32²: 1.1 vs 2.3; 5 → 32
# on 28²: 1.8 vs 2.4; 6 → 32 on 28²: 2.7 vs 3.4; from 8 channels Winograd takes over
# (8 → 32 on 28²: direct 4.4, Winograd 3.6).
_SMALL_MAX_CHANNELS = 7
# The same per group for grouped convolutions, where the alternative is a GEMM per group, not
# Winograd. Measured (float32, 2 threads, AVX2, ms, forward + backward, direct vs the previous
# paths, padding 1): depthwise 64 on (32, 64, 16²): 2.1 vs 4.9 (general direct loops);
# 16 → 32, 4 groups, 28²: 8.4 vs 18.4; 16 → 32, 2 groups: 11.6 vs 19.4; 64 → 64, 4 groups,
# 14² (16 per group): 20.9 vs 26.5; 64 → 64, 2 groups (32 per group): 38.6 vs 35.2.
_SMALL_MAX_GROUP_CHANNELS = 16
# Input channels per group up to which a 3×3 "same" layer of the direct path is computed on
# shifted copies of the input (conv_small.conv2d_small_same_forward), writing the output planes
# directly instead of through a padded work plane. Measured (float32, 2 threads, kernel alone,
# interleaved, against conv2d_small_forward): (64, 1, 28²) → 32 0.65; (64, 2, 28²) → 16 0.80;
# (64, 6, 28²) → 16 0.90; (64, 3, 32²) → 16 1.01–1.05 (rows of 32 copied out at full vector
# width); many channels lose, nine input streams against three: 32 → 1 (an input gradient) 1.29,
# 16 → 3 1.26. (The same layout for 5×5 kernels lost: 0.93–1.6.)
_SAME_MAX_CHANNELS = 4
# A 5×5 kernel: 25 taps per channel. Measured (float32, 2 threads, ms, forward + backward,
# direct vs vol2col + BLAS, no padding unless said): 1 → 6 on (64, 28²): 0.71 vs 1.70; 3 → 16
# on (64, 32²), padding 2: 7.9 vs 12.3; 5 → 16 on (64, 14²): 2.5 vs 3.0; 6 → 16 on (64, 14²)
# (LeNet-5's and PyTorch's CIFAR-10 tutorial's second layer): 2.9 vs 3.5, 11.8 vs 15.5 on 32²,
# 13.6 vs 19.4 on 28² with padding 2; 8 → 16 on 14²: 3.8 vs 3.8. Depthwise 5×5, 64 channels
# on (32, 16²), padding 2: 1.8 vs 8.3 (the general direct loops). Since the kernel computes
# two output channels per pass (direct vs Winograd F(2×2, 5×5) vs vol2col + BLAS, one run):
# 8 → 16 on (64, 14²) 3.4 vs 3.7 vs 5.0; 8 → 24 on (32, 28²), padding 2, 11.7 vs 14.8 vs
# 15.3; 8 → 32 on (32, 32²) 17.8 vs 24.3 vs 23.1; 12 → 16 on (64, 14²) 4.8 vs 4.5 vs 7.1;
# 12 → 24 on (32, 28²) 13.5 vs 18.4 vs 20.6; 16 → 32 on (64, 14²) 11.9 vs 10.2; 24 → 32 on
# (32, 32²) 39.1 vs 37.4; 32 → 64 on (64, 14²) 58.7 vs 30.8. Hence direct up to 11 channels
# (Winograd from _WINOGRAD5_MIN_CHANNELS = 12) and, grouped, up to 16 per group, where the
# other way is vol2col + BLAS per group, which 16 → 24 ungrouped measured slower: on
# (32, 28²) 17.6 vs 26.7, on (32, 32²) 29.7 vs 43.5.
_SMALL5_MAX_CHANNELS = 11
# Layers that would take vol2col + BLAS take the shifted products of kernels/conv_shifted.py
# (one depth-Cg product per tap on the phase planes, no vol2col) with at least this many input
# channels per group and this many output positions. Measured (float32, 2 threads, batch 32
# or 64 (3-D: 4 or 8), shifted / vol2col time, same run, forward and backward):
# stride 2 3×3 on 32² → 16²: 16 → 16 0.92, 32 → 32 0.68, 48 → 48 0.79, 64 → 32 0.71,
# 32 → 64 0.81 / 0.87, 16 → 64 1.00 / 0.85, 64 → 64 1.05 / 0.98, 32 → 128 1.31 / 1.22,
# 8 → 32 1.26 / 0.81; 5×5 s2 on 28²: 16 → 16 0.52, 32 → 32 0.63, 64 → 32 0.62, 64 → 64 0.86,
# 32 → 128 1.17 / 1.07; 3×3 dilation 2 on 14²: 32 → 32 0.65, 64 → 32 0.62, 48 → 48 0.83,
# 64 → 64 0.92 / 1.02, 32 → 128 1.21; stride 1: 7×7 on 28² 16 → 16 0.46 / 0.43, 32 → 32
# 0.51 / 0.55, 32 → 128 1.05 / 1.20; 3×3 in 2 groups on 28² 64 → 64 0.62 / 0.61, 64 → 128
# 0.85 / 0.97; 3-D 3×3×3 dilation 2 on 12³: 16 → 16 0.51 / 0.45, 32 → 32 0.88 / 0.75, on 8³
# 64 → 64 1.01 / 1.08; 3-D in 2 groups on 12³: 32 → 32 0.37 / 0.44, 64 → 64 0.57 / 0.60. But
# on 16² → 8² (a run of 71 columns a product): 16 → 64 1.26, 32 → 32 1.20, 16 → 48 1.26. Each
# tap's product adds into the whole output (Cout × P read and written once per tap) where
# vol2col copies C·taps × P once: the more output channels per input channel, the less
# this pays; hence also the output channels rule in __init__. 2-D grouped layers need twice
# the input channels per group: stride 2 in 2 groups on 28² → 14², 64 → 64 0.67, 32 → 64
# 1.14, 32 → 32 1.06 (3-D: 32 → 32 0.59).
_SHIFTED_MIN_CHANNELS = 16
_SHIFTED_MIN_PLANE = 100
# Smaller 2-D output planes (deep in a network) still take them where vol2col is slowest: a
# kernel of 25 taps or more, or 64 input channels per group or more, vol2col then copying
# many runs of a few values each (one per (row, line)). Measured (float32, 2 threads, batch
# 64 unless said, shifted / vol2col time, same run, forward and forward + backward):
# 5×5 s2 on 14² → 7²: 64 → 16 0.44 / 0.50, 16 → 16 0.58 / 0.60, 32 → 32 0.62 / 0.71, 32 → 64
# 0.79 / 0.88, in 2 groups 64 → 32 0.36 / 0.49, batch 4 64 → 16 0.69 / 0.74; on 6² → 3²
# 64 → 32 0.34 / 0.48; 5×5 d2 on 8² → 4² 32 → 32 0.65 / 0.82; 7×7 s2 on 14² → 7² 16 → 32
# 0.66 / 0.73; 3×3 s2: 64 → 16 on 10² → 5² 0.55 / 0.71, on 16² → 8² 0.99 / 0.91, 128 → 16
# on 6² → 3² 0.47 / 0.66, 128 → 32 on 8² → 4² 0.55 / 0.77, 64 → 32 0.61 / 0.76, 64 → 48
# 0.71 / 0.87, batch 16 256 → 32 0.39 / 0.74; 3×3 d2 on 4² 128 → 48 0.58 / 0.70; 3×3 in 4
# groups on 4² 256 → 64 0.42 / 0.56. Not taken: fewer channels with a 3×3 kernel (s2 on
# 8²: 16 → 64 1.22 / 1.16, 32 → 32 1.02 / 1.04; d2 32 → 32 1.23 / 1.09); a batch of one or
# two (128 → 32 5×5 s2 on 6²: batch 1 1.31 / 1.18, batch 2 0.80 / 1.04; 64 → 32 3×3 s2 on
# 4², batch 2: 0.96 / 1.20): below two (sample, group) pairs a thread; a single output
# position (7×7 on 7²: 0.68 / 1.19); 3-D (3×3×3 on 2³ to 4³ outputs: 0.84–0.99 / 1.00–1.25).
_SHIFTED_SMALL_MIN_CHANNELS = 64
_SHIFTED_SMALL_MIN_TAPS = 25
_SHIFTED_SMALL_MIN_PLANE = 4


def _small_max_channels(k: int, groups: int) -> int:
    """Input channels per group up to which the direct k × k path is taken."""
    if groups > 1:
        return _SMALL_MAX_GROUP_CHANNELS
    return _SMALL5_MAX_CHANNELS if k == 5 else _SMALL_MAX_CHANNELS


class _ConvNd(DilatedMixin, WinogradMixin, Winograd3dMixin, Small3dMixin, PlanesMixin, Module):
    """What Conv2d and Conv3d share; ``_dims`` is the number of spatial axes."""

    _dims = 0

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        bias=True,
    ):
        super().__init__()
        name = type(self).__name__
        n = self._dims
        self.in_channels = positive_int(name, "in_channels", in_channels)
        self.out_channels = positive_int(name, "out_channels", out_channels)
        self.groups = positive_int(name, "groups", groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{name} expected in_channels ({in_channels}) and out_channels "
                f"({out_channels}) divisible by groups, got groups={groups}"
            )
        self.kernel_size = ntuple(name, "kernel_size", kernel_size, n, 1)
        self.stride = ntuple(name, "stride", stride, n, 1)
        self.dilation = ntuple(name, "dilation", dilation, n, 1)
        self.padding, self._pad_low, self._pad_high = self._parse_padding(name, padding)

        # PyTorch's initialisation: Kaiming-uniform with a = √5, i.e. weight and bias uniform
        # in ±1/√fan_in, where fan_in counts the inputs one output sees.
        fan_in = in_channels // groups * math.prod(self.kernel_size)
        bound = 1.0 / math.sqrt(fan_in)
        rng = get_generator()
        shape = (out_channels, in_channels // groups, *self.kernel_size)
        self.weight = Parameter(rng.uniform(-bound, bound, shape).astype(self.dtype))
        if bias:
            self.bias = Parameter(rng.uniform(-bound, bound, out_channels).astype(self.dtype))
        else:
            self.register_parameter("bias", None)
        # One input channel per group (depthwise): a GEMM per group would be a few hundred
        # flops, so direct loops are faster there (3×3 stride-1 ones take _small, below).
        self._direct = groups > 1 and in_channels == groups
        # A 3×3 convolution of few channels per group (a first layer, a depthwise one): the
        # direct forward of kernels/conv_small.py beats the thin GEMM and the general direct
        # loops (see _SMALL_MAX_CHANNELS).
        self._small = (
            self._dims == 2
            and self.kernel_size in ((3, 3), (5, 5))
            and self.stride == (1, 1)
            and self.dilation == (1, 1)
            and in_channels // groups <= _small_max_channels(self.kernel_size[0], groups)
        )
        self._winograd = self._winograd_applies()
        self._winograd3d = self._winograd3d_applies()
        self._winograd_s2 = self._winograd_s2_applies()
        self._planes = self._planes_applies()
        self._small3d = self._small3d_applies()
        self._dilated = self._dilated_applies()
        # The forward's direct loops: depthwise layers, and few output channels per group,
        # where a product of 1 to 3 rows (vol2col + BLAS, planes) is a matrix-vector product
        # behind a full copy of the input. Measured forwards, 2 threads, direct against the
        # path it replaces: 64 → 1 5×5 stride 2 on (64, 64, 16²) 1.9 vs 4.5 ms; 32 → 3 7×7 on
        # 16² 3.0 vs 4.9 (forward + backward 15.3 vs 17.1); 128 → 3 3×3 dilation 2 on 28²
        # 10.7 vs 18.1; 3-D 32 → 1 stride 2 on 16³ 0.8 vs 1.5 (planes; forward + backward 3.0
        # vs 3.7); but 64 → 4 stride 2 on 32² 2.0 vs 1.7, 64 → 8 3.7 vs 3.1. Not for 1×1
        # kernels (vol2col is a plain copy there: 0.68 vs 0.20 ms) nor where Winograd fits
        # (the forward's check comes after it; Winograd leaves out 3×3 layers of 1 or 2
        # outputs and 5×5 ones of up to 3, see _winograd_applies): 32 → 3 3×3 on 16² forward
        # + backward 2.8 (Winograd) vs 4.4 ms. The backward follows (conv_backward_direct).
        # The few-input-channel paths (_small, _small3d) come first; 2-D layers that the
        # shifted products take go there instead (_direct_fits).
        self._direct_forward_applies = (
            self._direct
            or (out_channels // groups <= _FEW_OUTPUTS and math.prod(self.kernel_size) > 1)
        ) and not (self._small or self._small3d)
        # Layers of enough input channels take shifted products on the phase planes where
        # they would take vol2col + BLAS, with at most 48 output channels per group, 64 with
        # up to 32 input channels or a 5×5 (or larger) kernel (see _SHIFTED_MIN_CHANNELS).
        cin_g, cout_g = in_channels // groups, out_channels // groups
        taps = math.prod(self.kernel_size)
        grouped_2d = groups > 1 and self._dims == 2
        self._shifted = (
            taps > 1  # a 1×1 kernel's vol2col is a plain (or strided) copy of the input
            and cin_g >= _SHIFTED_MIN_CHANNELS * (2 if grouped_2d else 1)
            and (cout_g <= 48 or (cout_g <= 64 and (cin_g <= 32 or taps >= 25)))
        )
        self._dilated_used = False  # whether the last forward took the sub-grid path
        self._shifted_used = False  # whether it took the shifted products
        self._winograd_s2_used = False  # whether it took the stride-2 Winograd path
        self._x = None
        self._x_padded = None  # the Winograd path's zero-padded input, kept for backward
        self._x_volume = None  # the direct 3-D path's padded volumes, kept for backward
        self._winograd_tile_used = 2  # its output tile side (conv_winograd.py)
        self._u_forward = None  # its weights in the Winograd domain, kept for backward
        self._out_size = None
        self._work = {}

    def _parse_padding(self, name, padding):
        """(padding as torch stores it, low-side padding, high-side padding)."""
        n = self._dims
        if isinstance(padding, str):
            if padding == "valid":
                return padding, (0,) * n, (0,) * n
            if padding != "same":
                raise ValueError(
                    f"{name} expected padding 'valid', 'same' or ints, got {padding!r}"
                )
            if any(s != 1 for s in self.stride):
                raise ValueError(f"{name} expected stride 1 with padding='same', got {self.stride}")
            # 'same' keeps the size; an odd total (even kernel) puts the extra on the high side.
            total = [d * (k - 1) for k, d in zip(self.kernel_size, self.dilation, strict=True)]
            low = tuple(t // 2 for t in total)
            return padding, low, tuple(t - lo for t, lo in zip(total, low, strict=True))
        padding = ntuple(name, "padding", padding, n, 0)
        return padding, padding, padding

    def describe(self) -> str:
        return f"{type(self).__name__}(in_channels={self.in_channels})"

    def _output_size(self, size):
        """Output spatial size for an input of spatial ``size``; ValueError when too small."""
        span = [d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation, strict=True)]
        padded = [
            s + lo + hi for s, lo, hi in zip(size, self._pad_low, self._pad_high, strict=True)
        ]
        if any(p < k for p, k in zip(padded, span, strict=True)):
            raise ValueError(
                f"{self.describe()} expected a padded input size (size + 2·padding) of at "
                f"least {tuple(span)} (dilation·(kernel − 1) + 1), got {tuple(padded)} for "
                f"input size {tuple(size)}"
            )
        return tuple((p - k) // s + 1 for p, k, s in zip(padded, span, self.stride, strict=True))

    def _geometry(self, out_size):
        """Kernel arguments as 3-D tuples: an image is a volume of depth 1."""
        ones = (1,) * (3 - self._dims)
        zeros = (0,) * (3 - self._dims)
        return (
            ones + self.kernel_size,
            ones + self.stride,
            zeros + self._pad_low,
            ones + self.dilation,
            ones + tuple(out_size),
        )

    def _as_volume(self, shape):
        """(N, C, H, W) → (N, C, 1, H, W); a 3-D shape is already a volume."""
        return shape[:2] + (1,) * (3 - self._dims) + shape[2:]

    def _buffer(self, name, shape, dtype):
        """A work array kept between calls, reallocated only when shape or dtype change."""
        array = self._work.get(name)
        if array is None or array.shape != shape or array.dtype != dtype:
            array = np.empty(shape, dtype=dtype)
            self._work[name] = array
        return array

    def _rows(self, name, blocks, size, dtype):
        """A (blocks, ≥ size) work array: one row per thread's block of work, the rows at
        least one 64-byte cache line apart.

        Two threads writing their own rows must not write into one cache line: each write
        takes the line away from the other core ("false sharing"). The direct kernels rewrite
        a short accumulator row on every pass: measured on 2 threads, interleaved, over many
        heap placements, forwards with the rows back to back against apart: LeNet-5's 6 → 16
        5×5 on (64, 6, 14, 14) 0.83 against 0.56 ms, LeNet-BN's 1 → 32 3×3 0.67 against
        0.50, 32 → 64 in 2 groups 2.07 against 1.62; the GEMM paths' rows are long and
        gained nothing measurable, but get the same rule.
        """
        line = 64 // np.dtype(dtype).itemsize
        return self._buffer(name, (blocks, -(-size // line) * line + line), dtype)

    @staticmethod
    def _tile_lines(k, out_size, dtype):
        """Columns a col matrix of ``k`` rows should have (about _TILE_BYTES, at least
        _MIN_TILE_COLUMNS), and the output lines of a tile that give about that many."""
        columns = max(_MIN_TILE_COLUMNS, _TILE_BYTES // (k * np.dtype(dtype).itemsize))
        return columns, max(1, min(math.prod(out_size[:-1]), columns // out_size[-1]))

    def _gemm_work(self, n, k, out_size, dtype, forward=False):
        """Lines per output tile, samples per tile, and the per-block work arrays of the GEMM
        kernels (for the ``forward``, which can share out the tiles of one sample, as many
        blocks as threads even for a batch smaller than that; the backward adds a sample's
        input gradient on one thread).

        A tile's col matrix (k × tile·ow) should stay in the core's cache (measured: a
        32×432×4096 product runs at 66 GFLOP/s, at 512 columns 88) but keep enough columns
        for BLAS to be efficient. A sample with fewer than _MIN_SAMPLE_COLUMNS outputs (a
        small map, deep in a network) shares its product with the next samples of its block.
        """
        ow = out_size[-1]
        lines = math.prod(out_size[:-1])
        columns, tile = self._tile_lines(k, out_size, dtype)
        blocks = max(1, min(config.get_num_threads(), n))
        samples = 1
        if lines * ow < _MIN_SAMPLE_COLUMNS:
            samples = max(1, min(columns // (lines * ow), -(-n // blocks)))
        if forward and samples == 1 and 0 < n < config.get_num_threads():
            threads = config.get_num_threads()
            # Tiles small enough for every thread to have one (a batch of one image), where
            # the products are worth a parallel region (~10 µs to start and join).
            if self.out_channels * k * lines * ow >= _SPLIT_SAMPLE_MACS:
                tile = max(1, min(tile, -(-lines // -(-threads // n))))
            blocks = max(1, min(threads, n * -(-lines // tile)))
        width = tile * ow * samples
        cols = self._rows("cols", blocks, k * width, dtype)
        tiles = self._rows("tiles", blocks, self.out_channels // self.groups * width, dtype)
        return tile, samples, cols, tiles

    def _channel_parts(self, n) -> int:
        """Runs of input channels per group that a GEMM backward of ``n`` samples is cut into
        (conv_backward_gemm_channels), or 0 for the per-sample backward.

        A batch smaller than the thread count leaves threads idle in the per-sample backward
        (a sample's input gradient is added on one thread). Cut by channels, every thread
        gets a share, from _SPLIT_SAMPLE_MACS multiply-adds a sample (a parallel region costs
        ~10 µs to start and join). The runs make the units (groups × runs) a multiple of the
        thread count where they can.
        """
        threads = config.get_num_threads()
        macs = self.weight.data.size * math.prod(self._out_size)
        if not 0 < n < threads or macs < _SPLIT_SAMPLE_MACS:
            return 0
        parts = min(self.in_channels // self.groups, threads // math.gcd(self.groups, threads))
        return parts if self.groups * parts > 1 else 0

    def _same_padding(self):
        """Whether this direct 3×3 or 5×5 layer is padded to keep the input's size ("same":
        (k − 1)/2 each side)."""
        k = self.kernel_size[0]
        return self._small and self._pad_low == self._pad_high == (k // 2, k // 2)

    def _depthwise_same(self):
        """Whether this is a depthwise "same" layer (one input and one output channel a
        group), which conv_small's depthwise_same kernel computes plane by plane."""
        return self._same_padding() and self.groups == self.in_channels == self.out_channels

    def _column_copies_fit(self, channels_per_group):
        """Whether a 3×3 "same" convolution (this layer's forward, or its input gradient) of
        that many input channels per group takes conv_small's conv2d_small_same_forward (see
        _SAME_MAX_CHANNELS)."""
        return (
            self._same_padding()
            and self.kernel_size == (3, 3)
            and channels_per_group <= _SAME_MAX_CHANNELS
        )

    def _small_same_run(self, x, weight, bias, relu, out):
        """out = the 3×3 "same" convolution of x (N, C, H, W) with weight (Cout, C/groups, 9)
        (kernels/conv_small.py, conv2d_small_same_forward)."""
        n, channels, height, width = x.shape
        blocks = max(1, min(config.get_num_threads(), n))
        xs = self._rows("small_same_xs", blocks, 3 * channels * (height + 2) * width, x.dtype)
        with config.one_thread_if(blocks == 1):
            conv_small.conv2d_small_same_forward(x, weight, bias, relu, out, xs)
        return out

    def _depthwise_same_run(self, x, weight, bias, relu, out):
        """out = the depthwise 'same' convolution of x (N, C, H, W) with weight (C, 1, k²)
        (kernels/conv_small.py, conv2d_depthwise_same_forward)."""
        n, channels, height, width = x.shape
        k = self.kernel_size[0]
        blocks = max(1, min(config.get_num_threads(), n * channels))
        xpad = self._rows("depthwise_xpad", blocks, (height + k - 1) * width + k - 1, x.dtype)
        col = np.tile(np.arange(width, dtype=np.int32), height)  # int32: 16 to a vector
        weight = weight.reshape(channels, k * k)
        with config.one_thread_if(blocks == 1):
            conv_small.conv2d_depthwise_same_forward(x, weight, bias, relu, col, out, xpad)
        return out

    def _small_forward(self, x, out_size, relu):
        """The direct 3×3 or 5×5 forward for few input channels (kernels/conv_small.py)."""
        n, dtype = x.shape[0], x.dtype
        oh, ow = out_size
        k = self.kernel_size[0]
        weight = np.ascontiguousarray(self.weight.data, dtype=dtype)
        weight = weight.reshape(self.out_channels, self.in_channels // self.groups, k * k)
        bias = np.zeros(self.out_channels, dtype) if self.bias is None else self.bias.data
        bias = bias.astype(dtype, copy=False)
        out = np.empty((n, self.out_channels, oh, ow), dtype=dtype)
        if self._depthwise_same():
            return self._depthwise_same_run(x, weight, bias, relu, out)
        if self._column_copies_fit(self.in_channels // self.groups):
            return self._small_same_run(x, weight, bias, relu, out)
        blocks = max(1, min(config.get_num_threads(), n))
        plane = (oh + k - 1) * (ow + k - 1)
        xpad = self._rows("small_xpad", blocks, self.in_channels * plane + k - 1, dtype)
        acc = self._rows("small_acc", blocks, conv_small.ACCUMULATORS * oh * (ow + k - 1), dtype)
        forward = conv_small.conv2d_small_forward if k == 3 else conv_small.conv2d_small5_forward
        with config.one_thread_if(blocks == 1):
            forward(x, weight, bias, relu, self._pad_low, out, xpad, acc)
        return out

    def _small_backward(self, grad_out, input_grad):
        """The backward of the direct path: weight and bias gradients by the direct kernel;
        the input gradient, when asked for, is the same direct forward run on grad_out with the
        filters flipped and in and out channels swapped (a full correlation: padding
        k − 1 − p)."""
        x = self._x
        n, dtype = x.shape[0], x.dtype
        oh, ow = self._out_size
        k = self.kernel_size[0]
        n_out, n_in, groups = self.out_channels, self.in_channels, self.groups
        cin_g, cout_g = n_in // groups, n_out // groups
        blocks = max(1, min(config.get_num_threads(), n))
        if self._depthwise_same() and k == 3:  # plane by plane, as its forward
            blocks = max(1, min(config.get_num_threads(), n * n_in))
        partial_w = self._buffer("partial_w", (blocks, n_out, cin_g, k * k), dtype)
        partial_b = self._rows("partial_b", blocks, n_out, dtype)
        if self._depthwise_same() and k == 3:
            height, width = x.shape[2:]
            xpad = self._rows("depthwise_xpad", blocks, (height + 2) * width + 2, dtype)
            col = np.tile(np.arange(width, dtype=np.int32), height)
            grad_out = np.ascontiguousarray(grad_out)
            with config.one_thread_if(blocks == 1):
                conv_small.conv2d_depthwise_same_backward_weight(
                    x, grad_out, col, partial_w.reshape(blocks, n_out, 9), partial_b, xpad
                )
        else:
            plane = (oh + k - 1) * (ow + k - 1)
            xpad = self._rows("small_xpad", blocks, n_in * plane + k - 1, dtype)
            gyw = self._rows("small_gyw", blocks, oh * (ow + k - 1), dtype)
            weight_grad = (
                conv_small.conv2d_small_backward_weight
                if k == 3
                else conv_small.conv2d_small5_backward_weight
            )
            with config.one_thread_if(blocks == 1):
                weight_grad(x, grad_out, self._pad_low, partial_w, partial_b, xpad, gyw)
        forward = conv_small.conv2d_small_forward if k == 3 else conv_small.conv2d_small5_forward
        grad_w = self._buffer("grad_w", (n_out * cin_g * k * k,), dtype)
        kernels.sum_blocks(partial_w.reshape(blocks, -1), grad_w)
        self._finite_weight_grad(grad_w.reshape(n_out, -1), grad_out)
        self.weight.grad += grad_w.reshape(self.weight.grad.shape)
        if self.bias is not None:
            grad_b = self._buffer("grad_b", (n_out,), dtype)
            kernels.sum_blocks(partial_b, grad_b)
            self.bias.grad += grad_b
        if not input_grad:
            return None
        height, width = x.shape[2:]
        # Per group, filter (o, c) flipped becomes filter (c, o): (groups, cin_g, cout_g, k²).
        weight = self.weight.data.astype(dtype, copy=False)
        flipped = weight.reshape(groups, cout_g, cin_g, k * k)[..., ::-1].transpose(0, 2, 1, 3)
        flipped = np.ascontiguousarray(flipped).reshape(n_in, cout_g, k * k)
        grad_x = np.empty_like(x)
        if self._depthwise_same():  # padding k − 1 − p = p: the same kind of convolution
            grad_out = np.ascontiguousarray(grad_out)
            return self._depthwise_same_run(grad_out, flipped, np.zeros(n_in, dtype), False, grad_x)
        if self._column_copies_fit(cout_g):
            grad_out = np.ascontiguousarray(grad_out)
            return self._small_same_run(grad_out, flipped, np.zeros(n_in, dtype), False, grad_x)
        plane = (height + k - 1) * (width + k - 1)
        gpad = self._rows("small_gpad", blocks, n_out * plane + k - 1, dtype)
        gacc = self._rows(
            "small_gacc", blocks, conv_small.ACCUMULATORS * height * (width + k - 1), dtype
        )
        padding = (k - 1 - self._pad_low[0], k - 1 - self._pad_low[1])
        with config.one_thread_if(blocks == 1):
            forward(grad_out, flipped, np.zeros(n_in, dtype), False, padding, grad_x, gpad, gacc)
        return grad_x

    def _finite_weight_grad(self, grad_w, grad_out):
        """Recompute the weight gradient (Cout, K) from each output's own window if it holds
        an inf or NaN (rare: the check reads only the small grad_w).

        The direct kernels compute output rows a few columns wider than the output (whole
        runs vectorise) with zeros in dy there, so their dot products also multiply those
        zeros by the input under the extra columns: an inf or NaN there would make NaN of a
        weight's gradient that never reads it (PyTorch's stays finite). The plain loops of
        conv_backward_weight_direct read only the outputs' windows.
        """
        if np.isfinite(grad_w).all():
            return
        volume = self._x.reshape(self._as_volume(self._x.shape))
        positions = math.prod(self._out_size)
        grad_out = grad_out.reshape(grad_out.shape[0], self.out_channels, positions)
        geometry = self._geometry(self._out_size)
        no_bias = np.empty(0, grad_w.dtype)  # the bias gradient has no such terms
        kernels.conv_backward_weight_direct(
            volume, grad_out, self.groups, *geometry, grad_w, no_bias
        )

    def _on_dtype_change(self):
        self._work = {}
        self._x = None
        self._x_padded = None
        self._x_volume = None

    def forward(self, x):
        return self._forward(x)

    def _forward(self, x, relu=False):
        """The forward; with ``relu``, max(·, 0) applied as the output is written (FusedReLU)."""
        x = check_input(
            self,
            x,
            (self._dims + 2,),
            _LAYOUTS[self._dims],
            channels=self.in_channels,
            dtype=self.weight.data.dtype,
        )
        out_size = self._output_size(x.shape[2:])
        x = np.ascontiguousarray(x)
        self._x = x
        self._out_size = out_size
        n, dtype = x.shape[0], x.dtype
        self._x_padded = None
        self._x_volume = None
        self._dilated_used = self._dilated_fits(out_size)
        self._shifted_used = False
        self._winograd_s2_used = False
        if self._dilated_used:  # first: the sub-grids may then take any of the paths below
            return self._dilated_forward(x, out_size, relu)
        if self._winograd_fits(n, out_size):
            return self._winograd_forward(x, out_size, relu)
        if self._winograd3d_fits(n, out_size):
            return self._winograd3d_forward(x, out_size, relu)
        if self._winograd_s2_fits(n, out_size):
            self._winograd_s2_used = True
            # Where its own backward does not pay, the layer's other one runs (they read
            # only x).
            self._shifted_used = self._shifted_fits(n, out_size)
            return self._winograd_s2_forward(x, out_size, relu)
        if self._direct_fits(n, out_size):
            return self._direct_forward(x, out_size, relu)
        if self._small3d:
            return self._small3d_forward(x, out_size, relu)
        if self._planes:
            return _relu_in_place(self._planes_forward(x, out_size), relu)
        if self._small:
            return self._small_forward(x, out_size, relu)
        if self._shifted_fits(n, out_size):
            self._shifted_used = True
            return self._shifted_forward(x, out_size, relu)
        weight = np.ascontiguousarray(self.weight.data, dtype=dtype).reshape(self.out_channels, -1)
        bias = np.zeros(self.out_channels, dtype) if self.bias is None else self.bias.data
        volume = x.reshape(self._as_volume(x.shape))
        out = np.empty((n, self.out_channels, math.prod(out_size)), dtype=dtype)
        tile, samples, cols, tiles = self._gemm_work(n, weight.shape[1], out_size, dtype, True)
        with config.single_threaded_blas(), config.one_thread_if(cols.shape[0] == 1):
            kernels.conv_forward_gemm(
                volume,
                weight,
                bias.astype(dtype, copy=False),
                relu,
                self.groups,
                *self._geometry(out_size),
                tile,
                samples,
                out,
                cols,
                tiles,
            )
        return out.reshape(n, self.out_channels, *out_size)

    def _direct_forward(self, x, out_size, relu):
        """The direct forward (kernels/conv.py's conv_forward_direct): depthwise layers, and
        layers with few output channels per group."""
        n, dtype = x.shape[0], x.dtype
        weight = np.ascontiguousarray(self.weight.data, dtype=dtype).reshape(self.out_channels, -1)
        # The kernel skips an empty bias.
        bias = np.empty(0, dtype) if self.bias is None else self.bias.data.astype(dtype, copy=False)
        out = np.empty((n, self.out_channels, math.prod(out_size)), dtype=dtype)
        volume = x.reshape(self._as_volume(x.shape))
        geometry = self._geometry(out_size)
        if self._direct and math.prod(out_size) <= _SMALL_PLANE:
            kernels.conv_forward_depthwise_small(
                volume, weight, bias, *geometry, out, config.get_num_threads()
            )
        else:
            kernels.conv_forward_direct(
                volume, weight, bias, self.groups, *geometry, out, config.get_num_threads()
            )
        return _relu_in_place(out, relu).reshape(n, self.out_channels, *out_size)

    def _direct_fits(self, n, out_size):
        """Whether the forward takes the direct loops: a layer they apply to, unless it is a
        2-D one of few outputs that the shifted products take. Measured there (float32, 2
        threads, batch 64 unless said, shifted / direct time, forward and forward +
        backward): 128 → 3 5×5 s2 on (32, 128, 16²) 0.58 / 0.54; 64 → 1 5×5 s2 on 16² 0.85 /
        0.79; 32 → 3 7×7 on 16² 0.57 / 0.59; 64 → 2 3×3 s2 on 32² 0.80 / 0.80; 16 → 1 3×3 s2
        on 32² 0.94 / 0.98; 64 → 4 in 2 groups on 16² 0.70 / 0.63; batch 32 32 → 3 5×5 on
        32² 0.55 / 0.61; 32 → 2 3×3 d2 on 14² 0.86 / 0.77; 128 → 3 3×3 d2 on 28² 0.94 / 0.79;
        128 → 1 3×3 s2 on 32² 0.92 / 0.95; 64 → 1 3×3 on 32² 0.86 / 0.90. In 3-D they lost
        (32 → 1 3×3×3 s2 on (8, 32, 16³) 1.6 / 1.3)."""
        if not self._direct_forward_applies:
            return False
        return self._dims == 3 or self._direct or not self._shifted_fits(n, out_size)

    def _shifted_fits(self, n, out_size):
        """Whether the forward takes the shifted products (kernels/conv_shifted.py): a layer
        _shifted marks, output planes of at least _SHIFTED_MIN_PLANE positions, or smaller
        2-D ones with a large kernel or many input channels and enough samples (see
        _SHIFTED_SMALL_MIN_CHANNELS)."""
        plane = math.prod(out_size)
        if not self._shifted or n == 0:
            return False
        if plane >= _SHIFTED_MIN_PLANE:
            return True
        return (
            self._dims == 2
            and plane >= _SHIFTED_SMALL_MIN_PLANE
            and n * self.groups >= 2 * config.get_num_threads()
            and (
                self.in_channels // self.groups >= _SHIFTED_SMALL_MIN_CHANNELS
                or math.prod(self.kernel_size) >= _SHIFTED_SMALL_MIN_TAPS
            )
        )

    def _shifted_parts(self, n, out_size):
        """Runs of output lines each (sample, group) pair's forward is cut into: one, or for
        fewer pairs than threads enough for every thread to have one, from
        _SPLIT_SAMPLE_MACS multiply-adds a pair (a parallel region costs ~10 µs)."""
        threads, pairs = config.get_num_threads(), n * self.groups
        macs = self.weight.data.size // self.groups * math.prod(out_size)
        if pairs >= threads or macs < _SPLIT_SAMPLE_MACS:
            return 1
        return min(-(-threads // pairs), math.prod(out_size[:-1]))

    def _taps_first(self, dtype):
        """The weight as (taps, Cout, Cg): each tap's weights one (Cout × Cg) matrix."""
        taps = math.prod(self.kernel_size)
        weight = self.weight.data.astype(dtype, copy=False).reshape(self.out_channels, -1, taps)
        return np.ascontiguousarray(weight.transpose(2, 0, 1))

    def _shifted_forward(self, x, out_size, relu):
        """The forward as one product per kernel tap on x's phase planes."""
        n, dtype = x.shape[0], x.dtype
        weight = self._taps_first(dtype)
        bias = np.zeros(self.out_channels, dtype) if self.bias is None else self.bias.data
        out = np.empty((n, self.out_channels, math.prod(out_size)), dtype=dtype)
        with config.single_threaded_blas():
            conv_shifted.conv_forward_shifted(
                x.reshape(self._as_volume(x.shape)),
                weight,
                bias.astype(dtype, copy=False),
                relu,
                self.groups,
                *self._geometry(out_size),
                self._shifted_parts(n, out_size),
                out,
                config.get_num_threads(),
            )
        return out.reshape(n, self.out_channels, *out_size)

    skips_input_grad = True  # backward(grad_out, input_grad=False): parameter gradients only

    def backward(self, grad_out, input_grad: bool = True):
        """The input gradient, or None with ``input_grad=False`` (the GEMM and direct 3×3 / 5×5
        paths then skip computing it; the Winograd and plane paths compute it and drop it)."""
        grad_x = self._backward(grad_out, input_grad)
        return grad_x if input_grad else None

    def _backward(self, grad_out, input_grad):
        require_forward(self, self._x)
        x = self._x
        n, dtype = x.shape[0], x.dtype
        grad_out = check_grad(self, grad_out, (n, self.out_channels, *self._out_size), dtype)
        grad_out = np.ascontiguousarray(grad_out)
        if self._dilated_used:
            return self._dilated_backward(grad_out, input_grad)
        if self._winograd_s2_used and self._winograd_s2_backward_fits(n):
            return self._winograd_s2_backward(grad_out)
        if self._x_padded is not None:  # the forward took a Winograd path
            if self._dims == 3:
                return self._winograd3d_backward(grad_out)
            return self._winograd_backward(grad_out)
        # The direct 3-D path's input gradient pads grad_out by 2 − p: it needs padding ≤ 2
        # (larger paddings go to the plane path's backward, or for a grouped layer the GEMM
        # one: both need only x).
        if self._x_volume is not None and (
            not input_grad or max(self._pad_low + self._pad_high) <= 2
        ):
            return self._small3d_backward(grad_out, input_grad)
        # The forward's direct loops (depthwise layers, few outputs a group) have a backward
        # on the same phase planes. Measured, 2 threads, backward only, against the paths it
        # replaced (vol2col + BLAS, planes + BLAS, the depthwise per-row loops): 32 → 3 7×7
        # on (64, 32, 16²) 6.9 vs 13.2 ms; 64 → 1 5×5 s2 4.7 vs 10.0; 128 → 3 3×3 d2 on 28²
        # 26 vs 60; 3-D 8 → 2 5³ on 16³ 5.0 vs 8.4; depthwise 64 5×5 s2 d2 on 16² 4.6 vs 8.3,
        # 7×7 s2 on 12² 3.9 vs 14.0, 3-D 5³ s2 2.0 vs 4.2, 3×3 s2 on 32² 4.5 vs 4.8. But a
        # depthwise 1×1 kernel has nothing to share between taps (32 channels on 28²: 3.4 vs
        # 2.4): it keeps the per-row loops.
        direct_backward = self._direct_forward_applies and math.prod(self.kernel_size) > 1
        if self._planes and not direct_backward:
            return self._planes_backward(grad_out)
        # The direct input gradient pads grad_out by k − 1 − p: it needs padding ≤ k − 1.
        if self._small and (
            not input_grad or max(self._pad_low + self._pad_high) <= self.kernel_size[0] - 1
        ):
            return self._small_backward(grad_out, input_grad)
        grad_out = grad_out.reshape(n, self.out_channels, math.prod(self._out_size))
        weight = np.ascontiguousarray(self.weight.data, dtype=dtype).reshape(self.out_channels, -1)
        volume = x.reshape(self._as_volume(x.shape))
        grad_x = np.empty_like(volume)
        grad_w = self._buffer("grad_w", weight.shape, dtype)
        grad_b = self._buffer("grad_b", (0 if self.bias is None else self.out_channels,), dtype)
        geometry = self._geometry(self._out_size)
        # The shifted products' backward gives each thread whole (sample, group) pairs: a
        # smaller batch goes on to vol2col's, whose backward can split by channels.
        if self._shifted_used and n * self.groups >= config.get_num_threads():
            # Its weight gradient is tap-major, (taps, Cout, Cg), as the weights it reads.
            weight_taps = self._taps_first(dtype)
            grad_taps = self._buffer("grad_w_taps", weight_taps.shape, dtype)
            blocks = config.get_num_threads()
            partial_w = self._buffer("partial_w_taps", (blocks, *weight_taps.shape), dtype)
            with config.single_threaded_blas(), config.one_thread_if(blocks == 1):
                conv_shifted.conv_backward_shifted(
                    volume,
                    weight_taps,
                    grad_out,
                    input_grad,
                    self.groups,
                    *geometry,
                    grad_x,
                    grad_taps,
                    grad_b,
                    partial_w,
                )
            grad_w[...] = grad_taps.transpose(1, 2, 0).reshape(grad_w.shape)
            self._finite_weight_grad(grad_w, grad_out)
        elif direct_backward:
            blocks = max(1, min(config.get_num_threads(), n * self.in_channels))
            partial_w = self._buffer("partial_w", (blocks, *weight.shape), dtype)
            with config.one_thread_if(blocks == 1):
                kernels.conv_backward_direct(
                    volume,
                    weight,
                    grad_out,
                    input_grad,
                    self.groups,
                    *geometry,
                    grad_x,
                    grad_w,
                    grad_b,
                    partial_w,
                )
            self._finite_weight_grad(grad_w, grad_out)
        elif self._direct:
            kernels.conv_backward_input_direct(weight, grad_out, self.groups, *geometry, grad_x)
            kernels.conv_backward_weight_direct(
                volume, grad_out, self.groups, *geometry, grad_w, grad_b
            )
        elif parts := self._channel_parts(n):
            # Tiles as in _gemm_work, sized for the largest run's rows of col (a buffer of its
            # own: the forward's "cols" has another shape, and sharing one would reallocate
            # both on every step).
            cin_g = self.in_channels // self.groups
            rows = -(-cin_g // parts) * math.prod(self.kernel_size)
            _, tile = self._tile_lines(rows, self._out_size, dtype)
            width = rows * tile * self._out_size[-1]
            cols = self._rows("cols_by_channel", config.get_num_threads(), width, dtype)
            with config.single_threaded_blas():
                kernels.conv_backward_gemm_channels(
                    volume,
                    weight,
                    grad_out,
                    input_grad,
                    self.groups,
                    *geometry,
                    tile,
                    parts,
                    grad_x,
                    grad_w,
                    grad_b,
                    cols,
                )
        else:
            tile, samples, cols, tiles = self._gemm_work(n, weight.shape[1], self._out_size, dtype)
            blocks = cols.shape[0]
            partial_w = self._buffer("partial_w", (blocks, *weight.shape), dtype)
            partial_b = self._rows("partial_b", blocks, self.out_channels, dtype)
            with config.single_threaded_blas(), config.one_thread_if(blocks == 1):
                kernels.conv_backward_gemm(
                    volume,
                    weight,
                    grad_out,
                    input_grad,
                    self.groups,
                    *geometry,
                    tile,
                    samples,
                    grad_x,
                    grad_w,
                    grad_b,
                    cols,
                    tiles,
                    partial_w,
                    partial_b,
                )
        self.weight.grad += grad_w.reshape(self.weight.grad.shape)
        if self.bias is not None:
            self.bias.grad += grad_b
        return grad_x.reshape(x.shape)

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        if self.padding != (0,) * self._dims:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self._dims:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


def _relu_in_place(out, relu):
    """``out`` after max(out, 0) in place when ``relu``: a fused ReLU for the paths whose
    kernels have no ReLU epilogue (a second pass, but no new array)."""
    if relu:
        np.maximum(out, 0, out=out)
    return out


class Conv2d(_ConvNd):
    """2-D convolution over (N, C, H, W) images, as ``torch.nn.Conv2d``.

    Arguments (int or pair): kernel_size, stride, padding (or 'valid' / 'same'), dilation;
    groups splits the channels into independent convolutions (groups = in_channels is a
    depthwise convolution). Initialised uniform in ±1/√(in_channels/groups · kh · kw).

    Shape:
        input (N, in_channels, H, W); output (N, out_channels, H_out, W_out) with
        H_out = ⌊(H + 2·padding − dilation·(kh − 1) − 1) / stride⌋ + 1 (likewise W_out);
        weight (out_channels, in_channels/groups, kh, kw); bias (out_channels,).
    """

    _dims = 2


class Conv3d(_ConvNd):
    """3-D convolution over (N, C, D, H, W) volumes, as ``torch.nn.Conv3d``.

    Arguments as :class:`Conv2d`, with triples. Shape: input (N, in_channels, D, H, W);
    output (N, out_channels, D_out, H_out, W_out), each size as in Conv2d;
    weight (out_channels, in_channels/groups, kd, kh, kw); bias (out_channels,).
    """

    _dims = 3
