"""Max, average and adaptive average pooling against the NumPy reference, PyTorch and
gradcheck: forward and backward, ties, odd sizes, ceil mode, non-contiguous and unbatched
inputs, errors, thread counts and the no-JIT path."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from reference.pooling import adaptive_avg_pool, avg_pool, has_empty_window, max_pool

import tinynet
from tinynet.kernels import pooling as kernels
from tinynet.nn import (
    AdaptiveAvgPool2d,
    AdaptiveAvgPool3d,
    AvgPool2d,
    AvgPool3d,
    MaxPool2d,
    MaxPool3d,
)
from tinynet.testing import assert_close, gradcheck

MAX = {2: MaxPool2d, 3: MaxPool3d}
AVG = {2: AvgPool2d, 3: AvgPool3d}
ADAPTIVE = {2: AdaptiveAvgPool2d, 3: AdaptiveAvgPool3d}
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def values(rng, shape, kind, dtype):
    """Test inputs; "ties", "relu" and "constant" make windows with several equal maxima."""
    if kind == "normal":
        x = rng.standard_normal(shape)
    elif kind == "ties":
        x = rng.integers(-2, 3, shape)
    elif kind == "relu":
        x = np.maximum(rng.standard_normal(shape), 0)
    else:
        x = np.full(shape, 1.5)
    return x.astype(dtype)


def make_input(rng, shape, kind, dtype, layout):
    """An input of ``shape``, C-contiguous or a strided / transposed view of a larger array."""
    if layout == "strided":
        return values(rng, shape[:-1] + (2 * shape[-1],), kind, dtype)[..., ::2]
    if layout == "transposed":
        return values(rng, shape[:-2] + shape[:-3:-1], kind, dtype).swapaxes(-1, -2)
    return values(rng, shape, kind, dtype)


def distinct(shape, seed=0):
    """Float64 values at least 0.1 apart, so no max-pooling window has a tie (gradcheck
    perturbs by 1e-6; a tie would make the maximum non-differentiable)."""
    rng = np.random.default_rng(seed)
    return rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1 - 1.0


def batched(x, grad):
    """Reference functions take (N, C, ...); an unbatched (C, ...) input gets N = 1."""
    return x[None], grad[None]


# -- gradcheck ---------------------------------------------------------------------------------

GRADCHECK = [
    (MaxPool2d(2), (2, 3, 4, 5)),
    (MaxPool2d(3, stride=1, padding=1), (2, 2, 5, 4)),
    (MaxPool2d((2, 3), stride=(1, 2), dilation=(2, 1), ceil_mode=True), (1, 2, 6, 7)),
    (MaxPool2d(2), (3, 4, 4)),
    (MaxPool3d(2), (1, 2, 4, 4, 5)),
    (MaxPool3d(3, stride=2, padding=1, ceil_mode=True), (2, 1, 4, 5, 4)),
    (AvgPool2d(2), (2, 3, 4, 5)),
    (AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), (2, 2, 6, 5)),
    (AvgPool2d(3, stride=1, padding=1, divisor_override=4), (2, 4, 4)),
    (AvgPool3d((2, 3, 2), stride=(1, 2, 2), padding=(1, 1, 0)), (2, 2, 3, 5, 4)),
    (AdaptiveAvgPool2d(1), (2, 3, 4, 5)),
    (AdaptiveAvgPool2d((3, 2)), (2, 2, 5, 5)),
    (AdaptiveAvgPool3d(1), (2, 3, 3, 2, 4)),
    (AdaptiveAvgPool3d((2, None, 3)), (1, 2, 5, 3, 4)),
]


@pytest.mark.parametrize(("layer", "shape"), GRADCHECK, ids=lambda v: repr(v).replace(" ", ""))
def test_gradcheck(layer, shape):
    assert gradcheck(layer, distinct(shape), max_checks=100)


# -- against the NumPy reference -------------------------------------------------------------


@st.composite
def window_configs(draw, dilated):
    """Valid (shape, kernel, stride, padding, dilation, ceil_mode) for 2-D or 3-D pooling,
    with sizes from the smallest the kernel allows to a few more (odd sizes included)."""
    dims = draw(st.sampled_from([2, 3]))
    axis = st.integers(1, 3)
    kernel = tuple(draw(axis) for _ in range(dims))
    stride = tuple(draw(axis) for _ in range(dims))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    dilation = tuple(draw(st.integers(1, 2)) if dilated else 1 for _ in range(dims))
    spatial = tuple(
        max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 6 - dims))
        for k, p, d in zip(kernel, padding, dilation)
    )
    batch = draw(st.sampled_from([(), (1,), (2,)]))  # () is an unbatched input
    shape = batch + (draw(st.integers(1, 3)),) + spatial
    return shape, kernel, stride, padding, dilation, draw(st.booleans())


inputs = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["normal", "ties", "relu", "constant"]),
        "dtype": st.sampled_from([np.float32, np.float64]),
        "layout": st.sampled_from(["contiguous", "strided", "transposed"]),
        "seed": st.integers(0, 2**16),
    }
)


def run(layer, x, seed):
    """Forward and backward with a random output gradient: (out, grad_out, grad_x)."""
    out = layer(x)
    grad_out = np.random.default_rng(seed + 1).standard_normal(out.shape).astype(x.dtype)
    return out, grad_out, layer.backward(grad_out)


def check(got, expected, dtype, name):
    tol = TOL[dtype]
    assert got.dtype == dtype, f"{name} dtype {got.dtype}"
    assert_close(got, expected, rtol=tol, atol=tol, name=name)


@settings(max_examples=60, deadline=None)
@given(config=window_configs(dilated=True), data=inputs)
def test_max_pool_matches_reference(config, data):
    shape, kernel, stride, padding, dilation, ceil_mode = config
    rng = np.random.default_rng(data["seed"])
    x = make_input(rng, shape, data["kind"], data["dtype"], data["layout"])
    layer = MAX[len(kernel)](kernel, stride, padding, dilation, ceil_mode=ceil_mode)
    out, grad_out, grad_x = run(layer, x, data["seed"])
    xb, gb = (x, grad_out) if len(shape) == len(kernel) + 2 else batched(x, grad_out)
    ref_out, ref_grad = max_pool(xb, gb, kernel, stride, padding, dilation, ceil_mode)
    check(out, ref_out.reshape(out.shape), data["dtype"], "max pool output")
    check(grad_x, ref_grad.reshape(x.shape), data["dtype"], "max pool input gradient")


@settings(max_examples=50, deadline=None)
@given(
    config=window_configs(dilated=False),
    data=inputs,
    count_include_pad=st.booleans(),
    divisor_override=st.sampled_from([None, None, 3, -2]),
)
def test_avg_pool_matches_reference(config, data, count_include_pad, divisor_override):
    shape, kernel, stride, padding, _, ceil_mode = config
    rng = np.random.default_rng(data["seed"])
    x = make_input(rng, shape, data["kind"], data["dtype"], data["layout"])
    layer = AVG[len(kernel)](
        kernel, stride, padding, ceil_mode, count_include_pad, divisor_override
    )
    out, grad_out, grad_x = run(layer, x, data["seed"])
    xb, gb = (x, grad_out) if len(shape) == len(kernel) + 2 else batched(x, grad_out)
    args = (kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
    ref_out, ref_grad = avg_pool(xb, gb, *args)
    check(out, ref_out.reshape(out.shape), data["dtype"], "avg pool output")
    check(grad_x, ref_grad.reshape(x.shape), data["dtype"], "avg pool input gradient")


@settings(max_examples=40, deadline=None)
@given(
    dims=st.sampled_from([2, 3]),
    sizes=st.lists(st.integers(1, 7), min_size=3, max_size=3),
    outs=st.lists(st.sampled_from([None, 1, 1, 2, 3, 5]), min_size=3, max_size=3),
    batch=st.sampled_from([(), (1,), (3,)]),
    data=inputs,
)
def test_adaptive_avg_pool_matches_reference(dims, sizes, outs, batch, data):
    shape = batch + (2,) + tuple(sizes[:dims])
    output_size = tuple(outs[:dims])
    rng = np.random.default_rng(data["seed"])
    x = make_input(rng, shape, data["kind"], data["dtype"], data["layout"])
    layer = ADAPTIVE[dims](output_size if len(set(output_size)) > 1 else output_size[0])
    out, grad_out, grad_x = run(layer, x, data["seed"])
    xb, gb = (x, grad_out) if len(shape) == dims + 2 else batched(x, grad_out)
    ref_out, ref_grad = adaptive_avg_pool(xb, gb, output_size)
    check(out, ref_out.reshape(out.shape), data["dtype"], "adaptive avg pool output")
    check(grad_x, ref_grad.reshape(x.shape), data["dtype"], "adaptive avg pool input gradient")


# The average-pooling kernels take different branches along W (kernels/pooling.py): windows
# that tile the rows exactly (one run over all rows), full evenly spaced windows between
# clipped edge windows, gaps between windows, and adaptive windows that repeat (more outputs
# than inputs). Each case names the run _regular_run must find: (lo, hi, step, taps).
AVG_BRANCHES = [
    (AvgPool2d(2), (2, 3, 6, 8), (0, 4, 2, 2)),  # rows tiled exactly
    (AvgPool2d((1, 2), stride=(1, 3)), (2, 2, 3, 6), (0, 2, 3, 2)),  # gaps: x2, x5 unused
    (AvgPool2d(3, stride=1, padding=1), (1, 2, 5, 7), (1, 6, 1, 3)),  # clipped edges
    (AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), (1, 2, 6, 6),
     (1, 3, 2, 3)),  # a last window hanging over the edge
    (AdaptiveAvgPool2d((2, 3)), (2, 2, 3, 1), (0, 1, 1, 1)),  # windows repeat
    (AdaptiveAvgPool2d((2, 5)), (2, 2, 3, 2), (2, 3, 1, 2)),  # uneven windows
    (AdaptiveAvgPool2d(7), (1, 2, 28, 28), (0, 7, 4, 4)),
    (AvgPool3d(2, stride=(1, 2, 2)), (1, 2, 3, 4, 6), (0, 3, 2, 2)),
]  # fmt: skip


@pytest.mark.parametrize("layer, shape, run_w", AVG_BRANCHES)
def test_avg_pool_branches_match_reference(layer, shape, run_w):
    x = np.random.default_rng(3).standard_normal(shape)
    out, grad_out, grad_x = run(layer, x, 3)
    assert kernels._regular_run(layer._window_tables[2]) == run_w
    if isinstance(layer, (AdaptiveAvgPool2d, AdaptiveAvgPool3d)):
        ref_out, ref_grad = adaptive_avg_pool(x, grad_out, layer.output_size)
    else:
        args = (layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode)
        ref_out, ref_grad = avg_pool(x, grad_out, *args, layer.count_include_pad, None)
    check(out, ref_out, np.float64, "avg pool output")
    check(grad_x, ref_grad, np.float64, "avg pool input gradient")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("kind", ["normal", "ties", "relu"])
def test_max_pool_2x2_matches_reference(kind, ceil_mode, dtype):
    # MaxPool2d(2) has a kernel of its own; odd sizes in ceil mode fall back to the generic one.
    rng = np.random.default_rng(7)
    for shape in [(2, 3, 4, 6), (2, 3, 5, 7), (1, 2, 2, 2), (3, 3, 9)]:
        x = values(rng, shape, kind, dtype)
        layer = MaxPool2d(2, ceil_mode=ceil_mode)
        out, grad_out, grad_x = run(layer, x, 0)
        xb, gb = (x, grad_out) if len(shape) == 4 else batched(x, grad_out)
        ref_out, ref_grad = max_pool(xb, gb, (2, 2), (2, 2), (0, 0), (1, 1), ceil_mode)
        check(out, ref_out.reshape(out.shape), dtype, f"MaxPool2d(2) output {shape}")
        check(grad_x, ref_grad.reshape(x.shape), dtype, f"MaxPool2d(2) gradient {shape}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_2x2_kernel_matches_generic_kernel(dtype):
    # Ties, -inf and NaN: the unrolled kernel must keep the generic kernel's scan-order rule.
    rng = np.random.default_rng(3)
    x = rng.integers(-1, 2, (6, 8, 11)).astype(dtype)
    x[rng.random(x.shape) < 0.1] = np.nan
    x[rng.random(x.shape) < 0.1] = -np.inf
    out_shape = (6, 4, 5)
    out_fast, out_generic = np.empty(out_shape, dtype), np.empty(out_shape, dtype)
    arg_fast, arg_generic = np.zeros(out_shape, np.int32), np.zeros(out_shape, np.int32)
    kernels.max_pool2d_2x2_forward(x, out_fast, arg_fast)
    windows = [np.array([[0], [1]]), np.stack([np.arange(4) * 2, np.full(4, 2)])]
    windows.append(np.stack([np.arange(5) * 2, np.full(5, 2)]))
    volume = (6, 1, 4, 5)
    kernels.max_pool_forward(
        x[:, None],
        *windows,
        (1, 1, 1),
        out_generic.reshape(volume),
        arg_generic.reshape(volume),
    )
    np.testing.assert_array_equal(out_fast, out_generic)
    np.testing.assert_array_equal(arg_fast, arg_generic)


# -- against PyTorch ---------------------------------------------------------------------------


def torch_pool(torch, kind, dims, **kwargs):
    name = {"max": "MaxPool", "avg": "AvgPool", "adaptive": "AdaptiveAvgPool"}[kind]
    return getattr(torch.nn, f"{name}{dims}d")(**kwargs)


def _kw(data):
    return dict(kind=data["kind"], dtype=data["dtype"], layout=data["layout"])


def compare_with_torch(torch, layer, reference, x, seed):
    out, grad_out, grad_x = run(layer, x, seed)
    xt = torch.tensor(x, requires_grad=True)
    out_t = reference(xt)
    out_t.backward(torch.tensor(grad_out))
    tol = TOL[x.dtype.type] * 10
    check(out, out_t.detach().numpy(), x.dtype.type, f"{layer!r} output vs torch")
    assert_close(grad_x, xt.grad.numpy(), rtol=tol, atol=tol, name=f"{layer!r} grad vs torch")


@settings(max_examples=40, deadline=None)
@given(config=window_configs(dilated=True), data=inputs)
def test_max_pool_matches_torch(config, data):
    torch = pytest.importorskip("torch")
    shape, kernel, stride, padding, dilation, ceil_mode = config
    assume(not has_empty_window((1, 1) + shape[-len(kernel) :], *config[1:]))
    x = make_input(np.random.default_rng(data["seed"]), shape, **_kw(data))
    args = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation)
    layer = MAX[len(kernel)](**args, ceil_mode=ceil_mode)
    reference = torch_pool(torch, "max", len(kernel), **args, ceil_mode=ceil_mode)
    compare_with_torch(torch, layer, reference, x, data["seed"])


@pytest.mark.parametrize("dims", [2, 3])
def test_max_pool_return_indices(dims):
    """torch.nn's argument order (the fifth is return_indices, the sixth ceil_mode); with
    return_indices the forward returns (output, indices): each output's flat index within
    its input plane, which must point at the maximum."""
    rng = np.random.default_rng(dims)
    shape = (2, 3, 9, 11) if dims == 2 else (2, 3, 7, 6, 9)
    x = rng.integers(0, 4, shape).astype(np.float32)  # small integers: many ties
    layer = MAX[dims](3, 2, 1, 1, True, True)
    assert layer.return_indices and layer.ceil_mode
    out, indices = layer(x)
    assert indices.dtype == np.int64 and indices.shape == out.shape
    planes = x.reshape(6, -1)
    np.testing.assert_array_equal(
        np.take_along_axis(planes, indices.reshape(6, -1), axis=1), out.reshape(6, -1)
    )
    grad_out = np.ones(out.shape)
    expected, _ = max_pool(x, grad_out, (3,) * dims, (2,) * dims, (1,) * dims, (1,) * dims, True)
    np.testing.assert_array_equal(out, expected)
    assert MAX[dims](2, None, 0, 1, False, True).ceil_mode  # positional ceil_mode: sixth
    # The tuple handed on to another layer is refused, not stacked into one array.
    model = tinynet.nn.Sequential(MAX[dims](2, return_indices=True), tinynet.nn.ReLU())
    with pytest.raises(TypeError, match=r"ReLU.* expected a NumPy array, got a tuple of 2"):
        model(x)
    with pytest.raises(ValueError, match=f"MaxPool{dims}d expected return_indices to be"):
        MAX[dims](2, return_indices="yes")
    torch = pytest.importorskip("torch")
    t_out, t_indices = getattr(torch.nn, f"MaxPool{dims}d")(3, 2, 1, 1, True, True)(torch.tensor(x))
    np.testing.assert_array_equal(out, t_out.numpy())
    np.testing.assert_array_equal(indices, t_indices.numpy())


@settings(max_examples=40, deadline=None)
@given(
    config=window_configs(dilated=False),
    data=inputs,
    count_include_pad=st.booleans(),
    divisor_override=st.sampled_from([None, None, 5]),
)
def test_avg_pool_matches_torch(config, data, count_include_pad, divisor_override):
    torch = pytest.importorskip("torch")
    shape, kernel, stride, padding, _, ceil_mode = config
    if len(kernel) == 3:  # torch's AvgPool3d also refuses an unpadded input smaller than it
        assume(all(s >= k for s, k in zip(shape[-3:], kernel)))
    x = make_input(np.random.default_rng(data["seed"]), shape, **_kw(data))
    args = dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode)
    args.update(count_include_pad=count_include_pad, divisor_override=divisor_override)
    layer = AVG[len(kernel)](**args)
    compare_with_torch(torch, layer, torch_pool(torch, "avg", len(kernel), **args), x, 0)


@settings(max_examples=25, deadline=None)
@given(
    dims=st.sampled_from([2, 3]),
    sizes=st.lists(st.integers(1, 9), min_size=3, max_size=3),
    outs=st.lists(st.sampled_from([None, 1, 2, 3, 4]), min_size=3, max_size=3),
    data=inputs,
)
def test_adaptive_avg_pool_matches_torch(dims, sizes, outs, data):
    torch = pytest.importorskip("torch")
    x = make_input(np.random.default_rng(data["seed"]), (2, 3, *sizes[:dims]), **_kw(data))
    output_size = tuple(outs[:dims])
    layer = ADAPTIVE[dims](output_size)
    reference = torch_pool(torch, "adaptive", dims, output_size=output_size)
    compare_with_torch(torch, layer, reference, x, data["seed"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "args", [dict(kernel_size=2), dict(kernel_size=3, stride=1, padding=1)], ids=["2x2", "3x3"]
)
def test_max_pool_nan_and_inf_like_torch(args, dtype):
    # A NaN in a window gives NaN and takes the gradient (the last NaN in scan order); a
    # window of -inf reports its first tap.
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.integers(-1, 2, (2, 3, 6, 7)).astype(dtype)
    x[rng.random(x.shape) < 0.15] = np.nan
    x[rng.random(x.shape) < 0.15] = -np.inf
    layer = MaxPool2d(**args)
    out, grad_out, grad_x = run(layer, x, 0)
    xt = torch.tensor(x, requires_grad=True)
    out_t = torch.nn.MaxPool2d(**args)(xt)
    out_t.backward(torch.tensor(grad_out))
    np.testing.assert_array_equal(out, out_t.detach().numpy())
    np.testing.assert_array_equal(grad_x, xt.grad.numpy())


# -- dtypes ----------------------------------------------------------------------------------

LAYERS = [
    (MaxPool2d(2), (2, 3, 4, 4)),
    (MaxPool2d(3, stride=2, padding=1), (2, 3, 5, 5)),
    (MaxPool3d(2), (2, 3, 4, 4, 4)),
    (AvgPool2d(2), (2, 3, 4, 4)),
    (AvgPool3d(3, stride=2, padding=1), (2, 3, 5, 5, 5)),
    (AdaptiveAvgPool2d(1), (2, 3, 4, 4)),
    (AdaptiveAvgPool3d((2, 3, 1)), (2, 3, 4, 5, 4)),
]
LAYER_IDS = [repr(layer).replace(" ", "") for layer, _ in LAYERS]


@pytest.mark.parametrize(("layer", "shape"), LAYERS, ids=LAYER_IDS)
def test_dtypes(layer, shape):
    # Pooling has no parameters: float32 and float64 keep their dtype, integers become the
    # layer's dtype, and the result is the same values in every case.
    ints = np.random.default_rng(0).integers(-5, 5, shape)
    results = {}
    for x in (ints.astype(np.float32), ints.astype(np.float64), ints):
        out, grad_out, grad_x = run(layer, x, 0)
        expected = np.float32 if x.dtype == np.int64 else x.dtype
        assert out.dtype == grad_x.dtype == expected, f"{x.dtype} gave {out.dtype}"
        results[x.dtype.name] = out
    assert_close(results["float32"], results["float64"], rtol=1e-6, atol=1e-6)
    assert_close(results["int64"], results["float64"], rtol=1e-6, atol=1e-6)


# -- errors ----------------------------------------------------------------------------------


ERROR_LAYERS = [MaxPool2d(2), MaxPool3d(2), AvgPool2d(2), AvgPool3d(2)]
ERROR_LAYERS += [AdaptiveAvgPool2d(1), AdaptiveAvgPool3d(1)]


@pytest.mark.parametrize("layer", ERROR_LAYERS, ids=lambda v: type(v).__name__)
def test_wrong_rank(layer):
    dims = 3 if "3d" in type(layer).__name__ else 2
    name = type(layer).__name__
    for rank in (dims, dims + 3):
        with pytest.raises(ValueError, match=rf"{name}\(.*\) expected input \(N, C, .*got shape"):
            layer(np.zeros((2,) * rank))


@pytest.mark.parametrize("layer", ERROR_LAYERS, ids=lambda v: type(v).__name__)
def test_bad_input_and_gradient(layer):
    dims = 3 if "3d" in type(layer).__name__ else 2
    name = type(layer).__name__
    with pytest.raises(RuntimeError, match=rf"{name}\(.*\)\.backward called before forward"):
        type(layer)(1).backward(np.zeros((1, 1) + (1,) * dims))
    with pytest.raises(ValueError, match=rf"{name}\(.*\) expected non-empty channel"):
        layer(np.zeros((2, 0) + (4,) * dims))
    with pytest.raises(TypeError, match=rf"{name}\(.*\) expected a real-valued"):
        layer(np.zeros((2, 1) + (4,) * dims, dtype=complex))
    out = layer(np.zeros((2, 1) + (4,) * dims))
    with pytest.raises(ValueError, match=rf"{name}\(.*\)\.backward expected a gradient of shape"):
        layer.backward(np.zeros(out.shape[:-1] + (out.shape[-1] + 1,)))


@pytest.mark.parametrize(
    ("cls", "kwargs", "size"),
    [
        (MaxPool2d, dict(kernel_size=5), (4, 8)),
        (MaxPool2d, dict(kernel_size=3, dilation=(1, 3)), (4, 6)),
        (MaxPool3d, dict(kernel_size=(4, 2, 2), padding=(1, 0, 0)), (1, 5, 5)),
        (AvgPool2d, dict(kernel_size=(2, 4), padding=(0, 1)), (3, 1)),
        (AvgPool3d, dict(kernel_size=(3, 1, 1)), (2, 4, 4)),
    ],
)
def test_kernel_larger_than_padded_input(cls, kwargs, size):
    layer = cls(**kwargs)
    match = rf"{cls.__name__}\(.*\) expected a padded input size .* got .* for input size"
    with pytest.raises(ValueError, match=match):
        layer(np.zeros((1, 2, *size)))


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (MaxPool2d, dict(kernel_size=2, padding=2), "expected padding at most half"),
        (MaxPool3d, dict(kernel_size=(3, 3, 2), padding=(1, 1, 2)), "expected padding at most"),
        (AvgPool2d, dict(kernel_size=3, padding=2), "expected padding at most half"),
        (AvgPool3d, dict(kernel_size=4, padding=3), "expected padding at most half"),
        (MaxPool2d, dict(kernel_size=0), "expected kernel_size to be"),
        (MaxPool3d, dict(kernel_size=(2, 2)), "expected kernel_size to be"),
        (AvgPool2d, dict(kernel_size=2, stride=0), "expected stride to be"),
        (MaxPool2d, dict(kernel_size=2, dilation=0), "expected dilation to be"),
        (MaxPool2d, dict(kernel_size=2, ceil_mode="yes"), "expected ceil_mode to be a bool"),
        (AvgPool3d, dict(kernel_size=2, count_include_pad=1), "expected count_include_pad"),
        (AvgPool2d, dict(kernel_size=2, divisor_override=0), "expected divisor_override"),
        (AdaptiveAvgPool2d, dict(output_size=0), "expected output_size"),
        (AdaptiveAvgPool3d, dict(output_size=(2, 2)), "expected output_size"),
    ],
)
def test_bad_arguments(cls, kwargs, match):
    with pytest.raises(ValueError, match=f"{cls.__name__} {match}"):
        cls(**kwargs)


# -- threads and the no-JIT path --------------------------------------------------------------


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 threads")
@pytest.mark.parametrize(
    "layer",
    [
        MaxPool2d(2),
        MaxPool2d(3, stride=1, padding=1),  # overlapping windows scatter into shared inputs
        MaxPool3d(3, stride=2, padding=1),
        AvgPool2d(3, stride=1, padding=1),
        AvgPool3d(2, stride=1),
        AdaptiveAvgPool2d(1),
        AdaptiveAvgPool3d((2, 3, 3)),
    ],
    ids=repr,
)
def test_one_and_two_threads_agree_bitwise(layer):
    dims = 3 if "3d" in type(layer).__name__ else 2
    shape = (4, 6) + (7,) * dims
    x = values(np.random.default_rng(0), shape, "ties", np.float32)
    results = []
    for threads in (1, 2):
        with tinynet.set_num_threads(threads):
            results.append(run(layer, x, 0))
    for one, two in zip(*results):
        assert one.tobytes() == two.tobytes()


def test_kernels_run_without_jit():
    # NUMBA_DISABLE_JIT=1 turns the kernels into plain Python a learner can step through.
    script = textwrap.dedent(
        """
        import numpy as np
        from reference.pooling import adaptive_avg_pool, avg_pool, max_pool
        from tinynet.nn import AdaptiveAvgPool2d, AdaptiveAvgPool3d, AvgPool2d, MaxPool2d
        from tinynet.nn import MaxPool3d
        from tinynet.testing import assert_close

        rng = np.random.default_rng(0)
        x2 = rng.integers(-2, 3, (2, 2, 5, 5)).astype(np.float64)
        x3 = rng.integers(-2, 3, (1, 2, 3, 4, 4)).astype(np.float64)
        one, two = (1, 1, 1), (2, 2, 2)
        cases = [  # (layer, input, reference function, its arguments after x and grad_out)
            (MaxPool2d(2), x2, max_pool, ((2, 2), (2, 2), (0, 0), (1, 1), False)),
            (MaxPool3d(2, 1, 1, 2), x3, max_pool, (two, one, one, two, False)),
            (AvgPool2d(3, 2, 1, True), x2, avg_pool, ((3, 3), (2, 2), (1, 1), True, True)),
            (AdaptiveAvgPool2d(1), x2, adaptive_avg_pool, ((1, 1),)),
            (AdaptiveAvgPool3d((2, 3, 1)), x3, adaptive_avg_pool, ((2, 3, 1),)),
        ]
        for layer, x, reference, args in cases:
            y = layer(x)
            g = rng.standard_normal(y.shape)
            ref_y, ref_dx = reference(x, g, *args)
            assert_close(y, ref_y, name=repr(layer))
            assert_close(layer.backward(g), ref_dx, name=repr(layer))
        """
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join([root, os.path.join(root, "tests")])
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", PYTHONPATH=path)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_2x2x2_kernel_matches_generic_kernel(dtype):
    # Ties, -inf, +inf and NaN: the unrolled 3-D kernel must keep the generic kernel's
    # scan-order rule (depth, then rows, then columns) and its NaN rule.
    rng = np.random.default_rng(4)
    x = rng.integers(-1, 2, (5, 6, 7, 9)).astype(dtype)
    x[rng.random(x.shape) < 0.05] = np.nan
    x[rng.random(x.shape) < 0.05] = -np.inf
    x[rng.random(x.shape) < 0.02] = np.inf
    out_shape = (5, 3, 3, 4)
    out_fast, out_generic = np.empty(out_shape, dtype), np.empty(out_shape, dtype)
    arg_fast, arg_generic = np.zeros(out_shape, np.int32), np.zeros(out_shape, np.int32)
    kernels.max_pool3d_2x2x2_forward(x, out_fast, arg_fast)
    windows = [np.stack([np.arange(k) * 2, np.full(k, 2)]) for k in out_shape[1:]]
    kernels.max_pool_forward(x, *windows, (1, 1, 1), out_generic, arg_generic)
    np.testing.assert_array_equal(out_fast, out_generic)
    np.testing.assert_array_equal(arg_fast, arg_generic)
    assert np.isnan(out_fast).any() and (out_fast == np.inf).any()  # the cases were exercised
