"""Slow, readable NumPy batch normalization, written from the paper (Ioffe & Szegedy, 2015).

Everything is computed in float64 with the channel moved to the last axis, so a "channel"
is simply a column of a 2-D array of shape (values, C). Backward follows the paper's chain
rule step by step (through x̂, σ² and μ) rather than the compact formula the kernels use.
"""

from __future__ import annotations

import numpy as np


def to_columns(x) -> np.ndarray:
    """(N, C, *spatial) → (N·spatial, C): one column of values per channel."""
    x = np.asarray(x, dtype=np.float64)
    return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])


def from_columns(columns, shape) -> np.ndarray:
    """The inverse of :func:`to_columns`."""
    moved = (shape[0],) + tuple(shape[2:]) + (shape[1],)
    return np.moveaxis(columns.reshape(moved), -1, 1)


def batch_norm_stats(x):
    """Per-channel batch mean and biased variance (the paper's μ_B and σ²_B)."""
    cols = to_columns(x)
    mean = cols.mean(axis=0)
    var = ((cols - mean) ** 2).mean(axis=0)
    return mean, var


def batch_norm_forward(x, gamma, beta, eps, mean=None, var=None):
    """y = γ·(x − μ)/√(σ² + eps) + β per channel; batch statistics unless mean, var given."""
    if mean is None:
        mean, var = batch_norm_stats(x)
    cols = to_columns(x)
    x_hat = (cols - mean) / np.sqrt(np.asarray(var, dtype=np.float64) + eps)
    y = np.asarray(gamma, dtype=np.float64) * x_hat + np.asarray(beta, dtype=np.float64)
    return from_columns(y, np.shape(x))


def batch_norm_backward(x, grad_out, gamma, eps, mean=None, var=None):
    """(dx, dγ, dβ). With mean, var given they are constants (evaluation); otherwise they are
    the batch's statistics and the gradient flows through them (the paper's equations)."""
    batch = mean is None
    if batch:
        mean, var = batch_norm_stats(x)
    cols = to_columns(x)
    g = to_columns(grad_out)
    gamma = np.asarray(gamma, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    m = cols.shape[0]
    std = np.sqrt(var + eps)
    x_hat = (cols - mean) / std
    d_beta = g.sum(axis=0)
    d_gamma = (g * x_hat).sum(axis=0)
    d_x_hat = g * gamma
    if not batch:
        return from_columns(d_x_hat / std, np.shape(x)), d_gamma, d_beta
    d_var = (d_x_hat * (cols - mean)).sum(axis=0) * -0.5 * (var + eps) ** -1.5
    d_mean = (d_x_hat * -1.0 / std).sum(axis=0) + d_var * (-2.0 * (cols - mean)).sum(axis=0) / m
    d_x = d_x_hat / std + d_var * 2.0 * (cols - mean) / m + d_mean / m
    return from_columns(d_x, np.shape(x)), d_gamma, d_beta


def running_stats(batches, momentum, num_features):
    """Running mean, running variance and batch count after training on ``batches``.

    running ← (1 − f)·running + f·batch, with f = momentum, or f = 1/k at the k-th batch when
    momentum is None (a cumulative average); the variance folded in is the unbiased one.
    """
    running_mean = np.zeros(num_features)
    running_var = np.ones(num_features)
    for k, x in enumerate(batches, start=1):
        mean, var = batch_norm_stats(x)
        m = to_columns(x).shape[0]
        f = 1.0 / k if momentum is None else momentum
        running_mean = (1 - f) * running_mean + f * mean
        running_var = (1 - f) * running_var + f * var * m / (m - 1)
    return running_mean, running_var, len(batches)
