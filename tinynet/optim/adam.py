"""Adam (Kingma & Ba, 2015) and AdamW (Loshchilov & Hutter, 2019), torch.optim's update rules."""

from __future__ import annotations

import numpy as np

from .optimizer import Optimizer, check_number


class Adam(Optimizer):
    """Adam: steps scaled by running estimates of the gradient's first and second moments.

    For each parameter p with gradient g, at step t = 1, 2, ...::

        g ← g + λ·p                                   (weight_decay λ; AdamW decays p instead)
        m ← m + (1 − β₁)·(g − m)                      (= β₁·m + (1 − β₁)·g)
        v ← β₂·v + (1 − β₂)·g²
        v̂ ← max(v̂, v) with amsgrad, else v̂ = v
        p ← p − lr / (1 − β₁ᵗ) · m / (√v̂ / √(1 − β₂ᵗ) + eps)

    The divisions by 1 − βᵗ (bias correction) undo the pull of m and v towards their zero
    initial values during the first steps. ``decoupled_weight_decay=True`` is AdamW;
    ``maximize=True`` takes g ← −g first (gradient ascent), as torch.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
    ):
        defaults = {
            "lr": lr,
            "betas": tuple(betas) if isinstance(betas, (list, tuple)) else betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    def _check_group(self, group: dict) -> None:
        super()._check_group(group)
        name = type(self).__name__
        betas = group["betas"]
        if not isinstance(betas, tuple) or len(betas) != 2:
            raise TypeError(f"{name} expected betas to be a tuple of two numbers, got {betas!r}")
        check_number(self, "betas[0]", betas[0], minimum=0.0, below=1.0)
        check_number(self, "betas[1]", betas[1], minimum=0.0, below=1.0)
        check_number(self, "eps", group["eps"], minimum=0.0)
        check_number(self, "weight_decay", group["weight_decay"], minimum=0.0)
        for flag in ("amsgrad", "maximize", "decoupled_weight_decay"):
            if not isinstance(group[flag], bool):
                raise TypeError(f"{name} expected {flag} to be a bool, got {group[flag]!r}")

    def step(self, closure=None):
        """Update every parameter once from its gradient; returns ``closure()`` if given."""
        loss = None if closure is None else closure()
        for group in self.param_groups:
            # float(): a NumPy float64 scalar would promote float32 arithmetic to float64.
            lr = float(group["lr"])
            beta1 = float(group["betas"][0])
            beta2 = float(group["betas"][1])
            eps = float(group["eps"])
            weight_decay = float(group["weight_decay"])
            amsgrad = group["amsgrad"]
            decoupled = group["decoupled_weight_decay"]
            for p in group["params"]:
                state = self.state.get(p)
                if state is None:
                    state = self._init_state(p)
                step = state["step"] + 1
                state["step"] = step
                m = state["exp_avg"]
                v = state["exp_avg_sq"]
                # maximize: ascend, as torch, by descending along the negated gradient.
                grad = np.negative(p.grad) if group["maximize"] else p.grad
                if weight_decay != 0:
                    if decoupled:
                        p.data *= 1 - lr * weight_decay
                    else:
                        # A new array: p.grad itself must stay the gradient.
                        decay = np.multiply(p.data, weight_decay, out=np.empty_like(p.data))
                        grad = np.add(decay, grad, out=decay)
                # The operations follow torch's order, so results agree to rounding. One
                # scratch array serves every temporary in turn (new arrays are made with out=:
                # for a 0-d parameter a ufunc would return a scalar).
                # m ← lerp(m, g, w) with w = 1 − β₁, in torch's two forms: m + w(g − m) for
                # w < 0.5, else g − (1 − w)(g − m). One form for all w loses m's precision when
                # m ≫ g and w ≈ 1 (β₁ = 0: m must be g exactly, and m + 1·(g − m) is not).
                weight = m.dtype.type(1 - beta1)
                scratch = np.subtract(grad, m, out=np.empty_like(m))
                if weight < 0.5:
                    scratch *= weight
                    m += scratch
                else:
                    scratch *= m.dtype.type(1) - weight
                    np.subtract(grad, scratch, out=m)
                # v ← β₂v + (1 − β₂)g²
                v *= beta2
                np.multiply(grad, 1 - beta2, out=scratch)
                scratch *= grad
                v += scratch
                if amsgrad:
                    v_max = state.get("max_exp_avg_sq")
                    if v_max is None:
                        v_max = state["max_exp_avg_sq"] = np.zeros_like(p.data)
                    np.maximum(v_max, v, out=v_max)
                    v = v_max
                # p ← p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + eps)
                bias_correction1 = 1 - beta1**step
                bias_correction2_sqrt = (1 - beta2**step) ** 0.5
                denom = np.sqrt(v, out=np.empty_like(v))
                denom /= bias_correction2_sqrt
                denom += eps
                np.multiply(m, -lr / bias_correction1, out=scratch)
                scratch /= denom
                p.data += scratch
        return loss

    def _init_state(self, p) -> dict:
        state = {
            "step": 0,
            "exp_avg": np.zeros_like(p.data),
            "exp_avg_sq": np.zeros_like(p.data),
        }
        self.state[p] = state
        return state


class AdamW(Adam):
    """Adam with decoupled weight decay: p ← p·(1 − lr·λ) before the Adam step, instead of
    adding λ·p to the gradient (where Adam's scaling would weaken the decay of parameters with
    large gradients). Default ``weight_decay=1e-2``, as in torch."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
    ):
        super().__init__(
            params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
            decoupled_weight_decay=True,
        )  # fmt: skip
