"""Conv3d's plane-wise path (kernels/conv_planes.py) against the NumPy reference, central
differences and PyTorch; when it is taken; determinism; its BLAS gemm helper."""

from __future__ import annotations

import copy
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference.conv import conv_backward, conv_forward

import tinynet
from tinynet.kernels import blas, conv_planes
from tinynet.nn import Conv2d, Conv3d, conv_small3d
from tinynet.testing import assert_close, gradcheck


@pytest.fixture(autouse=True, scope="module")
def _few_channels_on_planes():
    """These tests use layers of few channels (fast), which the direct 3×3×3 path
    (conv_small3d.py) would take: off here, so that they exercise the plane path."""
    with mock.patch.object(conv_small3d, "_SMALL3D_MAX_CHANNELS", 0):
        yield


def run_layer(layer, x, seed=1):
    """Forward, then backward of a random gradient; returns (y, grad_out, grad_x)."""
    y = layer(x)
    grad_out = np.random.default_rng(seed).standard_normal(y.shape).astype(y.dtype)
    return y, grad_out, layer.backward(grad_out)


def check_against_reference(layer, x, tol=1e-9):
    assert layer._planes, "expected the plane-wise path"
    layer.zero_grad()
    y, grad_out, grad_x = run_layer(layer, x)
    padding = tuple(zip(layer._pad_low, layer._pad_high, strict=True))
    args = (layer.stride, padding, layer.dilation, layer.groups)
    bias = None if layer.bias is None else layer.bias.data
    expected = conv_forward(x, layer.weight.data, bias, *args)
    assert_close(y, expected, rtol=tol, atol=tol, name="forward")
    gx, gw, gb = conv_backward(x, layer.weight.data, grad_out, *args)
    assert_close(grad_x, gx, rtol=tol, atol=tol, name="grad input")
    assert_close(layer.weight.grad, gw, rtol=tol, atol=tol, name="grad weight")
    if layer.bias is not None:
        assert_close(layer.bias.grad, gb, rtol=tol, atol=tol, name="grad bias")


@st.composite
def plane_configs(draw):
    """Any ungrouped Conv3d with depth dilation 1 and a kernel larger than 1×1×1."""
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(3))
    if kernel == (1, 1, 1):
        kernel = (2, 1, 1)
    stride = tuple(draw(st.integers(1, 3)) for _ in range(3))
    dilation = (1, draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    # Depth padding up to 3: with a small kernel whole output planes see only padding.
    padding = (draw(st.integers(0, 3)), draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    size = tuple(
        max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 4))
        for k, d, p in zip(kernel, dilation, padding, strict=True)
    )
    layer = dict(
        in_channels=draw(st.integers(1, 4)),
        out_channels=draw(st.integers(4, 6)),  # 1 to 3 take the direct forward
        kernel_size=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        bias=draw(st.booleans()),
    )
    return layer, draw(st.integers(1, 3)), size, draw(st.booleans())


@settings(max_examples=25, deadline=None)
@given(config=plane_configs(), seed=st.integers(0, 2**16))
def test_matches_reference(config, seed):
    kwargs, batch, size, strided = config
    tinynet.manual_seed(seed)
    layer = Conv3d(**kwargs).double()
    rng = np.random.default_rng(seed)
    shape = (batch, kwargs["in_channels"], *size)
    if strided:  # every other element along the width
        x = rng.standard_normal((*shape[:-1], 2 * shape[-1]))[..., ::2]
    else:
        x = rng.standard_normal(shape)
    check_against_reference(layer, x)


@pytest.mark.parametrize("slots", [0, 5])
@pytest.mark.parametrize("stride", [1, 2])
def test_chunks_of_output_planes_match_reference(monkeypatch, slots, stride):
    # A deep volume is done a few output planes at a time; on a small input force one plane
    # per chunk, or a few, with an uneven last chunk (a budget of 5 unfolded input planes).
    layer = Conv3d(3, 4, 3, stride=stride, padding=1).double()
    x = np.random.default_rng(2).standard_normal((2, 3, 13, 6, 5))
    out_size = layer._output_size(x.shape[2:])
    slot_bytes = out_size[1] * out_size[2] * 3 * 3 * 3 * 8
    monkeypatch.setattr("tinynet.nn.conv_planes._ROWS_BYTES", max(1, slots * slot_bytes))
    chunk, _ = layer._planes_chunk(out_size, np.float64)
    assert chunk == (1 if slots == 0 else 2 if stride == 2 else 3)
    assert out_size[0] % chunk != 0 or chunk == 1
    check_against_reference(layer, x)


def test_gradcheck():
    tinynet.manual_seed(0)
    layer = Conv3d(2, 4, (3, 2, 3), stride=(2, 1, 1), padding=(1, 1, 0), dilation=(1, 1, 2))
    layer = layer.double()
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 4, 6))
    assert layer._planes
    gradcheck(layer, x)


