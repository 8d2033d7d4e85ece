"""Recompute BatchNorm population statistics from training data (the paper's Algorithm 2)."""

from __future__ import annotations

from ..nn.batchnorm import _BatchNorm
from ..nn.module import Module
from ..nn.validation import layer_name


def recalibrate_bn(model: Module, batches) -> Module:
    """Set every BatchNorm's running statistics to the average over ``batches``.

    Ioffe & Szegedy's Algorithm 2: with the weights frozen, the population statistics of
    each BatchNorm are E[x] = E_B[μ_B] and Var[x] = m/(m − 1)·E_B[σ²_B], averages over
    training mini-batches B of m values per channel. After this call, for each BatchNorm,
    ``running_mean`` is the mean of the batch means, ``running_var`` the mean of the unbiased
    batch variances, and ``num_batches_tracked`` the number of batches.

    How: each BatchNorm's statistics are reset and its momentum set to None, which turns its
    running update into exactly this cumulative average (PyTorch's ``update_bn`` idiom). While
    collecting, the BatchNorms run in training mode, normalising with batch statistics, so each
    sees the inputs it sees in training; every other layer runs in evaluation mode (Dropout is
    the identity and draws no random numbers). Parameters and all other state are untouched.
    The model is changed in place, left in evaluation mode, and returned.

    ``batches`` is an iterable of input arrays or of ``(inputs, targets, ...)`` tuples (a
    ``DataLoader``); only the inputs are used. A BatchNorm with ``track_running_stats=False``
    has no running statistics to set, and no batches leaves nothing to average: both raise
    ``ValueError`` with the model unchanged.
    """
    if not isinstance(model, Module):
        raise TypeError(f"recalibrate_bn expected a tinynet Module, got {type(model).__name__}")
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    for bn in norms:
        if not bn.track_running_stats:
            raise ValueError(
                f"recalibrate_bn: {layer_name(bn)} has track_running_stats=False, so it has no "
                "running statistics to recalibrate"
            )
    saved = [(bn.momentum, bn.state_dict()) for bn in norms]
    count = 0
    try:
        model.eval()
        for bn in norms:
            bn.momentum = None
            bn.running_mean.fill(0)
            bn.running_var.fill(1)
            bn.num_batches_tracked.fill(0)
            bn.train()
        for batch in batches:
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(inputs)
            count += 1
        if count == 0:
            raise ValueError("recalibrate_bn expected at least one batch, got an empty iterable")
    except BaseException:
        # A failed recalibration must not leave half-averaged statistics behind.
        for bn, (_, state) in zip(norms, saved, strict=True):
            bn.load_state_dict(state)
        raise
    finally:
        for bn, (momentum, _) in zip(norms, saved, strict=True):
            bn.momentum = momentum
        model.eval()
    return model
