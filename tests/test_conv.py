"""Conv2d and Conv3d against a plain NumPy reference, central differences and PyTorch."""

from __future__ import annotations

import contextlib
import copy

import numba
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from reference.conv import conv_backward, conv_forward

import tinynet
from tinynet.nn import Conv2d, Conv3d
from tinynet.nn.conv import _small_max_channels
from tinynet.testing import assert_close, gradcheck

CLASSES = {2: Conv2d, 3: Conv3d}


def run_layer(layer, x, seed=1):
    """Forward, then backward of a random gradient; returns (y, grad_out, grad_x)."""
    y = layer(x)
    grad_out = np.random.default_rng(seed).standard_normal(y.shape).astype(y.dtype)
    return y, grad_out, layer.backward(grad_out)


def reference_padding(layer):
    return tuple(zip(layer._pad_low, layer._pad_high, strict=True))


def check_against_reference(layer, x, rtol=1e-9, atol=1e-9):
    layer.zero_grad()
    y, grad_out, grad_x = run_layer(layer, x)
    args = (layer.stride, reference_padding(layer), layer.dilation, layer.groups)
    bias = None if layer.bias is None else layer.bias.data
    assert_close(
        y, conv_forward(x, layer.weight.data, bias, *args), rtol=rtol, atol=atol, name="forward"
    )
    gx, gw, gb = conv_backward(x, layer.weight.data, grad_out, *args)
    assert_close(grad_x, gx, rtol=rtol, atol=atol, name="grad input")
    assert_close(layer.weight.grad, gw, rtol=rtol, atol=atol, name="grad weight")
    if layer.bias is not None:
        assert_close(layer.bias.grad, gb, rtol=rtol, atol=atol, name="grad bias")


# -- gradcheck -----------------------------------------------------------------------------

GRADCHECK_CASES = [
    (Conv2d, (2, 4, 6, 5), dict(in_channels=4, out_channels=6, kernel_size=3, padding=1)),
    (
        Conv2d,
        (2, 4, 7, 6),
        dict(
            in_channels=4,
            out_channels=4,
            kernel_size=(3, 2),
            stride=2,
            padding=(1, 0),
            dilation=(1, 2),
            groups=2,
            bias=False,
        ),
    ),
    (
        Conv2d,
        (2, 3, 6, 6),
        dict(in_channels=3, out_channels=6, kernel_size=3, groups=3, padding="same"),
    ),
    (
        Conv3d,
        (2, 2, 4, 5, 4),
        dict(in_channels=2, out_channels=3, kernel_size=(2, 3, 2), stride=(1, 2, 1), padding=1),
    ),
    (
        Conv3d,
        (1, 4, 5, 4, 5),
        dict(in_channels=4, out_channels=4, kernel_size=2, dilation=2, groups=4, bias=False),
    ),
    (
        Conv3d,
        (2, 2, 3, 4, 4),
        dict(in_channels=2, out_channels=2, kernel_size=2, padding="same", groups=2),
    ),
]


@pytest.mark.parametrize("cls, shape, kwargs", GRADCHECK_CASES)
def test_gradcheck(cls, shape, kwargs):
    tinynet.manual_seed(0)
    x = np.random.default_rng(2).standard_normal(shape)
    assert gradcheck(cls(**kwargs), x, max_checks=60)


# -- the NumPy reference on generated configurations -------------------------------------------


@st.composite
def conv_configs(draw, dims):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin = groups * draw(st.integers(1, 3))
    # 1 to 3 outputs a group take the direct forward, more the GEMM one: both are drawn.
    cout = groups * draw(st.integers(1, 6))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(dims))
    # Sizes from the smallest the padded kernel allows, a few more (odd ones included).
    size = tuple(
        max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 4))
        for k, d, p in zip(kernel, dilation, padding, strict=True)
    )
    batch = draw(st.integers(1, 4))
    layout = draw(st.sampled_from(["contiguous", "strided", "transposed"]))
    bias = draw(st.booleans())
    return (
        dict(
            in_channels=cin,
            out_channels=cout,
            kernel_size=kernel,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
        ),
        batch,
        size,
        layout,
    )


def make_input(batch, channels, size, layout, seed):
    rng = np.random.default_rng(seed)
    if layout == "strided":  # every other element along the last axis
        big = rng.standard_normal((batch, channels, *size[:-1], 2 * size[-1]))
        return big[..., ::2]
    if layout == "transposed":  # batch and channel axes swapped in memory
        return rng.standard_normal((channels, batch, *size)).swapaxes(0, 1)
    return rng.standard_normal((batch, channels, *size))


def check_config(dims, config, seed):
    kwargs, batch, size, layout = config
    tinynet.manual_seed(seed)
    layer = CLASSES[dims](**kwargs).double()
    x = make_input(batch, kwargs["in_channels"], size, layout, seed)
    check_against_reference(layer, x)


@settings(max_examples=30, deadline=None)
@given(config=conv_configs(2), seed=st.integers(0, 2**16))
def test_conv2d_matches_reference(config, seed):
    check_config(2, config, seed)


@settings(max_examples=15, deadline=None)
@given(config=conv_configs(3), seed=st.integers(0, 2**16))
def test_conv3d_matches_reference(config, seed):
    check_config(3, config, seed)


@pytest.mark.parametrize("dims", [2, 3])
def test_depthwise_with_multiplier_matches_reference(dims):
    # groups == in_channels takes the direct kernels; a multiplier of 2 outputs per group.
    tinynet.manual_seed(0)
    layer = CLASSES[dims](3, 6, 3, stride=2, padding=1, groups=3).double()
    x = make_input(3, 3, (5,) * dims, "contiguous", seed=3)
    assert layer._direct
    check_against_reference(layer, x)


@st.composite
def direct_configs(draw, dims):
    """Layers whose forward takes the direct loops: depthwise, or 1 to 3 outputs a group."""
    groups = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 5)) for _ in range(dims))
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    padding = draw(st.one_of(st.just("same"), st.tuples(*(st.integers(0, 3) for _ in range(dims)))))
    stride = (
        (1,) * dims if padding == "same" else tuple(draw(st.integers(1, 3)) for _ in range(dims))
    )
    low = [(d * (k - 1)) // 2 for k, d in zip(kernel, dilation)] if padding == "same" else padding
    size = tuple(
        max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 6))
        for k, d, p in zip(kernel, dilation, low, strict=True)
    )
    kwargs = dict(
        in_channels=groups * draw(st.integers(1, 4)),
        out_channels=groups * draw(st.integers(1, 3)),
        kernel_size=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=draw(st.booleans()),
    )
    return kwargs, draw(st.integers(1, 3)), size


@settings(max_examples=50, deadline=None)
@given(
    dims=st.sampled_from([2, 3]),
    data=st.data(),
    seed=st.integers(0, 2**16),
    small_plane=st.sampled_from([0, 10**9]),
    threads=st.sampled_from([1, 2]),
)
def test_direct_forward_matches_reference(dims, data, seed, small_plane, threads):
    """The direct forwards and backward (kernels/conv.py), for depthwise layers and few
    outputs per group: any stride, dilation, padding (including "same", uneven), groups,
    channel multiplier and odd sizes, float64 against the NumPy reference, the parameter
    gradients alone (input_grad=False) the same, and float32 against float64. A depthwise
    layer takes the phase planes, or with ``small_plane`` the kernel vectorised across
    channels."""
    from unittest import mock

    from tinynet.kernel_cache import group_key

    kwargs, batch, size = data.draw(direct_configs(dims))
    tinynet.manual_seed(seed)
    layer = CLASSES[dims](**kwargs).double()
    x = make_input(batch, kwargs["in_channels"], size, "contiguous", seed)
    assume(group_key(layer, x.shape) == "Conv:direct")  # not a few-input path's, say
    with mock.patch("tinynet.nn.conv._SMALL_PLANE", small_plane), tinynet.set_num_threads(threads):
        check_against_reference(layer, x)
        grads = [p.grad.copy() for p in layer.parameters()]
        layer.zero_grad()
        y = layer.forward(x)
        assert layer.backward(np.random.default_rng(1).standard_normal(y.shape), False) is None
        for p, expected in zip(layer.parameters(), grads, strict=True):
            assert_close(p.grad, expected, rtol=1e-12, atol=1e-12, name="without input_grad")
        expected = layer.forward(x)
        layer.float()
        got = layer.forward(x.astype(np.float32))
    assert_close(got, expected, rtol=1e-5, atol=1e-5, name="float32 forward")


@settings(max_examples=40, deadline=None)
@given(
    dims=st.sampled_from([2, 3]),
    data=st.data(),
    seed=st.integers(0, 2**16),
    threads=st.sampled_from([1, 2]),
    layout=st.sampled_from(["contiguous", "transposed"]),
)
def test_shifted_products_match_reference(dims, data, seed, threads, layout):
    """The shifted-product forward and backward (kernels/conv_shifted.py), forced on any
    layer (its gate and plane threshold lifted, and the other paths turned off):
    any kernel, stride, dilation, padding (including "same", uneven), groups and odd sizes,
    float64 against the NumPy reference, the parameter gradients alone (input_grad=False)
    the same, with a fused ReLU, and float32 against float64."""
    from unittest import mock

    from tinynet.kernel_cache import group_key

    kwargs, batch, size = data.draw(direct_configs(dims))
    kwargs["out_channels"] = kwargs["groups"] * data.draw(st.integers(4, 6))  # not "direct"
    tinynet.manual_seed(seed)
    layer = CLASSES[dims](**kwargs).double()
    layer._shifted = layer._planes = layer._small = False
    layer._winograd = layer._winograd3d = layer._dilated = layer._small3d = False
    x = make_input(batch, kwargs["in_channels"], size, layout, seed)
    # _SPLIT_SAMPLE_MACS 0: a batch smaller than the thread count cuts its pairs into runs.
    patches = (("_SHIFTED_MIN_PLANE", 1), ("_SPLIT_SAMPLE_MACS", 0))
    with contextlib.ExitStack() as stack:
        for name, value in patches:
            stack.enter_context(mock.patch(f"tinynet.nn.conv.{name}", value))
        stack.enter_context(tinynet.set_num_threads(threads))
        layer._shifted = True
        assume(group_key(layer, x.shape) == "Conv:shifted")  # not direct, say
        check_against_reference(layer, x)
        grads = [p.grad.copy() for p in layer.parameters()]
        layer.zero_grad()
        plain = layer.forward(x)
        assert layer._shifted_used
        assert layer.backward(np.random.default_rng(1).standard_normal(plain.shape), False) is None
        for p, expected in zip(layer.parameters(), grads, strict=True):
            assert_close(p.grad, expected, rtol=1e-12, atol=1e-12, name="without input_grad")
        fused = layer._forward(x, relu=True)
        assert_close(fused, np.maximum(plain, 0), rtol=0, atol=0, name="fused ReLU")
        layer.float()
        got = layer.forward(x.astype(np.float32))
    assert_close(got, plain, rtol=1e-5, atol=1e-5, name="float32 forward")