def test_float32_matches_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for shape, cout, kwargs in [
        ((3, 16, 6, 6, 6), 32, dict(kernel_size=3, padding=1)),  # 6² planes: not Winograd
        ((2, 1, 9, 8, 7), 8, dict(kernel_size=3, padding=1)),
        ((2, 8, 9, 9, 9), 16, dict(kernel_size=3, stride=2, padding=1)),
    ]:
        layer = Conv3d(shape[1], cout, **kwargs)
        x = rng.standard_normal(shape).astype(np.float32)
        y, grad_out, grad_x = run_layer(layer, x)
        xt = torch.tensor(x, requires_grad=True)
        wt = torch.tensor(layer.weight.data, requires_grad=True)
        bt = torch.tensor(layer.bias.data, requires_grad=True)
        yt = torch.nn.functional.conv3d(xt, wt, bt, layer.stride, layer.padding)
        yt.backward(torch.tensor(grad_out))
        tol = 1e-4
        assert_close(y, yt.detach().numpy(), rtol=tol, atol=tol, name="forward")
        assert_close(grad_x, xt.grad.numpy(), rtol=tol, atol=tol, name="grad input")
        assert_close(layer.weight.grad, wt.grad.numpy(), rtol=tol, atol=tol, name="grad weight")
        assert_close(layer.bias.grad, bt.grad.numpy(), rtol=tol, atol=tol, name="grad bias")


def test_dispatch_rule():
    assert Conv3d(16, 32, 3, padding=1)._planes
    assert Conv3d(1, 8, (3, 1, 1))._planes
    assert Conv3d(4, 8, 3, stride=2, dilation=(1, 2, 2))._planes
    assert not Conv3d(16, 32, 1)._planes  # pointwise: vol2col is a plain copy there
    assert not Conv3d(4, 8, 3, groups=2)._planes
    assert not Conv3d(4, 8, 3, dilation=(2, 1, 1))._planes  # depth taps not consecutive
    assert not Conv2d(4, 8, 3)._planes


def test_the_path_is_taken(monkeypatch):
    calls = []
    for name in ("conv3d_planes_forward", "conv3d_planes_backward"):
        kernel = getattr(conv_planes, name)

        def counted(*args, _kernel=kernel, _name=name):
            calls.append(_name)
            return _kernel(*args)

        monkeypatch.setattr(conv_planes, name, counted)
    layer = Conv3d(2, 4, 3, padding=1)  # 4 outputs: 1 to 3 take the direct forward
    run_layer(layer, np.ones((2, 2, 4, 4, 4), np.float32))
    assert calls == ["conv3d_planes_forward", "conv3d_planes_backward"]
    calls.clear()
    run_layer(Conv3d(2, 3, 1), np.ones((2, 2, 4, 4, 4), np.float32))
    assert calls == []


def test_same_input_and_threads_give_bit_identical_results():
    x = np.random.default_rng(0).standard_normal((5, 3, 6, 5, 7)).astype(np.float32)
    results = []
    for _ in range(2):
        tinynet.manual_seed(0)
        layer = Conv3d(3, 4, 3, padding=1)
        y, _, grad_x = run_layer(layer, x)
        results.append((y, grad_x, layer.weight.grad, layer.bias.grad))
    for first, second in zip(*results, strict=True):
        assert np.array_equal(first, second)


def test_thread_count_changes_only_rounding():
    x = np.random.default_rng(1).standard_normal((5, 3, 6, 5, 7)).astype(np.float32)
    layer = Conv3d(3, 4, 3, padding=1)
    other = copy.deepcopy(layer)
    y, _, grad_x = run_layer(layer, x)
    with tinynet.set_num_threads(1):
        y1, _, grad_x1 = run_layer(other, x)
    assert_close(y1, y, rtol=1e-5, atol=1e-6)
    assert_close(grad_x1, grad_x, rtol=1e-5, atol=1e-6)
    assert_close(other.weight.grad, layer.weight.grad, rtol=1e-5, atol=1e-5)
    assert_close(other.bias.grad, layer.bias.grad, rtol=1e-5, atol=1e-5)


def test_backward_accumulates_parameter_gradients():
    layer = Conv3d(2, 4, 3, padding=1).double()
    x = np.random.default_rng(3).standard_normal((2, 2, 4, 5, 3))
    _, grad_out, _ = run_layer(layer, x)
    once = layer.weight.grad.copy(), layer.bias.grad.copy()
    layer.backward(grad_out)
    assert_close(layer.weight.grad, 2 * once[0], rtol=1e-12, atol=1e-12, name="grad weight")
    assert_close(layer.bias.grad, 2 * once[1], rtol=1e-12, atol=1e-12, name="grad bias")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True)])
