"""The plain NumPy baseline: each layer as a NumPy user would write it, vectorised.

Convolution is im2col + one matrix product (``sliding_window_view`` gathers the patches, BLAS
multiplies), and its backward is two matrix products plus col2im, which adds each kernel
offset's slab of patch gradients back into the input (a loop over the 9 or 27 kernel offsets,
vectorised over everything else). BatchNorm, pooling and activations are whole-array
expressions. Each ``*_forward`` returns ``(out, cache)`` and each ``*_backward`` takes the
cache, in the style of cs231n's layers; :class:`NumpyNet` chains them into a model with an SGD
step, so the model benchmarks compare like with like.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# -- convolution: im2col / vol2col + matmul ---------------------------------------------------


def _pad_spatial(x, padding, value=0.0):
    if not any(padding):
        return x
    widths = [(0, 0), (0, 0)] + [(p, p) for p in padding]
    return np.pad(x, widths, constant_values=value)


def _windows(xp, kernel, stride, dilation):
    """View of every receptive field: (N, C, *out_spatial, *kernel), no copy."""
    nd = len(kernel)
    span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True))
    win = sliding_window_view(xp, span, axis=tuple(range(2, 2 + nd)))
    index = (slice(None), slice(None))
    index += tuple(slice(None, None, s) for s in stride)
    index += tuple(slice(None, None, d) for d in dilation)
    return win[index]


def conv_forward(x, w, b, stride, padding, dilation, groups=1):
    """N-d convolution (Conv2d for 4-d x, Conv3d for 5-d x) as im2col + matmul; a grouped one
    as one such convolution per group (a depthwise layer: one per channel)."""
    if groups > 1:
        cin, cout = x.shape[1] // groups, w.shape[0] // groups
        parts = [
            _conv_forward(
                x[:, g * cin : (g + 1) * cin],
                w[g * cout : (g + 1) * cout],
                None if b is None else b[g * cout : (g + 1) * cout],
                stride,
                padding,
                dilation,
            )
            for g in range(groups)
        ]
        return np.concatenate([y for y, _ in parts], axis=1), [c for _, c in parts]
    return _conv_forward(x, w, b, stride, padding, dilation)


def _conv_forward(x, w, b, stride, padding, dilation):
    nd = x.ndim - 2
    n, c = x.shape[:2]
    oc = w.shape[0]
    kernel = w.shape[2:]
    xp = _pad_spatial(x, padding)
    win = _windows(xp, kernel, stride, dilation)
    out_spatial = win.shape[2 : 2 + nd]
    # im2col: rows are output positions (n, *o), columns are (c, *k) -- this reshape copies.
    order = (0, *range(2, 2 + nd), 1, *range(2 + nd, 2 + 2 * nd))
    cols = win.transpose(order).reshape(n * math.prod(out_spatial), c * math.prod(kernel))
    wmat = w.reshape(oc, -1)
    y = cols @ wmat.T
    if b is not None:
        y += b
    y = np.ascontiguousarray(np.moveaxis(y.reshape(n, *out_spatial, oc), -1, 1))
    cache = (xp.shape, cols, w, stride, padding, dilation, out_spatial, b is not None)
    return y, cache


def conv_backward(g, cache):
    """Gradients (input, weight, bias) of :func:`conv_forward`; bias gradient None if no bias."""
    if isinstance(cache, list):  # grouped: one cache per group
        step = g.shape[1] // len(cache)
        parts = [_conv_backward(g[:, i * step : (i + 1) * step], c) for i, c in enumerate(cache)]
        gb = None if parts[0][2] is None else np.concatenate([p[2] for p in parts])
        gx = np.concatenate([p[0] for p in parts], axis=1)
        return gx, np.concatenate([p[1] for p in parts]), gb
    return _conv_backward(g, cache)


def _conv_backward(g, cache):
    xp_shape, cols, w, stride, padding, dilation, out_spatial, has_bias = cache
    nd = len(out_spatial)
    n, c = xp_shape[:2]
    oc = w.shape[0]
    kernel = w.shape[2:]
    gm = np.moveaxis(g, 1, -1).reshape(-1, oc)
    gw = (gm.T @ cols).reshape(w.shape)
    gb = g.sum(axis=(0, *range(2, 2 + nd))) if has_bias else None
    gcols = (gm @ w.reshape(oc, -1)).reshape(n, *out_spatial, c, *kernel)
    # col2im: every kernel offset adds one (N, C, *out) slab into a strided slice of the input.
    gxp = np.zeros(xp_shape, dtype=g.dtype)
    for k in itertools.product(*(range(kk) for kk in kernel)):
        target = (slice(None), slice(None))
        target += tuple(
            slice(ki * d, ki * d + s * (o - 1) + 1, s)
            for ki, d, s, o in zip(k, dilation, stride, out_spatial, strict=True)
        )
        slab = gcols[(slice(None),) * (1 + nd) + (slice(None),) + k]  # (N, *out, C)
        gxp[target] += np.moveaxis(slab, -1, 1)
    crop = (slice(None), slice(None)) + tuple(
        slice(p, size - p) for p, size in zip(padding, xp_shape[2:], strict=True)
    )
    return gxp[crop], gw, gb


# -- batch normalization ----------------------------------------------------------------------


def _bn_axes(x):
    return (0, *range(2, x.ndim))


def _per_channel(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum, eps, training):
    """y = γ (x − μ)/√(σ² + ε) + β per channel; updates the running statistics in training."""
    axes = _bn_axes(x)
    if training:
        m = x.size // x.shape[1]
        mean = x.mean(axis=axes)
        var = x.var(axis=axes)
        if running_mean is not None:
            running_mean *= 1 - momentum
            running_mean += momentum * mean
            running_var *= 1 - momentum
            running_var += momentum * var * (m / max(m - 1, 1))
    else:
        mean, var = running_mean, running_var
    invstd = (1.0 / np.sqrt(var + eps)).astype(x.dtype)
    x_hat = (x - _per_channel(mean, x.ndim)) * _per_channel(invstd, x.ndim)
    y = (
        x_hat * _per_channel(gamma, x.ndim) + _per_channel(beta, x.ndim)
        if gamma is not None
        else x_hat
    )
    return y, (x_hat, invstd, gamma, training)


def batchnorm_backward(g, cache):
    """Gradients (input, γ, β); in training the batch statistics' dependence on x counts."""
    x_hat, invstd, gamma, training = cache
    axes = _bn_axes(g)
    gbeta = g.sum(axis=axes)
    ggamma = (g * x_hat).sum(axis=axes)
    scale = invstd if gamma is None else gamma * invstd
    if training:
        m = g.size // g.shape[1]
        gx = (m * g - _per_channel(gbeta, g.ndim) - x_hat * _per_channel(ggamma, g.ndim)) * (
            _per_channel(scale / m, g.ndim)
        )
    else:
        gx = g * _per_channel(scale, g.ndim)
    return gx, ggamma, gbeta