@pytest.mark.parametrize(
    ("cin", "cout", "kwargs", "shape", "taken"),
    [
        (32, 64, dict(kernel_size=3, stride=2, padding=1), (2, 32, 32, 32), True),
        (16, 16, dict(kernel_size=3, dilation=2), (2, 16, 14, 14), True),
        (32, 64, dict(kernel_size=5, stride=2, padding=2), (2, 32, 28, 28), True),
        (32, 128, dict(kernel_size=3, stride=2, padding=1), (2, 32, 32, 32), False),
        (8, 16, dict(kernel_size=3, stride=2, padding=1), (2, 8, 32, 32), False),  # too few in
        (32, 32, dict(kernel_size=3, stride=2, padding=1), (2, 32, 16, 16), False),  # 8² out
        (32, 32, dict(kernel_size=3, stride=2, padding=1), (1, 32, 32, 32), True),  # cut
        (32, 32, dict(kernel_size=3, padding=1), (2, 32, 32, 32), False),  # stride 1
        (64, 64, dict(kernel_size=3, stride=2, padding=1, groups=2), (2, 64, 28, 28), True),
        (32, 32, dict(kernel_size=3, stride=2, padding=1, groups=2), (2, 32, 28, 28), False),
        # Small output planes: a large kernel or many input channels, two samples a thread
        (64, 16, dict(kernel_size=5, stride=2, padding=2), (4, 64, 14, 14), True),  # 7² out
        (64, 16, dict(kernel_size=5, stride=2, padding=2), (3, 64, 14, 14), False),
        (128, 32, dict(kernel_size=3, stride=2, padding=1), (4, 128, 8, 8), True),  # 4² out
        (32, 32, dict(kernel_size=3, stride=2, padding=1), (4, 32, 8, 8), False),
        (128, 32, dict(kernel_size=3, stride=2, padding=1, groups=2), (2, 128, 8, 8), True),
        (64, 32, dict(kernel_size=7), (4, 64, 7, 7), False),  # one output position
        (64, 32, dict(kernel_size=3, stride=2, padding=1), (4, 64, 8, 8, 8), False),  # 3-D
        # Few outputs: in 2-D the shifted products, not the direct loops, where they fit
        (128, 3, dict(kernel_size=5, stride=2, padding=2), (4, 128, 16, 16), True),
        (64, 1, dict(kernel_size=5, stride=2, padding=2), (2, 64, 16, 16), False),
        (16, 2, dict(kernel_size=3, padding=1), (2, 16, 32, 32), True),
        (32, 1, dict(kernel_size=3, stride=2, padding=1), (2, 32, 16, 16, 16), False),
        (32, 32, dict(kernel_size=1, stride=2), (2, 32, 32, 32), False),  # a strided copy
        (32, 32, dict(kernel_size=7, padding=3), (2, 32, 28, 28), True),  # not Winograd's
        (32, 32, dict(kernel_size=3, padding=1, groups=2), (2, 32, 8, 8, 8), True),  # 3-D
        (32, 32, dict(kernel_size=3, stride=2, padding=1), (2, 32, 16, 16, 16), False),  # planes
    ],
)
def test_shifted_products_only_where_they_apply(cin, cout, kwargs, shape, taken):
    from tinynet.kernel_cache import group_key

    layer = CLASSES[len(shape) - 2](cin, cout, **kwargs)
    with tinynet.set_num_threads(2):
        assert (group_key(layer, shape) == "Conv:shifted") == taken
        out_size = layer._output_size(shape[2:])
        assert layer._shifted_parts(shape[0], out_size) == (2 if shape[0] == 1 else 1)
        if taken:
            x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            reference = copy.deepcopy(layer)
            reference._shifted = False
            assert_close(layer(x), reference(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "dims, kwargs",
    [
        (2, dict(kernel_size=3, padding=1)),  # "same" size: lines merged into long runs
        (2, dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 2), groups=2)),
        (3, dict(kernel_size=3, padding=1, dilation=(1, 2, 1))),
        (3, dict(kernel_size=2, stride=2, padding=(0, 1, 1))),
    ],
)
def test_output_tiles_match_reference(monkeypatch, dims, kwargs):
    # Large outputs are computed a few lines at a time; force tiny tiles (uneven last tile
    # included) on small inputs.
    monkeypatch.setattr("tinynet.nn.conv._TILE_BYTES", 1)
    monkeypatch.setattr("tinynet.nn.conv._MIN_TILE_COLUMNS", 10)
    layer = CLASSES[dims](4, 6, **kwargs).double()
    layer._planes = False  # Conv3d: test the tiled vol2col path, not the plane-wise one
    x = make_input(3, 4, (5, 7, 6)[-dims:], "contiguous", seed=5)
    tile, samples, _, _ = layer._gemm_work(3, 4 * 6, layer._output_size(x.shape[2:]), np.float64)
    assert tile < np.prod(layer._output_size(x.shape[2:])[:-1]) and samples == 1
    check_against_reference(layer, x)


