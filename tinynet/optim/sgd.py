"""Stochastic gradient descent with momentum, torch.optim.SGD's update rule."""

from __future__ import annotations

import numpy as np

from ..kernels import optim as kernels
from .optimizer import Optimizer, check_number


class SGD(Optimizer):
    """SGD with optional momentum, dampening, Nesterov momentum and L2 weight decay.

    For each parameter p with gradient g, at step t (μ = momentum, τ = dampening,
    λ = weight_decay)::

        g ← g + λ·p
        b ← g                      at the first step (no dampening on it, as in torch)
        b ← μ·b + (1 − τ)·g        afterwards
        g ← g + μ·b  (nesterov)    or   g ← b
        p ← p − lr·g

    With ``momentum=0`` the buffer is skipped and the update is p ← p − lr·(g + λ·p).
    ``maximize=True`` takes g ← −g first (gradient ascent), as torch.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
    ):
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def _check_group(self, group: dict) -> None:
        super()._check_group(group)
        check_number(self, "momentum", group["momentum"], minimum=0.0)
        check_number(self, "dampening", group["dampening"])
        check_number(self, "weight_decay", group["weight_decay"], minimum=0.0)
        for flag in ("nesterov", "maximize"):
            if not isinstance(group[flag], bool):
                raise TypeError(f"SGD expected {flag} to be a bool, got {group[flag]!r}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("SGD with nesterov=True expects momentum > 0 and dampening = 0")

    def step(self, closure=None):
        """Update every parameter once from its gradient; returns ``closure()`` if given."""
        loss = None if closure is None else closure()
        for group in self.param_groups:
            momentum = group["momentum"]
            scalars = {}  # per dtype: the hyper-parameters in that dtype (see below)
            for p in group["params"]:
                data = p.data
                # The kernel indexes parameter, gradient and buffer by one counter: another
                # shape would read past an array's end (NumPy raised for the same mistake).
                if p.grad.shape != data.shape:
                    raise ValueError(
                        f"SGD expected the gradient of a parameter of shape {data.shape} to "
                        f"have that shape, got {p.grad.shape}"
                    )
                dtype = data.dtype
                args = scalars.get(dtype)
                if args is None:
                    # The scalars in p's dtype: a float64 one would make the float32 update
                    # run (and round) in float64.
                    cast = dtype.type
                    args = scalars[dtype] = (
                        cast(group["lr"]),
                        cast(momentum),
                        cast(group["dampening"]),
                        cast(group["weight_decay"]),
                        bool(group["nesterov"]),
                    )
                first = False
                if momentum != 0:
                    state = self.state.get(p)
                    buf = None if state is None else state.get("momentum_buffer")
                    if buf is not None and buf.shape != data.shape:
                        raise ValueError(
                            f"SGD expected the momentum buffer of a parameter of shape "
                            f"{data.shape} to have that shape, got {buf.shape}"
                        )
                    if buf is None:  # torch starts the buffer at the first gradient
                        buf = np.empty(data.shape, dtype)
                        self.state.setdefault(p, {})["momentum_buffer"] = buf
                        first = True
                else:
                    buf = _NO_BUFFER.get(dtype)
                    if buf is None:
                        buf = _NO_BUFFER[dtype] = np.empty(0, dtype)
                # maximize: ascend, as torch, by descending along the negated gradient.
                grad = np.negative(p.grad) if group["maximize"] else p.grad
                _update(data, grad, buf, *args, first)
        return loss


# An empty buffer per dtype, passed when there is no momentum.
_NO_BUFFER: dict = {}


def _update(data, grad, buf, *args):
    """kernels.sgd_update on flat views of the arrays. An array that is not C-contiguous
    (a parameter replaced by a transposed view, a restored buffer) goes through a flat copy
    that is written back."""
    if data.flags.c_contiguous and buf.flags.c_contiguous:  # the common case, kept short
        kernels.sgd_update(data.reshape(-1), grad.ravel(), buf.reshape(-1), *args)
        return
    flat_data, flat_buf = _flat(data), _flat(buf)
    kernels.sgd_update(flat_data, grad.ravel(), flat_buf, *args)
    for array, flat in ((data, flat_data), (buf, flat_buf)):
        if not array.flags.c_contiguous:
            array[...] = flat.reshape(array.shape)


def _flat(array):
    return array.reshape(-1) if array.flags.c_contiguous else array.ravel()
