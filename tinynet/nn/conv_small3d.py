"""Conv3d's direct path for few input channels: when it applies, its buffers, forward and
backward. The kernels are in ``tinynet/kernels/conv_small3d.py``; ``_ConvNd`` inherits these
methods, as it does the Winograd and plane paths'.
"""

from __future__ import annotations

import numpy as np

from .. import config
from ..kernels import conv_small3d

# Input channels up to which a 3×3×3 stride-1 Conv3d is computed directly: its cost grows
# with the channels (27 multiply-adds per channel and output), while the plane path's products
# get more efficient with them, and from 4 channels Winograd may take the layer. Measured
# (float32, 2 threads, batch 8 unless said, padding 1, fastest of 9 samples, direct / plane
# path time, forward and forward + weight gradient; PyTorch 2.13 alongside, forward):
# 1 → 16 on 16³: 0.29 and 0.45 (0.99x PyTorch); 1 → 8 on 32³: 0.16 and 0.27 (0.37x);
# batch 1, 1 → 16 on 32³: 0.16 and 0.23 (0.30x); 2 → 16 on 16³: 0.65 and 0.71 (1.50x);
# 3 → 16 on 16³: 0.62 and 0.66 (1.24x); 3 → 32 on 16³: 0.95 and 0.90 (1.64x). Grouped,
# against the general direct loops or vol2col + BLAS per group (forward and forward +
# backward): depthwise 32 on (4, 32, 16³) 0.30 and 0.23 (0.66x PyTorch's forward), 64 on
# (8, 64, 8³) 0.22 and 0.16 (1.02x); 6 → 12 in 2 groups on 16³ 0.34 and 0.65 (0.19x);
# 16 → 32 in 8 groups on 8³ 0.46 and 0.26 (0.27x). Four channels (forward, forward + weight
# gradient, forward + both gradients): 4 → 8 on (16, 4, 12³) 0.45, 0.56, 0.73; 4 → 16 on
# (4, 4, 10³) 0.73, 0.67, 0.99; on (8, 4, 8³) 0.92, 0.76, 1.07; 8 → 16 in 2 groups on 12³
# 0.34, 0.38, 0.37. (On 16³ Winograd takes 4 channels first: the direct path measured 0.81,
# 0.81, 1.19 of its time there.)
_SMALL3D_MAX_CHANNELS = 4


class Small3dMixin:
    """Conv3d's direct methods; ``_buffer``, ``_rows`` and the attributes come from _ConvNd."""

    def _small3d_applies(self) -> bool:
        """Whether this layer takes the direct path: a 3×3×3 Conv3d, stride 1, undilated,
        with at most _SMALL3D_MAX_CHANNELS input channels per group (any padding)."""
        return (
            self._dims == 3
            and self.kernel_size == (3, 3, 3)
            and self.stride == (1, 1, 1)
            and self.dilation == (1, 1, 1)
            and self.in_channels // self.groups <= _SMALL3D_MAX_CHANNELS
        )

    def _small3d_forward(self, x, out_size, relu):
        n, dtype = x.shape[0], x.dtype
        dp, hp, wp = (s + 2 for s in out_size)
        vol = dp * hp * wp
        length = (out_size[0] - 1) * hp * wp + out_size[1] * wp
        threads = config.get_num_threads()
        # The padded volumes, kept for the backward (replaced only by the next forward, which
        # replaces self._x too); conv.py's backward dispatches on it.
        xpad = self._buffer("small3d_xpad", (n, self.in_channels * vol + 2), dtype)
        acc = self._rows("small3d_acc", threads, 2 * length, dtype)
        weight = np.ascontiguousarray(self.weight.data, dtype=dtype)
        weight = weight.reshape(self.out_channels, self.in_channels // self.groups, 3, 9)
        bias = np.zeros(self.out_channels, dtype) if self.bias is None else self.bias.data
        out = np.empty((n, self.out_channels, *out_size), dtype=dtype)
        conv_small3d.conv3d_small_forward(
            x, weight, bias.astype(dtype, copy=False), relu, self._pad_low, out, xpad, acc
        )
        self._x_volume = xpad
        return out

    def _small3d_backward(self, grad_out, input_grad):
        """Weight and bias gradients by the direct kernel; the input gradient, when asked for,
        is the direct forward run on grad_out with the filters flipped and their channel axes
        swapped (a full correlation: padding 2 − p, which needs p ≤ 2; conv.py's backward
        sends larger paddings to the plane or GEMM path)."""
        x = self._x
        n, dtype = x.shape[0], x.dtype
        n_out, n_in, groups = self.out_channels, self.in_channels, self.groups
        cin_g, cout_g = n_in // groups, n_out // groups
        out_size = self._out_size
        hp, wp = out_size[1] + 2, out_size[2] + 2
        threads = config.get_num_threads()
        gy = self._rows("small3d_gy", threads, out_size[0] * hp * wp, dtype)
        grad_w = self._buffer("grad_w", (n_out, cin_g, 3, 9), dtype)
        grad_b = self._buffer("grad_b", (0 if self.bias is None else n_out,), dtype)
        conv_small3d.conv3d_small_backward_weight(
            self._x_volume, grad_out, groups, grad_w, grad_b, gy
        )
        self._finite_weight_grad(grad_w.reshape(n_out, -1), grad_out)
        self.weight.grad += grad_w.reshape(self.weight.grad.shape)
        if self.bias is not None:
            self.bias.grad += grad_b
        if not input_grad:
            return None
        size = x.shape[2:]
        # Per group, filter (o, c) flipped in all three axes becomes filter (c, o):
        # (groups, cin_g, cout_g, 27).
        weight = self.weight.data.astype(dtype, copy=False)
        flipped = weight.reshape(groups, cout_g, cin_g, 27)[..., ::-1].transpose(0, 2, 1, 3)
        flipped = np.ascontiguousarray(flipped)
        dp, hp, wp = (s + 2 for s in size)
        gpad = self._buffer("small3d_gpad", (n, n_out * dp * hp * wp + 2), dtype)
        length = (size[0] - 1) * hp * wp + size[1] * wp
        gacc = self._rows("small3d_gacc", threads, 2 * length, dtype)
        grad_x = np.empty_like(x)
        padding = tuple(2 - p for p in self._pad_low)
        conv_small3d.conv3d_small_forward(
            grad_out,
            flipped.reshape(n_in, cout_g, 3, 9),
            np.zeros(n_in, dtype),
            False,
            padding,
            grad_x,
            gpad,
            gacc,
        )
        return grad_x
