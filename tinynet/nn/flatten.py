"""Flatten: merge dimensions into one (a view, no copy)."""

from __future__ import annotations

import math

import numpy as np

from .module import Module
from .validation import cast_input, check_grad, require_forward


class Flatten(Module):
    """Flatten dimensions ``start_dim`` to ``end_dim`` into one, as torch.nn.Flatten.

    Shape: (N, C, H, W) → (N, C·H·W) with the defaults.
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        for name, value in (("start_dim", start_dim), ("end_dim", end_dim)):
            if not isinstance(value, (int, np.integer)):
                raise TypeError(f"Flatten expected {name} to be an int, got {value!r}")
        self.start_dim = int(start_dim)
        self.end_dim = int(end_dim)
        self._shape = None

    def forward(self, x):
        x = cast_input(self, x)
        # A 0-d input counts as having one dimension (as torch: dims 0 and -1 name it) and
        # flattens to one value.
        ndim = max(x.ndim, 1)
        start = self.start_dim % ndim
        end = self.end_dim % ndim
        if not (-ndim <= self.start_dim < ndim and -ndim <= self.end_dim < ndim) or start > end:
            raise ValueError(
                f"Flatten(start_dim={self.start_dim}, end_dim={self.end_dim}) expected an input "
                f"with dimensions start_dim..end_dim, got shape {x.shape}"
            )
        self._shape = x.shape
        self._dtype = x.dtype
        # The merged size written out, not -1: NumPy cannot infer it when another dimension
        # is 0 (an empty batch), where torch gives (0, C·H·W).
        merged = math.prod(x.shape[start : end + 1])
        shape = x.shape[:start] + (merged,) + x.shape[end + 1 :] if x.ndim else (1,)
        y = x.reshape(shape)
        self._out_shape = y.shape
        return y

    def backward(self, grad_out):
        require_forward(self, self._shape)
        # Check against the output's shape: a gradient of the right size but another shape
        # (a transposed one, say) would otherwise be reshaped into nonsense.
        grad_out = check_grad(self, grad_out, self._out_shape, self._dtype)
        return grad_out.reshape(self._shape)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