@pytest.mark.parametrize(
    "dims, kwargs",
    [
        (2, dict(kernel_size=3, padding=1)),
        (2, dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 2), groups=2)),
        (2, dict(kernel_size=5, padding=2, dilation=2, bias=False)),
        (3, dict(kernel_size=2, stride=2, padding=(0, 1, 1))),
    ],
)
@pytest.mark.parametrize("batch, threads", [(7, 2), (5, 1), (1, 2)])
def test_several_samples_per_product_match_reference(monkeypatch, dims, kwargs, batch, threads):
    # Small outputs put several samples side by side in one product (an uneven last group of
    # samples included); force that on small inputs whatever the thresholds.
    monkeypatch.setattr("tinynet.nn.conv._MIN_TILE_COLUMNS", 10_000)
    monkeypatch.setattr("tinynet.nn.conv._MIN_SAMPLE_COLUMNS", 10_000)
    layer = CLASSES[dims](4, 6, **kwargs).double()
    layer._planes = layer._winograd = layer._small = False  # the vol2col + GEMM path
    layer._direct_forward_applies = False
    x = make_input(batch, 4, (5, 7, 6)[-dims:], "strided", seed=batch)
    with tinynet.set_num_threads(threads):
        _, samples, _, _ = layer._gemm_work(batch, 4 * 6, layer._output_size(x.shape[2:]), float)
        assert samples == -(-batch // min(threads, batch))
        check_against_reference(layer, x)


@settings(max_examples=60, deadline=None)
@given(dims=st.sampled_from([2, 3]), data=st.data(), input_grad=st.booleans())
def test_backward_split_by_channels_matches_reference(dims, data, input_grad):
    """conv_backward_gemm_channels (a batch smaller than the thread count) cuts each group's
    input channels into runs shared among blocks: any number of runs and blocks, tiles down
    to one output line, must give the reference's three gradients."""
    from tinynet.kernels.conv import conv_backward_gemm_channels

    kwargs, batch, size, layout = data.draw(conv_configs(dims))
    layer = CLASSES[dims](**kwargs).double()
    x = make_input(batch, kwargs["in_channels"], size, layout, seed=3)
    out_size = layer._output_size(x.shape[2:])
    grad_out = np.random.default_rng(4).standard_normal((batch, layer.out_channels, *out_size))
    cin_g = layer.in_channels // layer.groups
    parts = data.draw(st.integers(1, cin_g))
    blocks = data.draw(st.integers(1, 3))
    lines = int(np.prod(out_size[:-1]))
    tile = data.draw(st.integers(1, lines))
    taps = int(np.prod(layer.kernel_size))
    weight = layer.weight.data.reshape(layer.out_channels, -1)
    grad_x = np.full(x.shape, np.nan)  # every entry must be written (input_grad)
    grad_w = np.full(weight.shape, np.nan)
    grad_b = np.full(layer.out_channels if layer.bias is not None else 0, np.nan)
    cols = np.full((blocks, -(-cin_g // parts) * taps * tile * out_size[-1]), np.nan)
    conv_backward_gemm_channels(
        np.ascontiguousarray(x).reshape(layer._as_volume(x.shape)),
        weight,
        grad_out.reshape(batch, layer.out_channels, -1),
        input_grad,
        layer.groups,
        *layer._geometry(out_size),
        tile,
        parts,
        grad_x.reshape(layer._as_volume(x.shape)),
        grad_w,
        grad_b,
        cols,
    )
    args = (layer.stride, reference_padding(layer), layer.dilation, layer.groups)
    gx, gw, gb = conv_backward(x, layer.weight.data, grad_out, *args)
    assert_close(grad_w.reshape(gw.shape), gw, rtol=1e-9, atol=1e-9, name="grad weight")
    if layer.bias is not None:
        assert_close(grad_b, gb, rtol=1e-9, atol=1e-9, name="grad bias")
    if input_grad:
        assert_close(grad_x, gx, rtol=1e-9, atol=1e-9, name="grad input")


@pytest.mark.parametrize(
    "dims, kwargs",
    [
        (2, dict(in_channels=6, out_channels=8, kernel_size=3, stride=2, padding=1)),
        (2, dict(in_channels=6, out_channels=9, kernel_size=(2, 3), dilation=2, groups=3)),
        (3, dict(in_channels=4, out_channels=6, kernel_size=2, stride=2, groups=2)),
    ],
)
def test_a_batch_smaller_than_the_threads_shares_its_backward(monkeypatch, dims, kwargs):
    """A GEMM-path backward of one sample on two threads is split by input channels
    (conv_backward_gemm_channels), not left to one thread; its gradients are the
    reference's."""
    from tinynet.kernels import conv as conv_kernels

    calls = []
    kernel = conv_kernels.conv_backward_gemm_channels

    def spy(*args):
        calls.append(args[11])  # parts
        return kernel(*args)

    monkeypatch.setattr(conv_kernels, "conv_backward_gemm_channels", spy)
    monkeypatch.setattr("tinynet.nn.conv._SPLIT_SAMPLE_MACS", 0)
    layer = CLASSES[dims](**kwargs).double()
    layer._planes = layer._winograd = layer._small = layer._dilated = False
    layer._direct_forward_applies = False
    x = make_input(1, kwargs["in_channels"], (9, 8, 7)[-dims:], "contiguous", seed=2)
    with tinynet.set_num_threads(2):
        check_against_reference(layer, x)
    assert calls and layer.groups * calls[0] >= 2  # every thread had a unit of work


@pytest.mark.parametrize("dims, groups", [(2, 1), (2, 2), (3, 1), (3, 3)])
@pytest.mark.parametrize(
    "batch, threads, small_tiles", [(3, 2, True), (5, 1, False), (2, 2, False)]
)
def test_pointwise_convolution_reads_in_place(
    monkeypatch, dims, groups, batch, threads, small_tiles
):
    """A 1×1 stride-1 unpadded convolution skips vol2col (col would be a copy of x) and
    col2vol: its products read x, grad_out and write out, grad_x in place, whole samples or
    output tiles (``small_tiles``) of them; the three gradients are the reference's."""
    if small_tiles:
        monkeypatch.setattr("tinynet.nn.conv._TILE_BYTES", 1)
        monkeypatch.setattr("tinynet.nn.conv._MIN_TILE_COLUMNS", 10)
    layer = CLASSES[dims](6, 3 * groups, 1, groups=groups).double()
    x = make_input(batch, 6, (7, 9, 8)[-dims:], "transposed", seed=batch)
    with tinynet.set_num_threads(threads):
        tile, samples, _, _ = layer._gemm_work(batch, 6, layer._output_size(x.shape[2:]), float)
        assert samples == 1 and (tile < np.prod(x.shape[2:-1])) == small_tiles
        check_against_reference(layer, x)


@pytest.mark.parametrize(
    "cin, cout, k, expected",
    [
        (8, 1, 3, "direct loops"),
        (32, 1, 3, "shifted products"),
        (32, 2, 3, "shifted products"),
        (32, 3, 3, "Winograd F(2x2, 3x3)"),
        (12, 3, 5, "direct loops"),
        (16, 3, 5, "shifted products"),
        (16, 4, 5, "Winograd F(2x2, 5x5)"),
        (16, 2, (3, 3, 3), "direct loops"),
        (16, 3, (3, 3, 3), "Winograd F(4x4, 3x3) per depth tap"),
    ],
)
def test_few_outputs_take_a_direct_path_before_winograd(cin, cout, k, expected):
    """Winograd's input transform costs the same for any output count: 3×3 layers with 1 or
    2 outputs and 5×5 ones with up to 3 take the direct loops or, in 2-D with enough input
    channels, the shifted products (measured faster), the others Winograd; all give the
    reference's result."""
    from tinynet.profiler import algorithm

    dims = 3 if isinstance(k, tuple) else 2
    layer = CLASSES[dims](cin, cout, k, padding=1 if dims == 3 else k // 2).double()
    shape = (8, cin, *(16,) * dims)
    assert algorithm(layer, shape) == expected
    check_against_reference(layer, make_input(*shape[:2], shape[2:], "contiguous", seed=7))


@pytest.mark.parametrize("cout", [1, 2, 3])
def test_few_outputs_split_sample_on_shifted_products_then_direct_backward(cout):
    # A 2-D layer of few outputs takes the shifted products; a batch of one, smaller than
    # the thread count, cuts its output lines among the threads in the forward, and its
    # backward is then the direct loops' (which read only x and dy): both the reference's.
    from unittest import mock

    layer = Conv2d(32, cout, 3, padding=1).double()
    x = make_input(1, 32, (12, 11), "contiguous", seed=3)
    with tinynet.set_num_threads(2), mock.patch("tinynet.nn.conv._SPLIT_SAMPLE_MACS", 0):
        assert layer._shifted_parts(1, (12, 11)) == 2
        check_against_reference(layer, x)
        assert layer._shifted_used


@pytest.mark.parametrize(
    "dims, kwargs",
    [
        (2, dict(in_channels=2, out_channels=1)),  # direct 3×3 (few inputs)
        (2, dict(in_channels=8, out_channels=1)),  # direct loops (few outputs)
        (2, dict(in_channels=4, out_channels=4, groups=4, dilation=(1, 2))),  # depthwise
        (3, dict(in_channels=2, out_channels=1)),  # direct 3×3×3
        (3, dict(in_channels=5, out_channels=1)),  # direct loops
        # shifted products: the last column is read only by a wide row's extra column
        (2, dict(in_channels=16, out_channels=8, stride=2, padding=1, width=10)),
    ],
)
def test_an_inf_in_the_input_spoils_only_the_weights_that_read_it(monkeypatch, dims, kwargs):
    """The direct and shifted-product kernels compute output rows wider than the output,
    with zeros in dy past each row; an inf under those extra columns must not make NaN of
    the gradient of a weight that never reads it (0 · inf): the weight gradient is the
    reference's, inf and NaN in the same places."""
    from tinynet.kernel_cache import group_key

    monkeypatch.setattr("tinynet.nn.conv._SHIFTED_MIN_PLANE", 1)
    kwargs = dict(kwargs)
    width = kwargs.pop("width", 9)
    layer = CLASSES[dims](kernel_size=3, **kwargs).double()
    x = make_input(2, kwargs["in_channels"], (5, 6, width)[-dims:], "contiguous", seed=3)
    assert (group_key(layer, x.shape) == "Conv:shifted") == (width == 10)
    x[(0, 0) + (0,) * (dims - 1) + (-1,)] = np.inf  # first row, last column
    layer.zero_grad()
    grad_out = np.ones(layer(x).shape)  # one sign: the inf terms add up to +inf, not NaN
    layer.backward(grad_out)
    args = (layer.stride, reference_padding(layer), layer.dilation, layer.groups)
    expected = conv_backward(x, layer.weight.data, grad_out, *args)[1]
    got = layer.weight.grad
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    assert np.array_equal(np.isinf(got), np.isinf(expected)) and np.isinf(expected).any()
    finite = np.isfinite(expected)
    assert_close(got[finite], expected[finite], rtol=1e-9, atol=1e-9, name="finite weights")


def test_same_padding_with_even_kernel_matches_reference():
    layer = Conv2d(2, 3, (4, 3), padding="same", dilation=(1, 2)).double()
    x = make_input(2, 2, (7, 6), "contiguous", seed=4)
    y, _, _ = run_layer(layer, x)
    assert y.shape == (2, 3, 7, 6)
    check_against_reference(layer, x)


def test_padding_valid_is_zero_padding():
    layer = Conv2d(2, 3, 3, padding="valid")
    assert layer(np.ones((1, 2, 5, 6))).shape == (1, 3, 3, 4)


# -- behaviour -------------------------------------------------------------------------------


def test_parameters_shapes_and_pytorch_initialisation_bounds():
    layer = Conv3d(4, 6, (1, 2, 3), groups=2)
    assert layer.weight.shape == (6, 2, 1, 2, 3)
    assert layer.bias.shape == (6,)
    assert layer.weight.dtype == np.float32
    bound = 1 / np.sqrt(2 * 1 * 2 * 3)
    assert np.abs(layer.weight.data).max() <= bound
    assert np.abs(layer.bias.data).max() <= bound
    # Not all in a narrower band: the draw spans the whole interval.
    assert np.abs(layer.weight.data).max() > 0.8 * bound
    assert Conv2d(2, 3, 3, bias=False).bias is None
    assert [name for name, _ in Conv2d(2, 3, 3).named_parameters()] == ["weight", "bias"]


def test_arguments_are_stored_as_tuples():
    layer = Conv2d(2, 4, 3, stride=(2, 1), padding=1, dilation=2, groups=2)
    assert layer.kernel_size == (3, 3)
    assert layer.stride == (2, 1)
    assert layer.padding == (1, 1)
    assert layer.dilation == (2, 2)
    assert (layer.in_channels, layer.out_channels, layer.groups) == (2, 4, 2)


def test_manual_seed_makes_initialisation_repeatable():
    tinynet.manual_seed(5)
    a = Conv2d(3, 4, 3)
    tinynet.manual_seed(5)
    b = Conv2d(3, 4, 3)
    assert np.array_equal(a.weight.data, b.weight.data)
    assert np.array_equal(a.bias.data, b.bias.data)


def test_backward_accumulates_and_works_in_eval_mode():
    layer = Conv2d(2, 3, 3, padding=1).double()
    x = make_input(2, 2, (5, 5), "contiguous", seed=0)
    _, grad_out, grad_x = run_layer(layer, x)
    first_w, first_b = layer.weight.grad.copy(), layer.bias.grad.copy()
    layer.eval()
    layer(x)
    assert np.array_equal(layer.backward(grad_out), grad_x)
    assert_close(layer.weight.grad, 2 * first_w, rtol=1e-12)
    assert_close(layer.bias.grad, 2 * first_b, rtol=1e-12)


# The direct (depthwise) kernels sum in a fixed order by construction; the GEMM ones split the
# batch between threads, so they are the ones to check. float32 only: fewer compilations.
@pytest.mark.parametrize("groups", [1, 2])
def test_same_input_and_threads_give_bit_identical_results(groups):
    x = make_input(9, 4, (9, 7), "contiguous", seed=0).astype(np.float32)
    results = []
    for _ in range(2):
        tinynet.manual_seed(0)
        layer = Conv2d(4, 8, 3, padding=1, groups=groups)
        y, _, grad_x = run_layer(layer, x)
        results.append((y, grad_x, layer.weight.grad, layer.bias.grad))
    for first, second in zip(*results, strict=True):
        assert np.array_equal(first, second)


def test_shifted_products_give_bit_identical_results():
    from tinynet.kernel_cache import group_key

    x = make_input(5, 16, (20, 21), "contiguous", seed=0).astype(np.float32)
    results = []
    for _ in range(2):
        tinynet.manual_seed(0)
        layer = Conv2d(16, 16, 3, stride=2, padding=1)
        with tinynet.set_num_threads(2):
            assert group_key(layer, x.shape) == "Conv:shifted"
            y, _, grad_x = run_layer(layer, x)
        results.append((y, grad_x, layer.weight.grad, layer.bias.grad))
    for first, second in zip(*results, strict=True):
        assert np.array_equal(first, second)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "dims, args, kwargs, shape",
    [
        (2, (32, 32, 3), dict(stride=2, padding=1), (3, 32, 21, 22)),
        (2, (16, 24, 5), dict(padding=(2, 1), dilation=(2, 1)), (2, 16, 15, 14)),
        (2, (64, 64, 3), dict(stride=(1, 2), padding=1, groups=2), (3, 64, 14, 15)),
        (3, (32, 32, 3), dict(padding=1, groups=2), (2, 32, 6, 5, 7)),
    ],
)
def test_shifted_products_match_pytorch(dims, args, kwargs, shape, dtype):
    torch = pytest.importorskip("torch")
    from tinynet.kernel_cache import group_key

    functional = {2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}[dims]
    tol = 1e-4 if dtype == np.float32 else 1e-10
    tinynet.manual_seed(3)
    layer = CLASSES[dims](*args, **kwargs).to(dtype)
    x = make_input(*shape[:2], shape[2:], "contiguous", seed=3).astype(dtype)
    assert group_key(layer, x.shape) == "Conv:shifted"
    y, grad_out, grad_x = run_layer(layer, x)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(layer.weight.data, requires_grad=True)
    bt = torch.tensor(layer.bias.data, requires_grad=True)
    stride, padding, dilation = layer.stride, layer.padding, layer.dilation
    yt = functional(xt, wt, bt, stride, padding, dilation, layer.groups)
    yt.backward(torch.tensor(grad_out))
    assert_close(y, yt.detach().numpy(), rtol=tol, atol=tol, name="forward")
    assert_close(grad_x, xt.grad.numpy(), rtol=tol, atol=tol, name="grad input")
    assert_close(layer.weight.grad, wt.grad.numpy(), rtol=tol, atol=tol, name="grad weight")
    assert_close(layer.bias.grad, bt.grad.numpy(), rtol=tol, atol=tol, name="grad bias")


def test_thread_count_changes_only_rounding():
    x = make_input(5, 3, (6, 6), "contiguous", seed=0).astype(np.float32)
    layer = Conv2d(3, 4, 3, padding=1)
    other = copy.deepcopy(layer)
    y, _, grad_x = run_layer(layer, x)
    with tinynet.set_num_threads(1):
        y1, _, grad_x1 = run_layer(other, x)
    assert_close(y1, y, rtol=1e-5, atol=1e-6)
    assert_close(grad_x1, grad_x, rtol=1e-5, atol=1e-6)
    assert_close(other.weight.grad, layer.weight.grad, rtol=1e-5, atol=1e-5)


def test_float64_layer_and_integer_input():
    layer = Conv2d(1, 2, 2).double()
    y = layer(np.arange(18).reshape(1, 1, 3, 6))
    assert y.dtype == np.float64
    assert Conv2d(1, 2, 2)(np.ones((1, 1, 3, 3), np.float64)).dtype == np.float32


def test_empty_batch():
    layer = Conv2d(2, 3, 3)
    y, _, grad_x = run_layer(layer, np.zeros((0, 2, 4, 4), np.float32))
    assert y.shape == (0, 3, 2, 2)
    assert grad_x.shape == (0, 2, 4, 4)
    assert not layer.weight.grad.any()


def test_repr_and_describe():
    layer = Conv2d(4, 8, 3, stride=2, padding=1, groups=2, bias=False)
    assert layer.describe() == "Conv2d(in_channels=4)"
    assert repr(layer) == (
        "Conv2d(4, 8, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), groups=2, bias=False)"
    )
    assert repr(Conv3d(1, 2, 3)) == "Conv3d(1, 2, kernel_size=(3, 3, 3), stride=(1, 1, 1))"


# -- errors ----------------------------------------------------------------------------------


def test_wrong_rank_and_channels():
    with pytest.raises(ValueError, match=r"Conv2d\(in_channels=3\) expected input \(N, 3, H, W\)"):
        Conv2d(3, 4, 3)(np.zeros((3, 8, 8)))
    with pytest.raises(
        ValueError,
        match=r"expected input \(N, 3, H, W\), got \(8, 32, 32, 3\); "
        r"is it channels-last",
    ):
        Conv2d(3, 4, 3)(np.zeros((8, 32, 32, 3)))
    with pytest.raises(ValueError, match=r"Conv3d\(in_channels=2\) expected input \(N, 2, D"):
        Conv3d(2, 4, 3)(np.zeros((1, 2, 8, 8)))


def test_input_too_small_for_the_kernel():
    with pytest.raises(
        ValueError,
        match=r"Conv2d\(in_channels=1\) expected a padded input size"
        r".* at least \(5, 3\).*got \(4, 6\)",
    ):
        Conv2d(1, 1, (3, 3), dilation=(2, 1), padding=1)(np.zeros((1, 1, 2, 4)))
    with pytest.raises(ValueError, match="expected a padded input size"):
        Conv3d(1, 1, 3)(np.zeros((1, 1, 3, 3, 2)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kernel_size=0), "kernel_size"),
        (dict(kernel_size=(3, 3, 3)), "kernel_size"),
        (dict(kernel_size=3, stride=0), "stride"),
        (dict(kernel_size=3, dilation=(1, 0)), "dilation"),
        (dict(kernel_size=3, padding=-1), "padding"),
        (dict(kernel_size=3, padding="full"), "padding 'valid', 'same'"),
        (dict(kernel_size=3, padding="same", stride=2), "stride 1 with padding='same'"),
        (dict(kernel_size=3, groups=3), "divisible by groups"),
        (dict(kernel_size=3, groups=0), "groups"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Conv2d(in_channels=4, out_channels=6, **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kernel_size=3.0), r"Conv2d expected kernel_size to be an int .*got float 3.0"),
        (dict(kernel_size=None), r"expected kernel_size .*got NoneType None"),
        (dict(kernel_size=3, padding=1.5), r"expected padding .*got float 1.5"),
        (dict(kernel_size=3, stride=None), r"expected stride .*got NoneType"),
        (dict(kernel_size="3"), r"expected kernel_size .*got str '3'"),
    ],
)
def test_non_int_arguments_are_type_errors(kwargs, message):
    with pytest.raises(TypeError, match=message):
        Conv2d(in_channels=4, out_channels=6, **kwargs)


def test_one_element_tuples_are_broadcast_as_in_torch():
    layer = Conv3d(2, 2, (3,), stride=[2], padding=(1,), dilation=(2,))
    assert layer.kernel_size == (3, 3, 3) and layer.stride == (2, 2, 2)
    assert layer.padding == (1, 1, 1) and layer.dilation == (2, 2, 2)
    assert Conv2d(2, 2, np.array([3, 1])).kernel_size == (3, 1)


def test_bad_channel_counts():
    with pytest.raises(ValueError, match="in_channels"):
        Conv2d(0, 4, 3)
    with pytest.raises(ValueError, match=r"out_channels \(5\) divisible by groups"):
        Conv2d(4, 5, 3, groups=2)


def test_bad_dtype_and_backward_errors():
    layer = Conv2d(1, 1, 2)
    with pytest.raises(TypeError, match="real-valued"):
        layer(np.zeros((1, 1, 3, 3), np.complex64))
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(np.zeros((1, 1, 2, 2)))
    layer(np.zeros((1, 1, 3, 3)))
    with pytest.raises(ValueError, match=r"expected a gradient of shape \(1, 1, 2, 2\)"):
        layer.backward(np.zeros((1, 1, 3, 3)))


# -- PyTorch ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dims", [2, 3])
def test_matches_pytorch(dims, dtype):
    torch = pytest.importorskip("torch")
    functional = {2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}[dims]
    tol = 1e-4 if dtype == np.float32 else 1e-10
    rng = np.random.default_rng(dims)
    for trial in range(6):
        groups = int(rng.choice([1, 2, 4]))
        cin, cout = groups * int(rng.integers(1, 4)), groups * int(rng.integers(1, 4))
        kernel = tuple(int(k) for k in rng.integers(1, 4, dims))
        stride = tuple(int(s) for s in rng.integers(1, 3, dims))
        padding = tuple(int(p) for p in rng.integers(0, 2, dims))
        size = tuple(k + int(rng.integers(0, 6)) for k in kernel)
        if trial == 0 and dtype == np.float64:  # depthwise: the direct kernels
            groups, cin, cout = 4, 4, 8
        layer = CLASSES[dims](cin, cout, kernel, stride, padding, groups=groups).to(dtype)
        x = rng.standard_normal((3, cin, *size)).astype(dtype)
        y, grad_out, grad_x = run_layer(layer, x)
        xt = torch.tensor(x, requires_grad=True)
        wt = torch.tensor(layer.weight.data, requires_grad=True)
        bt = torch.tensor(layer.bias.data, requires_grad=True)
        yt = functional(xt, wt, bt, stride, padding, 1, groups)
        yt.backward(torch.tensor(grad_out))
        assert_close(y, yt.detach().numpy(), rtol=tol, atol=tol, name="forward")
        assert_close(grad_x, xt.grad.numpy(), rtol=tol, atol=tol, name="grad input")
        assert_close(layer.weight.grad, wt.grad.numpy(), rtol=tol, atol=tol, name="grad weight")
        assert_close(layer.bias.grad, bt.grad.numpy(), rtol=tol, atol=tol, name="grad bias")


def test_repr_matches_pytorch():
    torch = pytest.importorskip("torch")
    for args, kwargs in [
        ((4, 8, 3), dict(stride=2, padding=1, groups=2, bias=False)),
        ((2, 3, (1, 2)), dict(dilation=2, padding="same")),
        ((2, 3, 3), dict(padding="valid")),
    ]:
        assert repr(Conv2d(*args, **kwargs)) == repr(torch.nn.Conv2d(*args, **kwargs))
    assert repr(Conv3d(2, 4, 3, padding=1)) == repr(torch.nn.Conv3d(2, 4, 3, padding=1))


def test_state_dict_loads_pytorch_weights():
    torch = pytest.importorskip("torch")
    theirs = torch.nn.Conv2d(3, 4, 3, padding=1).double()
    ours = Conv2d(3, 4, 3, padding=1).double()
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5))
    assert_close(ours(x), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-12, atol=1e-12)


