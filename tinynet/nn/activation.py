"""Element-wise nonlinearities. Each saves its output, from which its derivative follows."""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from .module import Module
from .validation import cast_input, check_grad, require_forward


class _Elementwise(Module):
    """Shared plumbing: cast the input, remember the output for backward."""

    def __init__(self):
        super().__init__()
        self._y = None

    def _grad(self, grad_out):
        require_forward(self, self._y)
        return check_grad(self, grad_out, self._y.shape, self._y.dtype)


class ReLU(_Elementwise):
    """ReLU(x) = max(x, 0); its derivative is 1 where the output is positive, else 0."""

    def forward(self, x):
        x = cast_input(self, x)
        self._y = np.maximum(x, 0)
        return self._y

    def backward(self, grad_out):
        grad_out = self._grad(grad_out)
        return np.where(self._y > 0, grad_out, 0).astype(self._y.dtype, copy=False)


class Sigmoid(_Elementwise):
    """σ(x) = 1 / (1 + e⁻ˣ), computed without overflow; σ' = σ(1 − σ)."""

    def forward(self, x):
        x = cast_input(self, x)
        self._y = expit(x)
        return self._y

    def backward(self, grad_out):
        grad_out = self._grad(grad_out)
        y = self._y
        return grad_out * y * (1 - y)


class Tanh(_Elementwise):
    """tanh(x); tanh' = 1 − tanh²."""

    def forward(self, x):
        x = cast_input(self, x)
        self._y = np.tanh(x)
        return self._y

    def backward(self, grad_out):
        grad_out = self._grad(grad_out)
        y = self._y
        return grad_out * (1 - y * y)
