"""A graph of layers: residual additions and concatenations, not only chains.

A :class:`Graph` is a list of named nodes; each node holds a layer and the names of the nodes
whose outputs it receives ("input" is the graph's input). A node can only name nodes added
before it, so the insertion order is a topological order and the graph can never hold a cycle.

* ``forward`` runs the nodes in that order, keeping each output until its last consumer ran.
* ``backward`` runs them in reverse. A node whose output feeds several layers receives the sum
  of their gradients (the multivariate chain rule), so every consumer must have handed its
  gradient back before the node's own ``backward`` runs — which reverse topological order
  guarantees.

A ResNet block, conv–BN–ReLU–conv–BN plus the identity, then ReLU::

    g = Graph()
    g.add("conv1", nn.Conv2d(16, 16, 3, padding=1, bias=False))  # reads "input"
    g.add("bn1", nn.BatchNorm2d(16), "conv1")
    g.add("relu1", nn.ReLU(), "bn1")
    g.add("conv2", nn.Conv2d(16, 16, 3, padding=1, bias=False), "relu1")
    g.add("bn2", nn.BatchNorm2d(16), "conv2")
    g.add("add", nn.Add(), ("bn2", "input"))
    g.add("relu2", nn.ReLU(), "add")  # the last node added is the output

Children are registered under the node names (``g["conv1"]``, not ``g.conv1``, so any name is
free), and ``state_dict`` keys read ``conv1.weight``;
:meth:`Graph.from_sequential` names nodes "0", "1", ... so a Sequential's keys carry over.
"""

from __future__ import annotations

from dataclasses import dataclass

from .nn.module import Module, Sequential, backward_into, shared_layer_message

INPUT = "input"


@dataclass(frozen=True)
class Node:
    """One layer of a graph and the names of the nodes it reads, in argument order."""

    name: str
    module: Module
    inputs: tuple[str, ...]