# -- pooling ----------------------------------------------------------------------------------


def maxpool_forward(x, kernel, stride, padding):
    """Max over each window; remembers which element of the window won."""
    nd = len(kernel)
    xp = _pad_spatial(x, padding, value=-np.inf)
    win = _windows(xp, kernel, stride, (1,) * nd)
    flat = win.reshape(win.shape[: 2 + nd] + (-1,))
    arg = flat.argmax(axis=-1)
    y = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    return y, (xp.shape, arg, kernel, stride, padding)


def maxpool_backward(g, cache):
    """Route each output gradient to the window element that won the max."""
    xp_shape, arg, kernel, stride, padding = cache
    out_spatial = g.shape[2:]
    gxp = np.zeros(xp_shape, dtype=g.dtype)
    for j, k in enumerate(itertools.product(*(range(kk) for kk in kernel))):
        target = (slice(None), slice(None)) + tuple(
            slice(ki, ki + s * (o - 1) + 1, s)
            for ki, s, o in zip(k, stride, out_spatial, strict=True)
        )
        gxp[target] += np.where(arg == j, g, 0)
    crop = (slice(None), slice(None)) + tuple(
        slice(p, size - p) for p, size in zip(padding, xp_shape[2:], strict=True)
    )
    return gxp[crop]


