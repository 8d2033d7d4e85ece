"""Model presets, a registry by name, and architecture as data.

Presets are functions that return a ``Sequential``::

    model = tinynet.models.lenet_bn()              # the BN CNN the benchmark and examples use
    model = tinynet.models.get("bn_mlp", bn=False)

``to_spec(model)`` describes a model as JSON-able data, a list of ``{"type", "kwargs"}``, and
``from_spec(spec)`` builds it again. Checkpoints store the spec instead of pickled objects: only
the layer classes in :data:`LAYER_TYPES` can be named, with plain numbers, strings and lists as
arguments, so loading a checkpoint cannot run arbitrary code.
"""

from __future__ import annotations

import inspect
import math

from . import nn
from .graph import INPUT, Graph

# -- presets --------------------------------------------------------------------------------------


def lenet_bn(num_classes: int = 10) -> nn.Sequential:
    """A LeNet-style CNN for (N, 1, 28, 28) images with BatchNorm after every conv and hidden
    linear layer (which therefore have no bias: BN's β replaces it)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128, bias=False),
        nn.BatchNorm1d(128),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(128, num_classes),
    )


def lenet(num_classes: int = 10) -> nn.Sequential:
    """:func:`lenet_bn` without BatchNorm: the same layers, with biases."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(128, num_classes),
    )


def bn_mlp(bn: bool = True, num_classes: int = 10) -> nn.Sequential:
    """The BatchNorm paper's MNIST network: 784–100–100–100–10 with sigmoids.

    With ``bn`` a BatchNorm1d sits before each sigmoid and the linear layer before it has no
    bias. Input: (N, 784) flattened images.
    """
    layers = []
    width = 784
    for _ in range(3):
        layers.append(nn.Linear(width, 100, bias=not bn))
        if bn:
            layers.append(nn.BatchNorm1d(100))
        layers.append(nn.Sigmoid())
        width = 100
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def mlp(num_classes: int = 10) -> nn.Sequential:
    """:func:`bn_mlp` without BatchNorm."""
    return bn_mlp(bn=False, num_classes=num_classes)


def cnn3d_bn(num_classes: int = 5, bn: bool = True) -> nn.Sequential:
    """A small 3-D CNN for (N, 1, 16, 16, 16) volumes, with BatchNorm3d after each conv."""
    layers = []
    channels = 1
    for width in (16, 32):
        layers.append(nn.Conv3d(channels, width, 3, padding=1, bias=not bn))
        if bn:
            layers.append(nn.BatchNorm3d(width))
        layers += [nn.ReLU(), nn.MaxPool3d(2)]
        channels = width
    layers += [nn.Flatten(), nn.Linear(32 * 4 * 4 * 4, 64, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm1d(64))
    layers += [nn.ReLU(), nn.Linear(64, num_classes)]
    return nn.Sequential(*layers)


def cnn3d(num_classes: int = 5) -> nn.Sequential:
    """:func:`cnn3d_bn` without BatchNorm."""
    return cnn3d_bn(num_classes, bn=False)


def residual_block(channels: int, out_channels: int | None = None, stride: int = 1) -> Graph:
    """A ResNet basic block (He et al., 2016) as a :class:`~tinynet.graph.Graph`.

    conv3×3–BN–ReLU–conv3×3–BN, plus the shortcut, then ReLU. The shortcut is the input
    itself, or a strided 1×1 conv with BN when the block changes the width or the size.
    """
    out_channels = channels if out_channels is None else out_channels
    g = Graph()
    g.add("conv1", nn.Conv2d(channels, out_channels, 3, stride, padding=1, bias=False))
    g.add("bn1", nn.BatchNorm2d(out_channels), "conv1")
    g.add("relu1", nn.ReLU(), "bn1")
    g.add("conv2", nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), "relu1")
    g.add("bn2", nn.BatchNorm2d(out_channels), "conv2")
    shortcut = INPUT
    if stride != 1 or out_channels != channels:
        g.add("down", nn.Conv2d(channels, out_channels, 1, stride, bias=False), INPUT)
        shortcut = g.add("down_bn", nn.BatchNorm2d(out_channels), "down")
    g.add("add", nn.Add(), ("bn2", shortcut))
    g.add("relu2", nn.ReLU(), "add")
    return g


