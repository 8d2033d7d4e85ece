"""Batch normalization (Ioffe & Szegedy, 2015): BatchNorm1d, BatchNorm2d, BatchNorm3d."""

from __future__ import annotations

import numpy as np

from .. import config
from ..kernels import batchnorm as kernels
from .module import Module, Parameter
from .validation import check_grad, check_input, positive_int, require_forward


class _BatchNorm(Module):
    """Shared by the three classes, which differ only in the input ranks they accept.

    Each channel c is normalised over the batch and every spatial position together::

        y = (x − μ_c) / √(σ²_c + eps) · γ_c + β_c

    In training μ, σ² are the batch's mean and biased variance, and the running estimates
    move towards the batch's mean and *unbiased* variance (σ²·m/(m − 1), m values per channel):
    ``running = (1 − momentum)·running + momentum·batch``, or with ``momentum=None`` the
    cumulative average over the ``num_batches_tracked`` batches seen. In evaluation the running
    estimates make the layer a fixed per-channel affine map, so an example's output does not
    depend on the rest of its batch. With ``track_running_stats=False`` there are no running
    estimates and batch statistics are used in both modes (as in PyTorch).

    Backward in training flows through μ and σ² as well (the paper's formulas); in
    evaluation it is the derivative of the fixed map.
    """

    _ndims: tuple[int, ...] = ()
    _layout = ""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ):
        super().__init__()
        name = type(self).__name__
        self.num_features = positive_int(name, "num_features", num_features)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
            raise ValueError(f"{name} expected eps to be a number >= 0, got {eps!r}")
        if momentum is not None and (
            isinstance(momentum, bool)
            or not isinstance(momentum, (int, float))
            or not 0 <= momentum <= 1
        ):
            raise ValueError(f"{name} expected momentum in [0, 1] or None, got {momentum!r}")
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        c = self.num_features
        if self.affine:
            self.weight = Parameter(np.ones(c, dtype=self.dtype))
            self.bias = Parameter(np.zeros(c, dtype=self.dtype))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(c, dtype=self.dtype))
            self.register_buffer("running_var", np.ones(c, dtype=self.dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        # Saved by forward for backward: the input in kernel layout, its shape, the statistics
        # it was normalised with, and whether they came from the batch.
        self._x = None
        self._shape = None
        self._mean = None
        self._invstd = None
        self._batch_stats = False
        self._on_dtype_change()

    def _on_dtype_change(self) -> None:
        # Without affine parameters the kernels still take γ = 1 and β = 0.
        self._unit_gamma = np.ones(self.num_features, dtype=self.dtype)
        self._zero_beta = np.zeros(self.num_features, dtype=self.dtype)

    def describe(self) -> str:
        return f"{type(self).__name__}(num_features={self.num_features})"

    def forward(self, x):
        c = self.num_features
        x = check_input(self, x, self._ndims, self._layout, channels=c, dtype=self.dtype)
        shape = x.shape
        per_channel = x.size // c
        # (N, C) and (N, C, 1) use the rows kernels; anything with spatial size > 1 the planes.
        rows = per_channel == shape[0]
        # Contiguous, so each kernel is compiled for one memory layout and streams memory.
        xk = np.ascontiguousarray(x.reshape(shape[0], c) if rows else x.reshape(shape[0], c, -1))
        gamma, beta = self._affine_arrays()
        out = np.empty(xk.shape, dtype=xk.dtype)
        mean = np.empty(c)
        invstd = np.empty(c)

        batch_stats = self.training or not self.track_running_stats
        if x.size == 0:  # as torch: an empty output; a training step still counts the batch
            if self.training and self.track_running_stats:
                self.num_batches_tracked[()] += 1
            self._x, self._shape, self._batch_stats = xk, shape, batch_stats
            return out.reshape(shape)
        if batch_stats and self.eps <= 0:  # as torch: 1/√(σ² + 0) is inf for a constant channel
            raise ValueError(
                f"{self.describe()}: eps must be positive when normalising by batch "
                f"statistics (training, or track_running_stats=False), got {self.eps}"
            )
        if batch_stats and per_channel <= 1:
            raise ValueError(
                f"{self.describe()}: Expected more than 1 value per channel when training, "
                f"got input size {shape}"
            )
        # Rows in one block run the serial kernel (no parallel region to start; it also
        # compiles faster); the planes kernels run on one thread when the input is small.
        block = _rows_block(xk) if rows else c
        with config.one_thread_if(not rows and xk.size < config.SERIAL_BELOW):
            if batch_stats:
                var = np.empty(c)
                if rows and block == c:
                    kernels.train_forward_rows_block(
                        xk, gamma, beta, self.eps, 0, c, out, mean, var, invstd
                    )
                elif rows:
                    kernels.batch_norm_train_forward_rows(
                        xk, gamma, beta, self.eps, block, out, mean, var, invstd
                    )
                else:
                    kernels.batch_norm_train_forward(
                        xk, gamma, beta, self.eps, out, mean, var, invstd
                    )
                if self.training and self.track_running_stats:
                    self._update_running_stats(mean, var, per_channel)
            else:
                stats = (self.running_mean, self.running_var, gamma, beta, self.eps)
                if rows and block == c:
                    kernels.eval_forward_rows_block(xk, *stats, 0, c, out, mean, invstd)
                elif rows:
                    kernels.batch_norm_eval_forward_rows(xk, *stats, block, out, mean, invstd)
                else:
                    kernels.batch_norm_eval_forward(xk, *stats, out, mean, invstd)

        self._x = xk
        self._shape = shape
        self._mean = mean
        self._invstd = invstd
        self._batch_stats = batch_stats
        return out.reshape(shape)

    def _update_running_stats(self, mean, var, count) -> None:
        # In place on the 0-d buffer: "self.num_batches_tracked += 1" would also re-register
        # the buffer through Module.__setattr__, 10x the cost of the addition.
        self.num_batches_tracked[()] += 1
        if self.momentum is None:
            factor = 1.0 / float(self.num_batches_tracked)
        else:
            factor = self.momentum
        kernels.update_running_stats(self.running_mean, self.running_var, mean, var, factor, count)

    def backward(self, grad_out):
        require_forward(self, self._x)
        x = self._x
        grad_out = check_grad(self, grad_out, self._shape, x.dtype)
        grad_out = np.ascontiguousarray(grad_out.reshape(x.shape))
        if x.size == 0:  # nothing to normalise: an empty gradient, nothing added to .grad
            return np.zeros(self._shape, dtype=x.dtype)
        gamma, _ = self._affine_arrays()
        grad_in = np.empty(x.shape, dtype=x.dtype)
        sum_g = np.empty(self.num_features)
        sum_gx = np.empty(self.num_features)
        saved = (grad_out, x, self._mean, self._invstd, gamma, self._batch_stats)
        rows = x.ndim == 2
        block = _rows_block(x) if rows else x.shape[1]
        with config.one_thread_if(not rows and x.size < config.SERIAL_BELOW):
            if rows and block == x.shape[1]:
                kernels.backward_rows_block(*saved, 0, block, grad_in, sum_g, sum_gx)
            elif rows:
                kernels.batch_norm_backward_rows(*saved, block, grad_in, sum_g, sum_gx)
            else:
                kernels.batch_norm_backward(*saved, grad_in, sum_g, sum_gx)
        if self.affine:
            self.weight.grad += sum_gx
            self.bias.grad += sum_g
        return grad_in.reshape(self._shape)

    def _affine_arrays(self):
        if self.affine:
            return self.weight.data, self.bias.data
        return self._unit_gamma, self._zero_beta

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )


def _rows_block(x) -> int:
    """Channels per parallel task of the rows kernels for an (N, C) input.

    One block per thread, rounded up to whole 64-byte cache lines (16 float32) so threads never
    share a line of the output. A thread is worth waking only for at least 32K values (PyTorch's
    grain size too): below that the work takes ~10 µs and a second thread measured no faster.
    """
    channels = x.shape[1]
    if x.size < 2 * 32768:  # one block, without asking Numba for its thread count (~1 µs)
        return channels
    threads = min(config.get_num_threads(), x.size // 32768)
    if threads <= 1:
        return channels
    per_thread = -(-channels // threads)
    return -(-per_thread // 16) * 16


class BatchNorm1d(_BatchNorm):
    """Batch normalization over (N, C) features or (N, C, L) sequences, per channel C.

    Shape: input and output (N, C) or (N, C, L); weight, bias, running_mean, running_var (C,).
    """

    _ndims = (2, 3)
    _layout = "(N, {C}) or (N, {C}, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalization of images, each channel over the batch and all H × W positions.

    Shape: input and output (N, C, H, W); weight, bias, running_mean, running_var (C,).
    """

    _ndims = (4,)
    _layout = "(N, {C}, H, W)"


class BatchNorm3d(_BatchNorm):
    """Batch normalization of volumes, each channel over the batch and all D × H × W positions.

    Shape: input and output (N, C, D, H, W); weight, bias, running_mean, running_var (C,).
    """

    _ndims = (5,)
    _layout = "(N, {C}, D, H, W)"
