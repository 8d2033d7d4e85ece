"""Conv3d's Winograd paths, F(2×2×2, 3×3×3) (kernels/winograd3d.py) and F(4×4, 3×3) per depth
tap (kernels/winograd3d4.py), against the NumPy reference, central differences and PyTorch;
when each is taken; determinism."""

from __future__ import annotations

import contextlib
import copy
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference.conv import conv_backward, conv_forward

import tinynet
from tinynet.nn import Conv3d, conv_winograd3d
from tinynet.testing import assert_close, gradcheck

FORMS = (2, 4)  # F(2×2×2, 3×3×3) and F(4×4, 3×3) per depth tap


def any_size(form=2, plane_tiles=None):
    """The paths' size thresholds lowered, so that small (fast) shapes take the Winograd path
    ``form`` (and layers built meanwhile with 1 to 3 output channels do not take the direct
    forward instead); ``plane_tiles`` sets the F(4×4) chunk (1: an output plane a chunk)."""
    stack = contextlib.ExitStack()
    stack.enter_context(
        mock.patch.multiple(conv_winograd3d, _MIN_CHANNELS=1, _MIN_TILES=1, _MIN_LINE=1)
    )
    stack.enter_context(mock.patch("tinynet.nn.conv._FEW_OUTPUTS", 0))
    stack.enter_context(
        mock.patch.object(
            conv_winograd3d.Winograd3dMixin,
            "_winograd3d_form",
            lambda self, n, out_size: form if self._winograd3d else 0,
        )
    )
    if plane_tiles is not None:
        stack.enter_context(mock.patch.object(conv_winograd3d, "_PLANE_TILES", plane_tiles))
    return stack


def run_layer(layer, x, seed=1, form=None):
    """Forward, then backward of a random gradient; returns (y, grad_out, grad_x)."""
    y = layer(x)
    assert layer._x_padded is not None, "expected the Winograd path"
    if form is not None:
        assert layer._winograd3d_f4 == (form == 4), "expected the other Winograd path"
    grad_out = np.random.default_rng(seed).standard_normal(y.shape).astype(y.dtype)
    return y, grad_out, layer.backward(grad_out)


def check_against_reference(layer, x, tol, form=None):
    """The three gradients and the output against the float64 NumPy reference; ``tol`` is
    relative to each result's largest magnitude (Winograd's float32 error scales with it)."""
    layer.zero_grad()
    y, grad_out, grad_x = run_layer(layer, x, form=form)
    padding = tuple(zip(layer._pad_low, layer._pad_high, strict=True))
    args = (layer.stride, padding, layer.dilation, layer.groups)
    weight = layer.weight.data.astype(np.float64)
    bias = None if layer.bias is None else layer.bias.data.astype(np.float64)
    x64, g64 = x.astype(np.float64), grad_out.astype(np.float64)
    gx, gw, gb = conv_backward(x64, weight, g64, *args)
    pairs = [(y, conv_forward(x64, weight, bias, *args), "forward"), (grad_x, gx, "grad input")]
    pairs.append((layer.weight.grad, gw, "grad weight"))
    if layer.bias is not None:
        pairs.append((layer.bias.grad, gb, "grad bias"))
    for got, expected, name in pairs:
        scale = max(1.0, float(np.abs(expected).max()))
        assert_close(got, expected, rtol=0, atol=tol * scale, name=name)


@st.composite
def winograd_configs(draw):
    """3×3×3 stride-1 Conv3d with padding 0 .. 2 per axis and odd or even sizes."""
    padding = tuple(draw(st.integers(0, 2)) for _ in range(3))
    size = tuple(max(1, 3 - 2 * p) + draw(st.integers(0, 4)) for p in padding)
    layer = dict(
        in_channels=draw(st.integers(1, 4)),
        out_channels=draw(st.integers(3, 5)),  # 1 or 2 take the direct loops
        kernel_size=3,
        padding=padding,
        bias=draw(st.booleans()),
    )
    return layer, draw(st.integers(1, 3)), size


@pytest.mark.parametrize("form", FORMS)
@settings(max_examples=25, deadline=None)
@given(
    config=winograd_configs(),
    seed=st.integers(0, 2**16),
    float32=st.booleans(),
    plane_tiles=st.sampled_from([1, 5, 256]),  # F(4×4) chunks of 1, 1 .. 5 or all planes
)
def test_matches_reference(form, config, seed, float32, plane_tiles):
    kwargs, batch, size = config
    tinynet.manual_seed(seed)
    x = np.random.default_rng(seed).standard_normal((batch, kwargs["in_channels"], *size))
    with any_size(form, plane_tiles):
        layer = Conv3d(**kwargs) if float32 else Conv3d(**kwargs).double()
        check_against_reference(layer, x.astype(layer.dtype), 1e-5 if float32 else 1e-12, form)


