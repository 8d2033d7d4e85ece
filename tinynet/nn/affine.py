"""ChannelAffine: a fixed per-channel scale and shift, what an inference-time BatchNorm is.

With population statistics a BatchNorm computes y = γ·(x − E[x])/√(Var[x] + ε) + β per
channel, which is y = weight·x + bias with weight = γ/√(Var[x] + ε) and
bias = β − E[x]·weight. ``fold_bn`` turns every BatchNorm it cannot merge into the layer before
it (one at the input, after a ReLU or an Add) into this layer.
"""

from __future__ import annotations

import numpy as np

from .module import Module, Parameter
from .validation import check_grad, check_input, positive_int, require_forward


class ChannelAffine(Module):
    """y[:, c] = weight[c]·x[:, c] + bias[c].

    Shape: input (N, C) or (N, C, *) with any number of spatial axes; output the same.
    ``weight`` and ``bias`` are parameters of shape (C,), initialised to the identity map.
    """

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = positive_int("ChannelAffine", "num_features", num_features)
        self.weight = Parameter(np.ones(self.num_features, dtype=self.dtype))
        self.bias = Parameter(np.zeros(self.num_features, dtype=self.dtype))
        self._x = None

    def describe(self) -> str:
        return f"ChannelAffine({self.num_features})"

    def _per_channel(self, v, ndim):
        """v (C,) shaped to broadcast against (N, C, *spatial)."""
        return v.reshape((1, self.num_features) + (1,) * (ndim - 2))

    def forward(self, x):
        c = self.num_features
        x = check_input(self, x, tuple(range(2, 8)), "(N, {C}, *)", channels=c, dtype=self.dtype)
        self._x = x
        w = self._per_channel(self.weight.data, x.ndim)
        b = self._per_channel(self.bias.data, x.ndim)
        out = x * w
        out += b
        return out

    def backward(self, grad_out):
        require_forward(self, self._x)
        x = self._x
        grad_out = check_grad(self, grad_out, x.shape, self.dtype)
        axes = (0,) + tuple(range(2, x.ndim))
        self.weight.grad += np.sum(grad_out * x, axis=axes)
        self.bias.grad += np.sum(grad_out, axis=axes)
        return grad_out * self._per_channel(self.weight.data, x.ndim)

    def extra_repr(self) -> str:
        return str(self.num_features)
