"""Linear: y = x Wᵀ + b."""

from __future__ import annotations

import math

import numpy as np

# Numba's np.dot calls the BLAS SciPy ships; loaded now so threadpoolctl can limit it.
import scipy.linalg.cython_blas  # noqa: F401

from .. import config
from ..kernels import linear as kernels
from ..random import get_generator
from .module import Module, Parameter
from .validation import check_grad, check_input, positive_int, require_forward

# Products smaller than this run as one BLAS call: splitting them costs more than it saves.
_PARALLEL_FLOPS = 4_000_000
# Any rank NumPy allows: (N, in), or (*, in) with leading dimensions folded into the batch.
_RANKS = range(1, 33)


class Linear(Module):
    """Fully connected layer, ``y = x @ weight.T + bias``.

    Initialised as PyTorch does: weight and bias uniform in ±1/√in_features (Kaiming-uniform
    with a = √5).

    Shape:
        input (*, in_features), output (*, out_features); weight (out_features, in_features).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features = positive_int("Linear", "in_features", in_features)
        self.out_features = positive_int("Linear", "out_features", out_features)
        bound = 1.0 / math.sqrt(in_features)
        rng = get_generator()
        shape = (out_features, in_features)
        self.weight = Parameter(rng.uniform(-bound, bound, shape).astype(self.dtype))
        if bias:
            self.bias = Parameter(rng.uniform(-bound, bound, out_features).astype(self.dtype))
        else:
            self.register_parameter("bias", None)
        self._x = None
        # Set by fold_bn when it merged a BatchNorm1d into this layer: that BatchNorm scaled
        # axis 1, which is this layer's feature axis only for (N, features) inputs.
        self.merged_batchnorm = False

    def describe(self) -> str:
        return f"Linear(in_features={self.in_features})"

    def forward(self, x):
        return self._forward(x)

    def _forward(self, x, relu=False):
        """y = x Wᵀ + b, then max(y, 0) when ``relu`` (for FusedReLU, see nn/fused.py)."""
        if self.merged_batchnorm and np.ndim(x) != 2:
            raise ValueError(
                f"{self.describe()} expected input (N, {self.in_features}), got shape "
                f"{np.shape(x)}: fold_bn merged a BatchNorm1d into it, and a BatchNorm1d "
                f"normalises axis 1, which is this layer's feature axis only for 2-D inputs "
                f"(fold with tinynet.fold_bn(model, input_shape=...) to keep it apart)"
            )
        x = check_input(
            self,
            x,
            _RANKS,
            "(N, {C})",
            channels=self.in_features,
            channel_axis=-1,
            dtype=self.weight.data.dtype,
        )
        x2 = np.ascontiguousarray(x.reshape(-1, self.in_features))
        self._x = x2
        self._shape = x.shape
        w = np.ascontiguousarray(self.weight.data)
        y = np.empty((x2.shape[0], self.out_features), dtype=w.dtype)
        if x2.size and y.size:
            blocks = self._blocks(x2)
            with config.single_threaded_blas():
                if blocks == 1:  # no parallel region to start for one block
                    kernels.forward_rows(x2, w, y)
                else:
                    kernels.linear_forward(x2, w, blocks, y)
        else:
            y[...] = 0  # an empty sum; BLAS is not called with an empty dimension
        if self.bias is not None:
            y += self.bias.data
        if relu:  # y was just written: it is still in the cache for this pass
            np.maximum(y, 0, out=y)
        return y.reshape(x.shape[:-1] + (self.out_features,))

    skips_input_grad = True  # backward(grad_out, input_grad=False): parameter gradients only

    def backward(self, grad_out, input_grad: bool = True):
        require_forward(self, self._x)
        x2 = self._x  # leading dimensions folded into one batch axis: dW = Σ_n gₙ xₙᵀ
        out_shape = self._shape[:-1] + (self.out_features,)
        grad_out = check_grad(self, grad_out, out_shape, x2.dtype)
        g2 = np.ascontiguousarray(grad_out.reshape(-1, self.out_features))
        w = np.ascontiguousarray(self.weight.data)
        if x2.size and g2.size:
            # The kernel overwrites both; with an empty dimension they stay zero sums.
            grad_x = np.empty(x2.shape, dtype=x2.dtype)
            grad_w = np.empty(w.shape, dtype=w.dtype)
            blocks = self._blocks(x2)
            g2t = np.ascontiguousarray(g2.T)
            args = (x2, w, g2, g2t)
            outs = (grad_x, grad_w, self.weight.grad)
            with config.single_threaded_blas():
                if blocks == 1:
                    kernels.linear_backward_serial(*args, input_grad, *outs)
                else:
                    kernels.linear_backward(*args, blocks, input_grad, *outs)
        else:
            grad_x = np.zeros(x2.shape, dtype=x2.dtype)  # empty sums: nothing to add to .grad
        if self.bias is not None:
            self.bias.grad += g2.sum(axis=0)
        return grad_x.reshape(self._shape) if input_grad else None

    def _blocks(self, x2) -> int:
        """Row blocks for the kernels: one per thread, or one when the product is small."""
        flops = 2 * x2.shape[0] * self.in_features * self.out_features
        threads = 1 if flops < _PARALLEL_FLOPS else config.get_num_threads()
        return max(1, min(threads, x2.shape[0], self.out_features))

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )
