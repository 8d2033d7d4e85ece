"""Elementwise kernels: activations and their gradients, one pass over memory, no temporaries.

NumPy's ``np.where(y > 0, g, 0)`` builds a boolean mask and then selects, two passes and a
slow select path (measured 6 ms on (64, 32, 28, 28) against 0.2 ms here); ``(1 − y) · y · g``
is three passes and two temporaries in NumPy, one loop here.

Every operation is a formula on one or two values (:func:`_formula`) run by one of two loops:
:func:`map_serial` for arrays too small to share out (starting threads costs more than the
work; see config.SERIAL_BELOW) and :func:`map_parallel`. An operation code picks the formula,
since a cached kernel cannot take a function as an argument (Numba then refuses to cache
it); the code is the same for the whole loop, so LLVM moves the choice out of the loop and
vectorises each formula's loop on its own.
"""

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic

from .. import config

# The float32 exponential, vectorised. Numba calls the C library's scalar expf (LLVM has no
# vector exp without Intel's SVML), and NumPy's SIMD exp needs AVX-512: on an AVX2 laptop
# both take ~3 ns per value, a parallel pass here ~0.3. Cephes' expf, as vector math
# libraries do it: e^v = 2^n · e^r with n = round(v / ln 2) and |r| ≤ ln(2)/2, e^r by a
# degree-7 polynomial (within 2 ulp), 2^n by writing n + 127 into a float's exponent bits.
# The kernels allow only fused multiply-adds and signless zeros of the fast-math flags:
# "reassoc" would let LLVM merge the two-part v − n·ln 2 back into one rounded product (measured
# 5 ulp errors instead of 2), "arcp" would make 1/(1 + e) an approximate reciprocal (σ(0) =
# 0.49999997). error_model="numpy" drops Python's division-by-zero test, which stops LLVM
# from vectorising.
_MATH = config.FASTMATH & {"nsz", "contract"} if config.FASTMATH else False
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI, _LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)  # ln 2 = hi + lo
_EXP_POLY = (
    np.float32(1.9875691500e-4),
    np.float32(1.3981999507e-3),
    np.float32(8.3334519073e-3),
    np.float32(4.1665795894e-2),
    np.float32(1.6666665459e-1),
    np.float32(5.0000001201e-1),
)
_EXP_MAX = np.float32(88.0)  # e^88 ≈ 1.7e38 < the largest float32, 3.4e38
_TANH_POLY = (
    np.float32(-5.70498872745e-3),
    np.float32(2.06390887954e-2),
    np.float32(-5.37397155531e-2),
    np.float32(1.33314422036e-1),
    np.float32(-3.33332819422e-1),
)


def _float32_from_bits_python(bits):
    """The float32 whose 32 bits are those of the int32 ``bits`` (C's memcpy between them)."""
    return np.array(bits, dtype=np.int32).view(np.float32)[()]


@intrinsic
def _float32_from_bits_llvm(typingctx, bits):
    """_float32_from_bits_python compiled: one LLVM bitcast, which LLVM vectorises like
    any arithmetic (Numba has no such operation on scalars)."""
    if bits != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


# Under NUMBA_DISABLE_JIT the kernels are plain Python, which cannot call the intrinsic.
_float32_from_bits = (
    _float32_from_bits_python if numba.config.DISABLE_JIT else _float32_from_bits_llvm
)


@njit(fastmath=_MATH, error_model="numpy", cache=config.CACHE, inline="always")
def _exp(v):
    """e^v for float32 v ≤ 88 (the callers keep v there); below −87.3, e^−87.3. NaN → NaN."""
    v = -_EXP_MAX if v < -_EXP_MAX else v  # n + 127 ≥ 1: a normal float (not max(): NaN)
    n = np.floor(v * _LOG2E + np.float32(0.5))
    r = v - n * _LN2_HI - n * _LN2_LO  # in two parts: n·ln 2 is exact in the first
    c0, c1, c2, c3, c4, c5 = _EXP_POLY
    p = (((((c0 * r + c1) * r + c2) * r + c3) * r + c4) * r + c5) * r * r + r + np.float32(1)
    exponent = np.int32(n) + np.int32(127)  # 2^n: n + 127 in bits 23..30
    return p * _float32_from_bits(np.int32(exponent << 23))