@pytest.mark.parametrize("form", FORMS)
def test_gradcheck_float64(form):
    tinynet.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5, 4))
    with any_size(form, plane_tiles=1):  # F(4×4): a chunk per output plane
        layer = Conv3d(2, 4, 3, padding=(1, 0, 2)).double()
        layer(x)
        assert layer._x_padded is not None
        assert layer._winograd3d_f4 == (form == 4)
        gradcheck(layer, x)


@pytest.mark.parametrize("form", FORMS)
def test_matches_torch_float32_at_the_path_shape(form):
    torch = pytest.importorskip("torch")
    tinynet.manual_seed(0)
    layer = Conv3d(16, 8, 3, padding=1)
    x = np.random.default_rng(0).standard_normal((2, 16, 16, 16, 16)).astype(np.float32)
    ref = torch.nn.Conv3d(16, 8, 3, padding=1).double()
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(layer.weight.data.astype(np.float64)))
        ref.bias.copy_(torch.from_numpy(layer.bias.data.astype(np.float64)))
    with any_size(form):
        y, grad_out, grad_x = run_layer(layer, x, form=form)
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    yt = ref(xt)
    yt.backward(torch.from_numpy(grad_out.astype(np.float64)))
    for got, expected, name in [
        (y, yt.detach().numpy(), "forward"),
        (grad_x, xt.grad.numpy(), "grad input"),
        (layer.weight.grad, ref.weight.grad.numpy(), "grad weight"),
        (layer.bias.grad, ref.bias.grad.numpy(), "grad bias"),
    ]:
        assert_close(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max(), name=name)


@pytest.mark.parametrize("form", FORMS)
def test_relu_flag_clamps_in_the_output_transform(form):
    tinynet.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 4, 6)).astype(np.float32)
    with any_size(form):
        layer = Conv3d(3, 4, 3, padding=1)
        plain = layer(x)
        fused = layer._forward(x, relu=True)
        assert layer._x_padded is not None
    assert_close(fused, np.maximum(plain, 0), rtol=0, atol=0, name="fused relu")


@pytest.mark.parametrize("form", FORMS)
def test_bit_identical_reruns(form):
    """Same input and thread count, same bits (fixed sample blocks, partial sums in order;
    a different thread count regroups the chunks, so it may round differently)."""
    tinynet.manual_seed(0)
    with any_size(form):
        layer = Conv3d(4, 5, 3, padding=1)
    x = np.random.default_rng(0).standard_normal((4, 4, 6, 5, 7)).astype(np.float32)
    results = []
    for _ in range(3):
        clone = copy.deepcopy(layer)
        with any_size(form, plane_tiles=2):
            y, _, grad_x = run_layer(clone, x, form=form)
        results.append((y, grad_x, clone.weight.grad.copy(), clone.bias.grad.copy()))
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert np.array_equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "shape", "form"),
    [
        (dict(padding=1), (8, 16, 16, 16, 16), 4),  # the target shape
        (dict(padding=1), (4, 16, 16, 16, 16), 4),
        (dict(padding=1), (1, 16, 16, 16, 16), 4),
        (dict(padding=1), (1, 16, 2, 2, 16), 0),  # planes of 2 × 16
        # F(4×4) per depth tap: planes of ≥ 7 × 7 outputs, more than 4 input channels or
        # where F(2×2×2) fits (lines of ≥ 8 tiles, or C·Cout / (C + Cout) for shorter ones).
        (dict(padding=1, out_channels=16), (16, 16, 8, 8, 8), 4),
        (dict(padding=1, out_channels=32), (4, 16, 8, 8, 8), 4),  # 128 tiles of 4×4
        (dict(padding=1, out_channels=32), (3, 16, 8, 8, 8), 0),  # 96: too few
        (dict(padding=1, out_channels=32), (1, 16, 8, 8, 8), 0),
        (dict(padding=1, out_channels=32), (8, 16, 7, 7, 7), 4),
        (dict(padding=1, out_channels=64), (1, 64, 8, 8, 8), 2),  # F(2×2×2) fits, 32 tiles
        (dict(padding=1, out_channels=16), (8, 8, 12, 12, 12), 4),
        (dict(padding=1, out_channels=32), (1, 64, 13, 14, 14), 4),
        (dict(padding=1, out_channels=8), (2, 4, 16, 16, 16), 4),  # F(2×2×2) fits
        (dict(padding=1, out_channels=8), (8, 4, 8, 8, 8), 0),  # 4 channels: direct path
        (dict(padding=1, out_channels=8), (8, 4, 12, 12, 12), 0),
        (dict(padding=1, out_channels=32), (8, 16, 6, 6, 6), 0),  # planes of 6 × 6
        (dict(padding=1, out_channels=32), (1, 32, 6, 6, 6), 0),
        # F(2×2×2) on small planes where it fits: 3 and 2 tiles a line, h = 32.
        (dict(padding=1, out_channels=64), (1, 64, 6, 6, 6), 2),
        (dict(padding=1, out_channels=64), (1, 64, 4, 4, 4), 2),
        (dict(padding=1, out_channels=64), (1, 64, 5, 5, 5), 0),  # 58% of outputs used
        (dict(padding=1, stride=2), (8, 16, 16, 16, 16), 0),
        (dict(padding=3), (8, 16, 16, 16, 16), 0),
        (dict(padding=1, dilation=2), (8, 16, 16, 16, 16), 0),
    ],
)
def test_path_taken(kwargs, shape, form):
    kwargs = {"out_channels": 4} | kwargs
    layer = Conv3d(shape[1], kernel_size=3, **kwargs)
    layer(np.zeros(shape, np.float32))
    assert (layer._x_padded is not None) == (form > 0)
    assert layer._winograd3d_form(shape[0], layer._out_size) == form
    if form:
        assert layer._winograd3d_f4 == (form == 4)


