"""fuse_relu and FusedReLU: the same outputs and gradients as the layer followed by a ReLU."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinynet
from tinynet import models, nn
from tinynet.graph import Graph
from tinynet.model_summary import summarize
from tinynet.passes import fold_bn, fuse_relu
from tinynet.testing import gradcheck


def make_layer(kind, cin, cout, cfg):
    if kind == "linear":
        return nn.Linear(cin, cout, bias=cfg["bias"])
    conv = nn.Conv2d if kind == "conv2d" else nn.Conv3d
    kw = {k: cfg[k] for k in ("stride", "padding", "dilation", "bias")}
    return conv(cin, cout, cfg["kernel"], **kw)


configs = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["linear", "conv2d", "conv3d"]),
        "channels": st.sampled_from([(1, 3), (4, 8), (9, 16)]),  # Winograd from 8 in-channels
        "kernel": st.integers(1, 3),
        "stride": st.integers(1, 2),
        "padding": st.integers(0, 1),
        "dilation": st.integers(1, 2),
        "bias": st.booleans(),
        "batch": st.integers(1, 9),
        "float64": st.booleans(),
    }
)


@given(cfg=configs, seed=st.integers(0, 2**16))
@settings(max_examples=40, deadline=None)
def test_fused_model_gives_exactly_the_unfused_output(cfg, seed):
    rng = np.random.default_rng(seed)
    tinynet.manual_seed(seed)
    cin, cout = cfg["channels"]
    kind = cfg["kind"]
    model = nn.Sequential(make_layer(kind, cin, cout, cfg), nn.ReLU())
    if kind == "linear":
        shape = (cfg["batch"], cin)
    else:
        shape = (cfg["batch"], cin) + ((9, 10) if kind == "conv2d" else (5, 6, 7))
    dtype = np.float64 if cfg["float64"] else np.float32
    model.to(dtype).eval()
    x = rng.normal(size=shape).astype(dtype)
    fused = fuse_relu(model)
    assert len(fused) == 1 and isinstance(fused[0], nn.FusedReLU)
    got = fused(x)
    assert got.dtype == dtype
    # The same products, then the same max: bit-identical, not merely close.
    np.testing.assert_array_equal(got, model(x))


@pytest.mark.parametrize("kind", ["linear", "conv2d", "conv3d"])
def test_fused_relu_gradients_match_central_differences_and_the_unfused_pair(kind):
    tinynet.manual_seed(1)
    cfg = {"kernel": 3, "stride": 1, "padding": 1, "dilation": 1, "bias": True}
    cin = 8 if kind == "conv2d" else 2  # conv2d: the Winograd path
    layer = make_layer(kind, cin, 3, cfg).double()
    shape = {"linear": (5, cin), "conv2d": (2, cin, 6, 6), "conv3d": (2, cin, 3, 4, 4)}[kind]
    rng = np.random.default_rng(2)
    x = rng.normal(size=shape)
    fused = nn.FusedReLU(layer)
    assert gradcheck(fused, x)

    pair = nn.Sequential(layer, nn.ReLU())
    g = rng.normal(size=fused(x).shape)
    layer.zero_grad()
    dx_fused = fused.backward(g)
    dw_fused = layer.weight.grad.copy()
    layer.zero_grad()
    pair(x)
    dx_pair = pair.backward(g)
    np.testing.assert_array_equal(dx_fused, dx_pair)
    np.testing.assert_array_equal(dw_fused, layer.weight.grad)


def test_fold_then_fuse_lenet_bn_keeps_the_eval_output_and_leaves_the_model_alone():
    tinynet.manual_seed(0)
    model = models.lenet_bn()
    rng = np.random.default_rng(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.running_mean[...] = rng.normal(0, 0.5, m.num_features)
            m.running_var[...] = rng.uniform(0.5, 2, m.num_features)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    x = rng.normal(size=(4, 1, 28, 28)).astype(np.float32)
    folded = fold_bn(model)
    fused = fuse_relu(folded)
    np.testing.assert_array_equal(fused(x), folded(x))
    kinds = [type(m).__name__ for m in fused]
    assert kinds.count("FusedReLU") == 3 and "ReLU" not in kinds
    assert not fused.training
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())
    # Architecture as data: a checkpoint of the fused model rebuilds it.
    rebuilt = models.from_spec(models.to_spec(fused))
    rebuilt.load_state_dict(fused.state_dict())
    np.testing.assert_array_equal(rebuilt.eval()(x), fused(x))


def test_a_layer_whose_output_is_also_read_elsewhere_is_not_fused():
    tinynet.manual_seed(0)
    g = Graph()
    g.add("conv", nn.Conv2d(2, 2, 3, padding=1))
    g.add("relu", nn.ReLU(), "conv")
    g.add("add", nn.Add(), ("relu", "conv"))  # needs the conv output before the ReLU
    g.add("lin", nn.Conv2d(2, 2, 1), "add")
    g.add("relu2", nn.ReLU(), "lin")
    fused = fuse_relu(g)
    assert isinstance(fused["conv"], nn.Conv2d) and isinstance(fused["relu"], nn.ReLU)
    assert isinstance(fused["lin"], nn.FusedReLU) and "relu2" not in fused._modules
    x = np.random.default_rng(0).normal(size=(2, 2, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(fused(x), g.eval()(x))


def test_summary_shows_a_fused_layer_as_one_row_with_its_parameters():
    tinynet.manual_seed(0)
    fused = fuse_relu(nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2)))
    s = summarize(fused, (3, 6))
    assert [r.type for r in s.rows] == ["FusedReLU", "Linear"]
    assert s.rows[0].params == 6 * 4 + 4 and s.rows[0].flops == 2 * 3 * 6 * 4 + 12 + 12


def test_fused_relu_rejects_a_layer_it_cannot_fuse():
    for layer in (nn.Sigmoid(), nn.BatchNorm1d(3), nn.Sequential(nn.Linear(2, 2))):
        with pytest.raises(TypeError, match="FusedReLU expected a Conv2d, Conv3d or Linear"):
            nn.FusedReLU(layer)


@pytest.mark.parametrize("cin", [2, 8])  # the vol2col + GEMM path and the Winograd path
def test_fused_relu_keeps_nan_as_relu_does(cin):
    tinynet.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(cin, 4, 3, padding=1), nn.ReLU()).eval()
    x = np.random.default_rng(0).normal(size=(8, cin, 8, 8)).astype(np.float32)
    x[1, 0, 3, 3] = np.nan
    expected = model(x)
    got = fuse_relu(model)(x)
    assert np.isnan(expected).any()
    np.testing.assert_array_equal(got, expected)  # NaNs in the same places
