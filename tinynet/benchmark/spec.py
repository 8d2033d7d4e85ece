"""Layer specs: one description of a model that tinynet, NumPy and PyTorch are all built from.

A spec is a list of dicts, one per layer, in execution order: ``{"type": "Conv2d",
"in_channels": 1, ..., "weight": array, "bias": array}``. Reading the spec *out of* the tinynet
model (:func:`spec_from_tinynet`) and building the other two from it guarantees that the three
implementations time the same architecture with the same weights; the benchmark then checks
their outputs agree before timing anything.
"""

from __future__ import annotations

import numpy as np

from .numpy_impl import NumpyNet

_CONV = ("Conv1d", "Conv2d", "Conv3d")
_BN = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d")
_STATELESS = ("ReLU", "Sigmoid", "Tanh", "Flatten")


def _tuple(value, n):
    if isinstance(value, (tuple, list)):
        return tuple(int(v) for v in value)
    return (int(value),) * n


def _array(value):
    if value is None:
        return None
    data = getattr(value, "data", value)
    return np.array(data)


# -- fallback architectures (used only while tinynet.models is missing) -----------------------


def lenet_bn_spec(rng: np.random.Generator) -> list[dict]:
    """tinynet.models.lenet_bn: two conv-BN-ReLU-pool blocks, linear-BN-ReLU-dropout, linear."""
    return _init(
        [
            _conv(2, 1, 32, 3, padding=1, bias=False),
            _bn(2, 32),
            {"type": "ReLU"},
            _pool("MaxPool2d", 2),
            _conv(2, 32, 64, 3, padding=1, bias=False),
            _bn(2, 64),
            {"type": "ReLU"},
            _pool("MaxPool2d", 2),
            {"type": "Flatten"},
            {"type": "Linear", "in_features": 3136, "out_features": 128, "bias": False},
            _bn(1, 128),
            {"type": "ReLU"},
            {"type": "Dropout", "p": 0.5},
            {"type": "Linear", "in_features": 128, "out_features": 10, "bias": True},
        ],
        rng,
    )


def bn_mlp_spec(rng: np.random.Generator) -> list[dict]:
    """The BatchNorm paper's MNIST net: 784-100-100-100-10, sigmoid, BN before each sigmoid."""
    layers = []
    sizes = [784, 100, 100, 100]
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [
            {"type": "Linear", "in_features": fan_in, "out_features": fan_out, "bias": False},
            _bn(1, fan_out),
            {"type": "Sigmoid"},
        ]
    layers.append({"type": "Linear", "in_features": 100, "out_features": 10, "bias": True})
    return _init(layers, rng)


def cnn3d_bn_spec(rng: np.random.Generator, num_classes: int = 10) -> list[dict]:
    """tinynet.models.cnn3d_bn for (N, 1, 16, 16, 16): two Conv3d-BN3d-ReLU-pool blocks,
    linear-BN-ReLU, linear."""
    return _init(
        [
            _conv(3, 1, 16, 3, padding=1, bias=False),
            _bn(3, 16),
            {"type": "ReLU"},
            _pool("MaxPool3d", 2),
            _conv(3, 16, 32, 3, padding=1, bias=False),
            _bn(3, 32),
            {"type": "ReLU"},
            _pool("MaxPool3d", 2),
            {"type": "Flatten"},
            {"type": "Linear", "in_features": 2048, "out_features": 64, "bias": False},
            _bn(1, 64),
            {"type": "ReLU"},
            {"type": "Linear", "in_features": 64, "out_features": num_classes, "bias": True},
        ],
        rng,
    )


def _conv(nd, cin, cout, k, stride=1, padding=0, bias=True, groups=1):
    return {
        "type": f"Conv{nd}d",
        "in_channels": cin,
        "out_channels": cout,
        "kernel_size": (k,) * nd,
        "stride": (stride,) * nd,
        "padding": (padding,) * nd,
        "dilation": (1,) * nd,
        "groups": groups,
        "bias": bias,
    }


def _bn(nd, c):
    return {
        "type": f"BatchNorm{nd}d",
        "num_features": c,
        "eps": 1e-5,
        "momentum": 0.1,
        "affine": True,
        "track_running_stats": True,
    }


def _pool(kind, k):
    nd = int(kind[-2])
    return {"type": kind, "kernel_size": (k,) * nd, "stride": (k,) * nd, "padding": (0,) * nd}


