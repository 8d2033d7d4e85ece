"""Dilated Conv3d on interleaved sub-grids (nn/conv_dilated.py, kernels/subgrid.py): the
rearrangements against NumPy, the layer against the NumPy reference, PyTorch and its own
general path; when the path is taken; what the inner layer must not change."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference.conv import conv_backward, conv_forward

import tinynet
from tinynet import kernel_cache
from tinynet.kernels import subgrid
from tinynet.nn import Conv2d, Conv3d
from tinynet.testing import assert_close


def numpy_split(x, low, factors, cells):
    """kernels.subgrid.split by padding, reshape and transpose (slow, plain)."""
    n, c = x.shape[:2]
    full = np.zeros((n, c, *(q * f for q, f in zip(cells, factors, strict=True))), x.dtype)
    # The padded array, cut at the rounded-up size (padding past it is never read).
    src = [slice(0, min(s, q * f - lo)) for s, q, f, lo in zip(x.shape[2:], cells, factors, low)]
    dst = [slice(lo, lo + r.stop) for lo, r in zip(low, src, strict=True)]
    full[(slice(None), slice(None), *dst)] = x[(slice(None), slice(None), *src)]
    shape = [n, c]
    for q, f in zip(cells, factors, strict=True):
        shape += [q, f]
    return full.reshape(shape).transpose(0, 3, 5, 7, 1, 2, 4, 6)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 2),
    st.integers(1, 3),
    st.lists(st.integers(1, 9), min_size=3, max_size=3),
    st.lists(st.integers(1, 3), min_size=3, max_size=3),
    st.lists(st.integers(0, 3), min_size=3, max_size=3),
    st.integers(0, 2**31 - 1),
)
def test_split_and_merge_against_numpy(n, c, size, factors, low, seed):
    x = np.random.default_rng(seed).standard_normal((n, c, *size))
    cells = tuple(-(-(s + 2 * lo) // f) for s, lo, f in zip(size, low, factors, strict=True))
    grids = np.full((n, *factors, c, *cells), np.nan)
    subgrid.split(x, tuple(low), tuple(factors), grids)
    expected = numpy_split(x, low, factors, cells)
    np.testing.assert_array_equal(grids, expected)
    back = np.full_like(x, np.nan)
    subgrid.merge(grids, tuple(low), back)  # the transpose keeps what split took
    np.testing.assert_array_equal(back, x)


def twin(layer):
    """The same layer (same parameters' values) with the sub-grid path switched off."""
    other = Conv3d(
        layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
        padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
        bias=layer.bias is not None,
    )  # fmt: skip
    other.to(layer.weight.data.dtype)
    other.load_state_dict(layer.state_dict())
    other._dilated = False
    return other


@st.composite
def dilated_configs(draw):
    """A Conv3d with a dilated axis and sub-grids of at least 8 outputs along it."""
    groups = draw(st.sampled_from([1, 1, 2]))
    c_in = groups * draw(st.integers(1 if groups == 1 else 2, 3))  # not depthwise
    c_out = groups * draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(3))
    dilation = tuple(draw(st.integers(1, 3)) if k > 1 else 1 for k in kernel)
    if all(d == 1 for d in dilation):
        kernel, dilation = (3, *kernel[1:]), (2, *dilation[1:])
    stride = tuple(1 if d > 1 else draw(st.integers(1, 2)) for d in dilation)
    padding = tuple(draw(st.integers(0, 3)) for _ in range(3))
    # Sizes: 8 sub-grid outputs along dilated axes, a few otherwise.
    size = tuple(
        8 * d + d * (k - 1) - 2 * p + draw(st.integers(0, 5)) if d > 1 else draw(st.integers(3, 6))
        for k, d, p in zip(kernel, dilation, padding, strict=True)
    )
    size = tuple(max(s, d * (k - 1) + 1) for s, k, d in zip(size, kernel, dilation))
    n = draw(st.integers(1, 2))
    bias = draw(st.booleans())
    layer = Conv3d(c_in, c_out, kernel, stride, padding, dilation, groups, bias)
    return layer, (n, c_in, *size), draw(st.integers(0, 2**31 - 1))


@settings(max_examples=25, deadline=None)
@given(dilated_configs())
def test_sub_grid_path_against_the_reference(config):
    layer, shape, seed = config
    layer.to(np.float64)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    y = layer(x)
    assert layer._dilated_used, "expected the sub-grid path"
    grad_out = rng.standard_normal(y.shape)
    grad_x = layer.backward(grad_out)
    padding = tuple(zip(layer._pad_low, layer._pad_high, strict=True))
    args = (layer.stride, padding, layer.dilation, layer.groups)
    bias = None if layer.bias is None else layer.bias.data
    assert_close(y, conv_forward(x, layer.weight.data, bias, *args), name="forward")
    gx, gw, gb = conv_backward(x, layer.weight.data, grad_out, *args)
    assert_close(grad_x, gx, name="grad input")
    assert_close(layer.weight.grad, gw, name="grad weight")
    if layer.bias is not None:
        assert_close(layer.bias.grad, gb, name="grad bias")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sub_grid_path_matches_the_general_one(dtype):
    layer = Conv3d(6, 8, 3, padding=2, dilation=2)
    layer.to(dtype)
    other = twin(layer)
    x = np.random.default_rng(0).standard_normal((2, 6, 16, 17, 18)).astype(dtype)
    y, y2 = layer(x), other(x)
    assert layer._dilated_used and not other._dilated_used
    assert y.dtype == dtype
    # float32: the sub-grids take Winograd F(4×4, 3×3) per depth tap, which differs from
    # the direct sum by ~3e-6 of each result's largest magnitude (the weight gradient's is
    # ~300 here): the tolerance scales with it.
    tol = 2e-5 if dtype == np.float32 else 1e-12

    def close(got, expected, name):
        scale = max(1.0, float(np.abs(expected).max()))
        assert_close(got, expected, rtol=0, atol=tol * scale, name=name)

    close(y, y2, "forward")
    g = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    gx, gx2 = layer.backward(g), other.backward(g)
    close(gx, gx2, "grad input")
    close(layer.weight.grad, other.weight.grad, "grad weight")
    close(layer.bias.grad, other.bias.grad, "grad bias")
    # Parameter gradients only: the input gradient is skipped, the others still added.
    layer.zero_grad()
    layer(x)
    assert layer.backward(g, input_grad=False) is None
    close(layer.weight.grad, other.weight.grad, "grad weight")


