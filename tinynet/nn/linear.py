"""Linear: y = x Wᵀ + b."""

from __future__ import annotations

import math

from ..random import get_generator
from .module import Module, Parameter
from .validation import check_grad, check_input, positive_int, require_forward


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

    def describe(self) -> str:
        return f"Linear(in_features={self.in_features})"

    def forward(self, x):
        x = check_input(
            self,
            x,
            tuple(range(1, 33)),
            "(N, {C})",
            channels=self.in_features,
            channel_axis=-1,
            dtype=self.weight.data.dtype,
        )
        self._x = x
        y = x @ self.weight.data.T
        if self.bias is not None:
            y += self.bias.data
        return y

    def backward(self, grad_out):
        require_forward(self, self._x)
        x = self._x
        out_shape = x.shape[:-1] + (self.out_features,)
        grad_out = check_grad(self, grad_out, out_shape, x.dtype)
        # Fold any leading dimensions into one batch axis: dW = Σ_n gₙ xₙᵀ.
        g2 = grad_out.reshape(-1, self.out_features)
        x2 = x.reshape(-1, self.in_features)
        self.weight.grad += g2.T @ x2
        if self.bias is not None:
            self.bias.grad += g2.sum(axis=0)
        return grad_out @ self.weight.data

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )
