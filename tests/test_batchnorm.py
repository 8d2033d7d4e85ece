"""BatchNorm1d/2d/3d against the NumPy reference, PyTorch, gradcheck and the paper's claims."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference.batchnorm import (
    batch_norm_backward,
    batch_norm_forward,
    batch_norm_stats,
    running_stats,
)

import tinynet
from tinynet.nn import BatchNorm1d, BatchNorm2d, BatchNorm3d, Linear, Sequential
from tinynet.testing import assert_close, gradcheck

CLASSES = {1: BatchNorm1d, 2: BatchNorm2d, 3: BatchNorm3d}
# One small input shape per class and rank: (N, C), (N, C, L), (N, C, H, W), (N, C, D, H, W).
SHAPES = [
    (BatchNorm1d, (6, 5)),
    (BatchNorm1d, (3, 5, 4)),
    (BatchNorm2d, (3, 5, 4, 3)),
    (BatchNorm3d, (2, 5, 3, 2, 3)),
]
IDS = ["1d-rows", "1d-seq", "2d", "3d"]


def make(cls, c, dtype=np.float64, seed=0, **kwargs):
    """A layer with random γ, β and running statistics, so nothing is trivially 1 or 0."""
    bn = cls(c, **kwargs).to(dtype)
    rng = np.random.default_rng(seed)
    if bn.affine:
        bn.weight.data[...] = rng.uniform(0.5, 2.0, c)
        bn.bias.data[...] = rng.standard_normal(c)
    if bn.track_running_stats:
        bn.running_mean[...] = rng.standard_normal(c)
        bn.running_var[...] = rng.uniform(0.5, 2.0, c)
    return bn


def data(shape, seed=1, dtype=np.float64, loc=1.0, scale=3.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale + loc).astype(dtype)


# -- construction ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [BatchNorm1d, BatchNorm2d, BatchNorm3d])
def test_parameters_buffers_and_options(cls):
    bn = cls(7)
    assert (bn.num_features, bn.eps, bn.momentum) == (7, 1e-5, 0.1)
    assert bn.affine and bn.track_running_stats
    assert_close(bn.weight.data, np.ones(7), name="weight")
    assert_close(bn.bias.data, np.zeros(7), name="bias")
    assert_close(bn.running_mean, np.zeros(7), name="running_mean")
    assert_close(bn.running_var, np.ones(7), name="running_var")
    assert bn.num_batches_tracked.shape == () and bn.num_batches_tracked.dtype == np.int64
    assert list(bn.state_dict()) == [
        "weight", "bias", "running_mean", "running_var", "num_batches_tracked",
    ]  # fmt: skip
    assert bn.weight.dtype == bn.running_var.dtype == np.float32
    assert bn.describe() == f"{cls.__name__}(num_features=7)"

    bare = cls(3, eps=1e-3, momentum=None, affine=False, track_running_stats=False)
    assert bare.weight is None and bare.bias is None and list(bare.parameters()) == []
    assert bare.running_mean is None and bare.running_var is None
    assert bare.num_batches_tracked is None and list(bare.state_dict()) == []
    assert bare.momentum is None and bare.eps == 1e-3

    bn.double()
    assert bn.weight.dtype == bn.running_mean.dtype == np.float64
    assert bn.num_batches_tracked.dtype == np.int64


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_features": 0}, "num_features"),
        ({"num_features": 3, "eps": -1.0}, "eps"),
        ({"num_features": 3, "momentum": 1.5}, "momentum"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchNorm2d(**kwargs)


@pytest.mark.parametrize("cls, shape", [(BatchNorm1d, (4, 3)), (BatchNorm2d, (4, 3, 2, 2))])
def test_eps_zero_is_refused_with_batch_statistics(cls, shape):
    """As torch: eps = 0 normalises a constant channel by 1/0, so it is refused wherever the
    batch's statistics are used (training, or track_running_stats=False), allowed in eval."""
    x = np.random.default_rng(0).standard_normal(shape)
    for bn in (cls(3, eps=0.0), cls(3, eps=0.0, track_running_stats=False).eval()):
        with pytest.raises(ValueError, match="eps must be positive"):
            bn(x)
    assert np.isfinite(cls(3, eps=0.0).eval()(x)).all()  # running var 1: a fixed affine map


