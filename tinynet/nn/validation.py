"""Input checks shared by every layer: one helper, clear messages, run before any kernel.

Numba kernels index arrays without bounds checks, so a wrong shape reaching one is a crash or
silent garbage. Every layer therefore calls :func:`check_input` first; it raises a
``ValueError`` or ``TypeError`` that names the layer, what it expected and what it got.
"""

from __future__ import annotations

import numpy as np

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def cast_input(layer, x, dtype=None) -> np.ndarray:
    """Return ``x`` as an ndarray of a float dtype, copying only when a cast is needed.

    With ``dtype`` given (a layer with parameters) the input is cast to it. Without (a layer
    with no parameters, such as ReLU) float32 and float64 inputs keep their dtype and other
    real dtypes (int, bool, float16) become the layer's default dtype.
    """
    if not isinstance(x, np.ndarray):
        if isinstance(x, (str, bytes)) or x is None:
            raise TypeError(f"{layer_name(layer)} expected a NumPy array, got {type(x).__name__}")
        if isinstance(x, tuple) and any(isinstance(item, np.ndarray) for item in x):
            # A layer's several outputs (MaxPool's (output, indices)): np.asarray would stack
            # them into one array of garbage.
            raise TypeError(
                f"{layer_name(layer)} expected a NumPy array, got a tuple of {len(x)} items "
                "(the outputs of a layer that returns several, such as MaxPool with "
                "return_indices=True?)"
            )
        x = np.asarray(x)
    if dtype is None:
        if x.dtype in _FLOATS:
            return x
        dtype = layer.dtype
    elif x.dtype == dtype:
        return x
    if x.dtype.kind not in "biuf":
        raise TypeError(
            f"{layer_name(layer)} expected a real-valued (float or integer) array, "
            f"got dtype {x.dtype}"
        )
    return x.astype(dtype)


def check_input(
    layer,
    x,
    ndims: tuple[int, ...],
    layout: str,
    *,
    channels: int | None = None,
    channel_axis: int = 1,
    dtype=None,
) -> np.ndarray:
    """Cast ``x`` (see :func:`cast_input`) and check its rank and channel count.

    ``layout`` describes the expected shape for the message, e.g. ``"(N, {C}, H, W)"``, where
    ``{C}`` is replaced by the expected channel count.
    """
    x = cast_input(layer, x, dtype)
    if x.ndim not in ndims:
        shown = layout.format(C=channels if channels is not None else "C")
        raise ValueError(f"{layer_name(layer)} expected input {shown}, got shape {x.shape}")
    if channels is not None and x.shape[channel_axis] != channels:
        shown = layout.format(C=channels)
        hint = ""
        if x.ndim >= 3 and x.shape[-1] == channels:
            hint = "; is it channels-last? tinynet is channels-first"
        raise ValueError(f"{layer_name(layer)} expected input {shown}, got {x.shape}{hint}")
    return x


def check_grad(layer, grad_out, expected_shape: tuple[int, ...], dtype) -> np.ndarray:
    """Check the gradient handed to ``backward`` against the shape forward produced."""
    grad_out = cast_input(layer, grad_out, dtype)
    if grad_out.shape != tuple(expected_shape):
        raise ValueError(
            f"{layer_name(layer)}.backward expected a gradient of shape {tuple(expected_shape)} "
            f"(the forward output's), got {grad_out.shape}"
        )
    return grad_out


def layer_name(layer) -> str:
    """``Conv2d(in_channels=3, ...)``-style label used in messages."""
    if isinstance(layer, str):
        return layer
    describe = getattr(layer, "describe", None)
    if describe is not None:
        return describe()
    return type(layer).__name__


def require_forward(layer, saved) -> None:
    """Raise a clear error when backward runs without a forward before it."""
    if saved is None:
        raise RuntimeError(f"{layer_name(layer)}.backward called before forward")


def positive_int(owner: str, name: str, value) -> int:
    """Validate a constructor argument that must be a positive integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner} expected {name} to be a positive int, got {value!r}")
    return int(value)


def ntuple(owner: str, name: str, value, n: int, minimum: int) -> tuple[int, ...]:
    """Expand an int (or a 1-tuple, as torch does) or check a tuple of ``n`` ints, each at
    least ``minimum``."""
    if isinstance(value, (int, np.integer)):
        items = (value,) * n
    else:
        try:
            items = () if isinstance(value, str) else tuple(value)
        except TypeError:  # not iterable: a float, None, ...
            items = ()
        if not items:
            raise TypeError(
                f"{owner} expected {name} to be an int or a tuple of {n} ints, got "
                f"{type(value).__name__} {value!r}"
            )
        if len(items) == 1:
            items = items * n
    if len(items) != n or any(
        isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum for v in items
    ):
        raise ValueError(
            f"{owner} expected {name} to be an int or a tuple of {n} ints >= {minimum}, "
            f"got {value!r}"
        )
    return tuple(int(v) for v in items)
