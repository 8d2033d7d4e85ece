"""Tools for testing layers: a float64 gradient check and a closeness assertion with messages
that say where and by how much two arrays differ."""

from __future__ import annotations

import copy

import numpy as np

from . import random as tn_random
from .nn.validation import layer_name


class GradcheckError(AssertionError):
    """A layer's backward disagrees with central differences of its forward."""


def gradcheck(
    module,
    x,
    *,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    seed: int = 0,
    max_checks: int | None = 200,
    check_input: bool = True,
) -> bool:
    """Compare ``module.backward`` with float64 central differences of ``module.forward``.

    The scalar checked is L = Σ forward(x) · R for a fixed random R, so every output element
    contributes. A deep copy of the module is cast to float64; the module passed in is not
    changed. tinynet's RNG is reseeded with ``seed`` before every forward, so layers that draw
    random numbers (Dropout) make the same draw each time. ``max_checks`` bounds how many
    elements of each array are perturbed (chosen at random, every element when None).

    Raises :class:`GradcheckError` naming the layer, the input or parameter, the index, the
    analytic value (got) and the numerical one (expected). Returns True when all agree.
    """
    # Reseeding below replaces tinynet's generator: put the caller's back when done.
    rng_state = tn_random.get_rng_state()
    try:
        return _gradcheck(module, x, eps, atol, rtol, seed, max_checks, check_input)
    finally:
        tn_random.set_rng_state(rng_state)


def _gradcheck(module, x, eps, atol, rtol, seed, max_checks, check_input) -> bool:
    model = copy.deepcopy(module).double()
    x = np.array(x, dtype=np.float64)
    pick = np.random.default_rng(seed + 1)

    def run() -> np.ndarray:
        tn_random.manual_seed(seed)
        return model(x)

    out = run()
    weights = np.random.default_rng(seed).standard_normal(np.shape(out))

    def loss() -> float:
        return float(np.sum(run() * weights))

    model.zero_grad()
    run()
    grad_x = model.backward(weights.copy())
    targets = [("input", x, grad_x)] if check_input else []
    targets += [
        (f"parameter {name!r}", p.data, p.grad.copy()) for name, p in model.named_parameters()
    ]
    for what, array, analytic in targets:
        if analytic is None or np.shape(analytic) != array.shape:
            raise GradcheckError(
                f"gradcheck {layer_name(module)}: {what} gradient has shape "
                f"{np.shape(analytic)}, expected {array.shape}"
            )
        indices = np.arange(array.size)
        if max_checks is not None and array.size > max_checks:
            indices = pick.choice(array.size, max_checks, replace=False)
        for i in indices:
            # Index the array itself (reshape(-1) would copy a non-C-contiguous parameter,
            # and perturbing the copy would leave the model unchanged).
            index = np.unravel_index(i, array.shape)
            saved = array[index]
            array[index] = saved + eps
            plus = loss()
            array[index] = saved - eps
            minus = loss()
            array[index] = saved
            numeric = (plus - minus) / (2 * eps)
            got = np.asarray(analytic)[index]
            if not abs(got - numeric) <= atol + rtol * abs(numeric):
                raise GradcheckError(
                    f"gradcheck {layer_name(module)}: {what} at index {tuple(map(int, index))}: "
                    f"got {got:.10g} (backward), expected {numeric:.10g} (central differences)"
                )
    return True


def assert_close(actual, expected, *, rtol: float = 1e-6, atol: float = 1e-6, name: str = ""):
    """Like ``numpy.testing.assert_allclose`` but names the worst element and its values."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    label = f"{name}: " if name else ""
    if actual.shape != expected.shape:
        raise AssertionError(f"{label}shape {actual.shape} != expected {expected.shape}")
    if actual.size == 0:
        return
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        excess = np.abs(a - e) - (atol + rtol * np.abs(e))
    # inf and nan agree only with themselves (inf − inf is nan, which a plain comparison
    # would let through).
    finite = np.isfinite(a) & np.isfinite(e)
    same = (a == e) | (np.isnan(a) & np.isnan(e))
    excess = np.where(finite, excess, np.where(same, -np.inf, np.inf))
    worst = int(np.argmax(excess))
    if excess.reshape(-1)[worst] > 0:
        index = tuple(int(i) for i in np.unravel_index(worst, actual.shape))
        bad = int(np.sum(excess > 0))
        raise AssertionError(
            f"{label}{bad} of {actual.size} elements differ; worst at {index}: "
            f"got {a[index]:.10g}, expected {e[index]:.10g} (rtol={rtol}, atol={atol})"
        )


def clone(module):
    """A deep copy of a module (parameters, buffers and state)."""
    return copy.deepcopy(module)