# The operation codes. Forward ones read x (b is ignored); backward ones read the forward's
# output y as a and the output gradient as b.
RELU, RELU_GRAD, SIGMOID, SIGMOID_GRAD, TANH, TANH_GRAD = range(6)


@njit(fastmath=_MATH, error_model="numpy", cache=config.CACHE, inline="always")
def _formula(op, a, b, one):
    """One value of operation ``op``; ``one`` is 1 in the arrays' dtype (a literal 1 would
    pull float32 arithmetic into float64). SIGMOID and TANH are float32 only (as _exp is)."""
    zero = one - one
    if op == RELU:
        return a if not a <= zero else zero  # "not ≤": a NaN stays NaN (as torch.relu)
    if op == RELU_GRAD:
        # Zero where the output is ≤ 0; elsewhere, a NaN output included, the gradient
        # passes, as torch's threshold_backward.
        return zero if a <= zero else b
    if op == SIGMOID:
        # σ(x) = 1 / (1 + e⁻ˣ), within 3 ulp; 0 for x < −88 (σ is below 6e-39 there).
        v = -a
        e = _exp(_EXP_MAX if v > _EXP_MAX else v)
        return zero if v > _EXP_MAX else one / (one + e)
    if op == SIGMOID_GRAD:
        return b * (one - a) * a  # torch's order of products
    if op == TANH:
        # Cephes' tanhf, within 2 ulp: for |x| < 0.625 an odd polynomial x + x³·P(x²) (the
        # exponential form would cancel there: 1e-4 relative error at x = 1e-4), else
        # sign(x)·(1 − 2/(e^(2|x|) + 1)). Both are computed and one kept: no branch.
        q0, q1, q2, q3, q4 = _TANH_POLY
        size, z, two = abs(a), a * a, one + one
        small = a + a * z * ((((q0 * z + q1) * z + q2) * z + q3) * z + q4)
        e = _exp(_EXP_MAX if two * size > _EXP_MAX else two * size)
        large = one - two / (e + one)
        large = large if a >= zero else -large
        return small if size < np.float32(0.625) else large
    return b * (one - a * a)  # TANH_GRAD


@njit(fastmath=_MATH, error_model="numpy", cache=config.CACHE)
def map_serial(op, a, b, out):
    """out = _formula(op, a, b) elementwise; all C-contiguous, one shape (b = a when unused).

    Loop: one flat loop, unsigned indices (a signed one gets Numba's negative-index test,
    which stops LLVM from vectorising; see im2col.py).
    """
    af, bf, of = a.reshape(-1), b.reshape(-1), out.reshape(-1)
    one = of.dtype.type(1)
    for i in range(np.uint64(af.size)):
        of[i] = _formula(op, af[i], bf[i], one)
    return out


@njit(parallel=True, fastmath=_MATH, error_model="numpy", cache=config.CACHE)
def map_parallel(op, a, b, out):
    """:func:`map_serial` on all threads. Parallel over: elements; each writes only out[i]."""
    af, bf, of = a.reshape(-1), b.reshape(-1), out.reshape(-1)
    one = of.dtype.type(1)
    for i in prange(af.size):
        of[i] = _formula(op, af[i], bf[i], one)
    return out


def apply(op, a, b=None, out=None):
    """out = operation ``op`` of a (and b) elementwise, on one thread or all by size. a and b
    C-contiguous of one shape; out defaults to a new array like a."""
    out = np.empty_like(a) if out is None else out
    b = a if b is None else b
    if a.size < config.SERIAL_BELOW:
        return map_serial(op, a, b, out)
    return map_parallel(op, a, b, out)
