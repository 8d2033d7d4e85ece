"""backward(grad, input_grad=False): the parameter gradients alone, as a training step needs.

Each test runs the full backward and the skipping one on twin models and checks that every
parameter gradient is the same, bit for bit, and that None comes back.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import tinynet
from tinynet import Graph, nn


def _grads(model):
    return [p.grad.copy() for p in model.parameters()]


def _check(model, x):
    twin = copy.deepcopy(model)
    tinynet.manual_seed(3)  # the same Dropout masks in both runs
    y = model(x)
    g = np.random.default_rng(1).standard_normal(y.shape).astype(y.dtype)
    full = model.backward(g)
    assert full is not None and full.shape == x.shape
    tinynet.manual_seed(3)
    twin(x)
    assert twin.backward(g, input_grad=False) is None
    for a, b in zip(_grads(model), _grads(twin), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(np.any(a) for a in _grads(twin))


@pytest.mark.parametrize("threads", [1, 2])
def test_linear_and_mlp(threads):
    tinynet.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((60, 784)).astype(np.float32)
    with tinynet.set_num_threads(threads):
        _check(nn.Linear(784, 100), x)  # large enough for the two-block kernel
        _check(tinynet.models.bn_mlp(bn=True), x)
        _check(nn.Sequential(nn.Linear(784, 3)), x)


@pytest.mark.parametrize(
    "conv",
    [
        lambda: nn.Conv2d(1, 8, 3, padding=1),  # vol2col + GEMM: skips the input gradient
        lambda: nn.Conv2d(8, 8, 3, padding=1),  # Winograd: computes it and drops it
        lambda: nn.Conv2d(4, 6, 3, stride=2, groups=2, bias=False),
        lambda: nn.Conv3d(2, 4, 3, padding=1),
    ],
)
def test_convolutions(conv):
    tinynet.manual_seed(0)
    layer = conv()
    shape = (4, layer.in_channels) + (9,) * (3 if isinstance(layer, nn.Conv3d) else 2)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    _check(layer, x)


def test_layers_before_the_first_parameters_are_skipped():
    # Flatten and Dropout come first: they are not visited, the Linear after them skips.
    tinynet.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.0), nn.Linear(12, 5), nn.ReLU())
    _check(model, np.ones((3, 3, 4), np.float32))
    assert nn.Sequential(nn.ReLU()).backward(np.ones(2), input_grad=False) is None


def test_lenet_and_a_residual_graph():
    tinynet.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((8, 1, 28, 28)).astype(np.float32)
    _check(tinynet.models.lenet_bn(), x)
    block = Graph()
    block.add("conv1", nn.Conv2d(3, 3, 3, padding=1), "input")
    block.add("bn1", nn.BatchNorm2d(3), "conv1")
    block.add("add", nn.Add(), ("bn1", "input"))
    block.add("relu", nn.ReLU(), "add")
    _check(block, np.random.default_rng(2).standard_normal((4, 3, 6, 6)).astype(np.float32))
