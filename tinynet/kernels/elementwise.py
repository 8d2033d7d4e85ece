"""Elementwise kernels: one pass over memory, no temporaries.

NumPy's ``np.where(y > 0, g, 0)`` builds a boolean mask and then selects, two passes and a
slow select path (measured 6 ms on (64, 32, 28, 28) against 0.2 ms here).
"""

from numba import njit, prange

from .. import config


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def relu_forward(x, out):
    """out = max(x, 0), NaN kept (as torch.relu); x and out C-contiguous, any shape.

    Loop: one flat loop. Parallel over: elements; each writes only its own out[i].
    """
    xf = x.reshape(-1)
    of = out.reshape(-1)
    for i in prange(xf.size):
        v = xf[i]
        # "not v <= 0" rather than "v > 0": a NaN input stays NaN instead of becoming 0.
        of[i] = v if not v <= 0 else 0
    return out


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def relu_backward(y, grad_out, grad_in):
    """grad_in = grad_out where the output y was positive, else 0; all C-contiguous.

    Loop: one flat loop. Parallel over: elements; each writes only its own grad_in[i].
    """
    yf = y.reshape(-1)
    gf = grad_out.reshape(-1)
    of = grad_in.reshape(-1)
    for i in prange(yf.size):
        of[i] = gf[i] if yf[i] > 0 else 0
    return grad_in
