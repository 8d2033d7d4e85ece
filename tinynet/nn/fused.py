"""FusedReLU: a Conv2d, Conv3d or Linear with the ReLU after it computed in the same pass.

At inference a ReLU is a pass over memory of its own: it reads the layer's whole output back
from RAM and writes a new array. Applied where the layer writes its output (a tile of it still
in the cache), the max costs next to nothing. ``tinynet.fuse_relu`` puts this layer in place of
each (layer, ReLU) pair; it is also trainable, with the ReLU's gradient mask applied before the
layer's own backward.
"""

from __future__ import annotations

import numpy as np

from ..kernels import elementwise
from .conv import Conv2d, Conv3d
from .linear import Linear
from .module import Module
from .validation import check_grad, require_forward


class FusedReLU(Module):
    """``relu(layer(x))`` in one pass; ``layer`` is a Conv2d, Conv3d or Linear (kept as a child).

    Shape: as ``layer``'s. State dict keys: ``layer.weight``, ``layer.bias``.
    """

    def __init__(self, layer: Module):
        super().__init__()
        # The layers whose kernels can apply the max as they write their output.
        if not isinstance(layer, (Conv2d, Conv3d, Linear)):
            raise TypeError(
                f"FusedReLU expected a Conv2d, Conv3d or Linear layer, got {type(layer).__name__}"
            )
        self.layer = layer
        self._y = None

    def forward(self, x):
        # The layer validates x and applies max(·, 0) as it writes each block of its output.
        self._y = self.layer._forward(x, relu=True)
        return self._y

    def backward(self, grad_out):
        require_forward(self, self._y)
        grad_out = check_grad(self, grad_out, self._y.shape, self._y.dtype)
        # ReLU's derivative: pass the gradient where the output is positive.
        grad = elementwise.apply(elementwise.RELU_GRAD, self._y, np.ascontiguousarray(grad_out))
        return self.layer.backward(grad)
