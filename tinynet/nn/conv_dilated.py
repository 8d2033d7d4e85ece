"""Dilated convolutions as undilated ones on interleaved sub-grids ("space to batch").

With dilation d along an axis (stride 1), output y reads the padded input at y + a·d for
taps a = 0 .. k − 1. Write y = d·j + r: it reads padded positions d·(j + a) + r, which all
lie on the sub-grid of residue r. So the outputs of residue r are an ordinary (undilated,
unpadded) convolution of the input's residue-r sub-grid, with the same weights: a dilated
convolution is d² (in 2-D; d³ in 3-D) undilated ones, one per sub-grid, each on a map d
times smaller per axis. TensorFlow computes atrous convolutions this way (space_to_batch).

Here the sub-grids become extra samples: the padded input (N, C, Lp) is rearranged into
(N·d, C, Lp/d) per split axis (kernels/subgrid.py), an inner undilated layer sharing this
layer's parameters runs its fastest path on it (Winograd, the direct 3×3×3 loops or the
plane path, none of which takes a dilation), and the outputs are interleaved back. The
gradients take the same road backwards: grad_out is split as the outputs were, the inner
backward adds the weight and bias gradients into the shared parameters, and its input
gradient is interleaved back and cropped to the input.

Where it pays was measured: see DilatedMixin._dilated_applies (Conv3d only, for now; a
dilated Conv2d takes vol2col + BLAS, or the direct loops when depthwise).

An axis whose padded length is not a multiple of d is padded further with zeros; the extra
outputs they give are computed and dropped (they are past the output's end).
``_ConvNd`` inherits these methods.
"""

from __future__ import annotations

import math

import numpy as np

from .. import random as tn_random
from ..kernels import subgrid

# Sub-grid outputs per split axis, at least (see DilatedMixin._dilated_fits).
_MIN_SIDE = 8


