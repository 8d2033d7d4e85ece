"""The cross-entropy loss in one pass per row: log-softmax, the loss and its gradient.

NumPy needs about fifteen whole-array operations for this (max, subtract, exp, sum, log,
gather, ...), each a few microseconds of call overhead on the (60, 10) scores of a small
network: more time than the arithmetic. One compiled loop does it all.
"""

import numpy as np
from numba import njit

from .. import config


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def cross_entropy(x, target, smoothing, scale, grad):
    """Σ_n loss_n · scale, and grad = d(that) / dx.

    loss_n = −Σ_c q_c log softmax(x_n)_c with q = (1 − ε)·one_hot(t_n) + ε/C (ε = smoothing),
    where log softmax(x)_c = x_c − m − log Σ_j exp(x_j − m), m = max_j x_j (so no
    exponential overflows); grad_n = (softmax(x_n) − q) · scale.
    Shapes: x (N, C) float; target (N,) integers in [0, C) (checked by the caller);
    grad (N, C) written. Sums run in float64. Serial: rows are short and few.
    """
    n, c = x.shape
    total = 0.0
    uniform = smoothing / c
    for i in range(n):
        row = x[i]
        g = grad[i]
        m = row[0]
        for j in range(1, c):
            m = max(m, row[j])
        s = 0.0
        mean = 0.0  # of x_j − m, for the smoothing term
        for j in range(c):
            e = np.exp(row[j] - m)
            g[j] = e
            s += e
            mean += row[j] - m
        log_s = np.log(s)
        t = target[i]
        nll = log_s - (row[t] - m)
        if smoothing != 0:
            # −mean_c log softmax = log_s − mean_c (x_c − m)
            nll = (1 - smoothing) * nll + smoothing * (log_s - mean / c)
        total += nll
        inv = 1.0 / s
        # (softmax − q) in float64, rounded once into grad's dtype: subtracting q_t after a
        # float32 store left a rounding error where the gradient is exactly 0 (C = 1).
        for j in range(c):
            q = uniform + (1 - smoothing) if j == t else uniform
            g[j] = (g[j] * inv - q) * scale
    return total * scale