def avgpool_forward(x, kernel, stride, padding):
    """Mean over each window (zero padding counts, as PyTorch's default)."""
    xp = _pad_spatial(x, padding)
    win = _windows(xp, kernel, stride, (1,) * len(kernel))
    y = win.mean(axis=tuple(range(-len(kernel), 0))).astype(x.dtype)
    return y, (xp.shape, kernel, stride, padding)


def avgpool_backward(g, cache):
    xp_shape, kernel, stride, padding = cache
    out_spatial = g.shape[2:]
    share = g / math.prod(kernel)
    gxp = np.zeros(xp_shape, dtype=g.dtype)
    for k in itertools.product(*(range(kk) for kk in kernel)):
        target = (slice(None), slice(None)) + tuple(
            slice(ki, ki + s * (o - 1) + 1, s)
            for ki, s, o in zip(k, stride, out_spatial, strict=True)
        )
        gxp[target] += share
    crop = (slice(None), slice(None)) + tuple(
        slice(p, size - p) for p, size in zip(padding, xp_shape[2:], strict=True)
    )
    return gxp[crop]


def global_avgpool_forward(x):
    axes = tuple(range(2, x.ndim))
    return x.mean(axis=axes, keepdims=True), x.shape


def global_avgpool_backward(g, x_shape):
    count = math.prod(x_shape[2:])
    return np.broadcast_to(g / count, x_shape).copy()


# -- dense layers and activations -------------------------------------------------------------


def linear_forward(x, w, b):
    y = x @ w.T
    if b is not None:
        y += b
    return y, x


def linear_backward(g, x, w, has_bias=True):
    return g @ w, g.T @ x, (g.sum(axis=0) if has_bias else None)


def relu_forward(x):
    y = np.maximum(x, 0)
    return y, y


def relu_backward(g, y):
    return g * (y > 0)


def sigmoid_forward(x):
    with np.errstate(over="ignore"):
        y = 1.0 / (1.0 + np.exp(-x))
    return y.astype(x.dtype, copy=False), y


def sigmoid_backward(g, y):
    return g * y * (1 - y)


def tanh_forward(x):
    y = np.tanh(x)
    return y, y


def tanh_backward(g, y):
    return g * (1 - y * y)


def cross_entropy(logits, target):
    """Mean softmax cross-entropy and its gradient with respect to the logits."""
    n = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[np.arange(n), target].mean()
    grad = np.exp(log_probs)
    grad[np.arange(n), target] -= 1
    grad /= n
    return float(loss), grad


# -- a model made of the pieces above ---------------------------------------------------------


