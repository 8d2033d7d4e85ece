"""fold_bn and remove_dropout: folded eval output equals unfolded eval output, exactly where
the paper says BN is a fixed affine map; the input model is never touched."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinynet
from tinynet import models, nn
from tinynet.graph import Graph
from tinynet.passes import fold_bn, fold_bn_weights, remove_dropout


def randomize_bn(model, rng):
    """Give every BatchNorm statistics and affine parameters far from the defaults."""
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            c = m.num_features
            m.running_mean[...] = rng.normal(0, 2, c)
            m.running_var[...] = rng.uniform(0.05, 4, c)
            if m.affine:
                m.weight.data[...] = rng.normal(0, 1.5, c)
                m.bias.data[...] = rng.normal(0, 1, c)
    return model


def assert_folded_equal(model, x, dtype):
    """fold_bn(model)(x) == model.eval()(x) to the issue's tolerance for ``dtype``."""
    folded = fold_bn(model)
    expected = model.eval()(x)
    got = folded(x)
    assert got.dtype == dtype
    rtol = 1e-10 if dtype == np.float64 else 2e-5
    scale = float(np.max(np.abs(expected))) or 1.0
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * scale)
    assert not any(
        isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d) for m in folded.modules()
    )
    return folded


def test_fold_bn_weights_is_the_papers_affine_map_composed_with_the_layer():
    rng = np.random.default_rng(0)
    w, b, x = rng.normal(size=(4, 3)), rng.normal(size=4), rng.normal(size=(7, 3))
    mean, var = rng.normal(size=4), rng.uniform(0.1, 2, 4)
    gamma, beta, eps = rng.normal(size=4), rng.normal(size=4), 1e-3
    z = x @ w.T + b
    expected = gamma * (z - mean) / np.sqrt(var + eps) + beta  # BN with population statistics
    wf, bf = fold_bn_weights(w, b, mean, var, gamma, beta, eps)
    np.testing.assert_allclose(x @ wf.T + bf, expected, rtol=1e-12)
    wf0, bf0 = fold_bn_weights(w, None, mean, var, gamma, beta, eps)
    np.testing.assert_allclose(x @ wf0.T + bf0, expected - gamma * b / np.sqrt(var + eps))


layer_configs = st.fixed_dictionaries(
    {
        "dims": st.sampled_from([1, 2, 3]),
        "groups": st.sampled_from([1, 2]),
        "kernel": st.integers(1, 3),
        "stride": st.integers(1, 2),
        "padding": st.integers(0, 1),
        "dilation": st.integers(1, 2),
        "bias": st.booleans(),
        "affine": st.booleans(),
        "bn_first": st.booleans(),
        "bn_after_relu": st.booleans(),
        "float64": st.booleans(),
    }
)


@given(cfg=layer_configs, seed=st.integers(0, 2**16))
@settings(max_examples=40, deadline=None)
def test_random_models_fold_to_the_same_eval_output(cfg, seed):
    rng = np.random.default_rng(seed)
    tinynet.manual_seed(seed)
    d, g = cfg["dims"], cfg["groups"]
    cin, cout = 2 * g, 3 * g
    bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[d]
    if d == 1:
        layer = nn.Linear(cin, cout, bias=cfg["bias"])
        shape = (5, cin)
    else:
        conv = nn.Conv2d if d == 2 else nn.Conv3d
        kw = {k: cfg[k] for k in ("stride", "padding", "dilation", "groups", "bias")}
        layer = conv(cin, cout, cfg["kernel"], **kw)
        shape = (3, cin) + (6,) * d if d == 2 else (2, cin, 5, 5, 5)
    layers = [bn(cin)] if cfg["bn_first"] else []
    layers += [layer, bn(cout, affine=cfg["affine"]), nn.ReLU()]
    layers += [bn(cout)] if cfg["bn_after_relu"] else []
    model = randomize_bn(nn.Sequential(*layers), rng)
    dtype = np.float64 if cfg["float64"] else np.float32
    model.to(dtype)
    folded = assert_folded_equal(model, rng.normal(size=shape).astype(dtype), dtype)
    affines = [m for m in folded.modules() if isinstance(m, nn.ChannelAffine)]
    assert len(affines) == cfg["bn_first"] + cfg["bn_after_relu"]
    assert len(folded) == len(layers) - 1  # the BN after the layer is gone


def test_bn_after_a_layer_with_two_consumers_or_an_add_becomes_affine():
    tinynet.manual_seed(0)
    g = Graph()
    g.add("conv", nn.Conv2d(3, 3, 3, padding=1))
    g.add("bn", nn.BatchNorm2d(3), "conv")  # conv also feeds "add": cannot merge
    g.add("add", nn.Add(), ("bn", "conv"))
    g.add("bn_add", nn.BatchNorm2d(3), "add")
    g.add("lin_in", nn.Flatten(), "bn_add")
    rng = np.random.default_rng(0)
    randomize_bn(g, rng).double()
    folded, report = fold_bn(g, report=True)
    assert isinstance(folded["bn"], nn.ChannelAffine) and isinstance(
        folded["bn_add"], nn.ChannelAffine
    )
    assert report.merged == [] and sorted(report.to_affine) == ["bn", "bn_add"]
    assert_folded_equal(g, rng.normal(size=(2, 3, 5, 5)), np.float64)