# -- Winograd F(2×2, 3×3), F(4×4, 3×3) and F(2×2, 5×5) -------------------------------------

# (kernel size, output tile side) of each Winograd kernel
KINDS = [(3, 2), (3, 4), (5, 2)]
KIND_IDS = ["F(2x2,3x3)", "F(4x4,3x3)", "F(2x2,5x5)"]


@pytest.fixture
def winograd(monkeypatch):
    """Make a Conv2d take the Winograd path whatever its size (the dispatch rule is a speed
    rule: small test shapes would go to im2col), with the given output tile."""
    monkeypatch.setattr("tinynet.nn.conv_winograd._WINOGRAD_MIN_TILES", 1)

    def make(cin, cout, padding=1, bias=True, dtype=np.float64, k=3, tile=2):
        layer = Conv2d(cin, cout, k, padding=padding, bias=bias).to(dtype)
        layer._winograd = True
        layer._direct_forward_applies = False  # 1 to 3 outputs would take the direct one
        layer._winograd_tile = lambda n, out_size: tile
        return layer

    return make


_WINOGRAD_CASES_3x3 = [
    (3, 4, 5, (7, 9), 1, True),  # odd sizes: tiles hang over the bottom and right edges
    (2, 3, 2, (6, 6), 0, True),
    (1, 1, 1, (5, 4), 2, False),  # batch 1, one channel, the widest padding
    (2, 2, 3, (3, 3), 0, True),  # a 1×1 output: one tile, mostly overhanging
    (4, 6, 4, (8, 5), "same", False),
    (2, 3, 4, (10, 13), 1, True),  # F(4×4): whole tiles down, one column past the right
]


@pytest.mark.parametrize(
    "batch, cin, cout, size, padding, bias, k, tile",
    [(*case, 3, tile) for tile in (2, 4) for case in _WINOGRAD_CASES_3x3]
    + [
        (*case, 5, 2)
        for case in [
            (3, 4, 5, (9, 11), 2, True),
            (2, 3, 2, (6, 7), 0, True),  # a 2×3 output: the right tiles overhang
            (1, 1, 1, (3, 4), 4, False),  # the widest padding: tiles reading mostly zeros
            (2, 2, 3, (5, 5), 0, True),  # a 1×1 output
            (4, 6, 4, (8, 5), "same", False),
            (2, 5, 3, (7, 6), (1, 3), True),  # unequal padding per axis
            # Over two outputs per input: the forward by channel, the backward re-pads.
            (3, 2, 5, (7, 9), 2, True),
            (1, 1, 3, (6, 5), (2, 1), False),
        ]
    ],
)
def test_winograd_matches_reference(winograd, batch, cin, cout, size, padding, bias, k, tile):
    layer = winograd(cin, cout, padding, bias, k=k, tile=tile)
    x = make_input(batch, cin, size, "strided", seed=batch)
    check_against_reference(layer, x)
    assert layer._x_padded is not None  # the Winograd path was taken
    if k == 5:  # F(2×2, 5×5) by tile (input channels last) or by channel, by the channels
        channels_last = layer._x_padded.shape[-1] == cin and layer._x_padded.ndim == 5
        assert channels_last == (cout <= 2 * cin)


