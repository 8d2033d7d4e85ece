"""remove_dropout: drop every Dropout layer, which is the identity at inference anyway."""

from __future__ import annotations

import copy

from ..nn.dropout import Dropout
from ..nn.merge import Identity
from ..nn.module import Module
from .rewrite import rewrite


def remove_dropout(model: Module) -> Module:
    """Return an eval-mode copy of ``model`` without Dropout layers; ``model`` is untouched.

    In a Sequential or a Graph the layer is removed and its readers read its input; a Dropout
    held by another kind of module becomes an :class:`~tinynet.nn.Identity`.
    """

    def rule(graph):
        return {node.name: None for node in graph.nodes if isinstance(node.module, Dropout)}

    def leaf(module):
        return Identity() if isinstance(module, Dropout) else module

    new = rewrite(copy.deepcopy(model), rule, leaf)
    if isinstance(new, Dropout):
        new = Identity()
    return new.eval()
