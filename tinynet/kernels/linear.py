"""Matrix products of the Linear layer, split across Numba's threads.

Each thread calls BLAS (``np.dot``, or ``blas.gemm`` for a strided block) on its own block
of the product, with BLAS itself kept single-threaded. Letting a multi-threaded BLAS do the
whole product instead would leave its worker threads spin-waiting after every call, on the
cores Numba's kernels need next; on two cores that made the layers after a Linear up to 10x
slower.
"""

import numpy as np
from numba import njit, prange

from .. import config
from .blas import gemm
from .conv import add_into


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def forward_rows(x, weight, out):
    """out = x @ weightᵀ for a block of rows: one BLAS call (weightᵀ is an F-ordered view,
    which BLAS reads transposed, no copy). Serial; called directly for a product too small to
    split (no parallel region to start: ~10 µs saved per call) and per block below."""
    np.dot(x, weight.T, out)


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def input_grad_rows(grad_out, weight, grad_x):
    """grad_x = grad_out @ weight for a block of rows."""
    np.dot(grad_out, weight, grad_x)


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def weight_grad_rows(grad_out_t, x, grad_w, weight_grad):
    """grad_w = grad_outᵀ @ x for a block of output features (rows of grad_out_t), then
    weight_grad += grad_w while those rows are still in the cache."""
    np.dot(grad_out_t, x, grad_w)
    add_into(grad_w, weight_grad)


@njit(fastmath=config.FASTMATH, cache=config.CACHE)
def linear_backward_serial(
    x, weight, grad_out, grad_out_t, input_grad, grad_x, grad_w, weight_grad
):
    """linear_backward in one block, without a parallel region (see forward_rows)."""
    if input_grad:
        input_grad_rows(grad_out, weight, grad_x)
    weight_grad_rows(grad_out_t, x, grad_w, weight_grad)


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def linear_forward(x, weight, blocks, out):
    """out = x @ weightᵀ; x (N, in), weight (out, in), out (N, out), all C-contiguous.

    Loop: for each of ``blocks`` blocks, one GEMM: blocks of rows, or, for a batch smaller
    than the feature count, blocks of output features, whose products are squarer, which
    BLAS runs faster (measured on (64, 3136) → 128, 2 threads: 0.30 ms against 0.36 by rows;
    BLAS packs the whole weight once per row block, so row blocks of 32 spend much of their
    time packing). A block of features is a strided block of out's columns, which ``np.dot``
    cannot write: it goes through gemm with out's row stride. Parallel over: the blocks; each
    writes only its own rows or columns of out.
    """
    n, k, m = x.shape[0], x.shape[1], weight.shape[0]
    xf, wf, of = x.reshape(-1), weight.reshape(-1), out.reshape(-1)
    for b in prange(blocks):
        if n < m:
            o0 = b * m // blocks
            o1 = (b + 1) * m // blocks
            gemm(False, True, n, o1 - o0, k, xf, k, wf[o0 * k :], k, 0.0, of[o0:], m)
        else:
            r0 = b * n // blocks
            r1 = (b + 1) * n // blocks
            forward_rows(x[r0:r1], weight, out[r0:r1])
    return out


@njit(parallel=True, fastmath=config.FASTMATH, cache=config.CACHE)
def linear_backward(
    x, weight, grad_out, grad_out_t, blocks, input_grad, grad_x, grad_w, weight_grad
):
    """grad_x = grad_out @ weight (skipped, grad_x left as it is, unless ``input_grad``),
    grad_w = grad_outᵀ @ x (overwritten), and weight_grad += grad_w.

    The addition into the parameter's gradient happens per block of rows right after BLAS
    wrote them, while they are in the cache, and on every thread: done afterwards in NumPy it
    was a separate single-threaded pass over the whole weight (3136 × 128 floats: ~0.1 ms).

    Shapes: x (N, in), weight (out, in), grad_out (N, out), grad_out_t its (out, N) transpose
    in C order, grad_x (N, in), grad_w and weight_grad (out, in). Parallel over: 2·blocks
    tasks, block b of grad_x (of rows, or of columns for a batch smaller than in) and block
    b of grad_w's rows (output features); every task writes only its own block (of grad_x,
    or of grad_w and weight_grad), so the sum over the batch inside grad_w stays inside one
    BLAS call.
    One parallel loop rather than two: each is compiled separately (slow) and ends in a wait.
    """
    n = x.shape[0]
    m, k = weight.shape
    # Tasks in pairs (grad_x block b, grad_w block b), or grad_w blocks alone: prange gives
    # each thread a contiguous run of tasks, so with one block per thread each computes one
    # block of each product (in two runs, one thread had all of grad_x: no split at all).
    per_block = 2 if input_grad else 1
    for task in prange(per_block * blocks):
        b = task // per_block
        grad_x_task = input_grad and task % 2 == 0
        if grad_x_task and n < k:
            # A batch smaller than in_features: blocks of grad_x's columns, as the forward
            # splits by features (1.25x on (64, 128) @ (128, 3136), 2 threads; strided, so
            # through gemm).
            c0 = b * k // blocks
            c1 = (b + 1) * k // blocks
            gf, wf, xf = grad_out.reshape(-1), weight.reshape(-1), grad_x.reshape(-1)
            gemm(False, False, n, c1 - c0, m, gf, m, wf[c0:], k, 0.0, xf[c0:], k)
        elif grad_x_task:
            r0 = b * n // blocks
            r1 = (b + 1) * n // blocks
            input_grad_rows(grad_out[r0:r1], weight, grad_x[r0:r1])
        else:
            o0 = b * m // blocks
            o1 = (b + 1) * m // blocks
            weight_grad_rows(grad_out_t[o0:o1], x, grad_w[o0:o1], weight_grad[o0:o1])
    return grad_x