def test_thin_channels_stay_on_the_plane_path():
    assert not Conv3d(3, 32, 3, padding=1)._winograd3d
    assert Conv3d(4, 32, 3, padding=1)._winograd3d
    assert not Conv3d(16, 32, (3, 3, 1), padding=1)._winograd3d


def test_backward_after_plane_path_forward_uses_planes():
    tinynet.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 4, 4))
    with any_size():
        layer = Conv3d(2, 4, 3, padding=1).double()
        run_layer(layer, x)
    layer(x)  # the default thresholds: another path (two channels: the direct one)
    assert layer._x_padded is None
    gradcheck(layer, x)


@pytest.mark.parametrize("form", FORMS)
def test_stale_work_buffers_do_not_leak(form):
    """The padded input and the work arrays are reused between calls: every entry a result
    reads must be rewritten. Filled with NaN between two calls, the second must still match
    the reference (a padding entry left unwritten would carry the NaN into the output)."""
    tinynet.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 8, 10))
    with any_size(form, plane_tiles=4):
        layer = Conv3d(3, 4, 3, padding=(2, 1, 0)).double()
        run_layer(layer, x, form=form)
        for name, array in layer._work.items():
            if name in ("xpad", "v", "m", "gxpad", "partial_u", "partial_b", "private"):
                array[...] = np.nan
        check_against_reference(layer, x, 1e-12, form)


def test_f4_chunks_are_capped_in_bytes(monkeypatch):
    """Narrow layers take whole samples (up to _PLANE_TILES tiles) a chunk; wide ones fewer
    output planes, spread evenly, so that V and M stay near _PLANE_BYTES per thread."""
    narrow = Conv3d(16, 32, 3, padding=1)
    assert narrow._winograd3d4_work(8, (16, 16, 16), np.dtype(np.float32))[0] == 16
    monkeypatch.setattr(conv_winograd3d, "_PLANE_BYTES", 1 << 20)
    wide = Conv3d(64, 64, 3, padding=1)  # 295 KB of V and M per plane: 3 planes a chunk
    planes, _, v, m = wide._winograd3d4_work(1, (16, 16, 16), np.dtype(np.float32))
    assert planes == 3
    assert (v.nbytes + m.nbytes) / v.shape[0] <= 2 << 20
    assert narrow._winograd3d4_work(8, (16, 16, 16), np.dtype(np.float32))[0] == 8  # 2 × 8


@pytest.mark.parametrize("depth", [4, 5, 9, 16])
def test_f4_backward_shares_a_small_batch_among_threads(depth):
    """A batch smaller than the thread count: the backward shares each sample's chunks out
    among the threads, a block's first chunk into private planes added afterwards (two
    threads: a sample of `depth` output planes in chunks of 2 to ⌊depth / 2⌋)."""
    tinynet.manual_seed(depth)
    x = np.random.default_rng(depth).standard_normal((1, 3, depth, 7, 9))
    with tinynet.set_num_threads(2), any_size(4):
        layer = Conv3d(3, 5, 3, padding=1).double()
        planes = layer._winograd3d4_work(1, (depth, 7, 9), np.dtype(np.float64))[0]
        assert 2 <= planes <= depth // 2 and tinynet.get_num_threads() == 2
        check_against_reference(layer, x, 1e-12, 4)


@pytest.mark.parametrize("size", [(4, 6, 8), (5, 7, 9), (9, 4, 4)])
def test_f2_backward_shares_a_small_batch_among_threads(size):
    """Batch 1 on two threads: F(2×2×2)'s backward shares the sample's tile lines out among
    the threads, each adding its input gradient into a private copy of the padded batch,
    summed afterwards (kernels/winograd.py, _block_lines); the copies overlap where
    neighbouring lines' patches do."""
    tinynet.manual_seed(sum(size))
    x = np.random.default_rng(sum(size)).standard_normal((1, 3, *size))
    with tinynet.set_num_threads(2), any_size(2):
        if tinynet.get_num_threads() < 2:
            pytest.skip("needs two threads")
        layer = Conv3d(3, 5, 3, padding=1).double()
        check_against_reference(layer, x, 1e-12, 2)
        assert layer._work["gxpad"].shape[0] == 2  # one copy per thread: the path was taken