def _init(specs, rng):
    """PyTorch-style uniform initialisation, and non-trivial BN parameters and statistics."""
    for s in specs:
        kind = s["type"]
        if kind in _CONV or kind == "Linear":
            if kind == "Linear":
                shape = (s["out_features"], s["in_features"])
            else:
                shape = (s["out_channels"], s["in_channels"] // s["groups"], *s["kernel_size"])
            bound = 1.0 / np.sqrt(np.prod(shape[1:]))
            s["weight"] = rng.uniform(-bound, bound, shape).astype(np.float32)
            has_bias = s.pop("bias")
            s["bias"] = (
                rng.uniform(-bound, bound, shape[0]).astype(np.float32) if has_bias else None
            )
        elif kind in _BN:
            c = s["num_features"]
            # Random γ, β and statistics so a wrong formula cannot pass by γ=1, β=0 symmetry.
            s["weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
            s["bias"] = rng.uniform(-0.5, 0.5, c).astype(np.float32)
            s["running_mean"] = rng.uniform(-0.1, 0.1, c).astype(np.float32)
            s["running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    return specs


# -- tinynet → spec ---------------------------------------------------------------------------


def _flat_layers(model):
    children = list(model.children()) if hasattr(model, "children") else []
    if type(model).__name__ == "Sequential" or (children and not hasattr(model, "weight")):
        if not children:
            return [model]
        out = []
        for child in children:
            out.extend(_flat_layers(child))
        return out
    return [model]


def spec_from_tinynet(model) -> list[dict]:
    """Describe a tinynet model (Sequential, nesting allowed) as a layer spec.

    Raises ``NotImplementedError`` for a layer the baselines do not implement.
    """
    specs = []
    for layer in _flat_layers(model):
        kind = type(layer).__name__
        s: dict = {"type": kind}
        if kind in _CONV:
            nd = int(kind[-2])
            w = _array(layer.weight)
            s.update(
                in_channels=w.shape[1] * int(getattr(layer, "groups", 1)),
                out_channels=w.shape[0],
                kernel_size=tuple(w.shape[2:]),
                stride=_tuple(getattr(layer, "stride", 1), nd),
                padding=_conv_padding(layer, nd),
                dilation=_tuple(getattr(layer, "dilation", 1), nd),
                groups=int(getattr(layer, "groups", 1)),
                weight=w,
                bias=_array(getattr(layer, "bias", None)),
            )
        elif kind in _BN:
            if getattr(layer, "momentum", 0.1) is None:
                raise NotImplementedError("BatchNorm with momentum=None (cumulative average)")
            s.update(
                num_features=int(layer.num_features),
                eps=float(getattr(layer, "eps", 1e-5)),
                momentum=float(getattr(layer, "momentum", 0.1)),
                affine=getattr(layer, "weight", None) is not None,
                track_running_stats=getattr(layer, "running_mean", None) is not None,
                weight=_array(getattr(layer, "weight", None)),
                bias=_array(getattr(layer, "bias", None)),
                running_mean=_array(getattr(layer, "running_mean", None)),
                running_var=_array(getattr(layer, "running_var", None)),
            )
        elif kind == "Linear":
            w = _array(layer.weight)
            s.update(
                in_features=w.shape[1],
                out_features=w.shape[0],
                weight=w,
                bias=_array(getattr(layer, "bias", None)),
            )
        elif kind.startswith(("MaxPool", "AvgPool")):
            nd = int(kind[-2])
            k = _tuple(layer.kernel_size, nd)
            stride = getattr(layer, "stride", None)
            s.update(
                kernel_size=k,
                stride=k if stride is None else _tuple(stride, nd),
                padding=_tuple(getattr(layer, "padding", 0), nd),
            )
        elif kind.startswith("AdaptiveAvgPool"):
            size = getattr(layer, "output_size", 1)
            if _tuple(size, 1) != (1,) * len(_tuple(size, 1)):
                raise NotImplementedError("adaptive pooling to a size other than 1")
            s["output_size"] = 1
        elif kind == "Dropout":
            s["p"] = float(getattr(layer, "p", 0.5))
        elif kind in _STATELESS:
            pass
        else:
            affine = _affine_from(layer)
            if affine is None:
                raise NotImplementedError(f"no baseline for tinynet layer {kind}")
            s = affine
        specs.append(s)
    return specs


def _conv_padding(layer, nd):
    """Padding as a tuple; 'same'/'valid' strings resolved from the layer's own low/high pads."""
    padding = getattr(layer, "padding", 0)
    if not isinstance(padding, str):
        return _tuple(padding, nd)
    low = getattr(layer, "_pad_low", None)
    high = getattr(layer, "_pad_high", None)
    if low is None or tuple(low) != tuple(high):
        raise NotImplementedError(f"padding={padding!r} with uneven sides")
    return _tuple(low, nd)


def _affine_from(layer):
    """fold_bn's fixed per-channel affine layer, whatever it is called, as an 'Affine' spec."""
    for scale_name, shift_name in (("scale", "shift"), ("weight", "bias")):
        scale = getattr(layer, scale_name, None)
        shift = getattr(layer, shift_name, None)
        if scale is not None and shift is not None:
            return {"type": "Affine", "scale": _array(scale), "shift": _array(shift)}
    return None


# -- folding in spec space (for the NumPy and PyTorch folded baselines) -----------------------


def fold_spec(specs: list[dict]) -> list[dict]:
    """Merge each BatchNorm into the Conv/Linear before it; other BatchNorms become affine."""
    out: list[dict] = []
    for s in specs:
        if s["type"] in _BN:
            gamma = s["weight"] if s.get("weight") is not None else np.ones(s["num_features"])
            beta = s["bias"] if s.get("bias") is not None else np.zeros(s["num_features"])
            scale = gamma / np.sqrt(s["running_var"].astype(np.float64) + s["eps"])
            shift = beta - s["running_mean"] * scale
            prev = out[-1] if out else None
            if prev is not None and (prev["type"] in _CONV or prev["type"] == "Linear"):
                w = prev["weight"].astype(np.float64)
                b = prev["bias"] if prev.get("bias") is not None else np.zeros(w.shape[0])
                prev["weight"] = (w * scale.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
                prev["bias"] = (b * scale + shift).astype(np.float32)
            else:
                out.append(
                    {
                        "type": "Affine",
                        "scale": scale.astype(np.float32),
                        "shift": shift.astype(np.float32),
                    }
                )
        else:
            out.append({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()})
    return out


# -- spec → implementations -------------------------------------------------------------------


def build_numpy(specs: list[dict]) -> NumpyNet:
    return NumpyNet(specs)


def build_tinynet(specs: list[dict], tn):
    """A tinynet Sequential from a spec (fallback while tinynet.models is missing).

    Raises ``NotImplementedError`` naming the first layer class tinynet does not have yet.
    """
    layers = []
    for s in specs:
        kind = s["type"]
        cls = getattr(tn.nn, kind, None)
        if cls is None:
            raise NotImplementedError(f"tinynet.nn.{kind} is missing")
        if kind in _CONV:
            layer = cls(
                s["in_channels"],
                s["out_channels"],
                s["kernel_size"],
                stride=s["stride"],
                padding=s["padding"],
                dilation=s["dilation"],
                groups=s["groups"],
                bias=s.get("bias") is not None,
            )
        elif kind in _BN:
            layer = cls(s["num_features"], eps=s["eps"], momentum=s["momentum"])
        elif kind == "Linear":
            layer = cls(s["in_features"], s["out_features"], bias=s.get("bias") is not None)
        elif kind.startswith(("MaxPool", "AvgPool")):
            layer = cls(s["kernel_size"], stride=s["stride"], padding=s["padding"])
        elif kind.startswith("AdaptiveAvgPool"):
            layer = cls(1)
        elif kind == "Dropout":
            layer = cls(s["p"])
        else:
            layer = cls()
        load_tinynet_layer(layer, s)
        layers.append(layer)
    return tn.nn.Sequential(*layers)


def load_tinynet_layer(layer, s: dict) -> None:
    """Copy a spec's arrays into a tinynet layer's parameters and buffers."""
    for name in ("weight", "bias"):
        param = getattr(layer, name, None)
        if s.get(name) is not None and param is not None:
            np.copyto(param.data, s[name], casting="unsafe")
    for name in ("running_mean", "running_var"):
        buf = getattr(layer, name, None)
        if s.get(name) is not None and isinstance(buf, np.ndarray):
            np.copyto(buf, s[name], casting="unsafe")


def input_shape(specs: list[dict], batch: int, spatial: int) -> tuple[int, ...]:
    """The input a spec expects: (batch, C, *spatial) for convs, (batch, F) for linears."""
    first = specs[0]
    if first["type"] in _CONV:
        nd = int(first["type"][-2])
        return (batch, first["in_channels"]) + (spatial,) * nd
    if first["type"] == "Linear":
        return (batch, first["in_features"])
    raise NotImplementedError(f"cannot infer the input of a model starting with {first['type']}")
