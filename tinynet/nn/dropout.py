"""Dropout: randomly zero activations in training, identity in evaluation."""

from __future__ import annotations

import numpy as np

from ..random import get_generator
from .module import Module
from .validation import cast_input, check_grad, require_forward


class Dropout(Module):
    """Inverted dropout (Srivastava et al., 2014).

    In training each element is zeroed with probability ``p`` and the survivors are scaled by
    1/(1 − p), so the expected activation is unchanged and evaluation needs no rescaling: in
    eval mode the layer is the identity. Backward multiplies by the same mask forward drew.
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        number = (int, float, np.integer, np.floating)
        if isinstance(p, bool) or not isinstance(p, number) or not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout expected p in [0, 1], got {p!r}")
        self.p = float(p)
        self._mask = None
        self._shape = None
        self._dtype = None

    def forward(self, x):
        x = cast_input(self, x)
        self._shape = x.shape
        self._dtype = x.dtype
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        if self.p == 1.0:
            self._mask = np.zeros(x.shape, dtype=x.dtype)
            return self._mask.copy()
        keep = get_generator().random(x.shape, dtype=x.dtype) >= self.p
        # The mask carries the 1/(1-p) scale, so backward is one multiplication.
        self._mask = keep * x.dtype.type(1.0 / (1.0 - self.p))
        return x * self._mask

    def backward(self, grad_out):
        require_forward(self, self._shape)
        grad_out = check_grad(self, grad_out, self._shape, self._dtype)
        if self._mask is None:
            return grad_out
        return grad_out * self._mask

    def extra_repr(self) -> str:
        return f"p={self.p}"
