"""Model presets (exact architecture, checked against PyTorch builds of the same networks) and
architecture as data (to_spec / from_spec, with the whitelist)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tinynet
from tinynet import models, nn

LENET_BN_LAYERS = [
    "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d",
    "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d",
    "Flatten", "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear",
]  # fmt: skip

INPUTS = {"image": (3, 1, 28, 28), "flat": (3, 784), "volume": (3, 1, 16, 16, 16)}


def torch_builders():
    """The presets written in PyTorch: an independent statement of each architecture."""
    torch = pytest.importorskip("torch")
    tnn = torch.nn

    def lenet(bn, num_classes=10):
        def block(cin, cout):
            layers = [tnn.Conv2d(cin, cout, 3, padding=1, bias=not bn)]
            layers += [tnn.BatchNorm2d(cout)] if bn else []
            return layers + [tnn.ReLU(), tnn.MaxPool2d(2)]

        head = [tnn.Flatten(), tnn.Linear(3136, 128, bias=not bn)]
        head += [tnn.BatchNorm1d(128)] if bn else []
        head += [tnn.ReLU(), tnn.Dropout(0.5), tnn.Linear(128, num_classes)]
        return tnn.Sequential(*block(1, 32), *block(32, 64), *head)

    def mlp(bn):
        layers, width = [], 784
        for _ in range(3):
            layers += [tnn.Linear(width, 100, bias=not bn)]
            layers += [tnn.BatchNorm1d(100)] if bn else []
            layers += [tnn.Sigmoid()]
            width = 100
        return tnn.Sequential(*layers, tnn.Linear(100, 10))

    def cnn3d(bn):
        layers, cin = [], 1
        for cout in (16, 32):
            layers += [tnn.Conv3d(cin, cout, 3, padding=1, bias=not bn)]
            layers += [tnn.BatchNorm3d(cout)] if bn else []
            layers += [tnn.ReLU(), tnn.MaxPool3d(2)]
            cin = cout
        layers += [tnn.Flatten(), tnn.Linear(2048, 64, bias=not bn)]
        layers += [tnn.BatchNorm1d(64)] if bn else []
        return tnn.Sequential(*layers, tnn.ReLU(), tnn.Linear(64, 5))

    return {
        "lenet_bn": lambda: lenet(True),
        "lenet": lambda: lenet(False),
        "bn_mlp": lambda: mlp(True),
        "mlp": lambda: mlp(False),
        "cnn3d_bn": lambda: cnn3d(True),
        "cnn3d": lambda: cnn3d(False),
    }


def test_lenet_bn_is_exactly_the_documented_network():
    model = models.lenet_bn()
    assert [type(layer).__name__ for layer in model] == LENET_BN_LAYERS
    conv1, conv2, fc1, fc2 = model[0], model[4], model[9], model[13]
    assert conv1.weight.shape == (32, 1, 3, 3) and conv1.bias is None
    assert conv2.weight.shape == (64, 32, 3, 3) and conv2.bias is None
    assert tuple(conv1.padding) in ((1, 1), 1) and model[3].kernel_size in (2, (2, 2))
    assert fc1.weight.shape == (128, 3136) and fc1.bias is None
    assert fc2.weight.shape == (10, 128) and fc2.bias is not None
    assert model[12].p == 0.5


# resnet_bn is a graph; tests/test_graph.py checks it against PyTorch.
@pytest.mark.parametrize("name", [name for name in models.MODELS if name != "resnet_bn"])
def test_presets_match_pytorch_state_dict_and_output_shape(name):
    reference = torch_builders()[name]()
    model = models.get(name)
    ours = {key: value.shape for key, value in model.state_dict().items()}
    theirs = {key: tuple(value.shape) for key, value in reference.state_dict().items()}
    assert ours == theirs
    assert [type(m).__name__ for m in model] == [type(m).__name__ for m in reference]
    x = np.random.default_rng(0).standard_normal(INPUTS[models.MODELS[name][1]])
    assert model(x.astype(np.float32)).shape == (3, 5 if "3d" in name else 10)


def test_bn_mlp_layers():
    assert [type(m).__name__ for m in models.bn_mlp()] == [
        "Linear", "BatchNorm1d", "Sigmoid", "Linear", "BatchNorm1d", "Sigmoid",
        "Linear", "BatchNorm1d", "Sigmoid", "Linear",
    ]  # fmt: skip
    plain = models.bn_mlp(bn=False)
    assert all(m.bias is not None for m in plain if isinstance(m, nn.Linear))
    assert not any(isinstance(m, nn.BatchNorm1d) for m in plain)


@pytest.mark.parametrize("name", list(models.MODELS))
def test_spec_round_trip_rebuilds_the_same_model(name):
    tinynet.manual_seed(0)
    model = models.get(name)
    spec = models.to_spec(model)
    assert json.loads(json.dumps(spec)) == spec
    rebuilt = models.from_spec(json.loads(json.dumps(spec)))
    assert models.to_spec(rebuilt) == spec
    rebuilt.load_state_dict(model.state_dict())
    x = np.random.default_rng(1).standard_normal(INPUTS[models.MODELS[name][1]])
    np.testing.assert_array_equal(model.eval()(x), rebuilt.eval()(x))


def test_spec_of_nested_sequential_and_kwargs():
    model = nn.Sequential(nn.Sequential(nn.Linear(3, 4, bias=False), nn.Tanh()), nn.Dropout(0.25))
    spec = models.to_spec(model)
    assert spec == [
        {
            "type": "Sequential",
            "layers": [
                {"type": "Linear", "kwargs": {"in_features": 3, "out_features": 4, "bias": False}},
                {"type": "Tanh", "kwargs": {}},
            ],
        },
        {"type": "Dropout", "kwargs": {"p": 0.25}},
    ]
    assert models.to_spec(models.from_spec(spec)) == spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("Linear", "must be a list"),
        ({"type": "Linear", "kwargs": {"in_features": 2}}, "model \\(Linear\\)"),
        ({"type": "Graph", "nodes": [], "output": "x"}, "no node 'x'"),
        ({"type": "Graph", "nodes": [{"name": "a"}], "output": "a"}, "needs 'name', 'inputs'"),
        (
            {
                "type": "Graph",
                "nodes": [{"name": "a", "inputs": ["b"], "layer": {"type": "ReLU"}}],
                "output": "a",
            },
            "not an earlier node",
        ),
        ({"type": "Graph", "nodes": [], "output": "input", "x": 1}, "exactly 'nodes'"),
        ([{"type": "system", "kwargs": {"command": "echo"}}], "not an allowed tinynet layer"),
        ([{"type": "Module"}], "not an allowed tinynet layer"),
        ([{"type": "__class__"}], "not an allowed tinynet layer"),
        (["Linear"], "must be a dict with a 'type'"),
        ([{"type": "Linear", "kwargs": {"in_features": 2, "evil": 1}}], "no argument 'evil'"),
        ([{"type": "Linear", "kwargs": {"in_features": {"a": 1}}}], "not a plain value"),
        ([{"type": "Linear", "kwargs": [1, 2]}], "only 'type' and 'kwargs'"),
        ([{"type": "Linear", "kwargs": {}, "code": "x"}], "only 'type' and 'kwargs'"),
        ([{"type": "Linear", "kwargs": {"in_features": -1, "out_features": 2}}], "positive int"),
        ([{"type": "Linear", "kwargs": {"in_features": 2}}], "layer 0 \\(Linear\\)"),
        ([{"type": "Sequential", "layers": [{"type": "eval"}]}], "layer 0.0 names 'eval'"),
    ],
)
def test_from_spec_rejects_anything_but_whitelisted_layers(spec, message):
    with pytest.raises(ValueError, match=message):
        models.from_spec(spec)


def test_to_spec_and_get_errors():
    class Custom(nn.Module):
        pass

    with pytest.raises(ValueError, match="Custom is not a tinynet layer"):
        models.to_spec(nn.Sequential(Custom()))
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        models.get("resnet")
    with pytest.raises(ValueError, match="Custom is not a tinynet layer"):
        graph = tinynet.Graph()
        graph.add("custom", Custom())
        models.to_spec(graph)
