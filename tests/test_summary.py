"""tinynet.summary: shapes, parameter counts and FLOPs of each layer, and the model untouched."""

from __future__ import annotations

import copy
import io
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinynet
from tinynet import nn
from tinynet.graph import Graph
from tinynet.model_summary import count_flops, summarize, summary


def small_lenet(bn: bool = True) -> nn.Sequential:
    """LeNet-like but small, for (N, 1, 12, 12) inputs."""
    layers = [nn.Conv2d(1, 4, 3, padding=1, bias=not bn)]
    layers += [nn.BatchNorm2d(4)] if bn else []
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, stride=2, bias=not bn)]
    layers += [nn.BatchNorm2d(6)] if bn else []
    layers += [nn.ReLU(), nn.Flatten(), nn.Linear(6 * 2 * 2, 8), nn.Tanh(), nn.Dropout(0.5)]
    layers += [nn.Linear(8, 3)]
    return nn.Sequential(*layers)


def leaf_names(model):
    return [name for name, m in model.named_modules() if not m._modules]


def forward_shapes(model, x):
    """Output shape of each layer of a Sequential, running the layers by hand."""
    shapes = []
    for layer in copy.deepcopy(model).eval():
        x = layer(x)
        shapes.append(x.shape)
    return shapes


# -- shapes, parameters, totals ----------------------------------------------------------------


def test_sequential_rows_match_a_real_forward():
    tinynet.manual_seed(0)
    model = small_lenet()
    s = summarize(model, (3, 1, 12, 12))
    assert [row.name for row in s.rows] == [str(i) for i in range(len(model))]
    assert [row.type for row in s.rows] == [type(layer).__name__ for layer in model]
    x = np.random.default_rng(0).standard_normal((3, 1, 12, 12)).astype(np.float32)
    assert [row.output_shape for row in s.rows] == forward_shapes(model, x)
    assert all(row.calls == 1 for row in s.rows)


def test_parameter_counts_and_totals():
    model = small_lenet()
    s = summarize(model, (1, 1, 12, 12))
    for row, layer in zip(s.rows, model, strict=True):
        assert row.params == sum(p.data.size for p in layer.parameters())
    assert s.total_params == sum(p.data.size for p in model.parameters())
    assert s.trainable_params == s.total_params
    assert s.param_bytes == sum(p.data.nbytes for p in model.parameters())
    assert s.buffer_values == sum(b.size for b in model.buffers())
    assert s.buffer_bytes == sum(b.nbytes for b in model.buffers())
    assert s.total_flops == sum(row.flops for row in s.rows)
    assert s.unknown_flops == ()
    x = np.zeros((1, 1, 12, 12), np.float32)
    assert s.activation_bytes == 4 * sum(np.prod(shape) for shape in forward_shapes(model, x))


def test_printed_table_lists_every_layer_and_the_totals():
    model = small_lenet()
    buffer = io.StringIO()
    text = summary(model, (2, 1, 12, 12), file=buffer)
    assert buffer.getvalue() == text + "\n"
    s = summarize(model, (2, 1, 12, 12))
    assert text == str(s)
    for row in s.rows:
        line = next(line for line in text.splitlines() if line.startswith(f"{row.name} "))
        assert row.type in line and str(row.output_shape) in line
        assert f"{row.params:,}" in line and f"{row.flops:,}" in line
    assert f"Total params: {s.total_params:,}" in text
    assert f"{s.total_flops:,}" in text
    assert "multiply-add counts as 2" in text


def test_prints_to_stdout_by_default(capsys):
    text = summary(nn.Sequential(nn.Linear(3, 2)), (1, 3))
    assert capsys.readouterr().out == text + "\n"


def test_nested_sequential_uses_qualified_names():
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU()),
        nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(3 * 4 * 4, 5))),
    )
    s = summarize(model, (2, 2, 6, 6))
    assert [row.name for row in s.rows] == leaf_names(model)
    assert [row.name for row in s.rows] == ["0.0", "0.1", "1.0", "1.1.0"]
    assert [row.output_shape for row in s.rows] == [(2, 3, 4, 4)] * 2 + [(2, 48), (2, 5)]
    assert s.total_params == sum(p.data.size for p in model.parameters())


def test_a_single_layer_model():
    layer = nn.Linear(3, 4)
    (row,) = summarize(layer, (5, 3)).rows
    assert (row.name, row.output_shape, row.params) == ("", (5, 4), 16)
    assert "(model)" in str(summarize(layer, (5, 3)))


# -- the user's model is left alone ------------------------------------------------------------