def test_residual_network_after_training_folds_exactly():
    """resnet_bn: BNs inside graphs, a strided 1×1 shortcut, the stem in a Sequential."""
    tinynet.manual_seed(0)
    model = models.resnet_bn(width=4).double()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 1, 12, 12)), rng.integers(0, 10, 16)
    opt = tinynet.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(5):
        opt.zero_grad()
        loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        opt.step()
    folded, report = fold_bn(model, report=True)
    assert len(report.merged) == 1 + 2 + 3 + 3 and report.to_affine == []
    assert ("3.conv1", "3.bn1") in report.merged and ("5.down", "5.down_bn") in report.merged
    assert_folded_equal(model, x, np.float64)
    assert isinstance(folded[3], Graph) and "bn1" not in folded[3]._modules


def test_lenet_bn_after_real_training_folds_within_float32_tolerance():
    tinynet.manual_seed(0)
    x, y = tinynet.data.shapes2d(256, seed=1)
    model = models.lenet_bn()
    opt = tinynet.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    for xb, yb in tinynet.data.DataLoader((x, y), batch_size=32, shuffle=True, seed=0):
        opt.zero_grad()
        loss_fn(model(xb), yb)
        model.backward(loss_fn.backward())
        opt.step()
    xb = tinynet.data.DataLoader((x, y), batch_size=64).__iter__().__next__()[0]
    folded = assert_folded_equal(model, xb, np.float32)
    assert [type(m).__name__ for m in folded] == [
        "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d",
        "Flatten", "Linear", "ReLU", "Dropout", "Linear",
    ]  # fmt: skip
    assert folded[0].bias is not None and folded[7].bias is not None


def test_input_model_is_untouched_and_result_is_in_eval_mode():
    tinynet.manual_seed(0)
    model = randomize_bn(models.lenet_bn(), np.random.default_rng(0))
    model.train()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    folded = fold_bn(model)
    assert model.training and all(m.training for m in model.modules())
    assert not any(m.training for m in folded.modules())
    after = model.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        assert after[key].dtype == value.dtype
        np.testing.assert_array_equal(after[key], value, err_msg=key)
    assert isinstance(model[1], nn.BatchNorm2d) and model[0].bias is None


def test_nested_containers_and_custom_modules():
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(4)

        def forward(self, x):
            return self.bn(x) * 2

    tinynet.manual_seed(0)
    inner = nn.Sequential(nn.Linear(3, 4, bias=False), nn.BatchNorm1d(4))
    model = nn.Sequential(nn.Sequential(inner, nn.Tanh()), Custom())
    randomize_bn(model, np.random.default_rng(0)).double()
    folded, report = fold_bn(model, report=True)
    assert report.merged == [("0.0.0", "0.0.1")] and report.to_affine == ["1.bn"]
    assert isinstance(folded[1].bn, nn.ChannelAffine)
    assert_folded_equal(model, np.random.default_rng(1).normal(size=(5, 3)), np.float64)


@pytest.mark.parametrize("features", [3, 4])
def test_linear_batchnorm1d_on_3d_data_is_refused_or_kept_apart(features):
    """BatchNorm1d on (N, C, L) normalises C while the Linear's features are L: merging the
    two is right only for 2-D data (features == C made the wrong merge look plausible)."""
    tinynet.manual_seed(0)
    rng = np.random.default_rng(0)
    model = nn.Sequential(
        nn.Linear(4, features), nn.BatchNorm1d(3), nn.ReLU(), nn.Flatten(),
        nn.Linear(3 * features, 5), nn.BatchNorm1d(5),
    ).double()  # fmt: skip
    randomize_bn(model, rng)
    x = rng.normal(size=(6, 3, 4))
    expected = model.eval()(x)
    if features == 3:  # without the shape the pass merges; the merged layer refuses 3-D
        with pytest.raises(ValueError, match=r"Linear\(in_features=4\).*fold_bn merged a Batch"):
            fold_bn(model)(x)
    else:  # features != C: no merge to get wrong
        np.testing.assert_allclose(fold_bn(model)(x), expected, rtol=1e-10, atol=1e-12)
    folded, report = fold_bn(model, input_shape=x.shape, report=True)
    assert report.merged == [("4", "5")] and report.to_affine == ["1"]
    np.testing.assert_allclose(folded(x), expected, rtol=1e-10, atol=1e-12)
    # 2-D data still merges, and through fuse_relu too (it calls the layer's inner forward)
    flat = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU()).double()
    randomize_bn(flat, rng)
    fused = tinynet.fuse_relu(fold_bn(flat, input_shape=(6, 4)))
    x2 = rng.normal(size=(6, 4))
    np.testing.assert_allclose(fused(x2), flat.eval()(x2), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="fold_bn merged"):
        fused(x)