# -- against the NumPy reference --------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    rank=st.sampled_from([1, 2, 3]),
    n=st.integers(1, 5),
    c=st.integers(1, 40),
    spatial=st.lists(st.integers(1, 4), min_size=3, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_training_and_eval_match_reference(rank, n, c, spatial, seed):
    cls = CLASSES[rank]
    shape = (n, c) + tuple(spatial[: rank if rank > 1 else seed % 2])
    if n * int(np.prod(shape[2:])) < 2:
        shape = (2,) + shape[1:]
    bn = make(cls, c, seed=seed)
    x = data(shape, seed=seed)
    g = data(shape, seed=seed + 1, loc=0.0, scale=1.0)
    gamma, beta = bn.weight.data.copy(), bn.bias.data.copy()
    rm, rv = bn.running_mean.copy(), bn.running_var.copy()

    y = bn(x)
    dx = bn.backward(g)
    assert_close(y, batch_norm_forward(x, gamma, beta, 1e-5), rtol=1e-9, atol=1e-9, name="y")
    ref_dx, ref_dgamma, ref_dbeta = batch_norm_backward(x, g, gamma, 1e-5)
    assert_close(dx, ref_dx, rtol=1e-7, atol=1e-9, name="dx")
    assert_close(bn.weight.grad, ref_dgamma, rtol=1e-9, atol=1e-9, name="dgamma")
    assert_close(bn.bias.grad, ref_dbeta, rtol=1e-9, atol=1e-9, name="dbeta")

    bn.eval()
    bn.running_mean[...] = rm
    bn.running_var[...] = rv
    bn.zero_grad()
    y = bn(x)
    dx = bn.backward(g)
    assert_close(y, batch_norm_forward(x, gamma, beta, 1e-5, rm, rv), rtol=1e-9, atol=1e-9)
    ref_dx, ref_dgamma, ref_dbeta = batch_norm_backward(x, g, gamma, 1e-5, rm, rv)
    assert_close(dx, ref_dx, rtol=1e-9, atol=1e-9, name="eval dx")
    assert_close(bn.weight.grad, ref_dgamma, rtol=1e-9, atol=1e-9, name="eval dgamma")
    assert_close(bn.bias.grad, ref_dbeta, rtol=1e-9, atol=1e-9, name="eval dbeta")


@pytest.mark.parametrize("cls, shape", SHAPES, ids=IDS)
def test_float32_matches_reference(cls, shape):
    bn = make(cls, shape[1], dtype=np.float32)
    x = data(shape, dtype=np.float32)
    g = data(shape, seed=2, dtype=np.float32)
    y = bn(x)
    dx = bn.backward(g)
    assert y.dtype == dx.dtype == np.float32
    gamma, beta = bn.weight.data, bn.bias.data
    assert_close(y, batch_norm_forward(x, gamma, beta, 1e-5), rtol=1e-5, atol=1e-5)
    assert_close(dx, batch_norm_backward(x, g, gamma, 1e-5)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
@pytest.mark.parametrize("cls, shape", SHAPES, ids=IDS)
def test_running_statistics_match_reference(cls, shape, momentum):
    bn = cls(shape[1], momentum=momentum).double()
    batches = [data(shape, seed=s, loc=s, scale=s + 1) for s in range(4)]
    for x in batches:
        bn(x)
    mean, var, count = running_stats(batches, momentum, shape[1])
    assert_close(bn.running_mean, mean, rtol=1e-12, atol=1e-12, name="running_mean")
    assert_close(bn.running_var, var, rtol=1e-12, atol=1e-12, name="running_var")
    assert int(bn.num_batches_tracked) == count


def test_non_contiguous_input_and_int_input():
    x = data((4, 6, 5, 8))[:, ::2, :, ::2]  # (4, 3, 5, 4), strided
    bn = make(BatchNorm2d, 3)
    y = bn(x)
    dx = bn.backward(np.ones_like(x)[..., ::-1])
    assert_close(y, batch_norm_forward(x, bn.weight.data, bn.bias.data, 1e-5), rtol=1e-9)
    ref = batch_norm_backward(x, np.ones_like(x), bn.weight.data, 1e-5)[0]
    assert_close(dx, ref, rtol=1e-7, atol=1e-9)
    ints = np.arange(24).reshape(4, 6) % 5
    assert BatchNorm1d(6)(ints).dtype == np.float32


# -- numerics ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cls, shape", [(BatchNorm1d, (400, 3)), (BatchNorm2d, (8, 3, 7, 9))])
def test_large_mean_small_spread_normalises(cls, shape):
    # float32 data of mean 1e4 and std 1e-2: E[x²] − E[x]² would be all rounding error, and
    # subtracting a float32-rounded mean would shift every output by up to 0.05.
    x = data(shape, loc=1e4, scale=1e-2, dtype=np.float32)
    bn = cls(shape[1])
    y = bn(x)
    expected = batch_norm_forward(x, np.ones(shape[1]), np.zeros(shape[1]), 1e-5)
    assert_close(y, expected, rtol=1e-4, atol=1e-4, name="y")
    mean, var = batch_norm_stats(y)
    assert_close(mean, np.zeros(shape[1]), atol=1e-5, name="output mean")
    assert_close(var, 1.0 / (1.0 + 1e-5 / batch_norm_stats(x)[1]), rtol=1e-4, name="output var")
    assert_close(bn.running_mean, 0.9 * 0 + 0.1 * batch_norm_stats(x)[0], rtol=1e-6)
    # The backward subtracts the mean too: a float32-rounded mean would be off by up to 5% of
    # the spread in every (x − mean) there.
    g = data(shape, seed=7, dtype=np.float32)
    expected_dx, _, _ = batch_norm_backward(x.astype(np.float64), g, np.ones(shape[1]), 1e-5)
    dx = bn.backward(g)
    assert_close(dx, expected_dx, rtol=1e-3, atol=1e-3 * np.abs(expected_dx).max(), name="dx")
    # Eval mode with population statistics near the batch's (rounded to the float32 buffers,
    # which the expected values use too).
    mean, var = batch_norm_stats(x)
    bn.running_mean[...] = mean
    bn.running_var[...] = var
    y = bn.eval()(x)
    mean, var = bn.running_mean.astype(np.float64), bn.running_var.astype(np.float64)
    expected = batch_norm_forward(x, np.ones(shape[1]), np.zeros(shape[1]), 1e-5, mean, var)
    assert_close(y, expected, rtol=1e-4, atol=2e-3, name="eval y")


# -- gradients --------------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("cls, shape", SHAPES, ids=IDS)
def test_gradcheck(cls, shape, affine, training):
    bn = make(cls, shape[1], affine=affine).train(training)
    assert gradcheck(bn, data(shape), max_checks=30)


def test_gradcheck_without_running_stats_in_eval():
    bn = make(BatchNorm2d, 3, track_running_stats=False).eval()
    assert gradcheck(bn, data((2, 3, 2, 3)), max_checks=30)


def test_parameter_gradients_accumulate():
    bn = make(BatchNorm2d, 3)
    x, g = data((2, 3, 2, 2)), data((2, 3, 2, 2), seed=5)
    bn(x)
    bn.backward(g)
    once = bn.weight.grad.copy(), bn.bias.grad.copy()
    bn.backward(g)
    assert_close(bn.weight.grad, 2 * once[0], name="weight.grad")
    assert_close(bn.bias.grad, 2 * once[1], name="bias.grad")


# -- the paper's properties -------------------------------------------------------------------


@pytest.mark.parametrize("a", [0.1, 7.0])
def test_scale_invariance_and_inverse_gradient_scale(a):
    # Section 3.3: BN((aW)u) = BN(Wu) and ∂BN((aW)u)/∂(aW) = (1/a)·∂BN(Wu)/∂W, exactly as
    # eps → 0 (eps = 1e-12 perturbs the output by ~eps/(2a²·Var) ≈ 5e-11 here).
    tinynet.manual_seed(0)
    model = Sequential(Linear(6, 4, bias=False), BatchNorm1d(4, eps=1e-12)).double()
    u = data((10, 6))
    g = data((10, 4), seed=3)
    y = model(u)
    du = model.backward(g)
    grad_w = model[0].weight.grad.copy()

    model.zero_grad()
    model[0].weight.data *= a
    y_scaled = model(u)
    du_scaled = model.backward(g)
    assert_close(y_scaled, y, rtol=1e-9, atol=1e-9, name="output")
    assert_close(du_scaled, du, rtol=1e-7, atol=1e-9, name="input gradient")
    assert_close(model[0].weight.grad, grad_w / a, rtol=1e-7, atol=1e-9, name="weight gradient")


@pytest.mark.parametrize("cls, shape", SHAPES, ids=IDS)
def test_can_represent_the_identity(cls, shape):
    # Section 3: γ = √(Var[x] + eps), β = E[x] recover the original activations.
    x = data(shape)
    mean, var = batch_norm_stats(x)
    bn = cls(shape[1]).double()
    bn.weight.data[...] = np.sqrt(var + bn.eps)
    bn.bias.data[...] = mean
    assert_close(bn(x), x, rtol=1e-10, atol=1e-10)


# -- modes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls, shape", SHAPES, ids=IDS)
def test_eval_output_of_an_example_does_not_depend_on_its_batch(cls, shape):
    bn = make(cls, shape[1])
    x = data(shape)
    other = x.copy()
    other[1:] = data(other[1:].shape, seed=9, loc=-5.0)

    bn.eval()
    assert_close(bn(x)[0], bn(other)[0], rtol=1e-12, atol=0, name="eval")
    assert_close(bn(x[:1])[0], bn(x)[0], rtol=1e-12, atol=0, name="eval, batch of one")

    bn.train()
    differs = np.abs(bn(x)[0] - bn(other)[0]).max()
    assert differs > 1e-3, "training output should depend on the batch's statistics"


def test_eval_does_not_update_running_statistics():
    bn = make(BatchNorm2d, 3).eval()
    before = {k: v.copy() for k, v in bn.state_dict().items()}
    bn(data((4, 3, 2, 2)))
    for key, value in bn.state_dict().items():
        assert_close(value, before[key], rtol=0, atol=0, name=key)


@pytest.mark.parametrize("training", [True, False])
def test_without_running_stats_uses_batch_statistics_in_both_modes(training):
    bn = make(BatchNorm2d, 3, track_running_stats=False).train(training)
    x = data((4, 3, 2, 2))
    expected = batch_norm_forward(x, bn.weight.data, bn.bias.data, 1e-5)
    assert_close(bn(x), expected, rtol=1e-9, atol=1e-9)


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer, shape",
    [(BatchNorm1d(3), (0, 3)), (BatchNorm1d(3), (2, 3, 0)), (BatchNorm2d(3), (0, 3, 2, 2))],
)
def test_an_empty_batch_gives_an_empty_output(layer, shape):
    """As torch: no values, no error; a training step counts the batch and leaves the
    running statistics alone; the backward adds nothing to the parameters' gradients."""
    for training in (True, False):
        layer.train(training)
        y = layer(np.zeros(shape, np.float32))
        assert y.shape == shape
        assert layer.backward(np.zeros(shape, np.float32)).shape == shape
    np.testing.assert_array_equal(layer.running_mean, 0)
    np.testing.assert_array_equal(layer.running_var, 1)
    assert int(layer.num_batches_tracked) == 1
    np.testing.assert_array_equal(layer.weight.grad, 0)


def test_one_value_per_channel_in_training_is_an_error():
    with pytest.raises(ValueError, match=r"more than 1 value per channel.*\(1, 4\)"):
        BatchNorm1d(4)(np.ones((1, 4)))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        BatchNorm2d(4)(np.ones((1, 4, 1, 1)))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        BatchNorm1d(4, track_running_stats=False).eval()(np.ones((1, 4)))
    # One image with many positions, or one example in evaluation, is fine.
    assert BatchNorm2d(4)(data((1, 4, 3, 3))).shape == (1, 4, 3, 3)
    assert BatchNorm1d(4).eval()(np.ones((1, 4))).shape == (1, 4)


@pytest.mark.parametrize(
    "layer, shape, match",
    [
        (BatchNorm1d(3), (2, 3, 4, 5), r"BatchNorm1d\(num_features=3\) expected input"),
        (BatchNorm1d(3), (2, 4), r"expected input \(N, 3\) or \(N, 3, L\), got \(2, 4\)"),
        (BatchNorm2d(3), (2, 3, 4), r"BatchNorm2d\(num_features=3\) expected input"),
        (BatchNorm2d(3), (2, 4, 4, 3), "channels-last"),
        (BatchNorm3d(3), (2, 3, 4, 4), r"BatchNorm3d\(num_features=3\) expected input"),
    ],
)
def test_wrong_input_shape(layer, shape, match):
    with pytest.raises(ValueError, match=match):
        layer(np.ones(shape))


def test_backward_errors():
    bn = BatchNorm2d(3)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        bn.backward(np.ones((2, 3, 2, 2)))
    bn(data((2, 3, 2, 2)))
    with pytest.raises(ValueError, match="expected a gradient of shape"):
        bn.backward(np.ones((2, 3, 2, 3)))
    with pytest.raises(TypeError, match="real-valued"):
        bn(np.ones((2, 3, 2, 2), dtype=complex))


# -- threads and the pure-Python path ---------------------------------------------------------


@pytest.mark.parametrize("shape", [(256, 300), (5, 70, 3)], ids=["rows-split", "planes"])
def test_same_result_with_one_and_two_threads(shape):
    # (256, 300) is large enough for the rows kernels to split the channels between threads.
    if tinynet.config.numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs two Numba threads")
    bn = make(BatchNorm1d, shape[1])
    x, g = data(shape), data(shape, seed=4)
    with tinynet.set_num_threads(1):
        y1, dx1 = bn(x), bn.backward(g)
    with tinynet.set_num_threads(2):
        y2, dx2 = bn(x), bn.backward(g)
    assert_close(y1, batch_norm_forward(x, bn.weight.data, bn.bias.data, 1e-5), rtol=1e-9)
    assert_close(dx1, batch_norm_backward(x, g, bn.weight.data, 1e-5)[0], rtol=1e-7, atol=1e-9)
    assert_close(y2, y1, rtol=1e-12, atol=1e-12, name="y")
    assert_close(dx2, dx1, rtol=1e-12, atol=1e-12, name="dx")


def test_kernels_run_without_jit():
    # NUMBA_DISABLE_JIT=1 turns the kernels into plain Python a learner can step through.
    script = textwrap.dedent(
        """
        import numpy as np
        from reference.batchnorm import batch_norm_backward, batch_norm_forward
        from tinynet.nn import BatchNorm1d, BatchNorm2d
        from tinynet.testing import assert_close

        rng = np.random.default_rng(0)
        for bn, shape in [(BatchNorm1d(5), (4, 5)), (BatchNorm2d(3), (2, 3, 2, 2))]:
            bn.double()
            x, g = rng.standard_normal(shape), rng.standard_normal(shape)
            for training in (True, False):
                bn.train(training)
                stats = () if training else (bn.running_mean.copy(), bn.running_var.copy())
                y, dx = bn(x), bn.backward(g)
                gamma, beta = bn.weight.data, bn.bias.data
                assert_close(y, batch_norm_forward(x, gamma, beta, 1e-5, *stats))
                assert_close(dx, batch_norm_backward(x, g, gamma, 1e-5, *stats)[0])
        """
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join([root, os.path.join(root, "tests")])
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", PYTHONPATH=path)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]


# -- PyTorch conformance ----------------------------------------------------------------------

TORCH_SHAPES = [
    (BatchNorm1d, "BatchNorm1d", (6, 5)),
    (BatchNorm1d, "BatchNorm1d", (3, 5, 4)),
    (BatchNorm2d, "BatchNorm2d", (3, 5, 4, 3)),
    (BatchNorm3d, "BatchNorm3d", (2, 5, 3, 2, 3)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "options",
    [
        {"momentum": 0.1},
        {"momentum": 0.5, "affine": False},
        {"momentum": None},
        {"momentum": 0.1, "track_running_stats": False},
    ],
    ids=["m0.1", "m0.5-plain", "cumulative", "untracked"],
)
@pytest.mark.parametrize("cls, name, shape", TORCH_SHAPES, ids=IDS)
def test_matches_pytorch(cls, name, shape, options, dtype):
    torch = pytest.importorskip("torch")
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-11}
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    c = shape[1]
    ours = make(cls, c, dtype=dtype, **options)
    theirs = getattr(torch.nn, name)(c, **options).to(tdtype)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})

    def step(seed, label):
        x = data(shape, seed=seed, dtype=dtype, loc=seed, scale=seed + 1)
        g = data(shape, seed=seed + 100, dtype=dtype)
        ours.zero_grad()
        y = ours(x)
        dx = ours.backward(g)
        tx = torch.from_numpy(x).requires_grad_()
        ty = theirs(tx)
        ty.backward(torch.from_numpy(g))
        assert_close(y, ty.detach().numpy(), **tol, name=f"{label} output")
        assert_close(dx, tx.grad.numpy(), **tol, name=f"{label} input gradient")
        if ours.affine:
            assert_close(ours.weight.grad, theirs.weight.grad.numpy(), **tol, name="weight.grad")
            assert_close(ours.bias.grad, theirs.bias.grad.numpy(), **tol, name="bias.grad")
            theirs.weight.grad = None
            theirs.bias.grad = None
        mine = ours.state_dict()
        for key, value in theirs.state_dict().items():
            assert_close(mine[key], value.numpy(), **tol, name=key)

    for seed in range(3):
        step(seed, f"train step {seed}")
    ours.eval()
    theirs.eval()
    step(7, "eval")