class Graph(Module):
    """Layers wired as a directed acyclic graph with one input and one output."""

    def __init__(self):
        super().__init__()
        object.__setattr__(self, "nodes", [])
        object.__setattr__(self, "_output", INPUT)
        object.__setattr__(self, "_plan", None)
        object.__setattr__(self, "_shared", None)  # node names of a layer placed twice

    # -- building ------------------------------------------------------------------------------

    def add(self, name: str, module: Module, inputs: str | tuple[str, ...] = INPUT) -> str:
        """Append a node computing ``module(*outputs of inputs)``; it becomes the output.

        Returns ``name``, so branches read naturally: ``h = g.add("conv", conv, x)``.
        """
        if not isinstance(name, str) or not name or "." in name or name == INPUT:
            raise ValueError(
                f"Graph node names must be non-empty strings without '.', other than "
                f"{INPUT!r}; got {name!r}"
            )
        if name in self._modules:
            raise ValueError(f"Graph already has a node named {name!r}")
        if not isinstance(module, Module):
            raise TypeError(f"Graph node {name!r} expected a Module, got {type(module).__name__}")
        inputs = (inputs,) if isinstance(inputs, str) else tuple(inputs)
        if not inputs:
            raise ValueError(f"Graph node {name!r} needs at least one input")
        known = {INPUT, *self._modules}
        for source in inputs:
            if source not in known:
                raise ValueError(
                    f"Graph node {name!r} reads {source!r}, which is not an earlier node; "
                    f"known: {', '.join(sorted(known))}"
                )
        # Registered as a child but not as an attribute, so a node may be called "add".
        self._modules[name] = module
        self.nodes.append(Node(name, module, inputs))
        object.__setattr__(self, "_output", name)
        object.__setattr__(self, "_plan", None)
        return name

    @property
    def output(self) -> str:
        """The node whose value ``forward`` returns (the last one added, unless set)."""
        return self._output

    @output.setter
    def output(self, name: str) -> None:
        if name != INPUT and name not in self._modules:
            raise ValueError(f"Graph has no node {name!r} to use as its output")
        object.__setattr__(self, "_output", name)
        object.__setattr__(self, "_plan", None)

    @classmethod
    def from_sequential(cls, seq: Sequential) -> Graph:
        """The chain ``seq`` as a graph with nodes "0", "1", ... (the same layer objects)."""
        graph = cls()
        previous = INPUT
        for name, layer in seq.named_children():
            previous = graph.add(name, layer, previous)
        return graph

    def consumers(self, name: str) -> list[str]:
        """Names of the nodes that read ``name``'s output (the graph output counts as one)."""
        readers = [node.name for node in self.nodes if name in node.inputs]
        if name == self._output:
            readers.append("<output>")
        return readers

    def replace(self, name: str, module: Module) -> None:
        """Put ``module`` in node ``name``'s place, reading the same inputs (passes use it)."""
        if not isinstance(module, Module):
            raise TypeError(f"Graph node {name!r} expected a Module, got {type(module).__name__}")
        index = next((i for i, node in enumerate(self.nodes) if node.name == name), None)
        if index is None:
            raise ValueError(f"Graph has no node {name!r} to replace")
        self.nodes[index] = Node(name, module, self.nodes[index].inputs)
        self._modules[name] = module
        object.__setattr__(self, "_plan", None)  # the plan holds the nodes: rebuilt on use

    def __getitem__(self, name: str) -> Module:
        return self._modules[name]

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self):
        """The nodes' layers in order (as a Sequential iterates; ``g[name]`` reads one)."""
        return (node.module for node in self.nodes)

    # -- running -------------------------------------------------------------------------------

    def _schedule(self):
        """For each node, the values no later node needs once it ran (freed to save memory)."""
        last_use = {INPUT: -1}
        for index, node in enumerate(self.nodes):
            last_use[node.name] = index
            for source in node.inputs:
                last_use[source] = index
        last_use[self._output] = len(self.nodes)  # the output is kept to be returned
        free_after = [[] for _ in self.nodes]
        for name, index in last_use.items():
            if 0 <= index < len(self.nodes):
                free_after[index].append(name)
        plan = [(node, tuple(free_after[i])) for i, node in enumerate(self.nodes)]
        # backward cannot run through one layer object placed at two nodes: a layer keeps
        # what its last forward saved (its input, say), so the first node's backward would
        # use the second node's. Found here, once per plan, and raised by backward.
        where: dict[int, list[str]] = {}
        for node in self.nodes:
            where.setdefault(id(node.module), []).append(node.name)
        shared = next((names for names in where.values() if len(names) > 1), None)
        object.__setattr__(self, "_shared", shared)
        object.__setattr__(self, "_plan", plan)
        return plan

    def forward(self, x):
        plan = self._plan or self._schedule()
        values = {INPUT: x}
        for node, dead in plan:
            values[node.name] = node.module(*[values[source] for source in node.inputs])
            for name in dead:
                del values[name]
        return values[self._output]

    skips_input_grad = True  # backward takes input_grad (see nn.module.backward_into)

    def backward(self, grad_out, input_grad: bool = True):
        """The gradient with respect to the graph's input; with ``input_grad=False``, None,
        and the layers that read only the input compute just their parameter gradients."""
        if self._plan is None:
            self._schedule()
        if self._shared:
            raise ValueError(shared_layer_message("Graph", self._shared))
        grads = {self._output: grad_out}
        for node in reversed(self.nodes):
            grad = grads.pop(node.name, None)
            if grad is None:
                continue  # the node does not reach the output: no gradient flows through it
            if not input_grad and node.inputs == (INPUT,):
                backward_into(node.module, grad, input_grad=False)
                continue
            grad_in = node.module.backward(grad)
            if not isinstance(grad_in, tuple):  # a layer; merges (Add, Concat) give tuples
                grad_in = (grad_in,)
            for source, g in zip(node.inputs, grad_in):
                # A fresh sum, never +=: layers may hand back the same array twice (Add).
                grads[source] = g if source not in grads else grads[source] + g
        return grads.get(INPUT) if input_grad else None

    # -- printing ------------------------------------------------------------------------------

    def __repr__(self) -> str:
        lines = []
        for node in self.nodes:
            child = repr(node.module).replace("\n", "\n  ")
            lines.append(f"  ({node.name}): {child}  <- {', '.join(node.inputs)}")
        lines.append(f"  output: {self._output}")
        return "Graph(\n" + "\n".join(lines) + "\n)"
