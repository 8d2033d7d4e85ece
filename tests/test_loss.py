"""CrossEntropyLoss and MSELoss against PyTorch, a NumPy reference and central differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import dense as ref

from tinynet.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from tinynet.testing import assert_close

SMOOTHING = [0.0, 0.1, 0.5, 1.0]


def logits_and_target(n=6, c=4, seed=0, scale=3.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, c)) * scale).astype(dtype), rng.integers(0, c, n)


def central_differences(f, x, eps=1e-6):
    """d f / d x for a scalar f of a float64 array, one element at a time."""
    grad = np.zeros_like(x)
    for index in np.ndindex(*x.shape):
        saved = x[index]
        x[index] = saved + eps
        plus = f(x)
        x[index] = saved - eps
        minus = f(x)
        x[index] = saved
        grad[index] = (plus - minus) / (2 * eps)
    return grad


# -- CrossEntropyLoss --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("smoothing", SMOOTHING)
def test_cross_entropy_matches_torch(smoothing, reduction, dtype):
    torch = pytest.importorskip("torch")
    x, t = logits_and_target(dtype=dtype)
    crit = CrossEntropyLoss(reduction=reduction, label_smoothing=smoothing)
    loss = crit(x, t)
    grad = crit.backward()
    tx = torch.tensor(x, requires_grad=True)
    tloss = torch.nn.CrossEntropyLoss(reduction=reduction, label_smoothing=smoothing)(
        tx, torch.tensor(t)
    )
    tloss.backward()
    assert isinstance(loss, float)
    assert grad.dtype == dtype and grad.shape == x.shape
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    assert_close(loss, tloss.item(), name="loss", **tol)
    assert_close(grad, tx.grad.numpy(), name="grad", **tol)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("smoothing", SMOOTHING)
def test_cross_entropy_matches_reference_and_central_differences(smoothing, reduction):
    x, t = logits_and_target(seed=1)
    crit = CrossEntropyLoss(reduction=reduction, label_smoothing=smoothing)
    loss = crit(x, t)
    grad = crit.backward()
    expected_loss, expected_grad = ref.cross_entropy(x, t, reduction, smoothing)
    assert_close(loss, expected_loss, rtol=1e-12)
    assert_close(grad, expected_grad, rtol=1e-12, atol=1e-15)
    numeric = central_differences(
        lambda z: CrossEntropyLoss(reduction=reduction, label_smoothing=smoothing)(z, t), x
    )
    assert_close(grad, numeric, rtol=1e-6, atol=1e-8)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 8),
    c=st.integers(1, 6),
    smoothing=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_cross_entropy_property_against_reference(n, c, smoothing, seed):
    x, t = logits_and_target(n, c, seed)
    crit = CrossEntropyLoss(label_smoothing=smoothing)
    expected_loss, expected_grad = ref.cross_entropy(x, t, "mean", smoothing)
    assert_close(crit(x, t), expected_loss, rtol=1e-11, atol=1e-14)
    assert_close(crit.backward(), expected_grad, rtol=1e-11, atol=1e-14)


def weighted_case(n, c, seed, ignore_index):
    """Logits, targets with about a quarter of them ignore_index, and class weights (some 0)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c)) * 3
    t = rng.integers(0, c, n)
    t[rng.random(n) < 0.25] = ignore_index
    w = rng.uniform(0.0, 2.0, c)
    w[rng.random(c) < 0.2] = 0.0
    return x, t, w


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 9),
    c=st.integers(1, 6),
    smoothing=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    weighted=st.booleans(),
    ignore_index=st.sampled_from([-100, 0, 2, 7]),
    seed=st.integers(0, 2**16),
)
def test_cross_entropy_weight_and_ignore_index_against_reference(
    n, c, smoothing, reduction, weighted, ignore_index, seed
):
    x, t, w = weighted_case(n, c, seed, ignore_index)
    w = w if weighted else None
    crit = CrossEntropyLoss(
        w, ignore_index=ignore_index, reduction=reduction, label_smoothing=smoothing
    )
    loss, grad = crit(x, t), crit.backward()
    expected_loss, expected_grad = ref.cross_entropy(x, t, reduction, smoothing, w, ignore_index)
    if reduction == "none":
        assert loss.shape == (n,) and loss.dtype == x.dtype
    elif np.isnan(expected_loss):  # a mean over no weight: 0/0
        assert np.isnan(loss)
        return
    assert_close(loss, expected_loss, rtol=1e-11, atol=1e-13)
    assert_close(grad, expected_grad, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("ignore_index", [-100, 1])
def test_cross_entropy_weight_and_ignore_index_match_torch(
    dtype, reduction, smoothing, ignore_index
):
    torch = pytest.importorskip("torch")
    x, t, w = weighted_case(12, 5, 3, ignore_index)
    x = x.astype(dtype)
    crit = CrossEntropyLoss(
        w, ignore_index=ignore_index, reduction=reduction, label_smoothing=smoothing
    )
    theirs = torch.nn.CrossEntropyLoss(
        weight=torch.tensor(w.astype(dtype)),
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=smoothing,
    )
    assert_same_as_torch(torch, crit, theirs, x, t)
    assert set(crit.state_dict()) == set(theirs.state_dict()) == {"weight"}


def assert_same_as_torch(torch, crit, theirs, x, target):
    """Our loss and gradient against torch's module ``theirs`` on the same input and target."""
    loss, grad = crit(x, target), crit.backward()
    tx = torch.tensor(x, requires_grad=True)
    tloss = theirs(tx, torch.tensor(target))
    tloss.backward()
    tol = dict(rtol=2e-5, atol=1e-6) if x.dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    assert_close(loss, tloss.item(), name="loss", **tol)
    assert_close(grad, tx.grad.numpy(), name="grad", **tol)


def test_cross_entropy_weighted_gradient_is_the_central_difference():
    x, t, w = weighted_case(6, 4, 5, -100)
    crit = CrossEntropyLoss(w, label_smoothing=0.3)
    crit(x, t)
    numeric = central_differences(
        lambda z: CrossEntropyLoss(w, label_smoothing=0.3)(z, t), x.copy()
    )
    assert_close(crit.backward(), numeric, rtol=1e-6, atol=1e-8)


def probabilities_case(n, c, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c)) * 3
    y = rng.dirichlet(np.ones(c), n) if n else np.zeros((0, c))
    return x, y, rng.uniform(0.1, 2.0, c)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 7),
    c=st.integers(1, 5),
    smoothing=st.sampled_from([0.0, 0.3, 1.0]),
    reduction=st.sampled_from(["mean", "sum"]),
    weighted=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_cross_entropy_probability_targets_against_reference(
    n, c, smoothing, reduction, weighted, seed
):
    x, y, w = probabilities_case(n, c, seed)
    w = w if weighted else None
    crit = CrossEntropyLoss(w, reduction=reduction, label_smoothing=smoothing)
    loss, grad = crit(x, y), crit.backward()
    expected_loss, expected_grad = ref.cross_entropy(x, y, reduction, smoothing, w)
    assert_close(loss, expected_loss, rtol=1e-11, atol=1e-13)
    assert_close(grad, expected_grad, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_probability_targets_match_torch(dtype, reduction, smoothing, weighted):
    torch = pytest.importorskip("torch")
    x, y, w = probabilities_case(9, 4, 2)
    x, y = x.astype(dtype), y.astype(dtype)
    crit = CrossEntropyLoss(w if weighted else None, reduction=reduction, label_smoothing=smoothing)
    theirs = torch.nn.CrossEntropyLoss(
        weight=torch.tensor(w.astype(dtype)) if weighted else None,
        reduction=reduction,
        label_smoothing=smoothing,
    )
    assert_same_as_torch(torch, crit, theirs, x, y)


def test_cross_entropy_probability_targets_gradient_and_errors():
    x, y, w = probabilities_case(5, 3, 4)
    crit = CrossEntropyLoss(w, label_smoothing=0.1)
    crit(x, y)
    numeric = central_differences(lambda z: CrossEntropyLoss(w, label_smoothing=0.1)(z, y), x)
    assert_close(crit.backward(), numeric, rtol=1e-6, atol=1e-8)
    # One-hot probabilities are the class indices' loss (without weights: same mean divisor).
    t = np.array([2, 0, 1, 1, 0])
    assert_close(CrossEntropyLoss()(x, np.eye(3)[t]), CrossEntropyLoss()(x, t), rtol=1e-14)
    with pytest.raises(ValueError, match="ignore_index is not supported for class-probability"):
        CrossEntropyLoss(ignore_index=0)(x, y)
    # A negative ignore_index names no class: as torch, it is let through (and changes nothing).
    assert CrossEntropyLoss(w, ignore_index=-1)(x, y) == CrossEntropyLoss(w)(x, y)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("target_kind", ["index", "probabilities"])
def test_cross_entropy_unbatched_input_matches_torch(reduction, target_kind):
    """Scores (C,) with a class index of shape () or probabilities (C,), as torch accepts:
    the loss of a batch of one row, a 0-d loss for 'none', a gradient of shape (C,)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    x = rng.standard_normal(5)
    t = np.array(3) if target_kind == "index" else rng.dirichlet(np.ones(5))
    crit = CrossEntropyLoss(reduction=reduction, label_smoothing=0.1)
    loss = crit(x, t)
    tx = torch.tensor(x, requires_grad=True)
    tloss = torch.nn.CrossEntropyLoss(reduction=reduction, label_smoothing=0.1)(tx, torch.tensor(t))
    tloss.backward()
    assert np.shape(loss) == tuple(tloss.shape)
    assert_close(np.asarray(loss), tloss.detach().numpy(), rtol=1e-12, atol=1e-14, name="loss")
    grad = crit.backward() if reduction != "none" else crit.backward(np.array(1.0))
    assert grad.shape == (5,)
    assert_close(grad, tx.grad.numpy(), rtol=1e-12, atol=1e-14, name="grad")
    for bad in (np.array([3]), np.arange(5)):  # a batch's target, or integers (C,)
        with pytest.raises(ValueError, match=r"\(C,\) with a class index"):
            CrossEntropyLoss()(x, bad)


def test_cross_entropy_all_rows_ignored():
    """A mean over no rows is NaN (0/0, as torch); the gradient is zero; a sum is 0."""
    x = np.random.default_rng(0).standard_normal((3, 4))
    t = np.full(3, -100)
    crit = CrossEntropyLoss()
    assert np.isnan(crit(x, t)) and not crit.backward().any()
    crit = CrossEntropyLoss(reduction="sum")
    assert crit(x, t) == 0 and not crit.backward().any()
    torch = pytest.importorskip("torch")
    assert np.isnan(torch.nn.CrossEntropyLoss()(torch.tensor(x), torch.tensor(t)).item())


def test_cross_entropy_weight_errors():
    with pytest.raises(
        ValueError, match=r"weight of shape \(C,\), one per class, got shape \(2, 2\)"
    ):
        CrossEntropyLoss(np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"expected weight of shape \(3,\).*got shape \(4,\)"):
        CrossEntropyLoss(np.ones(4))(np.zeros((2, 3)), np.array([0, 1]))
    with pytest.raises(TypeError, match="ignore_index to be an int, got 0.5"):
        CrossEntropyLoss(ignore_index=0.5)
    with pytest.raises(TypeError):
        CrossEntropyLoss(None, -100)  # keyword-only after weight (torch's order differs)
    weight = np.array([1.0, 2.0, 3.0])
    crit = CrossEntropyLoss(weight)
    weight[0] = 100.0  # the layer keeps its own copy
    assert crit.weight[0] == 1.0 and crit.weight.dtype == np.float64  # as given, as torch


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_large_logits_are_stable(dtype):
    x = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4 - 5.0], [-1e4, -1e4, -1e4]], dtype=dtype)
    t = np.array([1, 2, 0])
    # Underflow to 0 is harmless (e^-20000 is 0); overflow, inf − inf or log 0 are not.
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        crit = CrossEntropyLoss(label_smoothing=0.1)
        loss = crit(x, t)
        grad = crit.backward()
    assert np.isfinite(loss) and np.isfinite(grad).all()
    expected_loss, expected_grad = ref.cross_entropy(x.astype(np.float64), t, "mean", 0.1)
    assert_close(loss, expected_loss, rtol=1e-6)
    assert_close(grad, expected_grad, rtol=1e-6, atol=1e-7)
    torch = pytest.importorskip("torch")
    tloss = torch.nn.CrossEntropyLoss(label_smoothing=0.1)(torch.tensor(x), torch.tensor(t))
    assert_close(loss, tloss.item(), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_masked_logits(dtype):
    """A −inf score on a class other than the target (a masked logit) has probability 0: the
    loss stays finite, as torch's, which gathers the target's log-probability (0·∞ summed
    over every class gave NaN). With label smoothing every class counts: +inf, as torch.
    Probability targets sum over every class in torch, 0·∞ included: NaN there, alike."""
    x = np.array([[-np.inf, 0.0, 1.0], [2.0, -np.inf, -np.inf]], dtype=dtype)
    t = np.array([1, 0])
    crit = CrossEntropyLoss(weight=np.array([1.0, 2.0, 3.0]))
    loss = crit(x, t)
    # −log p_t by hand over the finite scores: row 0 log(1 + e) − 0, row 1 0; weights 2, 1.
    assert_close(loss, (2 * math.log(1 + math.e) + 0) / 3, rtol=1e-6)
    grad = crit.backward()
    p = np.exp(1.0) / (1 + np.exp(1.0))
    assert_close(grad, np.array([[0, -2 * p, 2 * p], [0, 0, 0]]) / 3, rtol=1e-6, atol=1e-7)
    assert CrossEntropyLoss(label_smoothing=0.1)(x, t) == np.inf
    assert np.isnan(CrossEntropyLoss()(x, np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])))
    torch = pytest.importorskip("torch")
    tx, tt = torch.tensor(x), torch.tensor(t)
    tloss = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 3.0], dtype=tx.dtype))
    assert_close(loss, tloss(tx, tt).item(), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_gradient_is_rounded_once(dtype):
    """softmax − one_hot in float64, then one rounding into the gradient's dtype: with one
    class the gradient is exactly 0 (a float32 store before subtracting left 2^-26/N)."""
    crit = CrossEntropyLoss()
    x = np.random.default_rng(0).standard_normal((5, 1)).astype(dtype)
    assert crit(x, np.zeros(5, dtype=np.int64)) == 0
    grad = crit.backward()
    assert grad.dtype == dtype and np.all(grad == 0)


def test_cross_entropy_accepts_any_integer_target_dtype():
    x, t = logits_and_target()
    expected = CrossEntropyLoss()(x, t)
    for dtype in (np.int8, np.uint8, np.int32, np.uint64):
        assert CrossEntropyLoss()(x, t.astype(dtype)) == expected
    assert CrossEntropyLoss()(x, list(t)) == expected


@pytest.mark.parametrize(
    ("x", "t", "match"),
    [
        (np.zeros(4), np.array([0]), r"expected input \(N, C\) or .*got input \(4,\)"),
        (np.zeros((2, 3, 4)), np.array([0, 1]), r"indices with shape \(2, 4\) or .*got int64"),
        (np.zeros((2, 3)), np.array([0, 1, 2]), r"shape \(2, 3\), got int64 array of shape \(3,\)"),
        (np.zeros((2, 3)), np.zeros((2, 3), np.int64), "class probabilities with shape"),
        (np.zeros((2, 3)), np.array([0.0, 1.0]), "integer class indices.*got float64"),
        (np.zeros((2, 3)), np.array([[0], [1]]), "integer class indices"),
        (
            np.zeros((2, 3)),
            np.array([0, 3]),
            r"in \[0, 3\) or ignore_index \(-100\), got min 0 and max 3",
        ),
        (np.zeros((2, 3)), np.array([-1, 0]), r"target values in \[0, 3\) or .*got min -1"),
    ],
)
def test_cross_entropy_errors(x, t, match):
    with pytest.raises(ValueError, match=match):
        CrossEntropyLoss()(x, t)


def test_cross_entropy_constructor_and_backward_errors():
    with pytest.raises(ValueError, match="expected reduction in .*got 'avg'"):
        CrossEntropyLoss(reduction="avg")
    with pytest.raises(ValueError, match=r"label_smoothing in \[0, 1\], got 1.5"):
        CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(RuntimeError, match="CrossEntropyLoss.backward called before forward"):
        CrossEntropyLoss().backward()
    with pytest.raises(TypeError, match="CrossEntropyLoss expected a real-valued"):
        CrossEntropyLoss()(np.zeros((2, 3), dtype=complex), np.array([0, 1]))


def test_cross_entropy_int_logits_are_cast():
    x = np.array([[1, 2, 3], [3, 2, 1]])
    loss = CrossEntropyLoss()
    assert loss(x, np.array([2, 0])) == pytest.approx(
        ref.cross_entropy(x, np.array([2, 0]))[0], rel=1e-6
    )
    assert loss.backward().dtype == np.float32


# -- MSELoss -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 2)], ids=str)
def test_mse_matches_torch(shape, reduction, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    y = rng.standard_normal(shape).astype(dtype)
    crit = MSELoss(reduction)
    loss = crit(x, y)
    grad = crit.backward()
    tx = torch.tensor(x, requires_grad=True)
    tloss = torch.nn.MSELoss(reduction=reduction)(tx, torch.tensor(y))
    tloss.backward()
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    assert grad.dtype == dtype
    assert_close(loss, tloss.item(), **tol)
    assert_close(grad, tx.grad.numpy(), **tol)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_matches_reference_and_central_differences(reduction):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4))
    y = rng.standard_normal((3, 4))
    crit = MSELoss(reduction)
    expected_loss, expected_grad = ref.mse(x, y, reduction)
    assert_close(crit(x, y), expected_loss, rtol=1e-12)
    assert_close(crit.backward(), expected_grad, rtol=1e-12)
    numeric = central_differences(lambda z: MSELoss(reduction)(z, y), x)
    assert_close(crit.backward(), numeric, rtol=1e-6, atol=1e-8)


def test_mse_casts_target_and_checks_shapes():
    x = np.array([1.0, 2.0], dtype=np.float32)
    crit = MSELoss()
    assert crit(x, np.array([1, 4])) == pytest.approx(2.0)
    assert crit.backward().dtype == np.float32
    with pytest.raises(
        ValueError, match=r"expected target of the input's shape \(2,\), got \(3,\)"
    ):
        crit(x, np.zeros(3))
    with pytest.raises(ValueError, match="MSELoss expected reduction in"):
        MSELoss("max")
    with pytest.raises(RuntimeError, match="MSELoss.backward called before forward"):
        MSELoss().backward()
    with pytest.raises(TypeError, match="MSELoss expected a real-valued"):
        crit(x, np.array(["a", "b"]))


def test_cross_entropy_empty_batch_and_no_classes():
    # The mean over no samples is NaN (as torch); no classes is a clear error, not a read
    # past the end of a row.
    crit = CrossEntropyLoss()
    assert np.isnan(crit(np.zeros((0, 3), np.float32), np.zeros(0, np.int64)))
    assert crit.backward().shape == (0, 3)
    assert CrossEntropyLoss(reduction="sum")(np.zeros((0, 3)), np.zeros(0, np.int64)) == 0
    with pytest.raises(ValueError, match="at least one class"):
        crit(np.zeros((2, 0), np.float32), np.zeros(2, np.int64))


# -- BCEWithLogitsLoss -------------------------------------------------------------------------


def bce_case(shape, seed, weight_shape=None, pos_shape=None):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 4
    y = rng.uniform(0, 1, shape)
    hard = rng.random(shape) < 0.5  # some hard labels, 0 or 1
    y[hard] = np.round(y[hard])
    w = None if weight_shape is None else rng.uniform(0.1, 2, weight_shape)
    p = None if pos_shape is None else rng.uniform(0.2, 3, pos_shape)
    return x, y, w, p


def bce_reference(x, y, w, p, reduction):
    """−w·[p·y·log σ(x) + (1 − y)·log(1 − σ(x))] from the definition, in float64 with
    math.log1p / math.exp per element, and its derivative w·(σ(x)·(1 + (p − 1)·y) − p·y)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    w = np.broadcast_to(1.0 if w is None else w, x.shape)
    p = np.broadcast_to(1.0 if p is None else p, x.shape)
    losses, grads = np.zeros(x.shape), np.zeros(x.shape)
    for i in np.ndindex(x.shape):
        v = x[i]
        log_sig = -math.log1p(math.exp(-v)) if v > 0 else v - math.log1p(math.exp(v))
        log_one_minus = log_sig - v  # log(1 − σ(v)) = log σ(v) − v
        sig = 1 / (1 + math.exp(-v)) if v > 0 else math.exp(v) / (1 + math.exp(v))
        losses[i] = -w[i] * (p[i] * y[i] * log_sig + (1 - y[i]) * log_one_minus)
        grads[i] = w[i] * (sig * (1 + (p[i] - 1) * y[i]) - p[i] * y[i])
    scale = 1 / max(x.size, 1) if reduction == "mean" else 1.0
    return losses.sum() * scale, grads * scale


@pytest.mark.parametrize(
    ("shape", "weight_shape", "pos_shape"),
    [((7,), None, None), ((5, 3), (3,), (3,)), ((4, 3), (4, 1), None), ((2, 3, 4, 5), None, (5,))],
)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_bce_with_logits_against_reference_and_torch(shape, weight_shape, pos_shape, reduction):
    x, y, w, p = bce_case(shape, 0, weight_shape, pos_shape)
    crit = BCEWithLogitsLoss(w, reduction=reduction, pos_weight=p)
    loss, grad = crit(x, y), crit.backward()
    expected_loss, expected_grad = bce_reference(x, y, w, p, reduction)
    assert_close(loss, expected_loss, rtol=1e-12)
    assert_close(grad, expected_grad, rtol=1e-11, atol=1e-15)
    torch = pytest.importorskip("torch")
    theirs = torch.nn.BCEWithLogitsLoss(
        weight=None if w is None else torch.tensor(w),
        reduction=reduction,
        pos_weight=None if p is None else torch.tensor(p),
    )
    assert_same_as_torch(torch, crit, theirs, x, y)
    assert set(crit.state_dict()) == set(theirs.state_dict())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_with_logits_is_stable_for_large_logits(dtype):
    x = np.array([-200.0, -30.0, 0.0, 30.0, 200.0], dtype=dtype)
    y = np.array([1.0, 0.0, 0.5, 1.0, 0.0], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        crit = BCEWithLogitsLoss(reduction="sum")
        loss = crit(x, y)
        grad = crit.backward()
    assert grad.dtype == dtype and np.isfinite(grad).all()
    # 200 and 200 from the two wrong extremes, log 2 at 0, about e^-30 from the right ones.
    assert_close(loss, 400 + math.log(2), rtol=1e-9)
    assert_close(grad, np.array([-1.0, 0.0, 0.0, 0.0, 1.0]), atol=1e-12)


def test_bce_with_logits_gradient_is_the_central_difference():
    x, y, w, p = bce_case((4, 3), 1, (3,), (3,))
    crit = BCEWithLogitsLoss(w, pos_weight=p)
    crit(x, y)
    numeric = central_differences(lambda z: BCEWithLogitsLoss(w, pos_weight=p)(z, y), x)
    assert_close(crit.backward(), numeric, rtol=1e-6, atol=1e-9)


def test_bce_with_logits_errors():
    with pytest.raises(ValueError, match="expected reduction in .*got 'avg'"):
        BCEWithLogitsLoss(reduction="avg")
    with pytest.raises(ValueError, match=r"target of the input's shape \(2, 3\), got \(3,\)"):
        BCEWithLogitsLoss()(np.zeros((2, 3)), np.zeros(3))
    with pytest.raises(ValueError, match=r"pos_weight broadcastable .*got shape \(2,\)"):
        BCEWithLogitsLoss(pos_weight=np.ones(2))(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(RuntimeError, match="BCEWithLogitsLoss.backward called before forward"):
        BCEWithLogitsLoss().backward()


@pytest.mark.parametrize("cls", [MSELoss, BCEWithLogitsLoss])
def test_mean_of_no_elements_is_nan_as_in_torch(cls):
    crit = cls()
    assert np.isnan(crit(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32)))
    assert crit.backward().shape == (0, 3)
    total = cls(reduction="sum")
    assert total(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32)) == 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("target_kind", ["indices", "probabilities"])
def test_cross_entropy_reduction_none_matches_torch(dtype, target_kind):
    """Per-row losses, and backward(grad_out) scaling each row's gradient, as
    loss.backward(gradient) in torch; no grad_out is the gradient of the losses' sum."""
    torch = pytest.importorskip("torch")
    x, t, w = weighted_case(9, 4, 5, 2)
    x = x.astype(dtype)
    if target_kind == "probabilities":
        t = np.random.default_rng(6).dirichlet(np.ones(4), 9).astype(dtype)
        kwargs, t_kwargs = {}, {}
    else:
        kwargs = dict(ignore_index=2, label_smoothing=0.1)
        t_kwargs = dict(weight=torch.tensor(w.astype(dtype)), **kwargs)
        kwargs["weight"] = w
    crit = CrossEntropyLoss(reduction="none", **kwargs)
    losses = crit(x, t)
    assert losses.shape == (9,) and losses.dtype == dtype
    g = np.random.default_rng(7).standard_normal(9).astype(dtype)
    tx = torch.tensor(x, requires_grad=True)
    tlosses = torch.nn.CrossEntropyLoss(reduction="none", **t_kwargs)(tx, torch.tensor(t))
    tlosses.backward(torch.tensor(g))
    tol = dict(rtol=2e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    assert_close(losses, tlosses.detach().numpy(), name="losses", **tol)
    assert_close(crit.backward(g), tx.grad.numpy(), name="grad", **tol)
    total = CrossEntropyLoss(reduction="sum", **kwargs)
    total(x, t)
    assert_close(crit.backward(), total.backward(), name="grad of the sum", **tol)


@pytest.mark.parametrize("cls", [MSELoss, BCEWithLogitsLoss])
def test_elementwise_losses_reduction_none_match_torch(cls):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x, y = rng.standard_normal((4, 3)), rng.random((4, 3))
    g = rng.standard_normal((4, 3))
    crit = cls(reduction="none")
    losses = crit(x, y)
    tx = torch.tensor(x, requires_grad=True)
    tlosses = getattr(torch.nn, cls.__name__)(reduction="none")(tx, torch.tensor(y))
    tlosses.backward(torch.tensor(g))
    assert losses.shape == (4, 3)
    assert_close(losses, tlosses.detach().numpy(), rtol=1e-6, atol=1e-7, name="losses")
    assert_close(crit.backward(g), tx.grad.numpy(), rtol=1e-6, atol=1e-7, name="grad")


def test_backward_grad_out_scales_and_is_checked():
    crit = MSELoss()
    x, y = np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32)
    crit(x, y)
    assert_close(crit.backward(2.5), 2.5 * crit.backward())
    with pytest.raises(ValueError, match=r"MSELoss expected a gradient of the loss's shape"):
        crit.backward(np.ones(3))
    none = MSELoss(reduction="none")
    none(x, y)
    with pytest.raises(ValueError, match=r"shape \(2, 3\), got \(3,\)"):
        none.backward(np.ones(3))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("target_kind", ["indices", "probabilities"])
@pytest.mark.parametrize("spatial", [(3,), (2, 3), (2, 1, 2)])
def test_cross_entropy_per_position_matches_torch(reduction, target_kind, spatial):
    """Input (N, C, d1, ...), a class per position (segmentation), as torch's."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(len(spatial))
    n, c = 2, 4
    x = rng.standard_normal((n, c, *spatial))
    w = rng.random(c) + 0.1
    if target_kind == "probabilities":
        t = np.moveaxis(rng.dirichlet(np.ones(c), (n, *spatial)), -1, 1)
        kwargs = dict(reduction=reduction, label_smoothing=0.1)
    else:
        t = rng.integers(0, c, (n, *spatial))
        kwargs = dict(reduction=reduction, label_smoothing=0.1, ignore_index=1)
    crit = CrossEntropyLoss(w, **kwargs)
    crit.to(np.float64)
    loss = crit(x, t)
    tx = torch.tensor(x, requires_grad=True)
    tloss = torch.nn.CrossEntropyLoss(weight=torch.tensor(w), **kwargs)(tx, torch.tensor(t))
    g = rng.standard_normal((n, *spatial)) if reduction == "none" else None
    tloss.backward(None if g is None else torch.tensor(g))
    assert np.shape(loss) == tuple(tloss.shape)
    assert_close(loss, tloss.detach().numpy(), rtol=1e-12, atol=1e-14, name="loss")
    assert_close(crit.backward(g), tx.grad.numpy(), rtol=1e-12, atol=1e-14, name="grad")


def test_cross_entropy_per_position_target_shape_error():
    with pytest.raises(ValueError, match=r"with shape \(2, 3\) or of class probabilities"):
        CrossEntropyLoss()(np.zeros((2, 4, 3)), np.zeros((2, 4), np.int64))
    with pytest.raises(ValueError, match=r"expected input \(N, C\) or \(N, C, d1, ...\)"):
        CrossEntropyLoss()(np.zeros(4), np.zeros((2,), np.int64))