class DilatedMixin:
    """The dilated path (Conv3d's, see _dilated_applies); the attributes come from _ConvNd."""

    def _dilated_applies(self) -> bool:
        """Whether this layer may take the sub-grid path: a Conv3d, not depthwise, with
        dilation > 1 along some axis whose kernel is longer than 1, and stride 1 along every
        such axis (with stride s > 1, output j reads s·j + a·d: the residues mix). The
        forward also needs sub-grids big enough (see _dilated_fits).

        Measured (float32, 2 threads, Zen 4, medians, forward and forward + backward, this
        path's time / the previous path's, 3×3×3, padding = dilation = 2 unless said):
        (4, 16, 16³) → 16 0.65 and 0.72; (2, 32, 16³) → 32 0.77 and 0.62; dilation 3 on
        (4, 16, 24³) → 16 0.47 and 0.60; (2, 4, 32³) → 8 0.71 and 0.68; (2, 1, 32³) → 8 0.69
        and 0.55; 4 groups (4, 16, 16³) → 32 0.73 and 0.81. Not taken: depthwise (4, 16, 16³)
        1.14 and 0.82 (the direct loops handle dilation in place); sub-grids of 6 outputs a
        side, (8, 8, 12³) → 8: 1.07 and 1.29. Conv2d, whose undilated paths gain less over
        vol2col + BLAS at the channel counts dilation is used with, measured 0.7–1.3 (16 → 16
        on (64, 16, 28²): 0.70–1.02 over runs, dilation 3 1.17–1.26, 32 → 64 on 14² 0.95–1.14,
        depthwise 1.5–2.5): it stays on its general paths.
        """
        split = self._dilated_factors()
        return (
            self._dims == 3
            and not self._direct
            and any(f > 1 for f in split)
            and all(s == 1 for s, f in zip(self.stride, split, strict=True) if f > 1)
        )

    def _dilated_fits(self, out_size) -> bool:
        """Whether this forward takes the sub-grid path: it applies, and each sub-grid has at
        least _MIN_SIDE outputs along every split axis (smaller ones measured slower)."""
        split = self._dilated_factors()
        return self._dilated and all(
            -(-o // f) >= _MIN_SIDE for o, f in zip(out_size, split, strict=True) if f > 1
        )

    def _dilated_factors(self):
        """Per axis, the sub-grid count: the dilation where the kernel is longer than 1."""
        return tuple(
            d if k > 1 else 1 for k, d in zip(self.kernel_size, self.dilation, strict=True)
        )

    def _dilated_inner(self):
        """The undilated, unpadded layer that runs on the sub-grids, sharing this layer's
        parameters (rebound on every call: to() or a pass may replace them)."""
        inner = self.__dict__.get("_inner")
        if inner is None:
            split = self._dilated_factors()
            stride = tuple(1 if f > 1 else s for s, f in zip(self.stride, split, strict=True))
            # Its own initial weights are thrown away: drawn from a private generator so
            # that building it leaves tinynet's random stream as it was.
            from .conv import Conv2d, Conv3d  # here: conv.py imports this module

            cls = Conv2d if self._dims == 2 else Conv3d
            with tn_random.isolated():
                inner = cls(
                    self.in_channels, self.out_channels, self.kernel_size, stride=stride,
                    padding=0, dilation=1, groups=self.groups, bias=self.bias is not None,
                )  # fmt: skip
            # Not a child module: its parameters are this layer's, listed once.
            object.__setattr__(self, "_inner", inner)
        inner.weight = self.weight
        inner.bias = self.bias  # fold_bn gives a layer without bias one
        return inner

    def _dilated_geometry(self):
        """(low padding, sub-grid counts) as 3-D tuples: an image is a volume of depth 1."""
        pad = 3 - self._dims
        return (0,) * pad + self._pad_low, (1,) * pad + self._dilated_factors()

    def _dilated_shape(self, shape):
        """The shape of the sub-grids the inner layer sees for an input of ``shape``:
        (N·Πf, C, cells...), each axis padded, then rounded up to whole sub-grids."""
        size = shape[2:]
        padded = [s + lo + hi for s, lo, hi in zip(size, self._pad_low, self._pad_high)]
        cells = tuple(-(-p // f) for p, f in zip(padded, self._dilated_factors(), strict=True))
        return (shape[0] * math.prod(self._dilated_factors()), shape[1], *cells)

    def _dilated_forward(self, x, out_size, relu=False):
        low, factors = self._dilated_geometry()
        n, channels = x.shape[0], x.shape[1]
        cells = self._dilated_shape(x.shape)[2:]
        volume = (1,) * (3 - self._dims) + cells
        grids = self._buffer("grids", (n, *factors, channels, *volume), x.dtype)
        subgrid.split(x.reshape(self._as_volume(x.shape)), low, factors, grids)
        xs = grids.reshape(n * math.prod(factors), channels, *cells)
        ys = self._dilated_inner()._forward(xs, relu)
        out = np.empty((n, self.out_channels, *out_size), dtype=x.dtype)
        ys = ys.reshape(n, *factors, self.out_channels, *self._as_volume(ys.shape)[2:])
        subgrid.merge(ys, (0, 0, 0), out.reshape(self._as_volume(out.shape)))
        return out

    def _dilated_backward(self, grad_out, input_grad):
        inner = self._dilated_inner()
        x = self._x
        low, factors = self._dilated_geometry()
        inner_size = self._as_volume((0, 0, *inner._out_size))[2:]
        gs = self._buffer(
            "grad_grids", (x.shape[0], *factors, self.out_channels, *inner_size), x.dtype
        )
        subgrid.split(grad_out.reshape(self._as_volume(grad_out.shape)), (0, 0, 0), factors, gs)
        gs = gs.reshape(-1, self.out_channels, *inner._out_size)
        gxs = inner.backward(gs, input_grad)
        if not input_grad:
            return None
        grad_x = np.empty_like(x)
        gxs = gxs.reshape(x.shape[0], *factors, x.shape[1], *self._as_volume(gxs.shape)[2:])
        subgrid.merge(gxs, low, grad_x.reshape(self._as_volume(x.shape)))
        return grad_x
