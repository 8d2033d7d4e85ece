"""Batch normalization kernels: per-channel statistics, the normalising map and its gradient.

Two memory layouts, each with its own loop order:

* **planes** ``(N, C, S)``, S = the product of the spatial sizes (S > 1): a channel is N
  contiguous runs of S values. The kernels run in parallel over channels; one channel of a
  typical activation (64 × 14 × 14 float32 = 50 KB) stays in the core's L2 cache between the
  passes, so main memory is read once per kernel. (Limits of this choice: with fewer
  channels than threads some threads idle, and a channel larger than L2 is fetched from
  memory on each pass.)
* **rows** ``(N, C)`` (BatchNorm1d on features): the channel is the fast axis, so a loop over
  one channel would read one float per cache line. The kernels instead give each thread a
  block of neighbouring channels and sweep the rows, which vectorises along the channels.
  ``block`` (channels per task) is chosen by the caller: one block per thread, in whole
  64-byte cache lines so that two threads never write into the same line (false sharing).

Numerics. Statistics use the two-pass algorithm (mean first, then Σ(x − mean)²) with float64
accumulators whatever the data type; E[x²] − E[x]² would cancel catastrophically for data such
as mean 1e4, std 1e-2. The normalisation subtracts the mean from each value before scaling:
folding it into one ``x·scale + shift`` would round ``shift`` to float32 at ~1e6 and lose the
result. The mean is subtracted as two float32 parts (see ``_split``), which keeps float64's
accuracy without float64 arithmetic. The second and third passes re-read the channel from
cache, so this costs little in these memory-bound loops.

Debugging: with ``NUMBA_DISABLE_JIT=1`` these are plain Python functions ``pdb`` can step into.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import config


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def _split(mu, like):
    """mu (float64) as hi + lo in ``like``'s dtype, so that (x − hi) − lo keeps float64's
    accuracy for x near mu while the arithmetic stays in x's dtype: x − hi is nearly exact
    (the two are close) and lo carries what float32 rounding dropped from mu. On AVX2
    machines float64 arithmetic on float32 data ran at half the vector width (measured 2x
    slower BatchNorm passes); for float64 data lo is 0 and nothing changes.
    """
    hi = like(mu)
    return hi, like(mu - hi)


# The loops that use _split's two parts are compiled without "reassoc": with it LLVM may
# rewrite (x − hi) − lo as x − (hi + lo), and hi + lo rounds back to hi.
_EXACT_ORDER = {"nsz", "arcp", "contract"} if config.FASTMATH else False


@njit(fastmath=_EXACT_ORDER, cache=config.CACHE)
def _affine(x, c, hi, lo, scale, shift, out):
    """out[n, c, s] = ((x[n, c, s] − hi) − lo)·scale + shift over one channel (planes)."""
    for n in range(x.shape[0]):
        for s in range(x.shape[2]):
            out[n, c, s] = ((x[n, c, s] - hi) - lo) * scale + shift


@njit(fastmath=_EXACT_ORDER, cache=config.CACHE)
def _input_grad(grad_out, x, c, hi, lo, scale, mean_g, slope, grad_in):
    """grad_in[n, c, s] = scale·(g − mean_g − ((x − hi) − lo)·slope) over one channel."""
    for n in range(x.shape[0]):
        for s in range(x.shape[2]):
            d = (x[n, c, s] - hi) - lo
            grad_in[n, c, s] = scale * (grad_out[n, c, s] - mean_g - d * slope)


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def batch_norm_train_forward(x, gamma, beta, eps, out, mean, var, invstd):
    """Normalise with the batch's own statistics, planes layout.

    Shapes: x, out (N, C, S); gamma, beta (C,); outputs mean, var (biased), invstd (C,) float64.
    Loop nest: for c: [Σ x] → mean; [Σ (x − mean)²] → var; [out = (x − mean)·γ·invstd + β],
    each bracket a sweep over (n, s).
    Parallel over: channels (iteration c reads and writes only channel c: race-free).
    """
    n_batch, channels, size = x.shape
    count = n_batch * size
    for c in prange(channels):
        total = 0.0
        for n in range(n_batch):
            for s in range(size):
                total += x[n, c, s]
        mu = total / count
        squares = 0.0
        for n in range(n_batch):
            for s in range(size):
                d = x[n, c, s] - mu
                squares += d * d
        v = squares / count
        inv = 1.0 / np.sqrt(v + eps)
        like = out.dtype.type
        hi, lo = _split(mu, like)
        _affine(x, c, hi, lo, like(gamma[c] * inv), like(beta[c]), out)
        mean[c] = mu
        var[c] = v
        invstd[c] = inv


# Not parallel=True: there is no loop worth a thread here, and Numba would warn about that.
@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def update_running_stats(running_mean, running_var, mean, var, factor, count):
    """Fold one batch's statistics into the running estimates, in place.

    running_mean ← (1 − f)·running_mean + f·mean and running_var ← (1 − f)·running_var +
    f·var·m/(m − 1): the population variance is estimated from the unbiased batch variance
    (m = count, the values per channel). Shapes: all (C,); f = factor.
    Parallel over: nothing; C values are far too few to repay waking a thread. (In NumPy these
    two lines cost ten times as long as here, all of it per-call overhead.)
    """
    unbiased = count / (count - 1)
    for c in range(running_mean.shape[0]):
        running_mean[c] = (1.0 - factor) * running_mean[c] + factor * mean[c]
        running_var[c] = (1.0 - factor) * running_var[c] + factor * unbiased * var[c]


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def batch_norm_eval_forward(x, running_mean, running_var, gamma, beta, eps, out, mean, invstd):
    """The fixed per-channel map of evaluation, planes layout.

    Shapes: x, out (N, C, S); running_mean, running_var, gamma, beta (C,); outputs mean (a
    float64 copy of running_mean) and invstd = 1/√(running_var + eps) (C,), for backward.
    Loop nest: for c: [out = (x − mean)·γ·invstd + β] over (n, s).
    Parallel over: channels (iteration c reads and writes only channel c: race-free).
    """
    n_batch, channels, size = x.shape
    for c in prange(channels):
        mu = np.float64(running_mean[c])
        inv = 1.0 / np.sqrt(np.float64(running_var[c]) + eps)
        like = out.dtype.type
        hi, lo = _split(mu, like)
        _affine(x, c, hi, lo, like(gamma[c] * inv), like(beta[c]), out)
        mean[c] = mu
        invstd[c] = inv


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def batch_norm_backward(grad_out, x, mean, invstd, gamma, through_stats, grad_in, sum_g, sum_gx):
    """Gradient of batch normalization, planes layout (both modes).

    Shapes: grad_out, x, grad_in (N, C, S); mean, invstd, gamma (C,); outputs sum_g = Σ g
    (= dβ) and sum_gx = Σ g·x̂ (= dγ), (C,) float64, with x̂ = (x − mean)·invstd.
    With ``through_stats`` (training: mean and invstd came from this batch) the gradient flows
    through them too: dx = γ·invstd·(g − Σg/m − x̂·Σg·x̂/m), m = N·S; otherwise (the fixed map of
    evaluation) dx = γ·invstd·g.
    Loop nest: for c: [Σ g, Σ g·x̂] over (n, s); [dx] over (n, s).
    Parallel over: channels (iteration c reads and writes only channel c: race-free).
    """
    n_batch, channels, size = x.shape
    count = n_batch * size
    for c in prange(channels):
        mu = mean[c]
        inv = invstd[c]
        total = 0.0
        total_gx = 0.0
        for n in range(n_batch):
            for s in range(size):
                g = grad_out[n, c, s]
                total += g
                total_gx += g * (x[n, c, s] - mu)
        total_gx *= inv
        sum_g[c] = total
        sum_gx[c] = total_gx
        mean_g = 0.0
        slope = 0.0  # multiplies (x − mean): x̂·Σg·x̂/m with one invstd folded in
        if through_stats:
            mean_g = total / count
            slope = total_gx / count * inv
        like = grad_in.dtype.type
        hi, lo = _split(mu, like)
        scale = like(gamma[c] * inv)
        _input_grad(grad_out, x, c, hi, lo, scale, like(mean_g), like(slope), grad_in)


# The rows kernels below are a parallel loop over blocks of channels, each block handed to a
# serial function. A layer whose input is too small for a second thread calls that serial
# function directly on all channels: it compiles in a fraction of the time of the parallel
# kernel (which Numba outlines and compiles several times over) and skips starting a
# parallel region.


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def batch_norm_train_forward_rows(x, gamma, beta, eps, block, out, mean, var, invstd):
    """Normalise with the batch's own statistics, rows layout.

    Shapes: x, out (N, C); gamma, beta (C,); outputs mean, var (biased), invstd (C,) float64.
    Loop nest: for block: see :func:`train_forward_rows_block`.
    Parallel over: blocks of ``block`` channels (each block writes only its own channels'
    entries of mean, var, invstd, out: race-free).
    """
    channels = x.shape[1]
    for b in prange(-(-channels // block)):
        lo = b * block
        hi = min(lo + block, channels)
        train_forward_rows_block(x, gamma, beta, eps, lo, hi, out, mean, var, invstd)


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def train_forward_rows_block(x, gamma, beta, eps, lo, hi, out, mean, var, invstd):
    """batch_norm_train_forward_rows for channels lo .. hi (serial).

    Loop nest: [for n: for c in block: Σ x] → mean; the same for Σ (x − mean)² → var;
    [out = (x − mean)·γ·invstd + β]. The inner loop runs along contiguous channels.
    """
    n_batch = x.shape[0]
    width = hi - lo
    # Views of this block's channels, indexed from 0: an inner loop starting at a computed
    # offset keeps Numba's negative-index checks and LLVM then does not vectorise it.
    mu = mean[lo:hi]
    v = var[lo:hi]
    inv = invstd[lo:hi]
    shift = beta[lo:hi]
    scale = np.empty(width)
    for k in range(width):
        mu[k] = 0.0
        v[k] = 0.0
    for n in range(n_batch):
        row = x[n, lo:hi]
        for k in range(width):
            mu[k] += row[k]
    for k in range(width):
        mu[k] /= n_batch
    for n in range(n_batch):
        row = x[n, lo:hi]
        for k in range(width):
            d = row[k] - mu[k]
            v[k] += d * d
    for k in range(width):
        v[k] /= n_batch
        inv[k] = 1.0 / np.sqrt(v[k] + eps)
        scale[k] = gamma[lo + k] * inv[k]
    for n in range(n_batch):
        row = x[n, lo:hi]
        row_out = out[n, lo:hi]
        for k in range(width):
            row_out[k] = (row[k] - mu[k]) * scale[k] + shift[k]


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def batch_norm_eval_forward_rows(
    x, running_mean, running_var, gamma, beta, eps, block, out, mean, invstd
):
    """The fixed per-channel map of evaluation, rows layout.

    Shapes: x, out (N, C); running_mean, running_var, gamma, beta (C,); outputs mean (a float64
    copy of running_mean) and invstd = 1/√(running_var + eps) (C,), for backward.
    Loop nest: for block: see :func:`eval_forward_rows_block`.
    Parallel over: blocks of channels (each writes only its own channels: race-free).
    """
    channels = x.shape[1]
    for b in prange(-(-channels // block)):
        lo = b * block
        hi = min(lo + block, channels)
        eval_forward_rows_block(
            x, running_mean, running_var, gamma, beta, eps, lo, hi, out, mean, invstd
        )


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def eval_forward_rows_block(
    x, running_mean, running_var, gamma, beta, eps, lo, hi, out, mean, invstd
):
    """batch_norm_eval_forward_rows for channels lo .. hi (serial).

    Loop nest: for n: for c in block: out = (x − mean)·γ·invstd + β.
    """
    n_batch = x.shape[0]
    width = hi - lo
    mu = mean[lo:hi]
    inv = invstd[lo:hi]
    shift = beta[lo:hi]
    scale = np.empty(width)
    for k in range(width):
        mu[k] = running_mean[lo + k]
        inv[k] = 1.0 / np.sqrt(np.float64(running_var[lo + k]) + eps)
        scale[k] = gamma[lo + k] * inv[k]
    for n in range(n_batch):
        row = x[n, lo:hi]
        row_out = out[n, lo:hi]
        for k in range(width):
            row_out[k] = (row[k] - mu[k]) * scale[k] + shift[k]


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def batch_norm_backward_rows(
    grad_out, x, mean, invstd, gamma, through_stats, block, grad_in, sum_g, sum_gx
):
    """Gradient of batch normalization, rows layout (both modes); see batch_norm_backward.

    Shapes: grad_out, x, grad_in (N, C); mean, invstd, gamma (C,); outputs sum_g = Σ g and
    sum_gx = Σ g·x̂ (C,) float64.
    Loop nest: for block: see :func:`backward_rows_block`.
    Parallel over: blocks of channels (each writes only its own channels: race-free).
    """
    channels = x.shape[1]
    for b in prange(-(-channels // block)):
        lo = b * block
        hi = min(lo + block, channels)
        backward_rows_block(
            grad_out, x, mean, invstd, gamma, through_stats, lo, hi, grad_in, sum_g, sum_gx
        )


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def backward_rows_block(
    grad_out, x, mean, invstd, gamma, through_stats, lo, hi, grad_in, sum_g, sum_gx
):
    """batch_norm_backward_rows for channels lo .. hi (serial).

    Loop nest: [for n: for c in block: Σ g, Σ g·(x − mean)]; [dx].
    """
    n_batch = x.shape[0]
    width = hi - lo
    mu = mean[lo:hi]
    total = sum_g[lo:hi]
    total_gx = sum_gx[lo:hi]
    for k in range(width):
        total[k] = 0.0
        total_gx[k] = 0.0
    for n in range(n_batch):
        row = x[n, lo:hi]
        row_g = grad_out[n, lo:hi]
        for k in range(width):
            total[k] += row_g[k]
            total_gx[k] += row_g[k] * (row[k] - mu[k])
    # dx = scale·(g − mean_g − (x − mean)·slope); mean_g = slope = 0 for the fixed map.
    scale = np.empty(width)
    mean_g = np.zeros(width)
    slope = np.zeros(width)
    for k in range(width):
        inv = invstd[lo + k]
        total_gx[k] *= inv
        scale[k] = gamma[lo + k] * inv
        if through_stats:
            mean_g[k] = total[k] / n_batch
            slope[k] = total_gx[k] / n_batch * inv
    for n in range(n_batch):
        row = x[n, lo:hi]
        row_g = grad_out[n, lo:hi]
        row_in = grad_in[n, lo:hi]
        for k in range(width):
            row_in[k] = scale[k] * (row_g[k] - mean_g[k] - (row[k] - mu[k]) * slope[k])