def snapshot(model):
    """Every attribute of every module, and copies of the arrays among them."""
    state = {}
    for name, module in model.named_modules():
        for key, value in vars(module).items():
            saved = None
            if isinstance(value, np.ndarray):
                saved = value.copy()
            elif isinstance(value, nn.Parameter):
                saved = (value.data, value.data.copy(), value.grad, value.grad.copy())
            state[name, key] = (value, saved)
    return state


def assert_unchanged(model, before):
    after = snapshot(model)
    assert after.keys() == before.keys()
    for key, (value, saved) in before.items():
        assert after[key][0] is value, key
        if isinstance(value, np.ndarray):
            assert value.dtype == saved.dtype and np.array_equal(value, saved, equal_nan=True)
        elif isinstance(value, nn.Parameter):
            data, data_copy, grad, grad_copy = saved
            assert value.data is data and np.array_equal(data, data_copy)
            assert value.grad is grad and np.array_equal(grad, grad_copy)


@pytest.mark.parametrize("training", [True, False])
def test_model_is_left_untouched(training):
    tinynet.manual_seed(1)
    model = small_lenet()
    x = np.random.default_rng(1).standard_normal((4, 1, 12, 12)).astype(np.float32)
    model.train()
    out = model(x)  # leaves saved state and moved running statistics
    model.backward(np.ones_like(out))
    model.train(training)
    before = snapshot(model)
    summary(model, (1, 1, 12, 12), file=io.StringIO())
    summarize(model, (1, 1, 12, 12), dtype=np.float64)
    assert_unchanged(model, before)
    assert all(m.training is training for m in model.modules())
    assert "forward" not in vars(model[0])


# -- dtypes ------------------------------------------------------------------------------------


def test_float64_model():
    model = small_lenet().double()
    s = summarize(model, (2, 1, 12, 12))
    assert s.dtype == np.float64
    assert s.param_bytes == 8 * s.total_params
    s32 = summarize(small_lenet(), (2, 1, 12, 12))
    assert [r.output_shape for r in s.rows] == [r.output_shape for r in s32.rows]
    assert [r.flops for r in s.rows] == [r.flops for r in s32.rows]


def test_dtype_argument_casts_the_copy_only():
    model = small_lenet()
    s = summarize(model, (1, 1, 12, 12), dtype=np.float64)
    assert s.dtype == np.float64 and s.param_bytes == 8 * s.total_params
    assert all(p.data.dtype == np.float32 for p in model.parameters())


# -- FLOPs -------------------------------------------------------------------------------------


