"""Stochastic gradient descent with momentum, torch.optim.SGD's update rule."""

from __future__ import annotations

import numpy as np

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
            # float(): a NumPy float64 scalar would promote float32 arithmetic to float64.
            lr = float(group["lr"])
            momentum = float(group["momentum"])
            dampening = float(group["dampening"])
            weight_decay = float(group["weight_decay"])
            nesterov = group["nesterov"]
            for p in group["params"]:
                grad = p.grad
                if weight_decay != 0:
                    # A new array (p.grad must stay the gradient), made with out= because for
                    # a 0-d parameter a ufunc would return a scalar.
                    grad = np.multiply(p.data, weight_decay, out=np.empty_like(p.data))
                    grad += p.grad
                update = grad
                if momentum != 0:
                    state = self.state.get(p)
                    buf = None if state is None else state.get("momentum_buffer")
                    if buf is None:
                        buf = grad.copy()
                        self.state.setdefault(p, {})["momentum_buffer"] = buf
                    else:
                        buf *= momentum
                        if dampening == 0:
                            buf += grad
                        else:
                            buf += grad * (1 - dampening)
                    if nesterov:
                        update = np.multiply(buf, momentum, out=np.empty_like(buf))
                        update += grad
                    else:
                        update = buf
                p.data -= update * lr
        return loss
