"""The structural half of a pass: walk a model's containers and rewrite them as graphs.

A pass decides, for one flat graph at a time, which nodes to replace and which to drop; this
module does the walking and the rebuilding, so every pass sees the same picture:

* a :class:`Graph` is rewritten node by node;
* a :class:`Sequential` is viewed as the chain graph "0" → "1" → ..., rewritten, and turned
  back into a Sequential (children renumbered, as a Sequential's names are positions);
* any other module with children (a user's own class) has its children rewritten in place,
  since its ``forward`` decides the data flow, which a pass cannot see.

Containers are rewritten bottom-up: children first, then the container itself. Passes work on
a copy; nothing here copies.
"""

from __future__ import annotations

from collections.abc import Callable

from ..graph import INPUT, Graph
from ..nn.module import Module, Sequential

# A rule gets a graph and returns {node name: new module, or None to drop the node}. A dropped
# node's consumers read its first input instead (the node must be a one-input map).
Rule = Callable[[Graph], dict]


def rewrite(module: Module, rule: Rule, leaf: Callable[[Module], Module] | None = None) -> Module:
    """Apply ``rule`` to every Sequential and Graph inside ``module`` (``module`` included).

    ``leaf`` handles the children of other modules, which cannot be matched as a graph: it
    returns the replacement of one child (the child itself to keep it).
    """
    if isinstance(module, (Sequential, Graph)):
        graph = module if isinstance(module, Graph) else Graph.from_sequential(module)
        for node in graph.nodes:
            _replace_child(graph, node.name, rewrite(node.module, rule, leaf))
        graph = _rebuild(graph, rule(graph))
        return _as_sequential(graph) if isinstance(module, Sequential) else graph
    for name, child in list(module.named_children()):
        new = rewrite(child, rule, leaf)
        if leaf is not None and not isinstance(child, (Sequential, Graph)):
            new = leaf(new)
        if new is not child:
            setattr(module, name, new)
    return module


def _replace_child(graph: Graph, name: str, module: Module) -> None:
    if graph[name] is not module:
        # Through Graph.replace, which drops the graph's run plan: a plan made before the
        # pass (the model had run) still named the old child, and forward kept using it.
        graph.replace(name, module)


def _rebuild(graph: Graph, changes: dict) -> Graph:
    """A new graph with ``changes`` applied and readers of dropped nodes rewired."""
    if not changes:
        return graph
    source = {INPUT: INPUT}  # what each old name's value now comes from
    new = Graph()
    for node in graph.nodes:
        inputs = tuple(source[name] for name in node.inputs)
        module = changes.get(node.name, node.module)
        if module is None:
            source[node.name] = inputs[0]
        else:
            source[node.name] = new.add(node.name, module, inputs)
    new.output = source[graph.output]
    return new


def _as_sequential(graph: Graph) -> Sequential:
    """The chain ``graph`` as a Sequential (the rules never turn a chain into a branch)."""
    return Sequential(*(node.module for node in graph.nodes))


def single_consumer(graph: Graph, name: str) -> str | None:
    """The one node reading ``name``, or None if it has several readers or is the output."""
    readers = graph.consumers(name)
    return readers[0] if len(readers) == 1 and readers[0] != "<output>" else None
