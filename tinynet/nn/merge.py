"""Layers that join or pass through branches of a graph: Identity, Add and Concat.

They have no parameters. Add and Concat take several inputs, so their ``backward`` returns a
tuple: one gradient per input, in the order the inputs were given. A :class:`tinynet.graph.Graph`
routes those gradients back to the layers that produced each input.
"""

from __future__ import annotations

import numpy as np

from .module import Module
from .validation import cast_input, check_grad, layer_name, require_forward


class Identity(Module):
    """y = x. A placeholder (a shortcut branch, a removed layer) that keeps the graph's shape.

    Shape: any; the output is the input itself, not a copy.
    """

    def forward(self, x):
        x = cast_input(self, x)
        self._shape = x.shape
        return x

    def backward(self, grad_out):
        require_forward(self, getattr(self, "_shape", None))
        return check_grad(self, grad_out, self._shape, grad_out.dtype)


class Add(Module):
    """y = x₁ + x₂ + … : the join of a residual connection (He et al., 2016).

    Every input gets the whole output gradient, since ∂y/∂xᵢ = 1.

    Shape: every input has the same shape, which is the output's.
    """

    def forward(self, *xs):
        if len(xs) < 2:
            raise ValueError(f"{layer_name(self)} expected at least 2 inputs, got {len(xs)}")
        xs = [cast_input(self, x) for x in xs]
        shape = xs[0].shape
        for i, x in enumerate(xs[1:], start=1):
            if x.shape != shape:
                raise ValueError(
                    f"{layer_name(self)} expected inputs of one shape, got {shape} for input 0 "
                    f"and {x.shape} for input {i}"
                )
        out = xs[0] + xs[1]
        for x in xs[2:]:
            out += x  # out is a fresh array, so adding in place touches no input
        self._arity = len(xs)
        self._shape = shape
        return out

    def backward(self, grad_out):
        require_forward(self, getattr(self, "_shape", None))
        grad_out = check_grad(self, grad_out, self._shape, grad_out.dtype)
        # The same array for every input: a Graph never modifies a gradient in place.
        return (grad_out,) * self._arity


class Concat(Module):
    """y = [x₁, x₂, …] joined along ``dim`` (channels by default), as torch.cat.

    Backward slices the output gradient back into one piece per input.

    Shape: inputs agree on every axis but ``dim``; the output's ``dim`` is their sum.
    """

    def __init__(self, dim: int = 1):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise ValueError(f"Concat expected dim to be an int, got {dim!r}")
        self.dim = int(dim)

    def forward(self, *xs):
        if len(xs) < 1:
            raise ValueError(f"{layer_name(self)} expected at least 1 input, got 0")
        xs = [cast_input(self, x) for x in xs]
        ndim = xs[0].ndim
        if not -ndim <= self.dim < ndim:
            raise ValueError(
                f"{layer_name(self)} expected inputs with axis {self.dim}, got rank {ndim}"
            )
        axis = self.dim % ndim
        first = xs[0].shape
        for i, x in enumerate(xs[1:], start=1):
            others = [k for k in range(ndim) if k != axis]
            if x.ndim != ndim or any(x.shape[k] != first[k] for k in others):
                raise ValueError(
                    f"{layer_name(self)} expected inputs that differ only along axis {axis}, "
                    f"got {first} for input 0 and {x.shape} for input {i}"
                )
        dtype = np.result_type(*xs)
        out = np.concatenate(xs, axis=axis).astype(dtype, copy=False)
        self._axis = axis
        self._splits = np.cumsum([x.shape[axis] for x in xs])[:-1]
        self._shape = out.shape
        return out

    def backward(self, grad_out):
        require_forward(self, getattr(self, "_shape", None))
        grad_out = check_grad(self, grad_out, self._shape, grad_out.dtype)
        # Contiguous pieces: the kernels of the layers upstream expect them.
        pieces = np.split(grad_out, self._splits, axis=self._axis)
        return tuple(np.ascontiguousarray(piece) for piece in pieces)

    def describe(self) -> str:
        return f"Concat(dim={self.dim})"

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