class _Layer:
    """One layer of :class:`NumpyNet`: parameters by name, their gradients, a cache."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.kind = spec["type"]
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        for name in ("weight", "bias"):
            if spec.get(name) is not None:
                self.params[name] = np.array(spec[name])
                self.grads[name] = np.zeros_like(self.params[name])
        for name in ("running_mean", "running_var", "scale", "shift"):
            if spec.get(name) is not None:
                self.buffers[name] = np.array(spec[name])
        self.cache = None
        self.training = True

    def forward(self, x):
        kind, s, p = self.kind, self.spec, self.params
        if kind.startswith("Conv"):
            y, self.cache = conv_forward(
                x,
                p["weight"],
                p.get("bias"),
                s["stride"],
                s["padding"],
                s["dilation"],
                s.get("groups", 1),
            )
        elif kind.startswith("BatchNorm"):
            use_batch = self.training or self.buffers.get("running_mean") is None
            y, self.cache = batchnorm_forward(
                x,
                p.get("weight"),
                p.get("bias"),
                self.buffers.get("running_mean"),
                self.buffers.get("running_var"),
                s["momentum"],
                s["eps"],
                use_batch,
            )
        elif kind == "Affine":
            shape = (1, -1) + (1,) * (x.ndim - 2)
            y = x * self.buffers["scale"].reshape(shape) + self.buffers["shift"].reshape(shape)
            self.cache = self.buffers["scale"].reshape(shape)
        elif kind.startswith("MaxPool"):
            y, self.cache = maxpool_forward(x, s["kernel_size"], s["stride"], s["padding"])
        elif kind.startswith("AvgPool"):
            y, self.cache = avgpool_forward(x, s["kernel_size"], s["stride"], s["padding"])
        elif kind.startswith("AdaptiveAvgPool"):
            y, self.cache = global_avgpool_forward(x)
        elif kind == "Linear":
            y, self.cache = linear_forward(x, p["weight"], p.get("bias"))
        elif kind == "ReLU":
            y, self.cache = relu_forward(x)
        elif kind == "Sigmoid":
            y, self.cache = sigmoid_forward(x)
        elif kind == "Tanh":
            y, self.cache = tanh_forward(x)
        elif kind == "Flatten":
            self.cache = x.shape
            y = x.reshape(x.shape[0], -1)
        elif kind == "Dropout":
            if self.training and s["p"] > 0:
                keep = np.random.default_rng().random(x.shape) >= s["p"]
                self.cache = keep / x.dtype.type(1 - s["p"])
                y = x * self.cache
            else:
                self.cache = None
                y = x
        else:
            raise NotImplementedError(f"numpy baseline has no layer {kind}")
        return y

    def backward(self, g):
        kind, c = self.kind, self.cache
        if kind.startswith("Conv"):
            gx, gw, gb = conv_backward(g, c)
            self._accumulate(gw, gb)
        elif kind.startswith("BatchNorm"):
            gx, ggamma, gbeta = batchnorm_backward(g, c)
            self._accumulate(ggamma, gbeta)
        elif kind == "Affine":
            gx = g * c
        elif kind.startswith("MaxPool"):
            gx = maxpool_backward(g, c)
        elif kind.startswith("AvgPool"):
            gx = avgpool_backward(g, c)
        elif kind.startswith("AdaptiveAvgPool"):
            gx = global_avgpool_backward(g, c)
        elif kind == "Linear":
            gx, gw, gb = linear_backward(g, c, self.params["weight"], "bias" in self.params)
            self._accumulate(gw, gb)
        elif kind == "ReLU":
            gx = relu_backward(g, c)
        elif kind == "Sigmoid":
            gx = sigmoid_backward(g, c)
        elif kind == "Tanh":
            gx = tanh_backward(g, c)
        elif kind == "Flatten":
            gx = g.reshape(c)
        elif kind == "Dropout":
            gx = g if c is None else g * c
        else:
            raise NotImplementedError(kind)
        return gx

    def _accumulate(self, gw, gb):
        if "weight" in self.grads and gw is not None:
            self.grads["weight"] += gw
        if "bias" in self.grads and gb is not None:
            self.grads["bias"] += gb


class NumpyNet:
    """A sequential model of NumPy layers built from a layer spec (see ``spec.py``)."""

    def __init__(self, specs: list[dict]):
        self.layers = [_Layer(s) for s in specs]
        self.training = True

    def train(self, mode: bool = True) -> NumpyNet:
        self.training = mode
        for layer in self.layers:
            layer.training = mode
        return self

    def eval(self) -> NumpyNet:
        return self.train(False)

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    __call__ = forward

    def backward(self, g):
        for layer in reversed(self.layers):
            g = layer.backward(g)
        return g

    def parameters(self):
        """(array, gradient) pairs, in layer order."""
        return [(layer.params[k], layer.grads[k]) for layer in self.layers for k in layer.params]

    def zero_grad(self):
        for _, grad in self.parameters():
            grad.fill(0)


class NumpySGD:
    """SGD with momentum, PyTorch's rule: v ← μ v + g (v ← g at first), p ← p − lr v."""

    def __init__(self, params, lr, momentum=0.0):
        self.params = params
        self.lr = lr
        self.momentum = momentum
        self.velocity = [None] * len(params)

    def step(self):
        for i, (p, g) in enumerate(self.params):
            if self.momentum:
                v = self.velocity[i]
                if v is None:
                    v = self.velocity[i] = g.copy()
                else:
                    v *= self.momentum
                    v += g
                g = v
            p -= self.lr * g