def test_gemm_on_strided_row_major_matrices(dtype, trans_a, trans_b):
    # c = op(a) @ op(b) + beta·c, each matrix a window of a larger flat array (a leading
    # dimension past its width); compiled and NumPy versions against the @ operator.
    rng = np.random.default_rng(0)
    m, n, k, pad = 5, 4, 3, 2
    a_shape = (k, m) if trans_a else (m, k)
    b_shape = (n, k) if trans_b else (k, n)
    a = rng.standard_normal((a_shape[0], a_shape[1] + pad)).astype(dtype)
    b = rng.standard_normal((b_shape[0], b_shape[1] + pad)).astype(dtype)
    c = rng.standard_normal((m, n + pad)).astype(dtype)
    op_a = a[:, : a_shape[1]].T if trans_a else a[:, : a_shape[1]]
    op_b = b[:, : b_shape[1]].T if trans_b else b[:, : b_shape[1]]
    expected = c.copy()
    expected[:, :n] = op_a @ op_b + 0.5 * c[:, :n]
    for gemm in (blas.gemm, blas._gemm_numpy):
        got = c.copy()
        args = (a.reshape(-1), a.shape[1], b.reshape(-1), b.shape[1], 0.5)
        gemm(trans_a, trans_b, m, n, k, *args, got.reshape(-1), got.shape[1])
        tol = 1e-5 if dtype == np.float32 else 1e-12
        assert_close(got, expected, rtol=tol, atol=tol, name="gemm")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("m", [7, blas._FEW_ROWS + 1])
@pytest.mark.parametrize("name", ["gemm_few_rows", "gemm_small_blocks"])
def test_gemm_in_small_blocks_is_gemm(dtype, trans_a, m, name):
    # The same product as gemm, whether cut into column blocks (a large product: uneven
    # blocks here; gemm_few_rows only with few rows) or not; strided windows as above.
    rng = np.random.default_rng(1)
    n, k, pad = 3 * blas._SMALL_PRODUCT // (m * 400) + 5, 400, 3
    assert m * n * k > blas._SMALL_PRODUCT
    a = rng.standard_normal((k, m + pad) if trans_a else (m, k + pad)).astype(dtype)
    b = rng.standard_normal((k, n + pad)).astype(dtype)
    c = rng.standard_normal((m, n + pad)).astype(dtype)
    op_a = a[:, :m].T if trans_a else a[:, :k]
    expected = c.copy()
    expected[:, :n] = op_a @ b[:, :n] + 0.5 * c[:, :n]
    got = c.copy()
    getattr(blas, name)(trans_a, m, n, k, a.reshape(-1), a.shape[1], b.reshape(-1), b.shape[1],
                        0.5, got.reshape(-1), got.shape[1])  # fmt: skip
    tol = 1e-4 if dtype == np.float32 else 1e-11
    assert_close(got, expected, rtol=tol, atol=tol, name=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, n", [(5, 6), (blas._FEW_ROWS, blas._FEW_ROWS + 1)])
def test_gemm_small_result_adds_a_times_b_transposed(dtype, m, n):
    # c += a @ bᵀ, cut along the depth for a small result (uneven blocks), or not.
    rng = np.random.default_rng(2)
    k, pad = 3 * blas._SMALL_PRODUCT // (m * n) + 7, 2
    a = rng.standard_normal((m, k + pad)).astype(dtype)
    b = rng.standard_normal((n, k + pad)).astype(dtype)
    c = rng.standard_normal((m, n + pad)).astype(dtype)
    expected = c.copy()
    expected[:, :n] += a[:, :k] @ b[:, :k].T
    got = c.copy()
    blas.gemm_small_result(m, n, k, a.reshape(-1), a.shape[1], b.reshape(-1), b.shape[1],
                           got.reshape(-1), got.shape[1])  # fmt: skip
    tol = 1e-3 if dtype == np.float32 else 1e-10
    assert_close(got, expected, rtol=tol, atol=tol, name="gemm_small_result")


def test_empty_batch():
    layer = Conv3d(2, 4, 3, padding=1)
    y, _, grad_x = run_layer(layer, np.zeros((0, 2, 4, 5, 3), np.float32))
    assert layer._planes
    assert y.shape == (0, 4, 4, 5, 3)
    assert grad_x.shape == (0, 2, 4, 5, 3)
    assert not layer.weight.grad.any()


def test_same_padding_with_even_kernel_matches_reference():
    # An even kernel pads one more on the high side; the kernels see only the low side.
    layer = Conv3d(2, 4, (2, 3, 4), padding="same", dilation=(1, 2, 1)).double()
    x = np.random.default_rng(4).standard_normal((2, 2, 5, 6, 7))
    assert layer(x).shape == (2, 4, 5, 6, 7)
    check_against_reference(layer, x)