def test_a_merged_linear_keeps_its_guard_through_a_checkpoint(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))
    folded = fold_bn(model.double())
    assert folded[0].merged_batchnorm and not folded[2].merged_batchnorm
    tinynet.save_checkpoint(tmp_path / "folded.npz", folded)
    loaded = tinynet.load_checkpoint(tmp_path / "folded.npz").model
    assert loaded[0].merged_batchnorm and not loaded[2].merged_batchnorm
    x = np.random.default_rng(1).normal(size=(5, 4))
    np.testing.assert_array_equal(loaded.eval()(x), folded(x))
    with pytest.raises(ValueError, match="fold_bn merged"):
        loaded(np.zeros((5, 3, 4)))
    # The mark is a Linear's only, and a bool.
    spec = tinynet.models.to_spec(folded)
    assert spec[0]["merged_batchnorm"] is True and "merged_batchnorm" not in spec[2]
    for bad in [dict(spec[1], merged_batchnorm=True), dict(spec[0], merged_batchnorm=1)]:
        with pytest.raises(ValueError, match="model spec"):
            tinynet.models.from_spec([bad])


def test_a_graph_that_ran_before_the_pass_runs_its_rewritten_children():
    """A Graph keeps a run plan naming its nodes; rewriting a nested child must drop it (the
    folded graph ran the old, unfolded child, train-mode BatchNorm and all)."""
    tinynet.manual_seed(0)
    g = Graph()
    g.add("inner", nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)))
    g.add("relu", nn.ReLU(), "inner")
    x = np.random.default_rng(0).normal(size=(8, 3))
    g.double()
    for _ in range(3):
        g(x)  # running makes the plan, and moves the statistics
    folded = assert_folded_equal(g, x, np.float64)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in folded["inner"].modules())
    assert tinynet.fuse_relu(folded)(x).shape == (8, 3)


def test_a_layer_used_twice_gets_each_places_batchnorm_only():
    tinynet.manual_seed(0)
    conv = nn.Conv2d(3, 3, 3, padding=1)
    model = nn.Sequential(conv, nn.BatchNorm2d(3), nn.ReLU(), conv, nn.BatchNorm2d(3)).double()
    randomize_bn(model, np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(2, 3, 6, 6))
    folded = assert_folded_equal(model, x, np.float64)
    assert folded[0] is not folded[2] and len(folded) == 3


def test_untracked_batchnorm_is_refused():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False))
    with pytest.raises(ValueError, match="track_running_stats=False"):
        fold_bn(model)


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_folded_weights_match_pytorch_fusion(kind):
    torch = pytest.importorskip("torch")
    from torch.nn.utils import fusion

    tinynet.manual_seed(0)
    rng = np.random.default_rng(0)
    if kind == "conv":
        ours = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, dilation=2, groups=2), nn.BatchNorm2d(6))
        layer_t, bn_t = (
            torch.nn.Conv2d(4, 6, 3, stride=2, dilation=2, groups=2),
            torch.nn.BatchNorm2d(6),
        )
        fuse = fusion.fuse_conv_bn_eval
    else:
        ours = nn.Sequential(nn.Linear(5, 6, bias=False), nn.BatchNorm1d(6))
        layer_t, bn_t = torch.nn.Linear(5, 6, bias=False), torch.nn.BatchNorm1d(6)
        fuse = fusion.fuse_linear_bn_eval
    randomize_bn(ours, rng).double()
    layer_t.double().load_state_dict(
        {k[2:]: torch.from_numpy(v) for k, v in ours.state_dict().items() if k[0] == "0"}
    )
    bn_t.double().load_state_dict(
        {k[2:]: torch.from_numpy(v) for k, v in ours.state_dict().items() if k[0] == "1"}
    )
    fused = fuse(layer_t.eval(), bn_t.eval())
    folded = fold_bn(ours)[0]
    np.testing.assert_allclose(folded.weight.data, fused.weight.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(
        folded.bias.data, fused.bias.detach().numpy(), rtol=1e-12, atol=1e-15
    )


def test_remove_dropout_from_sequences_graphs_and_custom_modules():
    tinynet.manual_seed(0)
    g = Graph()
    g.add("fc", nn.Linear(4, 4))
    g.add("drop", nn.Dropout(0.3), "fc")
    g.add("add", nn.Add(), ("drop", "input"))
    model = nn.Sequential(nn.Dropout(), g, nn.ReLU(), nn.Dropout(0.1))
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    expected = model.eval()(x)
    model.train()
    slim = remove_dropout(model)
    assert not any(isinstance(m, nn.Dropout) for m in slim.modules())
    assert len(slim) == 2 and [n.inputs for n in slim[0].nodes] == [("input",), ("fc", "input")]
    np.testing.assert_array_equal(slim(x), expected)
    assert isinstance(model[0], nn.Dropout) and model.training  # the input is untouched
