"""Linear, ReLU, Sigmoid, Tanh, Dropout and Flatten against NumPy references, PyTorch and
central differences, plus their initialisation, dtype rules and error messages."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import dense as ref

import tinynet
from tinynet.nn import Dropout, Flatten, Linear, ReLU, Sequential, Sigmoid, Tanh
from tinynet.testing import assert_close, gradcheck

ACTIVATIONS = {
    "ReLU": (ReLU, ref.relu),
    "Sigmoid": (Sigmoid, ref.sigmoid),
    "Tanh": (Tanh, ref.tanh),
}


def rand(*shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def away_from_zero(x, gap=1e-2):
    """Push values off ReLU's kink, where central differences are meaningless."""
    return np.where(np.abs(x) < gap, gap + np.abs(x), x)


# -- Linear ------------------------------------------------------------------------------------

LEADING = [(5,), (2, 3), (2, 1, 3), ()]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("leading", LEADING, ids=str)
def test_linear_matches_reference(leading, bias):
    layer = Linear(4, 3, bias=bias).double()
    x = rand(*leading, 4)
    y = layer(x)
    b = layer.bias.data if bias else None
    assert_close(y, ref.linear_forward(x, layer.weight.data, b), rtol=1e-12, atol=1e-14)
    g = rand(*leading, 3, seed=1)
    grad_x = layer.backward(g)
    ex, ew, eb = ref.linear_backward(x, layer.weight.data, g)
    assert_close(grad_x, ex, rtol=1e-12, atol=1e-14, name="grad x")
    assert_close(layer.weight.grad, ew, rtol=1e-12, atol=1e-14, name="grad weight")
    if bias:
        assert_close(layer.bias.grad, eb, rtol=1e-12, atol=1e-14, name="grad bias")
    else:
        assert layer.bias is None
        assert [n for n, _ in layer.named_parameters()] == ["weight"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("leading", LEADING, ids=str)
def test_linear_matches_torch(leading, bias, dtype):
    torch = pytest.importorskip("torch")
    layer = Linear(4, 3, bias=bias).to(dtype)
    theirs = torch.nn.Linear(4, 3, bias=bias).to(getattr(torch, np.dtype(dtype).name))
    theirs.load_state_dict({k: torch.tensor(v) for k, v in layer.state_dict().items()})
    x = rand(*leading, 4, dtype=dtype)
    g = rand(*leading, 3, seed=1, dtype=dtype)
    tx = torch.tensor(x, requires_grad=True)
    ty = theirs(tx)
    ty.backward(torch.tensor(g))
    y = layer(x)
    grad_x = layer.backward(g)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    assert y.dtype == grad_x.dtype == dtype
    assert_close(y, ty.detach().numpy(), name="forward", **tol)
    assert_close(grad_x, tx.grad.numpy(), name="grad x", **tol)
    assert_close(layer.weight.grad, theirs.weight.grad.numpy(), name="grad weight", **tol)
    if bias:
        assert_close(layer.bias.grad, theirs.bias.grad.numpy(), name="grad bias", **tol)


@settings(max_examples=25, deadline=None)
@given(
    leading=st.lists(st.integers(1, 3), min_size=0, max_size=3).map(tuple),
    fan_in=st.integers(1, 6),
    fan_out=st.integers(1, 6),
    bias=st.booleans(),
)
def test_linear_property_against_reference(leading, fan_in, fan_out, bias):
    layer = Linear(fan_in, fan_out, bias=bias).double()
    x = rand(*leading, fan_in)
    g = rand(*leading, fan_out, seed=1)
    b = layer.bias.data if bias else None
    assert_close(layer(x), ref.linear_forward(x, layer.weight.data, b), rtol=1e-12, atol=1e-13)
    ex, ew, _ = ref.linear_backward(x, layer.weight.data, g)
    assert_close(layer.backward(g), ex, rtol=1e-12, atol=1e-13)
    assert_close(layer.weight.grad, ew, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("leading", [(3,), (2, 2)], ids=str)
def test_linear_gradcheck(leading, bias):
    assert gradcheck(Linear(4, 3, bias=bias), rand(*leading, 4))


def test_linear_non_contiguous_input():
    layer = Linear(3, 2).double()
    x = rand(3, 5).T  # (5, 3), Fortran order
    assert_close(layer(x), ref.linear_forward(x, layer.weight.data, layer.bias.data), rtol=1e-12)


def test_linear_default_init_follows_pytorch_bounds():
    tinynet.manual_seed(0)
    layer = Linear(250, 400)
    bound = 1 / np.sqrt(250)
    for values in (layer.weight.data, layer.bias.data):
        assert values.dtype == np.float32
        assert np.abs(values).max() <= bound
    w = layer.weight.data.astype(np.float64)
    # Uniform(−b, b): mean 0, variance b²/3; 100,000 draws pin both down closely.
    assert abs(w.mean()) < 0.01 * bound
    assert w.var() == pytest.approx(bound**2 / 3, rel=0.02)
    assert np.abs(w).max() > 0.99 * bound  # the whole interval is used, not a narrower one
    assert np.abs(layer.bias.data).max() > 0.9 * bound


def test_linear_init_distribution_matches_torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = torch.nn.Linear(300, 200).weight.detach().numpy().ravel()
    mine = Linear(300, 200).weight.data.ravel()
    # Same distribution (two-sample Kolmogorov–Smirnov statistic small), not the same draws.
    grid = np.linspace(-0.06, 0.06, 121)
    cdf_mine = np.searchsorted(np.sort(mine), grid) / mine.size
    cdf_theirs = np.searchsorted(np.sort(theirs), grid) / theirs.size
    assert np.abs(cdf_mine - cdf_theirs).max() < 0.02


def test_manual_seed_makes_init_and_dropout_repeatable():
    def build():
        tinynet.manual_seed(123)
        model = Sequential(Linear(4, 8), Dropout(0.5), Linear(8, 2))
        return model, model(np.ones((16, 4)))

    (a, out_a), (b, out_b) = build(), build()
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    np.testing.assert_array_equal(out_a, out_b)
    tinynet.manual_seed(124)
    assert not np.array_equal(Linear(4, 8).weight.data, a[0].weight.data)


@pytest.mark.parametrize(
    ("x", "dtype"),
    [
        (np.ones((2, 3), dtype=np.int64), np.float32),
        (np.ones((2, 3), dtype=np.bool_), np.float32),
        (np.ones((2, 3), dtype=np.float64), np.float32),
        (np.ones((2, 3), dtype=np.float16), np.float32),
        ([[1.0, 2.0, 3.0]], np.float32),
    ],
)
def test_linear_casts_real_inputs_to_its_dtype(x, dtype):
    layer = Linear(3, 2)
    y = layer(x)
    assert y.dtype == dtype
    assert_close(y, ref.linear_forward(x, layer.weight.data, layer.bias.data), rtol=1e-5)
    assert layer.backward(np.ones((len(x), 2))).dtype == dtype
    assert layer.double()(x).dtype == np.float64


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (np.ones((2, 3), dtype=np.complex64), TypeError, "expected a real-valued"),
        (np.array([["a", "b", "c"]]), TypeError, "expected a real-valued"),
        (np.array([[object()] * 3]), TypeError, "expected a real-valued"),
        ("abc", TypeError, "expected a NumPy array, got str"),
        (None, TypeError, "expected a NumPy array, got NoneType"),
        (np.ones((2, 5)), ValueError, r"expected input \(N, 3\), got \(2, 5\)"),
        (np.ones((2, 3, 4)), ValueError, r"expected input \(N, 3\), got \(2, 3, 4\)"),
        (np.float64(1.0), ValueError, r"expected input \(N, 3\), got shape \(\)"),
    ],
)
def test_linear_input_errors_name_the_layer(x, error, match):
    with pytest.raises(error, match=match) as info:
        Linear(3, 2)(x)
    assert "Linear(in_features=3)" in str(info.value)


