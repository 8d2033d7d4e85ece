"""recalibrate_bn: population statistics as averages over training batches (Algorithm 2)."""

from __future__ import annotations

import numpy as np
import pytest
from reference.batchnorm import batch_norm_forward, batch_norm_stats, to_columns

import tinynet
from tinynet.nn import BatchNorm1d, BatchNorm2d, Dropout, Flatten, Linear, ReLU, Sequential
from tinynet.random import get_rng_state
from tinynet.testing import assert_close, clone


def mlp(dtype=np.float64):
    tinynet.manual_seed(0)
    model = Sequential(
        Linear(4, 8), BatchNorm1d(8), ReLU(), Dropout(0.5), Linear(8, 6), BatchNorm1d(6)
    ).to(dtype)
    rng = np.random.default_rng(1)
    for bn in (model[1], model[5]):
        bn.weight.data[...] = rng.uniform(0.5, 2.0, bn.num_features)
        bn.bias.data[...] = rng.standard_normal(bn.num_features)
    return model


def batches(shape=(16, 4), count=5, dtype=np.float64):
    rng = np.random.default_rng(2)
    return [(rng.standard_normal(shape) * 2 + 1).astype(dtype) for _ in range(count)]


def closed_form(model, xs):
    """Algorithm 2 computed by hand: run each batch through the network with its BatchNorms
    normalising by batch statistics and Dropout off, and average each BatchNorm's batch means
    and unbiased batch variances."""
    lin1, bn1, _, _, lin2, bn2 = model
    means = {1: [], 2: []}
    variances = {1: [], 2: []}
    for x in xs:
        h1 = x @ lin1.weight.data.T + lin1.bias.data
        a = np.maximum(batch_norm_forward(h1, bn1.weight.data, bn1.bias.data, bn1.eps), 0)
        h2 = a @ lin2.weight.data.T + lin2.bias.data
        for key, h in ((1, h1), (2, h2)):
            mean, var = batch_norm_stats(h)
            m = to_columns(h).shape[0]
            means[key].append(mean)
            variances[key].append(var * m / (m - 1))
    return {k: (np.mean(means[k], axis=0), np.mean(variances[k], axis=0)) for k in (1, 2)}


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_sets_the_average_of_batch_statistics(dtype, tol):
    model = mlp(dtype)
    xs = batches(dtype=dtype)
    # Training first, so the statistics being replaced are not the initial ones.
    for x in xs[:2]:
        model(x)
    model[1].momentum = 0.3
    # The reference runs on a float64 copy, so it has no rounding of its own.
    expected = closed_form(clone(model).double(), xs)
    params = {k: v for k, v in model.state_dict().items() if "weight" in k or "bias" in k}

    result = tinynet.recalibrate_bn(model, ((x, np.zeros(len(x))) for x in xs))

    assert result is model and not any(m.training for m in model.modules())
    for key, bn in ((1, model[1]), (2, model[5])):
        assert_close(bn.running_mean, expected[key][0], rtol=tol, atol=tol, name="running_mean")
        assert_close(bn.running_var, expected[key][1], rtol=tol, atol=tol, name="running_var")
        assert int(bn.num_batches_tracked) == len(xs)
        assert bn.running_mean.dtype == dtype
    assert model[1].momentum == 0.3 and model[5].momentum == 0.1
    for key, value in model.state_dict().items():
        if key in params:
            assert_close(value, params[key], rtol=0, atol=0, name=key)


def test_conv_style_batchnorm_and_plain_inputs():
    model = Sequential(BatchNorm2d(3), Flatten(), Linear(12, 2)).double()
    xs = [np.random.default_rng(s).standard_normal((4, 3, 2, 2)) * (s + 1) for s in range(3)]
    tinynet.recalibrate_bn(model, iter(xs))
    means = [batch_norm_stats(x)[0] for x in xs]
    variances = [batch_norm_stats(x)[1] * 16 / 15 for x in xs]
    assert_close(model[0].running_mean, np.mean(means, axis=0), rtol=1e-12, atol=1e-12)
    assert_close(model[0].running_var, np.mean(variances, axis=0), rtol=1e-12, atol=1e-12)


def test_dropout_does_not_matter_and_draws_no_random_numbers():
    model = mlp()
    xs = batches()
    state = get_rng_state()
    first = tinynet.recalibrate_bn(model, xs).state_dict()
    assert get_rng_state() == state
    model[3].p = 0.9  # a different dropout rate must give the same statistics
    second = tinynet.recalibrate_bn(model, xs).state_dict()
    for key in first:
        assert_close(second[key], first[key], rtol=0, atol=0, name=key)


def test_untracked_batchnorm_is_an_error():
    model = Sequential(Linear(4, 3), BatchNorm1d(3, track_running_stats=False))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(num_features=3\) has track_running"):
        tinynet.recalibrate_bn(model, batches())


def test_empty_iterable_is_an_error_and_changes_nothing():
    model = mlp()
    model(batches()[0])
    before = model.state_dict()
    with pytest.raises(ValueError, match="at least one batch"):
        tinynet.recalibrate_bn(model, [])
    for key, value in model.state_dict().items():
        assert_close(value, before[key], rtol=0, atol=0, name=key)
    assert model[1].momentum == 0.1


def test_a_failing_batch_restores_the_statistics():
    model = mlp()
    before = model.state_dict()
    with pytest.raises(ValueError, match="expected input"):
        tinynet.recalibrate_bn(model, [batches()[0], np.ones((3, 5))])
    for key, value in model.state_dict().items():
        assert_close(value, before[key], rtol=0, atol=0, name=key)
