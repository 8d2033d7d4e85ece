"""Dropout: randomly zero activations in training, identity in evaluation."""

from __future__ import annotations

import numpy as np

from ..kernels import dropout as kernels
from ..random import get_generator
from .module import Module
from .validation import cast_input, check_grad, require_forward


class Dropout(Module):
    """Inverted dropout (Srivastava et al., 2014).

    In training each element is zeroed with probability ``p`` and the survivors are scaled by
    1/(1 − p), so the expected activation is unchanged and evaluation needs no rescaling: in
    eval mode the layer is the identity. Backward multiplies by the same mask forward drew.

    The mask is never stored: each forward draws one seed from tinynet's generator, and the
    kernel derives element i's keep-or-drop from (seed, i) alone (kernels/dropout.py), so
    backward recomputes the same mask from that seed.
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        number = (int, float, np.integer, np.floating)
        if isinstance(p, bool) or not isinstance(p, number) or not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout expected p in [0, 1], got {p!r}")
        self.p = float(p)
        # Saved by forward for backward: the probability and seed of the mask it applied
        # (p None: no mask, the identity), the output's shape and dtype.
        self._mask_p = None
        self._seed = None
        self._shape = None
        self._dtype = None

    def forward(self, x):
        x = cast_input(self, x)
        self._shape = x.shape
        self._dtype = x.dtype
        self._mask_p = None
        if not self.training or self.p == 0.0:
            return x
        self._mask_p = self.p
        if self.p == 1.0:  # every element dropped (times 0, as torch: a NaN stays NaN)
            return x * x.dtype.type(0)
        self._seed = int(get_generator().integers(0, 2**64, dtype=np.uint64))
        return kernels.apply(np.ascontiguousarray(x), self._seed, self.p)

    def backward(self, grad_out):
        require_forward(self, self._shape)
        grad_out = check_grad(self, grad_out, self._shape, self._dtype)
        if self._mask_p is None:
            return grad_out
        if self._mask_p == 1.0:
            return grad_out * grad_out.dtype.type(0)
        return kernels.apply(np.ascontiguousarray(grad_out), self._seed, self._mask_p)

    def extra_repr(self) -> str:
        return f"p={self.p}"