def test_linear_backward_errors():
    layer = Linear(3, 2)
    with pytest.raises(RuntimeError, match=r"Linear\(in_features=3\).backward called before"):
        layer.backward(np.ones((4, 2)))
    layer(np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"expected a gradient of shape \(4, 2\).*got \(4, 3\)"):
        layer.backward(np.ones((4, 3)))
    with pytest.raises(TypeError, match="real-valued"):
        layer.backward(np.ones((4, 2), dtype=complex))


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3", None])
def test_linear_constructor_errors(bad):
    with pytest.raises(ValueError, match=r"Linear expected in_features to be a positive int"):
        Linear(bad, 2)
    with pytest.raises(ValueError, match=r"Linear expected out_features to be a positive int"):
        Linear(2, bad)


# -- element-wise activations ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ACTIVATIONS))
@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 2, 2), ()], ids=str)
def test_activation_matches_reference(name, shape):
    cls, reference = ACTIVATIONS[name]
    layer = cls()
    x = away_from_zero(rand(*shape) * 3)
    y = layer(x)
    expected, derivative = reference(x)
    assert_close(y, expected, rtol=1e-12, atol=1e-15)
    g = rand(*shape, seed=1)
    assert_close(layer.backward(g), g * derivative, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_matches_torch(name, dtype):
    torch = pytest.importorskip("torch")
    x = (rand(4, 5) * 4).astype(dtype)
    x[0, :3] = [0.0, -0.0, 30.0]  # the kink and a saturated value
    g = rand(4, 5, seed=1).astype(dtype)
    tx = torch.tensor(x, requires_grad=True)
    getattr(torch.nn, name)()(tx).backward(torch.tensor(g))
    layer = ACTIVATIONS[name][0]()
    y = layer(x)
    grad = layer.backward(g)
    tol = dict(rtol=1e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-14, atol=1e-15)
    assert y.dtype == grad.dtype == dtype
    assert_close(y, getattr(torch, name.lower())(torch.tensor(x)).numpy(), **tol)
    assert_close(grad, tx.grad.numpy(), **tol)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_gradcheck(name):
    assert gradcheck(ACTIVATIONS[name][0](), away_from_zero(rand(3, 4) * 2))


def test_sigmoid_and_tanh_saturate_without_overflow():
    x = np.array([-1e4, -800.0, 0.0, 800.0, 1e4])
    with np.errstate(all="raise"):
        s = Sigmoid()(x)
        t = Tanh()(x)
    assert_close(s, [0, 0, 0.5, 1, 1], atol=0)
    assert_close(t, [-1, -1, 0, 1, 1], atol=0)


# Where the float32 kernels' exp polynomial, its range reduction and tanh's switch between
# its two formulas could go wrong: zeros, tiny values, the 0.625 switch, the ends of the
# exponent range, infinities.
_EDGES = [0.0, -0.0, 1e-30, -1e-8, 1e-4, 0.6249, 0.625, 0.6251, -0.625, 1.0, 9.0, 17.0, 43.9,
          44.1, 87.0, 88.0, 88.5, 89.0, 103.0, 1e30, np.inf]  # fmt: skip


@given(
    values=st.lists(st.floats(-120, 120, width=32), min_size=1, max_size=300),
    scale=st.sampled_from([1e-3, 1.0, 30.0]),
)
@settings(max_examples=60, deadline=None)
def test_float32_sigmoid_and_tanh_are_within_a_few_ulp(values, scale):
    """The float32 forwards are kernels with their own exp (kernels/elementwise.py): checked
    against float64 NumPy, in units in the last place of the float32 result."""
    edges = np.array(_EDGES, dtype=np.float32)
    x = np.concatenate([np.float32(scale) * np.array(values, np.float32), edges, -edges])
    for layer, exact, tolerance in ((Sigmoid(), ref.sigmoid, 3), (Tanh(), ref.tanh, 2)):
        y = layer(x)
        assert y.dtype == np.float32
        expected = exact(x)[0]  # float64
        normal = np.abs(expected) >= np.finfo(np.float32).tiny  # σ(x) below 1e-38: flushed
        ulp = np.spacing(expected.astype(np.float32)).astype(np.float64)
        error = np.abs(y.astype(np.float64) - expected)[normal] / ulp[normal]
        assert error.max() <= tolerance, (type(layer).__name__, x[normal][error.argmax()])
        assert np.all(y[~normal] <= np.finfo(np.float32).tiny)  # below the normal range
    assert Sigmoid()(np.float32([0.0]))[0] == 0.5  # an exact division, not a reciprocal
    nan = np.float32([np.nan, -np.nan])
    assert np.isnan(Sigmoid()(nan)).all() and np.isnan(Tanh()(nan)).all()


@pytest.mark.parametrize("threads", [1, 2])
def test_elementwise_parallel_loop_equals_the_serial_one(threads):
    """Arrays from config.SERIAL_BELOW values up run the parallel loop: the same values as the
    serial loop, bit for bit, at any thread count (each element is computed on its own)."""
    from tinynet import config
    from tinynet.kernels import elementwise

    rng = np.random.default_rng(0)
    size = 3 * config.SERIAL_BELOW + 7  # uneven shares
    a = (rng.standard_normal(size) * 20).astype(np.float32)
    a[::97] = np.nan
    b = rng.standard_normal(size).astype(np.float32)
    y = elementwise.apply(elementwise.SIGMOID, a)  # an output, as the gradients read
    ops = {
        elementwise.RELU: a, elementwise.SIGMOID: a, elementwise.TANH: a,
        elementwise.RELU_GRAD: y, elementwise.SIGMOID_GRAD: y, elementwise.TANH_GRAD: y,
    }  # fmt: skip
    with tinynet.set_num_threads(threads):
        for op, first in ops.items():
            parallel = elementwise.apply(op, first, b)
            serial = elementwise.map_serial(op, first, b, np.empty_like(first))
            np.testing.assert_array_equal(parallel, serial, err_msg=f"op {op}")
    # and the layers on the large array against float64, as the small-array test does
    for layer, exact in ((Sigmoid(), ref.sigmoid), (Tanh(), ref.tanh)):
        finite = a[np.isfinite(a)]
        got, expected = layer(finite).astype(np.float64), exact(finite)[0]
        assert np.max(np.abs(got - expected)) <= 4 * np.spacing(np.float32(1))


def test_float32_sigmoid_and_tanh_run_without_jit():
    """Under NUMBA_DISABLE_JIT the kernels are Python, with a NumPy stand-in for the LLVM bit
    cast: the same results but for rounding (Python has no fused multiply-add)."""
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        from tinynet.nn import Sigmoid, Tanh
        x = np.linspace(-100, 100, 2001, dtype=np.float32)
        sys.stdout.buffer.write(np.stack([Sigmoid()(x), Tanh()(x)]).tobytes())
        """
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", PYTHONPATH=root)
    result = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True)
    assert result.returncode == 0, result.stderr[-2000:]
    python = np.frombuffer(result.stdout, dtype=np.float32).reshape(2, -1)
    x = np.linspace(-100, 100, 2001, dtype=np.float32)
    np.testing.assert_allclose(python, np.stack([Sigmoid()(x), Tanh()(x)]), rtol=3e-7, atol=0)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_dtype_rules_and_errors(name):
    cls = ACTIVATIONS[name][0]
    assert cls()(np.ones(3, dtype=np.float64)).dtype == np.float64  # float32/64 are kept
    assert cls()(np.ones(3, dtype=np.float32)).dtype == np.float32
    assert cls()(np.arange(3)).dtype == np.float32  # ints become the default dtype
    assert cls().double()(np.arange(3)).dtype == np.float64
    with pytest.raises(TypeError, match=f"{name} expected a real-valued"):
        cls()(np.ones(3, dtype=complex))
    with pytest.raises(TypeError, match=f"{name} expected a NumPy array, got str"):
        cls()("1.0")
    with pytest.raises(RuntimeError, match=f"{name}.backward called before forward"):
        cls().backward(np.ones(3))
    layer = cls()
    layer(np.ones((2, 3)))
    with pytest.raises(ValueError, match=rf"{name}.backward expected a gradient of shape \(2, 3\)"):
        layer.backward(np.ones((3, 2)))


# -- Dropout -----------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_statistics(p, dtype):
    tinynet.manual_seed(0)
    n = 200_000
    x = np.random.default_rng(1).uniform(1, 2, n).astype(dtype)
    y = Dropout(p)(x)
    assert y.dtype == dtype
    dropped = y == 0
    # The fraction dropped is Binomial(n, p)/n: allow five standard deviations.
    assert abs(dropped.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
    assert_close(y[~dropped], x[~dropped] / (1 - p), rtol=1e-6 if dtype == np.float32 else 1e-15)
    assert abs(y.mean() / x.mean() - 1) < 0.02  # the expectation is kept


def test_dropout_backward_uses_the_forward_mask():
    tinynet.manual_seed(3)
    layer = Dropout(0.4).double()
    x = np.random.default_rng(0).uniform(1, 2, (50, 20))
    y = layer(x)
    g = np.random.default_rng(1).standard_normal(x.shape)
    grad = layer.backward(g)
    assert_close(grad, g * y / x, rtol=1e-14, atol=0)  # y / x is the mask: 0 or 1/(1 − p)
    assert_close(layer.backward(g), grad, atol=0, rtol=0)  # twice: the same mask


def test_dropout_reseeding_gives_the_same_mask_and_draws_differ_otherwise():
    x = np.ones((30, 30))
    tinynet.manual_seed(5)
    first = Dropout(0.5)(x)
    second = Dropout(0.5)(x)
    tinynet.manual_seed(5)
    again = Dropout(0.5)(x)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)


def test_dropout_eval_is_the_identity():
    layer = Dropout(0.7).eval()
    x = rand(5, 6)
    np.testing.assert_array_equal(layer(x), x)
    g = rand(5, 6, seed=1)
    np.testing.assert_array_equal(layer.backward(g), g)
    layer.train()
    assert (layer(np.ones((50, 50))) == 0).any()


def test_dropout_p_zero_and_one():
    x = rand(10, 10)
    g = rand(10, 10, seed=1)
    keep_all = Dropout(0.0)
    np.testing.assert_array_equal(keep_all(x), x)
    np.testing.assert_array_equal(keep_all.backward(g), g)
    drop_all = Dropout(1.0)
    y = drop_all(x)
    assert y.shape == x.shape and y.dtype == x.dtype and not y.any()
    assert not drop_all.backward(g).any()
    assert np.isfinite(y).all()


def test_dropout_matches_torch_in_distribution_and_eval():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    x = np.ones(100_000, dtype=np.float32)
    theirs = torch.nn.Dropout(0.3)(torch.tensor(x)).numpy()
    mine = Dropout(0.3)(x)
    assert set(np.unique(mine)) == set(np.unique(theirs))  # {0, 1/(1 − p)} in both
    assert abs((mine == 0).mean() - (theirs == 0).mean()) < 0.01
    np.testing.assert_array_equal(
        Dropout(0.3).eval()(x), torch.nn.Dropout(0.3).eval()(torch.tensor(x)).numpy()
    )


def _splitmix64(seed, i):
    """SplitMix64's i-th output from ``seed``, in Python integers (the reference)."""
    mask = 2**64 - 1
    z = (seed + (i + 1) * 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


@pytest.mark.parametrize("size", [37, 70_000])  # the serial and the parallel kernel
def test_dropout_mask_is_splitmix64_of_seed_and_index(size):
    """Element i is kept iff the top 32 bits of SplitMix64's i-th output are ≥ p·2³²."""
    p = 0.3
    tinynet.manual_seed(11)
    layer = Dropout(p).double()
    y = layer(np.ones(size))
    seed, threshold = layer._seed, round(p * 2**32)
    indices = np.random.default_rng(0).choice(size, min(size, 500), replace=False)
    for i in indices:
        kept = (_splitmix64(seed, int(i)) >> 32) >= threshold
        assert y[i] == (1 / (1 - p) if kept else 0.0)


@pytest.mark.parametrize("threads", [1, 2])
def test_dropout_mask_does_not_depend_on_threads_or_layout(threads):
    x = np.random.default_rng(0).uniform(1, 2, (64, 40, 30)).astype(np.float32)
    tinynet.manual_seed(4)
    reference = Dropout(0.5)(x)
    tinynet.manual_seed(4)
    with tinynet.set_num_threads(threads):
        np.testing.assert_array_equal(Dropout(0.5)(x), reference)
    tinynet.manual_seed(4)  # a non-contiguous view of the same values: the same mask
    x_f = np.asfortranarray(x)
    np.testing.assert_array_equal(Dropout(0.5)(x_f), reference)


def test_dropout_neighbouring_elements_are_independent():
    """Pairs of neighbours both kept at rate (1 − p)², not more or less (a weak hash of
    consecutive counters would correlate them)."""
    tinynet.manual_seed(7)
    n, p = 400_000, 0.5
    kept = Dropout(p)(np.ones(n, dtype=np.float32)) != 0
    both = (kept[1:] & kept[:-1]).mean()
    q = (1 - p) ** 2
    assert abs(both - q) < 5 * np.sqrt(q * (1 - q) / n)


def test_dropout_drops_nan_to_nan_as_torch():
    """A dropped element is multiplied by 0, not replaced by 0: NaN and ±inf give NaN."""
    tinynet.manual_seed(2)
    x = np.full(1000, np.inf)
    y = Dropout(0.5).double()(x)
    assert np.isnan(y).any() and np.isinf(y).any() and not (y == 0).any()


def test_dropout_without_jit_draws_the_same_mask():
    """Under NUMBA_DISABLE_JIT the mask is computed in Python integers: the same bits, and no
    overflow warnings (the subprocess turns warnings into errors)."""
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import tinynet
        from tinynet.nn import Dropout
        tinynet.manual_seed(3)
        sys.stdout.buffer.write(Dropout(0.4).double()(np.ones(3000)).tobytes())
        """
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", PYTHONPATH=root)
    command = [sys.executable, "-W", "error", "-c", script]
    result = subprocess.run(command, cwd=root, env=env, capture_output=True)
    assert result.returncode == 0, result.stderr[-2000:]
    tinynet.manual_seed(3)
    expected = Dropout(0.4).double()(np.ones(3000))
    np.testing.assert_array_equal(np.frombuffer(result.stdout, dtype=np.float64), expected)


def test_dropout_gradcheck():
    # gradcheck reseeds before every forward, so each evaluation draws the same mask.
    assert gradcheck(Dropout(0.3), rand(6, 5))
    assert gradcheck(Sequential(Linear(5, 4), Dropout(0.5), Tanh()), rand(6, 5))


@pytest.mark.parametrize("p", [-0.1, 1.5, "0.5", None, True, float("nan")])
def test_dropout_bad_p(p):
    with pytest.raises(ValueError, match=r"Dropout expected p in \[0, 1\]"):
        Dropout(p)


def test_dropout_accepts_numpy_p_and_errors():
    assert Dropout(np.float32(0.25)).p == 0.25
    assert repr(Dropout(0.25)) == "Dropout(p=0.25)"
    with pytest.raises(RuntimeError, match="Dropout.backward called before forward"):
        Dropout().backward(np.ones(3))
    layer = Dropout()
    layer(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"Dropout.backward expected a gradient of shape"):
        layer.backward(np.ones(6))
    with pytest.raises(TypeError, match="Dropout expected a real-valued"):
        layer(np.ones(3, dtype=complex))


# -- Flatten -----------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    # Sizes of 0 included: an empty batch flattens to (0, C·H·W), as in torch.
    shape=st.lists(st.integers(0, 3), min_size=1, max_size=5).map(tuple),
    start=st.integers(-5, 4),
    end=st.integers(-5, 4),
)
def test_flatten_matches_torch(shape, start, end):
    torch = pytest.importorskip("torch")
    x = rand(*shape)
    layer = Flatten(start, end)
    try:
        expected = torch.flatten(torch.tensor(x), start, end).numpy()
    except (RuntimeError, IndexError):
        with pytest.raises(ValueError, match="Flatten.*expected an input with dimensions"):
            layer(x)
        return
    y = layer(x)
    np.testing.assert_array_equal(y, expected)
    g = rand(*y.shape, seed=1)
    np.testing.assert_array_equal(layer.backward(g), g.reshape(shape))


def test_flatten_default_and_gradcheck():
    x = rand(2, 3, 4, 5)
    layer = Flatten()
    y = layer(x)
    assert y.shape == (2, 60)
    assert np.shares_memory(y, x)  # a view, no copy
    np.testing.assert_array_equal(y[1], x[1].ravel())
    assert gradcheck(Flatten(), rand(2, 3, 2))
    assert gradcheck(Flatten(0, 1), rand(2, 3, 2))


def test_flatten_of_a_0d_input_is_one_value():
    """As torch: dims 0 and -1 name a 0-d input's one dimension; it flattens to (1,)."""
    layer = Flatten(0)
    assert layer(np.float32(3.0)).shape == (1,)
    assert layer.backward(np.ones(1, np.float32)).shape == ()
    assert Flatten(-1, 0)(np.array(2.0)).tolist() == [2.0]


def test_flatten_errors():
    with pytest.raises(
        ValueError,
        match=r"Flatten\(start_dim=2, end_dim=1\) expected an input with dimensions "
        r"start_dim..end_dim, got shape \(2, 3, 4\)",
    ):
        Flatten(2, 1)(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match=r"got shape \(\)"):
        Flatten()(np.float64(1.0))  # start_dim 1 of a 0-d input (torch: an IndexError)
    with pytest.raises(TypeError, match="Flatten expected start_dim to be an int, got 1.5"):
        Flatten(1.5)
    with pytest.raises(RuntimeError, match="Flatten.backward called before forward"):
        Flatten().backward(np.ones(3))
    layer = Flatten()
    layer(np.ones((2, 3, 4)))
    # The right number of elements in the wrong shape is still an error.
    with pytest.raises(ValueError, match=r"expected a gradient of shape \(2, 12\).*got \(12, 2\)"):
        layer.backward(np.ones((12, 2)))
    assert Flatten()(np.ones((2, 3), dtype=np.int8)).dtype == np.float32


# -- a small network ---------------------------------------------------------------------------


def test_mlp_gradcheck_every_element():
    model = Sequential(Linear(3, 5), Tanh(), Linear(5, 4), Sigmoid(), Flatten(), Linear(4, 2))
    assert gradcheck(model, rand(4, 3), max_checks=None)


@pytest.mark.parametrize(
    "n, fan_in, fan_out",
    [(70, 300, 200), (33, 500, 301), (300, 200, 70), (2, 3000, 1001)],
    ids=["by features", "by features, uneven", "by rows", "batch of 2"],
)
@pytest.mark.parametrize("threads", [1, 2])
def test_linear_split_across_threads_matches_numpy(threads, n, fan_in, fan_out):
    """Products large enough to split across threads (one BLAS call per thread): by output
    features when the batch is smaller than their count, else by rows."""
    assert 2 * n * fan_in * fan_out >= 4_000_000  # the layer's threshold for splitting
    # Different values per thread count: an output block left unwritten must not pass by
    # holding the previous run's result in reused memory.
    rng = np.random.default_rng(3 + threads)
    tinynet.manual_seed(3)
    layer = Linear(fan_in, fan_out).double()
    x = rng.standard_normal((n, fan_in))
    g = rng.standard_normal((n, fan_out))
    with tinynet.set_num_threads(threads):
        y = layer(x)
        gx = layer.backward(g)
    w, b = layer.weight.data, layer.bias.data

    def close(got, a, c, extra=0):
        # Within 1e-12 of the sum of |terms|: BLAS may order a dot product differently, and
        # an entry that nearly cancels has no relative accuracy to compare (seen: 2e-12).
        scale = np.abs(a) @ np.abs(c) + np.abs(extra)
        assert np.all(np.abs(got - (a @ c + extra)) <= 1e-12 * scale)

    close(y, x, w.T, b)
    close(gx, g, w)
    close(layer.weight.grad, g.T, x)
    close(layer.bias.grad, g.T, np.ones(len(g)))


def test_relu_keeps_nan_and_passes_its_gradient():
    """torch.relu keeps a NaN, and its backward (threshold_backward on the output) zeroes the
    gradient only where the output is ≤ 0: at a NaN it passes, as at a positive value."""
    relu = ReLU()
    x = np.array([-1.0, 0.0, 2.0, np.nan, -np.inf, np.inf], dtype=np.float32)
    y = relu(x)
    np.testing.assert_array_equal(y, [0.0, 0.0, 2.0, np.nan, 0.0, np.inf])
    np.testing.assert_array_equal(relu.backward(np.ones_like(x)), [0, 0, 1, 1, 0, 1])
    rng = np.random.default_rng(0)
    big = rng.standard_normal((64, 1024)).astype(np.float32)  # the parallel kernel
    big[rng.random(big.shape) < 0.01] = np.nan
    g = rng.standard_normal(big.shape).astype(np.float32)
    np.testing.assert_array_equal(relu(big), np.where(big <= 0, 0, big))
    np.testing.assert_array_equal(relu.backward(g), np.where(big <= 0, 0, g))
    torch = pytest.importorskip("torch")
    tx = torch.from_numpy(big).requires_grad_(True)
    torch.relu(tx).backward(torch.from_numpy(g))
    np.testing.assert_array_equal(relu.backward(g), tx.grad.numpy())
