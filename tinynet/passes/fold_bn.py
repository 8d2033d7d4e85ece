"""fold_bn: merge each inference-time BatchNorm into the layer before it.

With population statistics a BatchNorm is a fixed per-channel affine map (the paper, section
3.1): y = γ·(z − E[z])/√(Var[z] + ε) + β. When z = W·x + b comes from a convolution or a
linear layer, output channel c of the composition is again a convolution or linear map:

    W'[c] = W[c]·γ[c]/√(Var[c] + ε)        b'[c] = (b[c] − E[c])·γ[c]/√(Var[c] + ε) + β[c]

so inference saves the BatchNorm's pass over memory. The math is :func:`fold_bn_weights`; the
rest of this file finds where it applies and rewrites the model (see ``rewrite.py``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from ..graph import INPUT, Graph
from ..nn.affine import ChannelAffine
from ..nn.batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d, _BatchNorm
from ..nn.conv import Conv2d, Conv3d
from ..nn.linear import Linear
from ..nn.module import Module, Parameter
from .rewrite import rewrite, single_consumer

# The BatchNorm that can follow each foldable layer (its output's layout).
_FOLDS_INTO = {Linear: BatchNorm1d, Conv2d: BatchNorm2d, Conv3d: BatchNorm3d}


def bn_scale_shift(bn: _BatchNorm):
    """The fixed map y = scale·x + shift of ``bn`` at inference, in float64."""
    var = bn.running_var.astype(np.float64)
    mean = bn.running_mean.astype(np.float64)
    gamma = np.ones_like(mean) if bn.weight is None else bn.weight.data.astype(np.float64)
    beta = np.zeros_like(mean) if bn.bias is None else bn.bias.data.astype(np.float64)
    scale = gamma / np.sqrt(var + bn.eps)
    return scale, beta - mean * scale


def fold_bn_weights(w, b, mean, var, gamma, beta, eps):
    """Weight and bias of ``BN(W·x + b)`` as one layer; output channels on ``w``'s axis 0.

    ``b`` may be None (a layer without bias). Computed in float64 and returned in ``w``'s
    dtype, so folding a float32 model adds no more than one rounding per weight.
    """
    w64 = np.asarray(w, dtype=np.float64)
    b64 = np.zeros(w64.shape[0]) if b is None else np.asarray(b, dtype=np.float64)
    scale = np.asarray(gamma, dtype=np.float64) / np.sqrt(np.asarray(var, dtype=np.float64) + eps)
    w_folded = w64 * scale.reshape((-1,) + (1,) * (w64.ndim - 1))
    b_folded = (b64 - mean) * scale + beta
    return w_folded.astype(w.dtype), b_folded.astype(w.dtype)


@dataclass
class FoldReport:
    """What :func:`fold_bn` did: BatchNorms merged (into which layer) and turned affine."""

    merged: list[tuple[str, str]] = field(default_factory=list)  # (layer, batchnorm)
    to_affine: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"fold_bn: merged {len(self.merged)}, made affine {len(self.to_affine)}"]
        lines += [f"  {bn} -> merged into {layer}" for layer, bn in self.merged]
        lines += [f"  {bn} -> ChannelAffine" for bn in self.to_affine]
        return "\n".join(lines)


def fold_bn(model: Module, *, input_shape=None, report: bool = False):
    """Return an eval-mode copy of ``model`` with every BatchNorm folded away.

    A BatchNorm reading only from a Conv2d, Conv3d or Linear that feeds nothing else is
    merged into that layer's weight and bias (a bias is created when absent); every other
    BatchNorm becomes a :class:`ChannelAffine`. The population (running) statistics are used,
    whatever mode ``model`` is in; ``model`` itself is not modified. With ``report=True``
    returns ``(folded_model, FoldReport)``.

    Linear → BatchNorm1d merges only for (N, features) data: on (N, C, L) the BatchNorm
    normalises C while the Linear's features are L. The pass cannot see the data's rank, so
    a merged Linear refuses other ranks with a ValueError; given ``input_shape`` (the model's
    input, batch included), the pass works out each BatchNorm1d's input rank and keeps those
    that see 3-D data as ChannelAffine layers instead.
    """
    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm) and not m.track_running_stats:
            raise ValueError(
                f"fold_bn cannot fold {name or 'the model'} ({m.describe()}): it has "
                f"track_running_stats=False, so no population statistics to fold"
            )
    new = copy.deepcopy(model)
    # The copy's modules by the original's names, for the report.
    new_names = {id(m): name for (name, m) in new.named_modules()}
    log = FoldReport()
    not_2d = _batchnorms_not_2d(new, input_shape)

    def rule(graph: Graph) -> dict:
        changes = {}
        for node in graph.nodes:
            bn = node.module
            if not isinstance(bn, _BatchNorm):
                continue
            source = node.inputs[0]
            layer = None if source == INPUT else graph[source]
            if (
                _can_merge(layer, bn)
                and single_consumer(graph, source) == node.name
                and not (isinstance(layer, Linear) and id(bn) in not_2d)
            ):
                changes[source] = _merged(changes.get(source, layer), bn)
                changes[node.name] = None
                log.merged.append((new_names.get(id(layer), source), new_names.get(id(bn), "")))
            else:
                changes[node.name] = _affine(bn)
                log.to_affine.append(new_names.get(id(bn), node.name))
        return changes

    def leaf(module: Module) -> Module:
        if isinstance(module, _BatchNorm):
            log.to_affine.append(new_names.get(id(module), ""))
            return _affine(module)
        return module

    folded = rewrite(new, rule, leaf)
    if isinstance(folded, _BatchNorm):  # the model is one BatchNorm
        log.to_affine.append("")
        folded = _affine(folded)
    folded.eval()
    return (folded, log) if report else folded


def _batchnorms_not_2d(model: Module, input_shape) -> set:
    """ids of the BatchNorm1d layers that see inputs of rank other than 2 (by the shape rules
    of kernel_cache, which precompile uses too); empty without ``input_shape``."""
    if input_shape is None:
        return set()
    from ..kernel_cache import leaf_inputs  # the shape rules; imported late (it imports nn)

    leaves: list = []
    leaf_inputs(model, tuple(int(s) for s in input_shape), leaves, [])
    return {id(m) for m, shape, _ in leaves if isinstance(m, BatchNorm1d) and len(shape) != 2}


def _can_merge(layer, bn) -> bool:
    expected = _FOLDS_INTO.get(type(layer))
    if expected is None or not isinstance(bn, expected):
        return False
    channels = layer.out_features if isinstance(layer, Linear) else layer.out_channels
    return channels == bn.num_features


def _merged(layer: Module, bn: _BatchNorm) -> Module:
    """A copy of ``layer`` with ``bn`` folded into its weight and bias.

    A copy even though the pass owns ``layer``: a model may call one layer object in two
    places, and only this place's BatchNorm belongs in this place's weights.
    """
    layer = copy.deepcopy(layer)
    bias = None if layer.bias is None else layer.bias.data
    gamma = np.ones(bn.num_features) if bn.weight is None else bn.weight.data
    beta = np.zeros(bn.num_features) if bn.bias is None else bn.bias.data
    w, b = fold_bn_weights(
        layer.weight.data, bias, bn.running_mean, bn.running_var, gamma, beta, bn.eps
    )
    layer.weight = Parameter(w)
    layer.bias = Parameter(b)
    if isinstance(layer, Linear):
        layer.merged_batchnorm = True  # its BatchNorm1d scaled axis 1: 2-D inputs only
    return layer


def _affine(bn: _BatchNorm) -> ChannelAffine:
    scale, shift = bn_scale_shift(bn)
    affine = ChannelAffine(bn.num_features).to(bn.dtype)
    affine.weight.data[...] = scale
    affine.bias.data[...] = shift
    return affine