def resnet_bn(num_classes: int = 10, width: int = 16) -> nn.Sequential:
    """A small ResNet for (N, 1, 28, 28) images: a stem, three residual blocks (the last two
    halve the size and double the width), global average pooling and a linear classifier."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        residual_block(width),
        residual_block(width, 2 * width, stride=2),
        residual_block(2 * width, 4 * width, stride=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, num_classes),
    )


# The registry the command line picks from, with the input each model expects:
# "image" (N, 1, 28, 28), "flat" (N, 784) or "volume" (N, 1, 16, 16, 16).
MODELS = {
    "lenet_bn": (lenet_bn, "image"),
    "lenet": (lenet, "image"),
    "resnet_bn": (resnet_bn, "image"),
    "bn_mlp": (bn_mlp, "flat"),
    "mlp": (mlp, "flat"),
    "cnn3d_bn": (cnn3d_bn, "volume"),
    "cnn3d": (cnn3d, "volume"),
}


def get(name: str, **kwargs) -> nn.Sequential:
    """Build the preset called ``name`` (one of :data:`MODELS`)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return MODELS[name][0](**kwargs)


# -- architecture as data -------------------------------------------------------------------------

# The only classes a spec may name: tinynet.nn layers whose constructor takes plain values.
LAYER_TYPES = frozenset(
    {
        "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "Add", "AvgPool2d", "AvgPool3d",
        "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "ChannelAffine", "Concat", "Conv2d",
        "Conv3d", "Dropout", "Flatten", "FusedReLU", "Graph", "Identity", "Linear", "MaxPool2d",
        "MaxPool3d", "ReLU", "Sequential", "Sigmoid", "Tanh",
    }
)  # fmt: skip

_SCALARS = (bool, int, float, str, type(None))


def to_spec(model: nn.Module) -> list[dict] | dict:
    """Describe ``model`` as JSON-able data: a Sequential as a list of ``{type, kwargs}``,
    any other model as one such dict (a Graph's lists its nodes).

    Each layer's constructor arguments are read back from the attributes of the same name
    (``in_features``, ``kernel_size``, ...), as torch.nn layers keep them; ``bias`` is
    whether the layer has one.
    """
    seen: set = set()
    if not isinstance(model, nn.Sequential):
        return _layer_spec(model, seen)
    return [_layer_spec(layer, seen) for layer in model]


def _layer_spec(layer: nn.Module, seen: set) -> dict:
    name = type(layer).__name__
    if name not in LAYER_TYPES or _layer_class(name) is not type(layer):
        raise ValueError(f"to_spec: {name} is not a tinynet layer that a spec can describe")
    if id(layer) in seen:  # a spec would rebuild two layers, which state_dict keeps as one
        raise ValueError(f"to_spec: a {name} is used at two places; a spec cannot say so")
    seen.add(id(layer))
    if isinstance(layer, nn.Sequential):
        return {"type": name, "layers": [_layer_spec(child, seen) for child in layer]}
    if isinstance(layer, Graph):
        nodes = [
            {"name": n.name, "inputs": list(n.inputs), "layer": _layer_spec(n.module, seen)}
            for n in layer.nodes
        ]
        return {"type": name, "nodes": nodes, "output": layer.output}
    if isinstance(layer, nn.FusedReLU):
        return {"type": name, "layer": _layer_spec(layer.layer, seen)}
    kwargs = {}
    for param in _constructor_params(type(layer)):
        if param.name == "bias" and param.default in (True, False):
            value = layer.bias is not None
        elif hasattr(layer, param.name):
            value = getattr(layer, param.name)
        else:
            raise ValueError(f"to_spec: {name} does not keep its argument {param.name!r}")
        kwargs[param.name] = _plain(value, f"{name}.{param.name}")
    spec = {"type": name, "kwargs": kwargs}
    if getattr(layer, "merged_batchnorm", False):  # fold_bn's guard on a merged Linear
        spec["merged_batchnorm"] = True
    return spec


