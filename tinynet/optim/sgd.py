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
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ):
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
        }
        super().__init__(params, defaults)

    def _check_group(self, group: dict) -> None:
        super()._check_group(group)
        check_number(self, "momentum", group["momentum"], minimum=0.0)
        check_number(self, "dampening", group["dampening"])
        check_number(self, "weight_decay", group["weight_decay"], minimum=0.0)
        if not isinstance(group["nesterov"], bool):
            raise TypeError(f"SGD expected nesterov to be a bool, got {group['nesterov']!r}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("SGD with nesterov=True expects momentum > 0 and dampening = 0")

    def step(self, closure=None):
        """Update every parameter once from its gradient; returns ``closure()`` if given."""
        loss = None if closure is None else closure()
        for group in self.param_groups:
            momentum = group["momentum"]
            for p in group["params"]:
                buf, first = np.empty(0, p.data.dtype), False  # no buffer without momentum
                if momentum != 0:
                    state = self.state.setdefault(p, {})
                    buf = state.get("momentum_buffer")
                    if buf is None:  # torch starts the buffer at the first gradient
                        buf = state["momentum_buffer"] = np.empty(p.data.shape, p.data.dtype)
                        first = True
                # The scalars in p's dtype: a float64 one would make the float32 update
                # run (and round) in float64.
                scalar = p.data.dtype.type
                _update(
                    p.data,
                    p.grad,
                    buf,
                    scalar(group["lr"]),
                    scalar(momentum),
                    scalar(group["dampening"]),
                    scalar(group["weight_decay"]),
                    bool(group["nesterov"]),
                    first,
                )
        return loss


def _update(data, grad, buf, *args):
    """kernels.sgd_update on flat views of the arrays. An array that is not C-contiguous
    (a parameter replaced by a transposed view, a restored buffer) goes through a flat copy
    that is written back."""
    flat_data, flat_buf = _flat(data), _flat(buf)
    kernels.sgd_update(flat_data, grad.ravel(), flat_buf, *args)
    for array, flat in ((data, flat_data), (buf, flat_buf)):
        if not array.flags.c_contiguous:
            array[...] = flat.reshape(array.shape)


def _flat(array):
    return array.reshape(-1) if array.flags.c_contiguous else array.ravel()
