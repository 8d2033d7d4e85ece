"""Element-wise nonlinearities. Each saves its output, from which its derivative follows."""

from __future__ import annotations

import numpy as np

from ..kernels import elementwise
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


def _contiguous(a):
    # Not np.ascontiguousarray, which turns a 0-d array into shape (1,).
    return a if a.flags.c_contiguous else a.copy()


class ReLU(_Elementwise):
    """ReLU(x) = max(x, 0); its derivative is 0 where the output is ≤ 0, else 1 (NaN
    included, as torch)."""

    def forward(self, x):
        x = _contiguous(cast_input(self, x))
        self._y = elementwise.apply(elementwise.RELU, x)
        return self._y

    def backward(self, grad_out):
        grad_out = _contiguous(self._grad(grad_out))
        return elementwise.apply(elementwise.RELU_GRAD, self._y, grad_out)


class Sigmoid(_Elementwise):
    """σ(x) = 1 / (1 + e⁻ˣ); σ' = σ(1 − σ)."""

    def forward(self, x):
        x = _contiguous(cast_input(self, x))
        if x.dtype == np.float32:  # a vectorised exp in the kernel (see kernels/elementwise.py)
            self._y = elementwise.apply(elementwise.SIGMOID, x)
            return self._y
        # float64: NumPy's exp, in place on one new array. For x very negative e⁻ˣ overflows
        # to inf and 1/inf gives the right limit, 0 (and for x very positive e⁻ˣ underflows to
        # 0, giving 1), so those floating-point events are expected, not errors.
        y = np.negative(x, out=np.empty_like(x))
        with np.errstate(over="ignore", under="ignore"):
            np.exp(y, out=y)
        y += 1
        self._y = np.reciprocal(y, out=y)
        return self._y

    def backward(self, grad_out):
        grad_out = _contiguous(self._grad(grad_out))
        return elementwise.apply(elementwise.SIGMOID_GRAD, self._y, grad_out)


class Tanh(_Elementwise):
    """tanh(x); tanh' = 1 − tanh²."""

    def forward(self, x):
        x = _contiguous(cast_input(self, x))
        if x.dtype == np.float32:  # NumPy's float32 tanh is scalar code without AVX-512
            self._y = elementwise.apply(elementwise.TANH, x)
        else:
            self._y = np.tanh(x, out=np.empty_like(x))  # an array even for 0-d x
        return self._y

    def backward(self, grad_out):
        grad_out = _contiguous(self._grad(grad_out))
        return elementwise.apply(elementwise.TANH_GRAD, self._y, grad_out)
