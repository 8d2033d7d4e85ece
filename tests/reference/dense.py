"""Slow, readable NumPy references for the dense layers, the losses and the optimizers.

Everything is computed in float64 with the textbook formula written out (einsum, explicit
loops over rows), independently of how tinynet computes it. The optimizer references are
transcriptions of the update rules as torch.optim documents them, one parameter at a time.
"""

from __future__ import annotations

import math

import numpy as np

# -- layers ----------------------------------------------------------------------------------


def linear_forward(x, weight, bias=None):
    """y[..., o] = Σ_i x[..., i] · W[o, i] + b[o]."""
    x = np.asarray(x, dtype=np.float64)
    y = np.einsum("...i,oi->...o", x, np.asarray(weight, dtype=np.float64))
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64)
    return y


def linear_backward(x, weight, grad_out):
    """(dL/dx, dL/dW, dL/db) for y = x Wᵀ + b, summing over every leading dimension."""
    x = np.asarray(x, dtype=np.float64)
    g = np.asarray(grad_out, dtype=np.float64)
    grad_x = np.einsum("...o,oi->...i", g, np.asarray(weight, dtype=np.float64))
    grad_w = np.zeros((g.shape[-1], x.shape[-1]))
    grad_b = np.zeros(g.shape[-1])
    for index in np.ndindex(*g.shape[:-1]):  # one outer product per input row
        grad_w += np.outer(g[index], x[index])
        grad_b += g[index]
    return grad_x, grad_w, grad_b


def relu(x):
    x = np.asarray(x, dtype=np.float64)
    return np.where(x <= 0, 0.0, x), np.where(x <= 0, 0.0, 1.0)  # as torch: a NaN passes


def sigmoid(x):
    """σ(x) and σ'(x), one element at a time with math.exp on the non-positive side."""
    x = np.asarray(x, dtype=np.float64)
    y = np.empty_like(x)
    for i, v in np.ndenumerate(x):
        y[i] = 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))
    return y, y * (1 - y)


def tanh(x):
    x = np.asarray(x, dtype=np.float64)
    y = np.vectorize(math.tanh)(x) if x.size else x.copy()
    return y, 1 - y**2


# -- losses ----------------------------------------------------------------------------------


def cross_entropy(
    logits, target, reduction="mean", label_smoothing=0.0, weight=None, ignore_index=-100
):
    """Loss and d loss / d logits, row by row, from torch.nn.CrossEntropyLoss's documented
    formula: loss_n = −Σ_c w_c·q_c·log softmax(x_n)_c with q = (1 − ε)·one_hot(t_n) + ε/C;
    rows with target ignore_index add nothing; the mean divides by Σ_n w_(t_n) over the
    rows kept. The gradient of a row is Σ_c w_c·q_c·(softmax − one_hot(c)). A target of
    class probabilities (N, C) takes q = (1 − ε)·target_n + ε/C, and the mean divides by N."""
    x = np.asarray(logits, dtype=np.float64)
    n, c = x.shape
    w = np.ones(c) if weight is None else np.asarray(weight, dtype=np.float64)
    probabilities = np.ndim(target) == 2
    losses = np.zeros(n)
    grad = np.zeros_like(x)
    divisor = 0.0
    for row in range(n):
        if not probabilities and target[row] == ignore_index:
            continue
        divisor += 1.0 if probabilities else w[target[row]]
        top = max(x[row])
        log_z = top + math.log(sum(math.exp(v - top) for v in x[row]))
        log_p = x[row] - log_z
        q = np.full(c, label_smoothing / c)
        if probabilities:
            q += (1 - label_smoothing) * np.asarray(target[row], dtype=np.float64)
        else:
            q[target[row]] += 1 - label_smoothing
        losses[row] = -np.dot(w * q, log_p)
        grad[row] = np.dot(w, q) * np.exp(log_p) - w * q
    if reduction == "none":  # each row's loss, and each row's gradient of its own loss
        return losses, grad
    if reduction == "mean":
        scale = 1.0 / divisor if divisor else math.nan
        return losses.sum() * scale, grad * scale
    return losses.sum(), grad


def mse(x, y, reduction="mean"):
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    total = float(np.sum((x - y) ** 2))
    scale = 1.0 / x.size if reduction == "mean" else 1.0
    return total * scale, 2 * (x - y) * scale


# -- optimizers (torch.optim's documented algorithms) ----------------------------------------


def sgd(params, grads_per_step, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    """Run SGD over a list of gradient lists (one list per step); returns the parameters.

    From torch.optim.SGD's documentation:
        g ← g + λθ;  b ← g (t = 1) or μb + (1 − τ)g;  g ← g + μb (nesterov) or b;  θ ← θ − γg
    """
    params = [np.array(p, dtype=np.float64) for p in params]
    buffers = [None] * len(params)
    for grads in grads_per_step:
        for i, g in enumerate(grads):
            g = np.asarray(g, dtype=np.float64)
            if weight_decay != 0:
                g = g + weight_decay * params[i]
            if momentum != 0:
                if buffers[i] is None:
                    buffers[i] = g.copy()
                else:
                    buffers[i] = momentum * buffers[i] + (1 - dampening) * g
                g = g + momentum * buffers[i] if nesterov else buffers[i]
            params[i] = params[i] - lr * g
    return params


def adam(
    params,
    grads_per_step,
    lr=1e-3,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=0.0,
    amsgrad=False,
    decoupled=False,
):
    """Run Adam (or AdamW with ``decoupled``) over a list of gradient lists.

    From torch.optim.Adam / AdamW's documentation:
        θ ← θ(1 − γλ) (AdamW) or g ← g + λθ (Adam)
        m ← β₁m + (1 − β₁)g;  v ← β₂v + (1 − β₂)g²;  m̂ = m/(1 − β₁ᵗ);  v̂ = v/(1 − β₂ᵗ)
        v̂max ← max(v̂max, v̂) (amsgrad);  θ ← θ − γ m̂ / (√v̂ + ε)
    """
    beta1, beta2 = betas
    params = [np.array(p, dtype=np.float64) for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    v_max = [np.zeros_like(p) for p in params]
    for t, grads in enumerate(grads_per_step, start=1):
        for i, g in enumerate(grads):
            g = np.asarray(g, dtype=np.float64)
            if weight_decay != 0:
                if decoupled:
                    params[i] = params[i] * (1 - lr * weight_decay)
                else:
                    g = g + weight_decay * params[i]
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            m_hat = m[i] / (1 - beta1**t)
            if amsgrad:
                # torch keeps the maximum of the uncorrected v, then corrects it.
                v_max[i] = np.maximum(v_max[i], v[i])
                v_hat = v_max[i] / (1 - beta2**t)
            else:
                v_hat = v[i] / (1 - beta2**t)
            params[i] = params[i] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return params