@pytest.mark.parametrize("k, tile", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("cout", [4, 7])  # 7: F(2×2, 5×5)'s forward by channel
def test_winograd_backward_of_a_batch_smaller_than_the_threads(winograd, batch, k, tile, cout):
    # Fewer samples than blocks: the backward shares tile lines among the threads, each adding
    # its input gradient into a private copy of the padded batch (kernels/winograd.py,
    # _block_lines); the copies overlap where neighbouring lines' patches do.
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs two threads")
    threads = min(3, numba.config.NUMBA_NUM_THREADS)
    if batch >= threads:
        pytest.skip("the batch has a sample per thread")
    with tinynet.set_num_threads(threads):
        layer = winograd(3, cout, padding=k // 2, k=k, tile=tile)
        x = make_input(batch, 3, (13, 11), "contiguous", seed=5)
        check_against_reference(layer, x)
        results = []
        for _ in range(2):
            layer.zero_grad()
            y, _, grad_x = run_layer(layer, x)
            results.append((grad_x, layer.weight.grad.copy(), layer.bias.grad.copy()))
    for first, second in zip(*results, strict=True):
        assert np.array_equal(first, second)


@pytest.mark.parametrize("k, tile", KINDS, ids=KIND_IDS)
def test_winograd_float32_error_is_a_few_ulps(winograd, k, tile):
    # The transforms round in float32 on top of the sums: bound the error by the output scale.
    # The 6×6 transforms (F(4×4, 3×3), F(2×2, 5×5)) multiply by up to 8 and add six values a
    # step: a larger bound.
    layer = winograd(16, 24, dtype=np.float32, padding=k // 2, k=k, tile=tile)
    x = make_input(4, 16, (11, 13), "contiguous", seed=7).astype(np.float32)
    y, grad_out, grad_x = run_layer(layer, x)
    args = ((1, 1), reference_padding(layer), (1, 1), 1)
    ref_y = conv_forward(x, layer.weight.data, layer.bias.data, *args)
    ref_gx, ref_gw, _ = conv_backward(x, layer.weight.data, grad_out, *args)
    bound = 1e-5 if (k, tile) == (3, 2) else 3e-5
    for got, ref in [(y, ref_y), (grad_x, ref_gx), (layer.weight.grad, ref_gw)]:
        assert np.abs(got - ref).max() < bound * np.abs(ref).max()


@pytest.mark.parametrize("k, tile", KINDS, ids=KIND_IDS)
def test_winograd_gradcheck(winograd, k, tile):
    layer = winograd(3, 4, padding=k // 2, k=k, tile=tile)
    x = np.random.default_rng(3).standard_normal((2, 3, 5, 7))
    assert gradcheck(layer, x, max_checks=40)


@pytest.mark.parametrize("k, tile", KINDS, ids=KIND_IDS)
def test_winograd_same_input_gives_bit_identical_results(winograd, k, tile):
    x = make_input(9, 8, (9, 7), "contiguous", seed=0).astype(np.float32)
    results = []
    for _ in range(2):
        tinynet.manual_seed(0)
        layer = winograd(8, 8, dtype=np.float32, k=k, tile=tile)
        y, _, grad_x = run_layer(layer, x)
        results.append((y, grad_x, layer.weight.grad, layer.bias.grad))
    for first, second in zip(*results, strict=True):
        assert np.array_equal(first, second)


@pytest.mark.parametrize("k, tile", KINDS, ids=KIND_IDS)
def test_winograd_matches_pytorch_float32(winograd, k, tile):
    torch = pytest.importorskip("torch")
    layer = winograd(8, 6, dtype=np.float32, k=k, tile=tile)
    x = make_input(3, 8, (9, 10), "contiguous", seed=2).astype(np.float32)
    y, grad_out, grad_x = run_layer(layer, x)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(layer.weight.data, requires_grad=True)
    bt = torch.tensor(layer.bias.data, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, bt, padding=1)
    yt.backward(torch.tensor(grad_out))
    assert_close(y, yt.detach().numpy(), rtol=1e-4, atol=1e-4, name="forward")
    assert_close(grad_x, xt.grad.numpy(), rtol=1e-4, atol=1e-4, name="grad input")
    assert_close(layer.weight.grad, wt.grad.numpy(), rtol=1e-4, atol=1e-4, name="grad weight")
    assert_close(layer.bias.grad, bt.grad.numpy(), rtol=1e-4, atol=1e-4, name="grad bias")


def test_winograd_dispatch_rule():
    # Only 3×3 (≥ 8 input channels) and 5×5 (≥ 12) kernels, stride 1, undilated, ungrouped,
    # padding ≤ k − 1 qualify...
    assert Conv2d(8, 4, 3, padding=1)._winograd
    assert Conv2d(16, 16, 3, padding="same")._winograd
    assert Conv2d(12, 4, 5, padding=4)._winograd
    assert Conv2d(32, 64, 5, padding="same")._winograd
    for layer in [
        Conv2d(1, 32, 3, padding=1),
        Conv2d(8, 8, 3, stride=2),
        Conv2d(8, 8, 3, dilation=2),
        Conv2d(8, 8, 3, groups=2),
        Conv2d(8, 8, (3, 5)),
        Conv2d(8, 8, 3, padding=3),
        Conv2d(8, 8, 5, padding=2),
        Conv2d(16, 16, 5, padding=5),
        Conv2d(16, 16, 5, stride=2),
        Conv2d(16, 16, 7, padding=3),
        Conv3d(8, 8, 3),
    ]:
        assert not layer._winograd
    # ... and a forward takes it only with enough tiles; backward follows the forward's path.
    layer = Conv2d(8, 4, 3, padding=1).double()
    layer(np.zeros((8, 8, 16, 16)))
    assert layer._x_padded is not None
    x = make_input(1, 8, (5, 5), "contiguous", seed=1)
    check_against_reference(layer, x)
    assert layer._x_padded is None


@pytest.mark.parametrize("k, tile", KINDS, ids=KIND_IDS)
def test_winograd_relu_flag_clamps_in_the_output_transform(winograd, k, tile):
    layer = winograd(8, 5, dtype=np.float32, padding=k // 2, k=k, tile=tile)
    x = make_input(3, 8, (10, 7), "contiguous", seed=4).astype(np.float32)
    plain = layer(x)
    fused = layer._forward(x, relu=True)
    assert layer._x_padded is not None
    assert_close(fused, np.maximum(plain, 0), rtol=0, atol=0, name="fused relu")


# -- Polyphase Winograd for 3×3 stride 2 (kernels/winograd_s2.py) --------------------------


@pytest.fixture
def winograd_s2(monkeypatch):
    """Make a stride-2 3×3 Conv2d take the polyphase Winograd forward whatever its size and
    channels (the dispatch rule is a speed rule)."""
    monkeypatch.setattr("tinynet.nn.conv_winograd._WINOGRAD_S2_MIN_TILES", 1)
    monkeypatch.setattr("tinynet.nn.conv_winograd._WINOGRAD_S2_MAX_OVERHANG", np.inf)

    def make(cin, cout, padding=1, bias=True, dtype=np.float64):
        layer = Conv2d(cin, cout, 3, stride=2, padding=padding, bias=bias).to(dtype)
        layer._winograd_s2 = True
        return layer

    return make


def _took_winograd_s2(layer):
    """Whether the layer's last forward took the stride-2 Winograd path (its weights in the
    5×5 domain, the phases' channels stacked)."""
    u = layer._work.get("u")
    return u is not None and u.shape == (25, 4 * layer.in_channels, layer.out_channels)


@pytest.mark.parametrize(
    "batch, cin, cout, size, padding, bias",
    [
        (2, 3, 4, (9, 9), 1, True),  # one 4×4 tile a sample, its last row and column cut
        (3, 5, 6, (10, 11), 0, True),
        (1, 4, 3, (7, 5), 2, False),  # the widest padding: tiles reading mostly zeros
        (2, 3, 5, (3, 3), 0, True),  # a 1×1 output
        (2, 2, 3, (34, 18), 0, True),  # the input's last row and column read by no output
        (2, 6, 7, (17, 16), (2, 1), False),  # unequal padding per axis
        (4, 16, 9, (20, 23), 1, True),  # 16 channels: the input's transpose in 16×16 blocks
        (1, 33, 17, (16, 35), 1, True),  # a channel past the blocks; 5 tiles a line
        (2, 16, 5, (34, 34), 0, True),  # blocks, and the last row and column left out
    ],
)
def test_winograd_s2_matches_reference(winograd_s2, batch, cin, cout, size, padding, bias):
    layer = winograd_s2(cin, cout, padding, bias)
    x = make_input(batch, cin, size, "strided", seed=batch)
    check_against_reference(layer, x)
    assert _took_winograd_s2(layer)


@settings(deadline=None, max_examples=25)
@given(
    batch=st.integers(1, 3),
    cin=st.integers(1, 20),
    cout=st.integers(1, 12),
    height=st.integers(1, 26),
    width=st.integers(1, 26),
    padding=st.integers(0, 3),
    float32=st.booleans(),
)
def test_winograd_s2_forward_property(batch, cin, cout, height, width, padding, float32):
    # Any sizes the layer accepts (the padded input at least 3 a side), both float types.
    assume(min(height, width) + 2 * padding >= 3)
    dtype = np.float32 if float32 else np.float64
    layer = Conv2d(cin, cout, 3, stride=2, padding=padding).to(dtype)
    layer._winograd_s2 = True
    layer._winograd_s2_fits = lambda n, out_size: True
    x = make_input(batch, cin, (height, width), "contiguous", seed=cin).astype(dtype)
    y = layer(x)
    assert _took_winograd_s2(layer)
    ref = conv_forward(
        x, layer.weight.data, layer.bias.data, (2, 2), reference_padding(layer), (1, 1), 1
    )
    scale = max(np.abs(ref).max(), 1e-30)
    assert np.abs(y - ref).max() <= (3e-5 if float32 else 1e-12) * scale


def test_winograd_s2_float32_error_and_pytorch(winograd_s2):
    layer = winograd_s2(32, 24, dtype=np.float32)
    x = make_input(4, 32, (21, 18), "contiguous", seed=7).astype(np.float32)
    y = layer(x)
    assert _took_winograd_s2(layer)
    ref = conv_forward(x, layer.weight.data, layer.bias.data, (2, 2), ((1, 1), (1, 1)), (1, 1), 1)
    # The transforms multiply by up to 8 and add up to 5 values a step, as F(4×4, 3×3).
    assert np.abs(y - ref).max() < 3e-5 * np.abs(ref).max()
    torch = pytest.importorskip("torch")
    yt = torch.nn.functional.conv2d(
        torch.tensor(x),
        torch.tensor(layer.weight.data),
        torch.tensor(layer.bias.data),
        stride=2,
        padding=1,
    )
    assert_close(y, yt.numpy(), rtol=1e-4, atol=1e-4, name="forward")


def test_winograd_s2_fused_relu_and_bit_identical_runs(winograd_s2):
    x = make_input(5, 8, (15, 13), "contiguous", seed=4).astype(np.float32)
    layer = winograd_s2(8, 6, dtype=np.float32)
    plain = layer(x)
    assert_close(layer._forward(x, relu=True), np.maximum(plain, 0), rtol=0, atol=0, name="relu")
    assert np.array_equal(layer(x), plain)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(
    "batch, cin, cout, size, padding, bias",
    [
        (3, 3, 4, (9, 9), 1, True),
        (4, 5, 6, (10, 11), 0, False),
        (3, 4, 3, (7, 5), 2, True),  # tiles reading mostly zeros
        (3, 2, 3, (34, 18), 0, True),  # rows and columns no output reads: zero gradient
        (5, 16, 17, (20, 23), (2, 1), True),  # register transposes both ways
        (3, 33, 16, (16, 35), 1, False),
    ],
)
def test_winograd_s2_backward_matches_reference(
    winograd_s2, threads, batch, cin, cout, size, padding, bias
):
    # The Winograd backward needs a sample per thread; chunks of tile lines cross samples.
    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"needs {threads} threads")
    with tinynet.set_num_threads(threads):
        layer = winograd_s2(cin, cout, padding, bias)
        x = make_input(batch, cin, size, "strided", seed=batch)
        check_against_reference(layer, x)
        assert _took_winograd_s2(layer) and "gbuf" in layer._work  # both directions


def test_winograd_s2_gradcheck_and_determinism(winograd_s2, monkeypatch):
    from tinynet.kernels import winograd_s2 as kernels

    calls = []
    backward = kernels.winograd_s2_backward

    def counted(*args):
        calls.append(1)
        return backward(*args)

    monkeypatch.setattr(kernels, "winograd_s2_backward", counted)
    with tinynet.set_num_threads(1):
        layer = winograd_s2(3, 4, padding=1)
        x = np.random.default_rng(3).standard_normal((2, 3, 9, 7))
        assert gradcheck(layer, x, max_checks=40)
    assert calls  # gradcheck's backward was the Winograd one
    x = make_input(6, 8, (13, 11), "contiguous", seed=0).astype(np.float32)
    results = []
    for _ in range(2):
        tinynet.manual_seed(0)
        layer = winograd_s2(8, 8, dtype=np.float32)
        y, _, grad_x = run_layer(layer, x)
        results.append((y, grad_x, layer.weight.grad, layer.bias.grad))
    for first, second in zip(*results, strict=True):
        assert np.array_equal(first, second)


def test_winograd_s2_backward_matches_pytorch_float32(winograd_s2):
    torch = pytest.importorskip("torch")
    layer = winograd_s2(32, 24, dtype=np.float32)
    x = make_input(4, 32, (21, 18), "contiguous", seed=2).astype(np.float32)
    with tinynet.set_num_threads(2):
        y, grad_out, grad_x = run_layer(layer, x)
    assert "gbuf" in layer._work
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(layer.weight.data, requires_grad=True)
    bt = torch.tensor(layer.bias.data, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, bt, stride=2, padding=1)
    yt.backward(torch.tensor(grad_out))
    # Bounded by each gradient's scale: the 5×5 transforms add up to 5 values a step.
    for got, ref in [(grad_x, xt.grad), (layer.weight.grad, wt.grad), (layer.bias.grad, bt.grad)]:
        ref = ref.numpy()
        assert np.abs(got - ref).max() < 3e-5 * np.abs(ref).max()


def test_winograd_s2_input_gradient_across_chunks():
    # A chunk of tile lines may end inside a sample: the next call must take the line
    # above's last row of the sample's gradient from gbuf, which persists between calls,
    # not from anything of its own (memory freed in between is filled with NaN here).
    from tinynet.kernels import winograd_s2 as ws

    n_channels, th, tw = 16, 3, 2
    rng = np.random.default_rng(0)
    grad_x = np.empty((2, n_channels, 8 * th, 8 * tw))
    depths = [ws.depth(a, b) * n_channels for a in range(5) for b in range(5)]
    tiles = 2 * th * tw  # both samples
    v = np.zeros((25, 4 * n_channels * tiles))
    for xi, depth in enumerate(depths):
        v[xi, : depth * tiles] = rng.standard_normal(depth * tiles)
    size = (8 * th + 1) * (8 * tw + 1) * n_channels
    whole = np.empty_like(grad_x)
    ws._input_transform_backward(v, 1, 1, th, tw, 0, 2 * th, np.empty(size), whole)
    split = np.empty_like(grad_x)
    gbuf = np.empty(size)
    for line0, line1 in [(0, 2), (2, 4), (4, 6)]:  # lines 0–2 are sample 0's, 3–5 sample 1's
        part = np.zeros_like(v)
        for xi, depth in enumerate(depths):  # the chunk's tiles, renumbered from 0
            rows = v[xi, : depth * tiles].reshape(tiles, depth)[line0 * tw : line1 * tw]
            part[xi, : rows.size] = rows.reshape(-1)
        ws._input_transform_backward(part, 1, 1, th, tw, line0, line1, gbuf, split)
        for count in range(1, 4 * size // n_channels, 7):  # dirty the memory the call freed
            np.full(count, np.nan)
    assert_close(split, whole, rtol=1e-12, atol=1e-12, name="chunks")


def test_winograd_s2_transposes_are_transposes():
    # <T d, r> = <d, Tᵀ r> and <Aᵀ m, g> = <m, A g> for random vectors (float64).
    from tinynet.kernels import winograd_s2

    k = winograd_s2._constants(np.dtype(np.float64))
    rng = np.random.default_rng(0)
    for _ in range(5):
        d, r = rng.standard_normal(9), rng.standard_normal(9)
        lhs = np.dot(winograd_s2._t(tuple(d), k), r)
        assert lhs == pytest.approx(np.dot(d, winograd_s2._tt(tuple(r), k)), rel=1e-12)
        m, g = rng.standard_normal(5), rng.standard_normal(4)
        lhs = np.dot(winograd_s2._at(tuple(m), k), g)
        assert lhs == pytest.approx(np.dot(m, winograd_s2._a(*g, k)), rel=1e-12)


def test_winograd_s2_dispatch_rule():
    # 3×3 stride 2, undilated, ungrouped, 2-D, ≥ 32 inputs and ≥ 48 outputs...
    assert Conv2d(32, 64, 3, stride=2, padding=1)._winograd_s2
    assert Conv2d(64, 48, 3, stride=2)._winograd_s2
    for layer in [
        Conv2d(16, 64, 3, stride=2, padding=1),
        Conv2d(32, 32, 3, stride=2, padding=1),
        Conv2d(32, 64, 3, padding=1),
        Conv2d(32, 64, 3, stride=(2, 1), padding=1),
        Conv2d(32, 64, 3, stride=2, dilation=2),
        Conv2d(32, 64, 3, stride=2, groups=2),
        Conv2d(32, 64, 5, stride=2),
        Conv3d(32, 64, 3, stride=2),
    ]:
        assert not layer._winograd_s2
    # ... and a forward takes it only with enough 4×4 output tiles (64), overhanging the
    # output by at most 15% unless the layer's other path is vol2col; the backward is the
    # one the layer takes otherwise.
    with tinynet.set_num_threads(2):
        assert Conv2d(32, 64, 3, stride=2, padding=1)._winograd_s2_fits(4, (16, 16))
        assert not Conv2d(32, 64, 3, stride=2, padding=1)._winograd_s2_fits(3, (16, 16))
        assert not Conv2d(32, 64, 3, stride=2, padding=1)._winograd_s2_fits(64, (14, 14))
        assert Conv2d(64, 64, 3, stride=2, padding=1)._winograd_s2_fits(64, (14, 14))
        # Its own backward: a sample per thread, at most 4096 channel pairs.
        assert Conv2d(64, 64, 3, stride=2, padding=1)._winograd_s2_backward_fits(2)
        assert not Conv2d(64, 64, 3, stride=2, padding=1)._winograd_s2_backward_fits(1)
        assert not Conv2d(32, 192, 3, stride=2, padding=1)._winograd_s2_backward_fits(64)
    layer = Conv2d(32, 48, 3, stride=2, padding=1).double()
    layer(np.zeros((4, 32, 32, 32)))  # 4 samples of 4 × 4 tiles
    assert _took_winograd_s2(layer)
    # The compile groups and the profiler name it.
    from tinynet.kernel_cache import group_key
    from tinynet.profiler import algorithm

    assert group_key(layer, (4, 32, 32, 32)) == "Conv2d:winograd_s2"
    assert algorithm(layer, (4, 32, 32, 32)) == "Winograd F(4x4, 2x2) polyphase"
    small = Conv2d(32, 48, 3, stride=2, padding=1).double()
    check_against_reference(small, make_input(1, 32, (8, 8), "contiguous", seed=1))
    assert not _took_winograd_s2(small)


def test_winograd_s2_weight_transform_matches_its_matrices():
    from tinynet.kernels import winograd_s2

    # G for the points 0, 1, −1, 2, ∞ (the module docstring); phase (r, c) takes the taps
    # w[r + 2i, c + 2j] (zero past the kernel) and the plane (a, b) stacks the phases whose
    # transformed kernel is not zero there, in the order 00, 01, 10, 11.
    g = np.array([[1 / 2, 0], [-1 / 2, -1 / 2], [-1 / 6, 1 / 6], [1 / 6, 1 / 3], [0, 1]])
    weight = np.random.default_rng(0).standard_normal((3, 2, 3, 3))
    u = np.full((25, 8, 3), np.nan)
    winograd_s2.weight_transform(weight, u)
    padded = np.zeros((3, 2, 4, 4))
    padded[:, :, :3, :3] = weight
    for a in range(5):
        for b in range(5):
            present = [
                (r, c) for r in (0, 1) for c in (0, 1) if (r, a) != (1, 4) and (c, b) != (1, 4)
            ]
            assert winograd_s2.depth(a, b) == len(present)
            for slot, (r, c) in enumerate(present):
                for o in range(3):
                    for i in range(2):
                        kernel = padded[o, i, r::2, c::2]
                        want = (g @ kernel @ g.T)[a, b]
                        assert u[5 * a + b, slot * 2 + i, o] == pytest.approx(want, abs=1e-14)


def test_winograd_tile_rule():
    """F(4×4, 3×3) where it needs at most 60% of F(2×2)'s products and has enough tiles;
    the backward uses the forward's tile even if the thread count changed in between."""
    with tinynet.set_num_threads(2):
        assert Conv2d(16, 32, 3, padding=1)._winograd_tile(64, (32, 32)) == 4
        assert Conv2d(32, 32, 3, padding=1)._winograd_tile(64, (28, 28)) == 4
        assert Conv2d(32, 64, 3, padding=1)._winograd_tile(64, (14, 14)) == 2  # 73%: overhang
        assert Conv2d(128, 128, 3, padding=1)._winograd_tile(16, (8, 8)) == 2  # 64 tiles
        assert Conv2d(32, 32, 5, padding=2)._winograd_tile(64, (32, 32)) == 2  # 5×5
        assert Conv2d(8, 4, 3, padding=1)._winograd_tile(16, (16, 16)) == 4
    with tinynet.set_num_threads(1):
        assert Conv2d(8, 4, 3, padding=1)._winograd_tile(8, (16, 16)) == 4  # 128 tiles, 1 thread
    # A 10×10 output pads differently for each tile (12 or 14 rows): a backward that asked
    # the rule again, after it changed its answer, would read the padded input wrongly.
    layer = Conv2d(8, 4, 3, padding=1).double()
    x = make_input(16, 8, (10, 10), "contiguous", seed=5)
    layer._winograd_tile = lambda n, out_size: 4
    y = layer(x)
    assert layer._x_padded is not None
    layer._winograd_tile = lambda n, out_size: 2  # as if the thread count had changed it
    grad_out = np.random.default_rng(1).standard_normal(y.shape)
    grad_x = layer.backward(grad_out)
    args = ((1, 1), reference_padding(layer), (1, 1), 1)
    ref_gx, ref_gw, _ = conv_backward(x, layer.weight.data, grad_out, *args)
    assert_close(grad_x, ref_gx, rtol=1e-9, atol=1e-9, name="grad input")
    assert_close(layer.weight.grad, ref_gw, rtol=1e-9, atol=1e-9, name="grad weight")


@pytest.mark.parametrize(
    "channels, multiplier, size, kwargs",
    [
        (16, 1, (16, 16), dict(kernel_size=5, stride=2, dilation=2)),
        (20, 2, (9, 7), dict(kernel_size=3, stride=2, padding=1)),  # blocks overlap
        (33, 1, (4, 5, 6), dict(kernel_size=3, stride=(1, 2, 1), padding=(1, 0, 2))),
        (64, 1, (15, 17), dict(kernel_size=3, stride=(2, 3), dilation=(1, 2))),
    ],
)
def test_depthwise_small_plane_transposes_by_blocks(channels, multiplier, size, kwargs):
    """The depthwise kernel across channels (conv_forward_depthwise_small) copies each sample
    channels-last through vector.transpose's 16 × 16 blocks once there are 16 channels and
    16 positions: against the reference, a block's overlap at each end included."""
    from unittest import mock

    layer = CLASSES[len(size)](channels, channels * multiplier, groups=channels, **kwargs)
    layer = layer.double()
    x = np.random.default_rng(9).standard_normal((2, channels, *size))
    from tinynet.kernel_cache import group_key
    from tinynet.kernels import conv as conv_kernels

    assert group_key(layer, x.shape) == "Conv:direct"
    with (
        mock.patch("tinynet.nn.conv._SMALL_PLANE", 10**9),
        mock.patch.object(
            conv_kernels,
            "conv_forward_depthwise_small",
            wraps=conv_kernels.conv_forward_depthwise_small,
        ) as kernel,
        tinynet.set_num_threads(2),
    ):
        check_against_reference(layer, x)
    assert kernel.called


# -- the direct 3×3 and 5×5 path for few input channels (kernels/conv_small.py) --------------


@given(
    kernel=st.sampled_from([3, 5]),
    cin=st.integers(1, 16),  # per group; capped below at the path's limit
    cout=st.integers(1, 9),
    # Grouped: channels per group as drawn, times the groups (depthwise when cin is 1).
    groups=st.sampled_from([1, 1, 2, 3]),
    # Padding k leaves the direct input gradient (it needs ≤ k − 1) for another path.
    padding=st.sampled_from([0, 1, 2, (2, 0), (0, 3), 3, 4, 5, "same"]),
    height=st.integers(5, 9),
    width=st.integers(5, 11),
    batch=st.integers(1, 5),
    bias=st.booleans(),
    threads=st.sampled_from([1, 2]),
)
@settings(max_examples=60, deadline=None)
def test_small_channel_direct_path_matches_reference(
    kernel, cin, cout, groups, padding, height, width, batch, bias, threads
):
    tinynet.manual_seed(0)
    cin = min(cin, _small_max_channels(kernel, groups))
    cin, cout = cin * groups, cout * groups
    layer = Conv2d(cin, cout, kernel, padding=padding, groups=groups, bias=bias).double()
    assert layer._small  # this path, not vol2col or the general direct loops
    x = np.random.default_rng(1).standard_normal((batch, cin, height, width))
    with tinynet.set_num_threads(threads):
        check_direct_path(layer, x)


def check_direct_path(layer, x):
    """The reference check, then the parameter gradients alone (a first layer in training),
    which the direct kernels compute without the input gradient: the same values."""
    check_against_reference(layer, x, rtol=1e-11, atol=1e-11)
    gw, gb = layer.weight.grad.copy(), None if layer.bias is None else layer.bias.grad.copy()
    layer.zero_grad()
    y = layer(x)
    grad_out = np.random.default_rng(1).standard_normal(y.shape)
    assert layer.backward(grad_out, input_grad=False) is None
    assert_close(layer.weight.grad, gw, rtol=1e-12, atol=1e-12, name="grad weight")
    if layer.bias is not None:
        assert_close(layer.bias.grad, gb, rtol=1e-12, atol=1e-12, name="grad bias")


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize(
    "cin, cout, groups",
    [(6, 9, 3), (4, 8, 2), (3, 7, 1), (2, 2, 2), (1, 1, 1), (5, 10, 5)],
)
def test_small_channel_pairs_stay_within_their_group(kernel, cin, cout, groups):
    """The direct kernels compute two output channels of a group per pass: odd groups end
    with one channel alone, and a pair never spans two groups (which read other input
    channels)."""
    layer = Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups).double()
    assert layer._small
    x = np.random.default_rng(3).standard_normal((3, cin, 7, 9))
    with tinynet.set_num_threads(2):
        check_against_reference(layer, x, rtol=1e-11, atol=1e-11)


def test_small_channel_path_only_where_it_applies():
    assert Conv2d(3, 8, 3, padding=1)._small
    assert not Conv2d(8, 8, 3, padding=1)._small  # Winograd or vol2col
    assert not Conv2d(3, 8, 3, stride=2)._small
    assert Conv2d(3, 8, 5)._small and Conv2d(64, 64, 5, padding=2, groups=64)._small
    assert Conv2d(6, 16, 5)._small  # LeNet-5's second layer
    assert Conv2d(8, 16, 5)._small and Conv2d(11, 16, 5)._small  # two channels per pass
    assert not Conv2d(12, 16, 5)._small  # Winograd F(2×2, 5×5) from 12
    assert Conv2d(32, 64, 5, groups=2)._small  # 16 per group: a GEMM per group otherwise
    assert not Conv2d(34, 64, 5, groups=2)._small
    assert not Conv2d(3, 8, 7)._small
    assert Conv2d(7, 8, 3)._small
    assert Conv2d(4, 8, 3, groups=2)._small
    assert Conv2d(64, 64, 3, padding=1, groups=64)._small  # depthwise
    assert Conv2d(32, 64, 3, groups=2)._small  # 16 channels per group
    assert not Conv2d(64, 64, 3, groups=2)._small  # 32 per group: a GEMM per group wins
    assert not Conv2d(64, 64, 3, stride=2, groups=64)._small
    assert not Conv3d(1, 8, 3)._small


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("shape", [(3, 4, 7, 9), (2, 5, 1, 1), (1, 3, 2, 6), (2, 6, 9, 1)])
@pytest.mark.parametrize("threads", [1, 2])
def test_depthwise_same_path_matches_reference(kernel, shape, threads):
    """The depthwise 'same' kernel (conv_small.conv2d_depthwise_same_forward, forward and
    the backward's input gradient): planes in their own row length, the taps that would
    cross a side edge dropped by column; planes narrower than the kernel included."""
    channels = shape[1]
    layer = Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels).double()
    assert layer._depthwise_same()
    x = np.random.default_rng(4).standard_normal(shape)
    with tinynet.set_num_threads(threads):
        check_direct_path(layer, x)
        fused = layer._forward(x, relu=True)
    assert_close(fused, np.maximum(layer(x), 0), rtol=0, atol=0, name="fused relu")


@pytest.mark.parametrize("kernel", [3, 5])
def test_depthwise_same_inf_stays_in_its_windows(kernel):
    """The taps that cross a side edge read the neighbouring row's end: an inf there must
    not reach outputs whose window does not hold it (they are dropped, not multiplied by 0)."""
    layer = Conv2d(2, 2, kernel, padding=kernel // 2, groups=2).double()
    x = np.random.default_rng(5).standard_normal((1, 2, 6, 7))
    x[0, 0, 2, 6] = np.inf  # the last column: row 3's first outputs would wrap onto it
    x[0, 1, 4, 0] = -np.inf  # the first column
    y, args = check_infinities_confined(layer, x)
    # The weight gradient likewise: a tap that never reads the inf keeps a finite gradient.
    grad_out = np.random.default_rng(6).standard_normal(y.shape)
    layer.zero_grad()
    layer.backward(grad_out, input_grad=False)
    gw = conv_backward(x, layer.weight.data, grad_out, *args)[1]
    assert np.array_equal(np.isfinite(layer.weight.grad), np.isfinite(gw))
    assert np.isfinite(gw).any()
    finite = np.isfinite(gw)
    assert_close(layer.weight.grad[finite], gw[finite], rtol=1e-12, atol=1e-12, name="grad w")


def test_depthwise_same_path_only_where_it_applies():
    assert Conv2d(8, 8, 3, padding=1, groups=8)._depthwise_same()
    assert Conv2d(8, 8, 5, padding="same", groups=8)._depthwise_same()
    assert not Conv2d(8, 8, 3, padding=0, groups=8)._depthwise_same()  # the general planes
    assert not Conv2d(8, 8, 5, padding=(2, 1), groups=8)._depthwise_same()
    assert not Conv2d(8, 16, 3, padding=1, groups=8)._depthwise_same()  # a multiplier of 2
    assert not Conv2d(8, 8, 3, padding=1, groups=4)._depthwise_same()


@pytest.mark.parametrize(
    "cin, cout, groups, shape",
    [
        (1, 32, 1, (3, 9, 11)),
        (3, 5, 1, (2, 7, 6)),
        (4, 3, 1, (1, 1, 1)),  # one position: every tap but the centre crosses an edge
        (2, 6, 2, (3, 2, 9)),  # grouped, planes of two rows
        (6, 3, 3, (2, 6, 1)),  # one column; 2 → 1 per group, and the input gradient 1 → 2
        (6, 2, 1, (2, 5, 7)),  # the input gradient alone (2 → 6) on shifted copies
    ],
)
@pytest.mark.parametrize("threads", [1, 2])
def test_small_same_path_matches_reference(cin, cout, groups, shape, threads):
    """The 3×3 "same" kernel on shifted copies (conv_small.conv2d_small_same_forward): each
    channel copied once per kernel column, the columns a shift wraps zeroed; planes narrower
    than the kernel, odd output counts, groups; forward and input gradient."""
    layer = Conv2d(cin, cout, 3, padding=1, groups=groups).double()
    forward_fits = layer._column_copies_fit(cin // groups)
    assert forward_fits or layer._column_copies_fit(cout // groups)
    x = np.random.default_rng(7).standard_normal((shape[0], cin, *shape[1:]))
    with tinynet.set_num_threads(threads):
        check_direct_path(layer, x)
        fused = layer._forward(x, relu=True)
    assert_close(fused, np.maximum(layer(x), 0), rtol=0, atol=0, name="fused relu")


def test_small_same_inf_stays_in_its_windows():
    """A shifted copy moves a row's last (first) value next to the following (preceding)
    row; those places are zeroed, so an inf reaches only the outputs whose window holds it."""
    layer = Conv2d(2, 3, 3, padding=1).double()
    assert layer._column_copies_fit(2)
    x = np.random.default_rng(8).standard_normal((1, 2, 6, 7))
    x[0, 0, 2, 6] = np.inf
    x[0, 1, 4, 0] = -np.inf
    check_infinities_confined(layer, x)


def check_infinities_confined(layer, x):
    """The layer's forward has an inf (or NaN) exactly where the reference has, and the
    reference's values elsewhere. Returns the output and the reference's geometry."""
    y = layer(x)
    args = ((1, 1), reference_padding(layer), (1, 1), layer.groups)
    ref = conv_forward(x, layer.weight.data, layer.bias.data, *args)
    assert np.array_equal(np.isfinite(y), np.isfinite(ref))
    finite = np.isfinite(ref)
    assert_close(y[finite], ref[finite], rtol=1e-12, atol=1e-12, name="finite outputs")
    return y, args


def test_small_same_path_only_where_it_applies():
    assert Conv2d(1, 32, 3, padding=1)._column_copies_fit(1)
    assert Conv2d(4, 16, 3, padding="same")._column_copies_fit(4)
    assert not Conv2d(5, 16, 3, padding=1)._column_copies_fit(5)  # more streams than saved
    assert not Conv2d(1, 32, 3, padding=0)._column_copies_fit(1)  # the padded work plane
    assert not Conv2d(1, 32, 3, padding=(1, 0))._column_copies_fit(1)
    assert not Conv2d(1, 6, 5, padding=2)._column_copies_fit(1)  # 5×5: measured slower


# -- the direct 3×3×3 path for few input channels (kernels/conv_small3d.py) ------------------


@given(
    cin=st.integers(1, 4),  # per group
    cout=st.integers(1, 5),  # per group; odd counts end with one channel alone (two per pass)
    groups=st.sampled_from([1, 1, 2, 3]),  # depthwise when cin is 1
    # Padding 3 sends the input gradient to the plane path (the direct one needs ≤ 2).
    padding=st.sampled_from([0, 1, 2, (2, 0, 1), (0, 1, 3), 3, "same"]),
    size=st.tuples(st.integers(3, 7), st.integers(3, 7), st.integers(3, 8)),
    batch=st.integers(1, 3),
    bias=st.booleans(),
    threads=st.sampled_from([1, 2]),
)
@settings(max_examples=40, deadline=None)
def test_small_channel_3d_path_matches_reference(
    cin, cout, groups, padding, size, batch, bias, threads
):
    tinynet.manual_seed(0)
    cin, cout = cin * groups, cout * groups
    layer = Conv3d(cin, cout, 3, padding=padding, groups=groups, bias=bias).double()
    x = np.random.default_rng(1).standard_normal((batch, cin, *size))
    with tinynet.set_num_threads(threads):
        check_direct_path(layer, x)
        assert layer._x_volume is not None  # this path, not the plane path


def test_small_channel_3d_path_float32_torch_threads_and_relu():
    """float32 against PyTorch on a first-layer shape; 1 and 2 threads give the same bits (each
    output and weight gradient is summed by one item in a fixed order); the fused ReLU."""
    tinynet.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((3, 1, 12, 10, 11)).astype(np.float32)
    layer = Conv3d(1, 5, 3, padding=1)
    results = []
    for threads in (1, 2):
        layer.zero_grad()
        with tinynet.set_num_threads(threads):
            y = layer(x)
            grad_x = layer.backward(np.cos(y))
        results.append((y, grad_x, layer.weight.grad.copy(), layer.bias.grad.copy()))
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)
    assert_close(layer._forward(x, relu=True), np.maximum(y, 0), rtol=0, atol=0, name="relu")
    torch = pytest.importorskip("torch")
    reference = torch.nn.Conv3d(1, 5, 3, padding=1)
    reference.weight.data = torch.from_numpy(layer.weight.data.copy())
    reference.bias.data = torch.from_numpy(layer.bias.data.copy())
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = reference(xt)
    yt.backward(torch.cos(yt))
    assert_close(y, yt.detach().numpy(), rtol=1e-5, atol=1e-5, name="forward vs torch")
    assert_close(grad_x, xt.grad.numpy(), rtol=1e-5, atol=1e-5, name="grad input vs torch")
    grad_w = reference.weight.grad.numpy()
    assert_close(results[0][2], grad_w, rtol=1e-4, atol=1e-4, name="grad weight vs torch")


def test_small_channel_3d_path_only_where_it_applies():
    assert Conv3d(1, 16, 3, padding=1)._small3d and Conv3d(4, 8, 3)._small3d
    assert not Conv3d(5, 8, 3)._small3d  # Winograd or the plane path
    assert not Conv3d(1, 8, 3, stride=2)._small3d
    assert not Conv3d(1, 8, 3, dilation=2)._small3d
    assert Conv3d(2, 4, 3, groups=2)._small3d and Conv3d(32, 32, 3, groups=32)._small3d
    assert Conv3d(8, 8, 3, groups=2)._small3d and not Conv3d(10, 10, 3, groups=2)._small3d
    assert not Conv3d(1, 8, (3, 3, 1))._small3d
    assert not Conv2d(1, 8, 3)._small3d


@given(
    size=st.integers(1, 5000),
    blocks=st.integers(1, 8),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_work_rows_are_a_cache_line_apart(size, blocks, dtype):
    """Per-thread work rows: the used part of row t ends at least 64 bytes before row t + 1
    starts, so two threads never write into one cache line, whatever the base address."""
    rows = Conv2d(2, 2, 3)._rows("probe", blocks, size, dtype)
    assert rows.shape[0] == blocks and rows.dtype == dtype
    assert (rows.shape[1] - size) * rows.itemsize >= 64


# -- the Winograd weight transforms, against their matrices ----------------------------------

_G3 = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
_G43 = np.array(
    [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
     [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]
)  # fmt: skip
_G5 = np.array(
    [[1 / 4, 0, 0, 0, 0], [-1 / 6, -1 / 6, -1 / 6, -1 / 6, -1 / 6],
     [-1 / 6, 1 / 6, -1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6, 1 / 3, 2 / 3],
     [1 / 24, -1 / 12, 1 / 6, -1 / 3, 2 / 3], [0, 0, 0, 0, 1]]
)  # fmt: skip


def _kron(g, dims):
    """The matrix of the weight transform on a flattened kernel: G⊗G (G⊗G⊗G for 3-D), so
    that U[ξ] = Σ_t K[ξ, t]·g[t] with ξ and t in row-major order."""
    k = g
    for _ in range(dims - 1):
        k = np.kron(k, g)
    return k


@pytest.mark.parametrize(
    "module, name, g, shape",
    [
        ("winograd", "winograd", _G3, (64, 60, 3, 3)),
        ("winograd4", "winograd4", _G43, (64, 60, 3, 3)),
        ("winograd5", "winograd5", _G5, (48, 32, 5, 5)),
        ("winograd3d", "winograd3d", _G3, (48, 32, 3, 3, 3)),
    ],
)
def test_winograd_weight_transforms_match_their_matrices(module, name, g, shape):
    """U = G g Gᵀ and its transpose, grad_w = Gᵀ grad_u G, against their Kronecker
    matrices, on 1 and 2 threads (layers this large run the transforms in parallel over
    output channels): the same bits on both."""
    import importlib

    kernels = importlib.import_module(f"tinynet.kernels.{module}")
    forward = getattr(kernels, f"{name}_weight_transform")
    backward = getattr(kernels, f"{name}_weight_transform_backward")
    assert np.prod(shape) >= tinynet.config.SERIAL_BELOW  # large enough to run in parallel
    rng = np.random.default_rng(0)
    weight = rng.standard_normal(shape)
    kron = _kron(g, weight.ndim - 2)
    flat = weight.reshape(shape[0] * shape[1], -1)
    expected = (kron @ flat.T).reshape(-1, *shape[:2])
    grad_u = rng.standard_normal(expected.shape)
    expected_grad = (kron.T @ grad_u.reshape(len(kron), -1)).T.reshape(shape)
    results = []
    for threads in (1, 2):
        u = np.empty_like(expected)
        grad_w = np.empty_like(weight)
        with tinynet.set_num_threads(threads):
            forward(weight, u)
            backward(grad_u, grad_w)
        assert_close(u, expected, rtol=1e-12, atol=1e-12, name="U")
        assert_close(grad_w, expected_grad, rtol=1e-12, atol=1e-12, name="grad weight")
        results.append((u, grad_w))
    assert np.array_equal(results[0][0], results[1][0])
    assert np.array_equal(results[0][1], results[1][1])


@pytest.mark.parametrize(
    "dims, args, size, work",
    [
        (2, (64, 16, 3, 2, 1), 56, "cols"),  # in, out, kernel, stride, padding
        (2, (16, 16, 7, 1, 0), 32, "cols"),
        (3, (8, 16, 5, 2, 2), 16, "rows"),
        (3, (16, 32, 3, 1, 1), 16, "v"),
    ],
)
def test_a_batch_smaller_than_the_threads_shares_its_work(dims, args, size, work):
    """A forward on fewer samples than threads (one image, at inference) splits each sample's
    output among the threads (output tiles for vol2col + BLAS, output planes for the plane
    path, tile lines for 3-D Winograd): every thread gets a block of work, and the result is
    the reference's, float64."""
    tinynet.manual_seed(0)
    layer = CLASSES[dims](*args).double()
    layer._shifted = False  # vol2col's tiles (the shifted products' runs: a test of their own)
    x = make_input(1, args[0], (size,) * dims, "contiguous", seed=1)
    with tinynet.set_num_threads(2):
        check_against_reference(layer, x)
        layer.forward(x)
    assert layer._work[work].shape[0] == 2  # two blocks of work: both threads had some
