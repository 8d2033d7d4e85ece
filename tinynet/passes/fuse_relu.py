"""fuse_relu: compute each ReLU inside the Conv2d, Conv3d or Linear layer before it.

A graph rewrite like fold_bn: a layer whose output feeds only a ReLU becomes one
:class:`~tinynet.nn.FusedReLU`, and the ReLU is removed. Run after ``fold_bn``, which turns
conv–BN–ReLU into conv–ReLU, so the whole triple becomes one pass over memory.
"""

from __future__ import annotations

import copy

from ..graph import INPUT, Graph
from ..nn.activation import ReLU
from ..nn.conv import Conv2d, Conv3d
from ..nn.fused import FusedReLU
from ..nn.linear import Linear
from ..nn.module import Module
from .rewrite import rewrite, single_consumer

_FUSABLE = (Conv2d, Conv3d, Linear)


def fuse_relu(model: Module) -> Module:
    """Return an eval-mode copy of ``model`` in which every (layer, ReLU) pair is one layer.

    The pair is fused where the layer is a Conv2d, Conv3d or Linear whose output feeds
    only that ReLU; outputs are unchanged (the same max, applied earlier). ``model`` itself
    is not modified.
    """

    def rule(graph: Graph) -> dict:
        changes = {}
        for node in graph.nodes:
            if not isinstance(node.module, ReLU):
                continue
            source = node.inputs[0]
            if source == INPUT or source in changes:
                continue
            layer = graph[source]
            if type(layer) in _FUSABLE and single_consumer(graph, source) == node.name:
                changes[source] = FusedReLU(layer)
                changes[node.name] = None
        return changes

    return rewrite(copy.deepcopy(model), rule).eval()
