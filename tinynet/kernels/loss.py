"""The cross-entropy loss in one pass per row: log-softmax, the loss and its gradient.

NumPy needs about fifteen whole-array operations for this (max, subtract, exp, sum, log,
gather, ...), each a few microseconds of call overhead on the (60, 10) scores of a small
network: more time than the arithmetic. One compiled loop does it all.
"""

import numpy as np
from numba import njit

from .. import config


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _against(row, q, scale, g, gather):
    """Cross-entropy of one row of scores against a (weighted) target q: returns
    Σ_c q_c·(−log p_c) and writes g = ((Σ_c q_c)·p − q)·scale, its gradient, p = softmax(row).

    With ``gather`` the classes with q_c = 0 are left out of the sum, as torch gathers the
    target's log-probability for class-index targets: a −inf score on another class (a masked
    logit) then leaves the loss finite, where 0·(−log 0) would make it NaN. (With label
    smoothing only a class of weight 0 has q_c = 0: its −inf is left out too, a finite loss
    where torch's smoothing term gives NaN.) For probability targets torch sums over every
    class, NaN included, and so does this without ``gather``.

    −log p_c = log Σ_j exp(x_j − m) − (x_c − m) with m = max_j x_j, so no exponential
    overflows. g first holds exp(x_c − m) = p_c·Σ; the gradient is then formed in float64 and
    rounded once into g's dtype (subtracting q after a float32 store left a rounding error
    where the gradient is exactly 0, as with one class). Shapes: row, g (C,); q (C,) float64.
    """
    c = row.shape[0]
    m = row[0]
    for j in range(1, c):
        m = max(m, row[j])
    s = 0.0
    for j in range(c):
        e = np.exp(row[j] - m)
        g[j] = e
        s += e
    log_s = np.log(s)
    mass = 0.0
    loss = 0.0
    for j in range(c):
        mass += q[j]
        if q[j] != 0 or not gather:
            loss += q[j] * (log_s - (row[j] - m))
    a = mass / s
    for j in range(c):
        g[j] = (g[j] * a - q[j]) * scale
    return loss


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def cross_entropy(x, target, weight, ignore_index, smoothing, mean, grad, losses):
    """The loss, and grad = d loss / dx, as torch.nn.CrossEntropyLoss.

    Row n is the cross-entropy against q = w ⊙ ((1 − ε)·one_hot(t) + ε/C) (t = target[n],
    class weights w, ε = smoothing, C classes; :func:`_against`):

        loss_n = (1 − ε)·w_t·(−log p_t) + (ε/C)·Σ_c w_c·(−log p_c),   grad_n = (Σ_c q_c)·p − q

    (with w = 1 the familiar p − q). A row whose target is ``ignore_index`` adds nothing and
    gets a zero gradient. The loss is Σ_n loss_n, divided with the gradient by D = Σ_n w_(t_n)
    over the rows not ignored when ``mean`` (torch's weighted mean; D = 0 gives NaN, as 0/0
    there).
    Shapes: x (N, C) float; target (N,) integers, each in [0, C) or ignore_index (checked by
    the caller); weight (C,) float64; grad (N, C) written; losses (N,) float64 written with
    each loss_n (0 for an ignored row; reduction='none' returns them). Sums run in float64.
    Serial: rows are short and few.
    """
    n, c = x.shape
    scale = 1.0
    if mean:
        count = 0.0  # D
        for i in range(n):
            if target[i] != ignore_index:
                count += weight[target[i]]
        scale = 1.0 / count if count != 0 else np.nan
    q = np.empty(c)
    total = 0.0
    for i in range(n):
        t = target[i]
        if t == ignore_index:
            for j in range(c):
                grad[i, j] = 0
            losses[i] = 0.0
            continue
        for j in range(c):
            q[j] = weight[j] * smoothing / c
        q[t] += weight[t] * (1 - smoothing)
        losses[i] = _against(x[i], q, scale, grad[i], True)
        total += losses[i]
    return total * scale


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def cross_entropy_probabilities(x, y, weight, smoothing, mean, grad, losses):
    """:func:`cross_entropy` for targets given as class probabilities, as torch takes them
    (soft labels: mixup, distillation): row n against q = w ⊙ ((1 − ε)·y_n + ε/C), and the
    mean divides by N (not by a sum of weights: torch's rule for probabilities).
    Shapes: x, y, grad (N, C); weight (C,) float64; losses (N,) float64, each row's loss.
    Sums in float64. Serial.
    """
    n, c = x.shape
    scale = (1.0 / n if n else np.nan) if mean else 1.0
    q = np.empty(c)
    total = 0.0
    for i in range(n):
        for j in range(c):
            q[j] = weight[j] * ((1 - smoothing) * y[i, j] + smoothing / c)
        losses[i] = _against(x[i], q, scale, grad[i], False)
        total += losses[i]
    return total * scale
