"""Optimizer updates: each parameter updated in one pass over its memory.

SGD with momentum written with NumPy takes four whole-array operations per parameter
(``buf *= μ``, ``buf += g``, ``lr * buf``, ``p -= ...``), each a few microseconds of call
overhead on the small parameters of a small network (measured ~4 µs per parameter); one
compiled loop reads p, g and the buffer once.
"""

from numba import njit

from .. import config


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def sgd_update(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first):
    """torch.optim.SGD's update of one parameter, in place; all arrays flat (1-D), same size.

    d = g + λ·p; with momentum μ: b = d at the first step (``first``), else
    b = μ·b + (1 − τ)·d; then d = d + μ·b (``nesterov``) or d = b; finally p = p − lr·d.
    ``buf`` is unused (may be empty) when μ = 0. The scalars arrive in p's dtype, so float32
    parameters are updated in float32 arithmetic, as PyTorch does.
    """
    # 1 − τ with a literal 1 (an int64) would be a float64, and pull the update into float64
    # arithmetic: rounded unlike PyTorch's float32 update, and 2x slower (the loop mixed
    # widths instead of running in float32 vectors).
    keep = p.dtype.type(1) - dampening
    for i in range(p.shape[0]):
        d = g[i]
        if weight_decay != 0:
            d = d + weight_decay * p[i]
        if momentum != 0:
            b = d if first else momentum * buf[i] + keep * d
            buf[i] = b
            d = d + momentum * b if nesterov else b
        p[i] = p[i] - lr * d
