"""The cross-entropy loss in one pass per row: log-softmax, the loss and its gradient.

NumPy needs about fifteen whole-array operations for this (max, subtract, exp, sum, log,
gather, ...), each a few microseconds of call overhead on the (60, 10) scores of a small
network: more time than the arithmetic. One compiled loop does it all.
"""

import numpy as np
from numba import njit

from .. import config


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _exp_shifted(row, out):
    """out[j] = exp(row[j] − m), m = max_j row[j] (so no exponential overflows); returns m
    and Σ_j out[j] (summed in float64): softmax(row) = out / Σ, log_s = log Σ."""
    m = row[0]
    for j in range(1, row.shape[0]):
        m = max(m, row[j])
    s = 0.0
    for j in range(row.shape[0]):
        e = np.exp(row[j] - m)
        out[j] = e
        s += e
    return m, s


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def cross_entropy(x, target, weight, ignore_index, smoothing, mean, grad):
    """The loss, and grad = d loss / dx, as torch.nn.CrossEntropyLoss.

    Row n (target t = target[n], p = softmax(x_n), class weights w, W = Σ_c w_c, ε =
    smoothing, C classes):

        loss_n = (1 − ε)·w_t·(−log p_t) + (ε/C)·Σ_c w_c·(−log p_c)
        grad_n = ((1 − ε)·w_t + (ε/C)·W)·p − (1 − ε)·w_t·one_hot(t) − (ε/C)·w

    (with w = 1 the familiar p − q, q = (1 − ε)·one_hot(t) + ε/C). A row whose target is
    ``ignore_index`` adds nothing and gets a zero gradient. The loss is Σ_n loss_n, divided
    with the gradient by D = Σ_n w_(t_n) over the rows not ignored when ``mean`` (torch's
    weighted mean; D = 0 gives NaN, as 0/0 there). log p_c = x_c − m − log Σ_j exp(x_j − m)
    with m = max_j x_j, so no exponential overflows.
    Shapes: x (N, C) float; target (N,) integers, each in [0, C) or ignore_index (checked by
    the caller); weight (C,) float64; grad (N, C) written. Sums run in float64. Serial: rows
    are short and few.
    """
    n, c = x.shape
    total_weight = 0.0  # W
    for j in range(c):
        total_weight += weight[j]
    scale = 1.0
    if mean:
        count = 0.0  # D
        for i in range(n):
            if target[i] != ignore_index:
                count += weight[target[i]]
        scale = 1.0 / count if count != 0 else np.nan
    uniform = smoothing / c
    total = 0.0
    for i in range(n):
        row = x[i]
        g = grad[i]
        t = target[i]
        if t == ignore_index:
            for j in range(c):
                g[j] = 0
            continue
        m, s = _exp_shifted(row, g)
        log_s = np.log(s)
        weighted = 0.0  # Σ_c w_c·(x_c − m), for the smoothing term
        for j in range(c):
            weighted += weight[j] * (row[j] - m)
        w_t = (1 - smoothing) * weight[t]
        # −log p_c = log_s − (x_c − m)
        total += w_t * (log_s - (row[t] - m))
        if smoothing != 0:
            total += uniform * (total_weight * log_s - weighted)
        a = (w_t + uniform * total_weight) / s  # multiplies e_c = exp(x_c − m) = p_c·s
        # In float64, rounded once into grad's dtype: subtracting the target's share after a
        # float32 store left a rounding error where the gradient is exactly 0 (C = 1).
        for j in range(c):
            q = uniform * weight[j] + (w_t if j == t else 0.0)
            g[j] = (g[j] * a - q) * scale
    return total * scale


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def cross_entropy_probabilities(x, y, weight, smoothing, mean, grad):
    """:func:`cross_entropy` for targets given as class probabilities, as torch takes them
    (soft labels: mixup, distillation).

    Row n, with ỹ = (1 − ε)·y_n + ε/C and the class weights w:

        loss_n = Σ_c w_c·ỹ_c·(−log p_c),   grad_n = (Σ_c w_c·ỹ_c)·p − w ⊙ ỹ,

    and the mean divides by N (not by a sum of weights: torch's rule for probabilities).
    Shapes: x, y, grad (N, C); weight (C,) float64. Sums in float64. Serial.
    """
    n, c = x.shape
    scale = (1.0 / n if n else np.nan) if mean else 1.0
    uniform = smoothing / c
    total = 0.0
    for i in range(n):
        row = x[i]
        g = grad[i]
        target = y[i]
        m, s = _exp_shifted(row, g)
        log_s = np.log(s)
        mass = 0.0  # Σ_c w_c·ỹ_c
        for j in range(c):
            q = weight[j] * ((1 - smoothing) * target[j] + uniform)
            mass += q
            total += q * (log_s - (row[j] - m))
        a = mass / s
        for j in range(c):
            q = weight[j] * ((1 - smoothing) * target[j] + uniform)
            g[j] = (g[j] * a - q) * scale
    return total * scale