def _plain(value, where: str):
    """A constructor argument as JSON data: scalars, and tuples of scalars as lists."""
    if isinstance(value, (tuple, list)):
        return [_plain(v, where) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()  # NumPy scalar
    if not isinstance(value, _SCALARS):
        raise ValueError(f"to_spec: {where} = {value!r} is not a plain value")
    return value


def from_spec(spec, max_weights: int | None = None) -> nn.Module:
    """Build a model from :func:`to_spec`'s description; a ``ValueError`` on anything else.

    Only classes in :data:`LAYER_TYPES` are built, with keyword arguments their constructor
    declares and plain values (numbers, strings, booleans, None, lists of them). With
    ``max_weights`` (a checkpoint passes the values it holds), a spec whose Linear and conv
    weights would need more values is refused before any is allocated: a few bytes of
    hand-made spec could otherwise ask for gigabytes.
    """
    budget = [max_weights]
    if isinstance(spec, dict):
        return _build(spec, "model", budget)
    if not isinstance(spec, list):
        raise ValueError(f"model spec must be a list of layers, got {type(spec).__name__}")
    return nn.Sequential(*(_build(item, f"layer {i}", budget) for i, item in enumerate(spec)))


def _weights(name: str, kwargs: dict) -> int:
    """How many weight values a Linear or convolution with these arguments allocates (the
    layers whose size grows as a product; others hold a few values per channel)."""
    if name == "Linear":
        return _size(kwargs.get("in_features")) * _size(kwargs.get("out_features"))
    if name in ("Conv2d", "Conv3d"):
        kernel = kwargs.get("kernel_size", 1)
        kernel = kernel if isinstance(kernel, (list, tuple)) else [kernel] * int(name[-2])
        count = _size(kwargs.get("in_channels")) * _size(kwargs.get("out_channels"))
        return count * math.prod(_size(k) for k in kernel) // max(1, _size(kwargs.get("groups")))
    return 0


def _size(value) -> int:
    # Not an int (the layer will refuse it): counts as 1 here.
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def _layer_class(name: str):
    return Graph if name == "Graph" else getattr(nn, name, None)


def _build_graph(item, where: str, budget: list) -> Graph:
    nodes = item.get("nodes")
    if set(item) != {"type", "nodes", "output"} or not isinstance(nodes, list):
        raise ValueError(f"model spec: {where} (Graph) needs exactly 'nodes' and 'output'")
    graph = Graph()
    for i, node in enumerate(nodes):
        if not isinstance(node, dict) or set(node) != {"name", "inputs", "layer"}:
            raise ValueError(f"model spec: {where} node {i} needs 'name', 'inputs', 'layer'")
        inputs = node["inputs"]
        if not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs):
            raise ValueError(f"model spec: {where} node {i} inputs must be a list of names")
        try:
            graph.add(node["name"], _build(node["layer"], f"{where}.{i}", budget), tuple(inputs))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"model spec: {where} node {i}: {exc}") from None
    try:
        graph.output = item["output"]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model spec: {where}: {exc}") from None
    return graph


def _build(item, where: str, budget: list) -> nn.Module:
    if not isinstance(item, dict) or not isinstance(item.get("type"), str):
        raise ValueError(f"model spec: {where} must be a dict with a 'type', got {item!r:.80}")
    name = item["type"]
    cls = _layer_class(name) if name in LAYER_TYPES else None
    if cls is None:
        raise ValueError(f"model spec: {where} names {name!r:.60}, not an allowed tinynet layer")
    if name == "Graph":
        return _build_graph(item, where, budget)
    if name == "Sequential":
        layers = item.get("layers")
        if set(item) != {"type", "layers"} or not isinstance(layers, list):
            raise ValueError(f"model spec: {where} (Sequential) needs exactly a 'layers' list")
        return nn.Sequential(*(_build(x, f"{where}.{i}", budget) for i, x in enumerate(layers)))
    if name == "FusedReLU":
        if set(item) != {"type", "layer"}:
            raise ValueError(f"model spec: {where} (FusedReLU) needs exactly a 'layer'")
        try:
            return nn.FusedReLU(_build(item["layer"], f"{where}.layer", budget))
        except TypeError as exc:
            raise ValueError(f"model spec: {where}: {exc}") from None
    kwargs = item.get("kwargs", {})
    # A Linear that fold_bn merged a BatchNorm1d into keeps its mark (it refuses 3-D input).
    marks = {"merged_batchnorm"} if name == "Linear" else set()
    if set(item) - {"type", "kwargs"} - marks or not isinstance(kwargs, dict):
        raise ValueError(f"model spec: {where} ({name}) must hold only 'type' and 'kwargs'")
    merged = item.get("merged_batchnorm", False)
    if not isinstance(merged, bool):
        raise ValueError(f"model spec: {where} ({name}) merged_batchnorm must be true or false")
    allowed = {param.name for param in _constructor_params(cls)}
    for key, value in kwargs.items():
        if key not in allowed:
            raise ValueError(f"model spec: {where} ({name}) has no argument {key!r:.60}")
        flat = value if isinstance(value, list) else [value]
        if not all(isinstance(v, _SCALARS) for v in flat):
            raise ValueError(f"model spec: {where} ({name}) argument {key} is not a plain value")
    # Lists come back as tuples, the form layers were given (kernel_size=(3, 3)).
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    if budget[0] is not None:
        budget[0] -= _weights(name, kwargs)
        if budget[0] < 0:
            raise ValueError(f"model spec: {where} ({name}) needs more weights than there are")
    try:
        layer = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model spec: {where} ({name}): {exc}") from None
    if merged:
        layer.merged_batchnorm = True
    return layer


def _constructor_params(cls) -> list[inspect.Parameter]:
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = inspect.signature(cls.__init__).parameters.values()
    return [p for p in params if p.kind in kinds and p.name != "self"]