def counted_conv2d(x, w, b, stride, padding, dilation, groups):
    """A plain loop convolution that counts the multiply-adds it performs (padding taps
    included, since it multiplies the zero-padded input)."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    ow = (wd + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((n, o, oh, ow))
    macs = adds = 0
    for i, oc, p, q in itertools.product(range(n), range(o), range(oh), range(ow)):
        g = oc // (o // groups)
        acc = 0.0
        for ci, u, v in itertools.product(range(cg), range(kh), range(kw)):
            acc += w[oc, ci, u, v] * xp[i, g * cg + ci, p * stride + u * dilation,
                                        q * stride + v * dilation]  # fmt: skip
            macs += 1
        if b is not None:
            acc += b[oc]
            adds += 1
        out[i, oc, p, q] = acc
    return out, macs, adds


@pytest.mark.parametrize(
    "cin, cout, k, stride, padding, dilation, groups, bias",
    [(2, 3, 3, 1, 1, 1, 1, True), (4, 4, 2, 2, 0, 1, 2, False), (3, 6, 3, 1, 2, 2, 3, True)],
)
def test_conv2d_flops_against_a_counting_loop(
    cin, cout, k, stride, padding, dilation, groups, bias
):
    tinynet.manual_seed(2)
    conv = nn.Conv2d(cin, cout, k, stride, padding, dilation, groups, bias).double()
    x = np.random.default_rng(2).standard_normal((2, cin, 6, 5))
    b = conv.bias.data if bias else None
    ref, macs, adds = counted_conv2d(x, conv.weight.data, b, stride, padding, dilation, groups)
    np.testing.assert_allclose(conv(x), ref, rtol=1e-12, atol=1e-12)  # the loop is the conv
    (row,) = summarize(nn.Sequential(conv), x.shape).rows
    assert row.flops == 2 * macs + adds


def test_linear_flops_against_a_counting_loop():
    layer = nn.Linear(5, 3)
    x = np.zeros((2, 4, 5))
    macs = sum(1 for _ in itertools.product(range(2 * 4), range(3), range(5)))
    (row,) = summarize(layer, x.shape).rows
    assert row.flops == 2 * macs + 2 * 4 * 3
    (row,) = summarize(nn.Linear(5, 3, bias=False), x.shape).rows
    assert row.flops == 2 * macs


def torch_flops(module, shape):
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(torch.zeros(shape))
    return counter.get_total_flops()


@settings(max_examples=12, deadline=None)
@given(
    cin_per_group=st.integers(1, 3),
    cout_per_group=st.integers(1, 3),
    groups=st.integers(1, 2),
    k=st.integers(1, 3),
    stride=st.integers(1, 2),
    padding=st.integers(0, 2),
    dilation=st.integers(1, 2),
    bias=st.booleans(),
    three_d=st.booleans(),
)
def test_conv_flops_match_torch(
    cin_per_group, cout_per_group, groups, k, stride, padding, dilation, bias, three_d
):
    torch = pytest.importorskip("torch")
    cin, cout = cin_per_group * groups, cout_per_group * groups
    args = (cin, cout, k, stride, padding, dilation, groups, bias)
    ours, theirs = (nn.Conv3d, torch.nn.Conv3d) if three_d else (nn.Conv2d, torch.nn.Conv2d)
    shape = (2, cin, 5, 6, 5) if three_d else (2, cin, 7, 6)
    (row,) = summarize(ours(*args), shape).rows
    # torch counts the multiply-adds only; ours adds one FLOP per output for the bias.
    bias_adds = np.prod(row.output_shape) if bias else 0
    assert row.flops - bias_adds == torch_flops(theirs(*args), shape)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_flops_match_torch(bias):
    torch = pytest.importorskip("torch")
    (row,) = summarize(nn.Linear(6, 4, bias=bias), (3, 6)).rows
    bias_adds = 3 * 4 if bias else 0
    assert row.flops - bias_adds == torch_flops(torch.nn.Linear(6, 4, bias=bias), (3, 6))


def test_elementwise_normalising_and_pooling_flops():
    model = nn.Sequential(
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.AvgPool2d(3, stride=1, padding=1),
        nn.Sigmoid(),
        nn.ChannelAffine(3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(),
        nn.Identity(),
    )
    x = np.zeros((2, 3, 6, 8))
    s = summarize(model, x.shape)
    sizes = [int(np.prod(row.output_shape)) for row in s.rows]
    inputs = [x.size] + sizes[:-1]
    expected = [2 * sizes[0], sizes[1], sizes[2] * 4, sizes[3] * 9, sizes[4], 2 * sizes[5]]
    expected += [inputs[6], 0, 0, 0]  # global pooling adds every input once
    assert [row.flops for row in s.rows] == expected


def test_adaptive_pooling_with_overlapping_bins():
    """The FLOPs are the number of (input, bin) pairs: found by feeding one-hot inputs."""
    pool = nn.AdaptiveAvgPool2d((3, 2))
    h, w = 5, 7
    pairs = 0
    for i in range(h * w):
        one_hot = np.zeros((1, 1, h, w))
        one_hot.flat[i] = 1.0
        pairs += np.count_nonzero(pool(one_hot))
    (row,) = summarize(pool, (2, 4, h, w)).rows
    assert row.flops == 2 * 4 * pairs
    assert pairs > h * w  # the bins do overlap here, so this is not just input.size


def test_count_flops_on_single_calls():
    x = np.ones((2, 3, 4))
    assert count_flops(nn.Add(), (x, x, x), x + x + x) == 2 * x.size
    assert count_flops(nn.Concat(1), (x, x), np.concatenate([x, x], 1)) == 0
    assert count_flops(nn.Module(), (x,), x) is None


# -- graphs and other models -------------------------------------------------------------------


def residual_graph():
    g = Graph()
    g.add("conv1", nn.Conv2d(3, 4, 3, padding=1, bias=False))
    g.add("bn1", nn.BatchNorm2d(4), "conv1")
    g.add("relu1", nn.ReLU(), "bn1")
    g.add("conv2", nn.Conv2d(4, 4, 3, padding=1), "relu1")
    g.add("scale", nn.ChannelAffine(4), "conv2")
    g.add("add", nn.Add(), ("scale", "relu1", "conv1"))
    g.add("cat", nn.Concat(1), ("add", "input"))
    g.add("pool", nn.AdaptiveAvgPool2d(1), "cat")
    g.add("flat", nn.Flatten(), "pool")
    g.add("fc", nn.Linear(7, 2), "flat")
    return g


def test_graph_rows():
    g = residual_graph()
    s = summarize(g, (2, 3, 5, 5))
    assert [row.name for row in s.rows] == [node.name for node in g.nodes]
    shapes = dict((row.name, row.output_shape) for row in s.rows)
    assert shapes["add"] == (2, 4, 5, 5) and shapes["cat"] == (2, 7, 5, 5)
    assert shapes["fc"] == (2, 2)
    rows = {row.name: row for row in s.rows}
    assert rows["add"].flops == 2 * 2 * 4 * 5 * 5  # three inputs: two additions per element
    assert rows["cat"].flops == 0
    assert rows["scale"].params == 8 and rows["scale"].flops == 2 * 2 * 4 * 5 * 5
    assert s.total_params == sum(p.data.size for p in g.parameters())
    assert np.array_equal(g(np.zeros((2, 3, 5, 5), np.float32)).shape, shapes["fc"])


def test_graph_from_sequential_matches_the_sequential():
    model = small_lenet()
    a, b = summarize(model, (2, 1, 12, 12)), summarize(Graph.from_sequential(model), (2, 1, 12, 12))
    assert a.rows == b.rows
    assert a.total_params == b.total_params and a.total_flops == b.total_flops


def test_before_and_after_fold_bn():
    fold_bn = getattr(tinynet, "fold_bn", None)
    if fold_bn is None:
        pytest.skip("tinynet.fold_bn is not there yet")
    model = small_lenet()
    before, after = summarize(model, (1, 1, 12, 12)), summarize(fold_bn(model), (1, 1, 12, 12))
    assert any(row.type.startswith("BatchNorm") for row in before.rows)
    assert not any(row.type.startswith("BatchNorm") for row in after.rows)
    assert after.rows[-1].output_shape == before.rows[-1].output_shape
    assert after.total_flops < before.total_flops


class Square(nn.Module):
    """A layer summary knows nothing about."""

    def forward(self, x):
        return x * x


def test_unknown_layers_show_a_dash_and_are_left_out_of_the_total():
    model = nn.Sequential(nn.Linear(3, 4), Square(), nn.ReLU())
    s = summarize(model, (2, 3))
    assert [row.flops for row in s.rows] == [2 * 2 * 3 * 4 + 2 * 4, None, 8]
    assert s.rows[1].output_shape == (2, 4)
    assert s.unknown_flops == ("1",)
    assert s.total_flops == s.rows[0].flops + s.rows[2].flops
    line = next(line for line in str(s).splitlines() if line.startswith("1 "))
    assert line.split()[-1] == "-"
    assert "not counted: '1'" in str(s)


def test_a_layer_used_twice_counts_both_calls():
    shared = nn.Linear(4, 4)
    s = summarize(nn.Sequential(shared, nn.ReLU(), shared), (1, 4))
    # named_modules lists a shared module once, under its first name.
    assert [row.name for row in s.rows] == ["0", "1"]
    assert s.rows[0].calls == 2 and s.rows[0].flops == 2 * (2 * 4 * 4 + 4)
    assert "Linear (x2)" in str(s)


def test_a_node_the_output_does_not_need_is_still_listed():
    g = Graph()
    g.add("a", nn.ReLU())
    g.add("b", nn.Tanh())
    s = summarize(g, (1, 3))
    assert [row.calls for row in s.rows] == [1, 1]


# -- errors ------------------------------------------------------------------------------------


def test_wrong_channel_count_names_the_first_layer():
    with pytest.raises(ValueError, match=r"layer '0' \(Conv2d\).*expected input \(N, 1, H, W\)"):
        summarize(small_lenet(), (1, 3, 12, 12))


def test_missing_batch_dimension_gives_a_hint():
    with pytest.raises(ValueError, match="batch dimension: did you mean \\(1, 1, 12, 12\\)"):
        summarize(small_lenet(), (1, 12, 12))
    with pytest.raises(ValueError, match=r"'0' \(Conv2d\).*padded input size") as info:
        summarize(nn.Sequential(nn.Conv2d(1, 2, 3)), (1, 1, 2, 2))  # too small: no hint
    assert "batch dimension" not in str(info.value)


def test_a_deeper_layer_that_fails_is_named():
    # 16x16 images flatten to 6·3·3 features, which the Linear (6·2·2) does not take.
    with pytest.raises(ValueError, match=r"layer '8' \(Linear\).*in_features=24") as info:
        summarize(small_lenet(), (1, 1, 16, 16))
    assert "batch dimension" not in str(info.value)  # only said when the input was at fault


def test_failing_layer_inside_nested_sequential_is_named_once():
    model = nn.Sequential(nn.Sequential(nn.ReLU(), nn.Linear(3, 2)))
    with pytest.raises(ValueError, match=r"^summary: layer '0\.1' \(Linear\)") as info:
        summarize(model, (1, 5))
    assert str(info.value).count("summary:") == 1


@pytest.mark.parametrize("shape", [(), (0, 3), (1, -2), "abc", 5, (1.0, 3), (True, 3)])
def test_bad_input_shape(shape):
    with pytest.raises(ValueError, match="input_shape"):
        summarize(nn.Linear(3, 2), shape)


def test_not_a_module():
    with pytest.raises(TypeError, match="tinynet Module"):
        summarize(lambda x: x, (1, 3))