def test_sub_grid_path_against_torch():
    torch = pytest.importorskip("torch")
    layer = Conv3d(4, 6, (3, 3, 2), padding=(2, 3, 1), dilation=(2, 3, 2))
    t = torch.nn.Conv3d(4, 6, (3, 3, 2), padding=(2, 3, 1), dilation=(2, 3, 2))
    with torch.no_grad():
        t.weight.copy_(torch.from_numpy(layer.weight.data))
        t.bias.copy_(torch.from_numpy(layer.bias.data))
    x = np.random.default_rng(2).standard_normal((2, 4, 17, 26, 18)).astype(np.float32)
    y = layer(x)
    assert layer._dilated_used
    tx = torch.from_numpy(x).requires_grad_()
    ty = t(tx)
    assert_close(y, ty.detach().numpy(), rtol=1e-4, atol=1e-5, name="forward")
    g = np.random.default_rng(3).standard_normal(y.shape).astype(np.float32)
    gx = layer.backward(g)
    ty.backward(torch.from_numpy(g))
    assert_close(gx, tx.grad.numpy(), rtol=1e-4, atol=1e-5, name="grad input")
    assert_close(layer.weight.grad, t.weight.grad.numpy(), rtol=1e-4, atol=1e-4, name="grad w")


def test_when_the_sub_grid_path_is_taken():
    x = np.zeros((1, 2, 20, 20, 20), np.float32)
    layer = Conv3d(2, 4, 3, padding=2, dilation=2)
    layer(x)
    assert layer._dilated_used  # 10 sub-grid outputs a side
    # Precompilation runs such layers as one group (the split, then an undilated path).
    assert kernel_cache.group_key(layer, x.shape) == "Conv3d:dilated"
    layer(np.zeros((1, 2, 12, 12, 12), np.float32))
    assert not layer._dilated_used  # 6 a side: the general path
    assert not Conv3d(2, 4, 3, padding=2, dilation=2, stride=2)._dilated  # residues mix
    assert not Conv3d(4, 4, 3, padding=2, dilation=2, groups=4)._dilated  # depthwise: direct
    assert not Conv3d(2, 4, (1, 3, 3), dilation=(2, 1, 1))._dilated  # a 1-long axis: no-op
    assert Conv3d(2, 4, (1, 3, 3), dilation=(2, 2, 1), stride=(2, 1, 2))._dilated
    assert not Conv2d(2, 4, 3, padding=2, dilation=2)._dilated  # Conv2d: measured no gain


def test_inner_layer_changes_no_state():
    """Building the inner layer leaves the random stream alone and adds no parameters; a
    model with the layer saves, lists and casts as before."""
    tinynet.manual_seed(5)
    layer = Conv3d(2, 4, 3, padding=2, dilation=2)
    expected = tinynet.random.get_generator().standard_normal(3)
    tinynet.manual_seed(5)
    layer = Conv3d(2, 4, 3, padding=2, dilation=2)
    layer(np.zeros((1, 2, 20, 20, 20), np.float32))  # builds the inner layer
    assert layer._dilated_used
    np.testing.assert_array_equal(tinynet.random.get_generator().standard_normal(3), expected)
    assert len(list(layer.parameters())) == 2
    assert set(layer.state_dict()) == {"weight", "bias"}
    # Weights replaced after the inner layer exists (a load, a cast) are the ones used.
    layer.to(np.float64)
    layer.weight.data[...] = 0
    layer.bias.data[...] = 1.5
    y = layer(np.ones((1, 2, 20, 20, 20)))
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, 1.5)


def test_fold_bn_into_a_dilated_layer_without_bias():
    """fold_bn replaces the parameters (and adds a bias): the sub-grid path uses the new ones."""
    tinynet.manual_seed(3)
    model = tinynet.nn.Sequential(
        Conv3d(2, 3, 3, padding=2, dilation=2, bias=False), tinynet.nn.BatchNorm3d(3)
    )
    x = np.random.default_rng(4).standard_normal((2, 2, 16, 16, 16)).astype(np.float32)
    model.train()
    model(x)  # running statistics away from their initial values
    model.eval()
    expected = model(x)
    folded = tinynet.fold_bn(model)
    y = folded(x)
    assert folded[0]._dilated_used and folded[0].bias is not None
    assert_close(y, expected, rtol=1e-4, atol=1e-4)


def test_fuse_relu_into_a_dilated_layer():
    """fuse_relu hands relu=True down to the sub-grid layer's forward."""
    tinynet.manual_seed(6)
    model = tinynet.nn.Sequential(Conv3d(2, 3, 3, padding=2, dilation=2), tinynet.nn.ReLU())
    x = np.random.default_rng(7).standard_normal((1, 2, 16, 16, 16)).astype(np.float32)
    model.eval()
    expected = model(x)
    fused = tinynet.fuse_relu(model)
    y = fused(x)
    assert (y == 0).any() and (y > 0).any()
    assert_close(y, expected, rtol=1e-6, atol=1e-6)
