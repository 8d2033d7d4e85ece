"""A slow, plain NumPy convolution (any number of spatial axes) to test the kernels against.

No im2col and no shared code with tinynet: the input is zero-padded with ``np.pad``, and for
each kernel tap the strided slice of the input that the tap sees is multiplied with that
tap's weights (an einsum over channels), group by group.
"""

from __future__ import annotations

import itertools

import numpy as np


def _tap_slices(tap, dilation, stride, out_size):
    """The slice of the padded input that kernel tap ``tap`` reads for every output."""
    return tuple(
        slice(t * d, t * d + s * (o - 1) + 1, s)
        for t, d, s, o in zip(tap, dilation, stride, out_size, strict=True)
    )


def _geometry(x_shape, w_shape, stride, padding, dilation):
    """Padding as (low, high) pairs and the output spatial size."""
    pads = [(p, p) if np.isscalar(p) else tuple(p) for p in padding]
    kernel = w_shape[2:]
    out_size = tuple(
        (size + lo + hi - d * (k - 1) - 1) // s + 1
        for size, (lo, hi), k, d, s in zip(x_shape[2:], pads, kernel, dilation, stride, strict=True)
    )
    return pads, out_size


def conv_forward(x, weight, bias, stride, padding, dilation, groups):
    """out[n, o] = bias[o] + Σ_c Σ_taps weight[o, c, tap] · x_padded[n, c, p·s + tap·d].

    x (N, C, *S); weight (Cout, C/groups, *K); bias (Cout,) or None; stride, dilation tuples;
    padding a tuple of ints or of (low, high) pairs. Computed in float64.
    """
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    pads, out_size = _geometry(x.shape, weight.shape, stride, padding, dilation)
    xp = np.pad(x, [(0, 0), (0, 0), *pads])
    n, c_in = x.shape[:2]
    c_out = weight.shape[0]
    cin_g, cout_g = c_in // groups, c_out // groups
    out = np.zeros((n, c_out, *out_size))
    for g in range(groups):
        xs = xp[:, g * cin_g : (g + 1) * cin_g]
        ws = weight[g * cout_g : (g + 1) * cout_g]
        for tap in itertools.product(*(range(k) for k in weight.shape[2:])):
            window = xs[(slice(None), slice(None), *_tap_slices(tap, dilation, stride, out_size))]
            out[:, g * cout_g : (g + 1) * cout_g] += np.einsum(
                "nc...,oc->no...", window, ws[(slice(None), slice(None), *tap)]
            )
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64).reshape(1, c_out, *([1] * len(out_size)))
    return out


def conv_backward(x, weight, grad_out, stride, padding, dilation, groups):
    """(grad_x, grad_weight, grad_bias) of :func:`conv_forward` for the gradient grad_out.

    Each tap's slice of the padded input receives weightᵀ · grad_out (so overlapping windows
    add up); the tap's weight gradient is Σ over batch and positions of grad_out · slice.
    """
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    grad_out = np.asarray(grad_out, dtype=np.float64)
    pads, out_size = _geometry(x.shape, weight.shape, stride, padding, dilation)
    xp = np.pad(x, [(0, 0), (0, 0), *pads])
    grad_xp = np.zeros_like(xp)
    grad_w = np.zeros_like(weight)
    c_in, c_out = x.shape[1], weight.shape[0]
    cin_g, cout_g = c_in // groups, c_out // groups
    for g in range(groups):
        cin = slice(g * cin_g, (g + 1) * cin_g)
        cout = slice(g * cout_g, (g + 1) * cout_g)
        dy = grad_out[:, cout]
        for tap in itertools.product(*(range(k) for k in weight.shape[2:])):
            where = (slice(None), cin, *_tap_slices(tap, dilation, stride, out_size))
            w_tap = (cout, slice(None), *tap)
            grad_xp[where] += np.einsum("no...,oc->nc...", dy, weight[w_tap])
            window = xp[where]
            grad_w[w_tap] += np.einsum(
                "nop,ncp->oc", dy.reshape(*dy.shape[:2], -1), window.reshape(*window.shape[:2], -1)
            )
    crop = tuple(slice(lo, lo + size) for (lo, _), size in zip(pads, x.shape[2:], strict=True))
    grad_x = grad_xp[(slice(None), slice(None), *crop)]
    grad_b = grad_out.sum(axis=(0, *range(2, grad_out.ndim)))
    return grad_x, grad_w, grad_b
