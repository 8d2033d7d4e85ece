"""Dropout's mask from a counter-based random number generator: no mask array at all.

A dropout mask drawn with NumPy (``rng.random(shape) >= p``, then two multiplications) takes
four passes over memory and the generator's own time: 1.8–3 ms for the (64, 64, 12, 12)
activation of PyTorch's MNIST example on 2 cores, where one pass over it takes 0.08 ms.

Here element i's random number is a function of (seed, i) alone, the i-th output of
SplitMix64 (Steele, Lea & Flood, 2014) started at ``seed``:

    z = seed + (i + 1)·γ,   γ = 0x9E3779B97F4A7C15 (2⁶⁴ / the golden ratio)
    z = (z ⊕ z≫30)·0xBF58476D1CE4E5B9;  z = (z ⊕ z≫27)·0x94D049BB133111EB;  z ⊕ z≫31

(uint64 arithmetic, wrapping). Its top 32 bits are uniform on [0, 2³²); the element is kept
when they are ≥ threshold = round(p·2³²), i.e. with probability 1 − p to within 2⁻³².
Consequences:

* one pass: forward reads x and writes the output, nothing else;
* backward recomputes the mask from the seed the forward used instead of storing it;
* any thread can produce any range of elements, so the result is the same on every thread
  count (and the same seed gives the same mask).

A kept element is multiplied by scale = 1/(1 − p), a dropped one by 0: multiplied, not
replaced, so that a NaN or infinity in a dropped position gives NaN, as in torch. (Hence no
fast-math flags here: with them LLVM may fold x·0 to 0, assuming no NaN or infinity.)
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from .. import config

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
# Shift counts as uint64 too: Numba would turn uint64 combined with a signed int into float64.
_S27, _S30, _S31, _S32 = np.uint64(27), np.uint64(30), np.uint64(31), np.uint64(32)


@njit(cache=config.CACHE, inline="always")
def _keep_compiled(seed, i, threshold):
    """Whether element i survives: the top 32 bits of SplitMix64's i-th output ≥ threshold."""
    z = seed + (i + np.uint64(1)) * _GAMMA
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    z = z ^ (z >> _S31)
    return (z >> _S32) >= threshold


def _keep_python(seed, i, threshold):
    """:func:`_keep_compiled` in Python integers, for NUMBA_DISABLE_JIT: NumPy's uint64
    scalars warn at every wrap-around, which the compiled code does silently."""
    bits = 2**64 - 1
    z = (int(seed) + (int(i) + 1) * int(_GAMMA)) & bits
    z = ((z ^ (z >> 30)) * int(_MIX1)) & bits
    z = ((z ^ (z >> 27)) * int(_MIX2)) & bits
    z = z ^ (z >> 31)
    return (z >> 32) >= int(threshold)


_keep = _keep_python if numba.config.DISABLE_JIT else _keep_compiled


@njit(cache=config.CACHE)
def dropout_serial(a, seed, threshold, scale, out):
    """out[i] = a[i]·scale if element i is kept, else a[i]·0. a, out flat and contiguous, one
    dtype; seed and threshold uint64, scale in the arrays' dtype. Forward (a = x) and backward
    (a = the output gradient, with the forward's seed) are the same loop."""
    zero = scale - scale
    for i in range(np.uint64(a.shape[0])):
        out[i] = a[i] * (scale if _keep(seed, i, threshold) else zero)


@njit(parallel=True, cache=config.CACHE)
def dropout_parallel(a, seed, threshold, scale, out):
    """:func:`dropout_serial` on all threads. Parallel over: elements (each writes only out[i];
    its random number depends on i alone, so the split does not change the result)."""
    zero = scale - scale
    for i in prange(a.shape[0]):
        k = np.uint64(i)
        out[i] = a[i] * (scale if _keep(seed, k, threshold) else zero)


def apply(a, seed, p):
    """A new array: ``a`` with dropout's mask for ``seed`` and probability ``p`` applied
    (0 < p < 1; ``a`` C-contiguous). On one thread or all by size (config.SERIAL_BELOW)."""
    out = np.empty_like(a)
    flat, flat_out = a.reshape(-1), out.reshape(-1)
    threshold = np.uint64(round(p * 2.0**32))
    scale = a.dtype.type(1.0 / (1.0 - p))
    kernel = dropout_serial if a.size < config.SERIAL_BELOW else dropout_parallel
    kernel(flat, np.uint64(seed), threshold, scale, flat_out)
    return out
