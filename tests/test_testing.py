"""tinynet.testing: gradcheck must catch a wrong backward, assert_close must catch a difference."""

from __future__ import annotations

import numpy as np
import pytest

import tinynet
from tinynet import random as tn_random
from tinynet.nn import Linear, Module, Parameter, Sequential, Tanh
from tinynet.testing import GradcheckError, assert_close, clone, gradcheck


class Scale(Module):
    """y = x · w (element-wise) with a deliberately breakable backward."""

    def __init__(self, n, bug=None):
        super().__init__()
        self.weight = Parameter(np.linspace(0.5, 1.5, n))
        self.bug = bug
        self._x = None

    def forward(self, x):
        self._x = np.asarray(x, dtype=self.weight.data.dtype)
        return self._x * self.weight.data

    def backward(self, grad_out):
        grad_w = (grad_out * self._x).reshape(-1, self._x.shape[-1]).sum(axis=0)
        grad_x = grad_out * self.weight.data
        if self.bug == "input":
            grad_x = grad_x * 1.01  # one percent off
        elif self.bug == "one-element":
            grad_x = grad_x.copy()
            grad_x[1, 2] += 1e-3
        elif self.bug == "weight":
            grad_w = grad_w[::-1]  # the right numbers in the wrong places
        elif self.bug == "no-accumulate":
            self.weight.grad[...] = 0  # overwrites instead of adding; still right once zeroed
        elif self.bug == "shape":
            grad_x = grad_x[:, :-1]
        self.weight.grad += grad_w
        return grad_x


def x_input():
    return np.random.default_rng(0).standard_normal((3, 4))


def test_gradcheck_passes_a_correct_layer():
    assert gradcheck(Scale(4), x_input()) is True
    assert gradcheck(Scale(4, bug="no-accumulate"), x_input()) is True


def test_gradcheck_catches_a_wrong_input_gradient():
    with pytest.raises(GradcheckError, match=r"gradcheck Scale: input at index \(\d, \d\): got"):
        gradcheck(Scale(4, bug="input"), x_input())


def test_gradcheck_catches_a_single_wrong_element_and_names_it():
    with pytest.raises(GradcheckError, match=r"input at index \(1, 2\)") as info:
        gradcheck(Scale(4, bug="one-element"), x_input(), max_checks=None)
    assert "(backward)" in str(info.value) and "(central differences)" in str(info.value)


def test_gradcheck_catches_a_wrong_parameter_gradient_inside_a_model():
    model = Sequential(Linear(4, 4), Tanh(), Scale(4, bug="weight"))
    with pytest.raises(GradcheckError, match=r"parameter '2.weight' at index \(\d,\)"):
        gradcheck(model, x_input())
    # With the input check off the parameter is still checked.
    with pytest.raises(GradcheckError, match="gradcheck Scale: parameter 'weight'"):
        gradcheck(Scale(4, bug="weight"), x_input(), check_input=False)


def test_gradcheck_catches_a_wrong_gradient_shape():
    with pytest.raises(
        GradcheckError, match=r"input gradient has shape \(3, 3\), expected \(3, 4\)"
    ):
        gradcheck(Scale(4, bug="shape"), x_input())


def test_gradcheck_names_a_described_layer():
    class Broken(Linear):
        def backward(self, grad_out):
            return super().backward(grad_out) * 2

    with pytest.raises(GradcheckError, match=r"gradcheck Linear\(in_features=4\): input"):
        gradcheck(Broken(4, 2), x_input())


def test_gradcheck_leaves_the_module_and_the_rng_alone():
    layer = Linear(4, 3)
    before = {k: v.copy() for k, v in layer.state_dict().items()}
    tinynet.manual_seed(42)
    expected_draw = tn_random.get_generator().random(5)
    tinynet.manual_seed(42)
    gradcheck(layer, x_input())
    np.testing.assert_array_equal(tn_random.get_generator().random(5), expected_draw)
    assert layer.weight.dtype == np.float32  # the float64 copy was a copy
    assert not layer.weight.grad.any()
    for key, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_gradcheck_perturbs_non_contiguous_parameters():
    layer = Linear(4, 3).double()
    layer.weight = Parameter(np.asfortranarray(layer.weight.data))
    assert not layer.weight.data.flags.c_contiguous
    assert gradcheck(layer, x_input(), max_checks=None)


def test_gradcheck_max_checks_samples_elements():
    # With one check per array a single wrong element is usually missed; with all, never.
    layer = Scale(4, bug="one-element")
    with pytest.raises(GradcheckError):
        gradcheck(layer, x_input(), max_checks=None)
    missed = 0
    for seed in range(5):
        try:
            gradcheck(layer, x_input(), max_checks=1, seed=seed)
            missed += 1
        except GradcheckError:
            pass
    assert missed >= 1


# -- assert_close ------------------------------------------------------------------------------


def test_assert_close_passes_within_tolerance():
    assert_close([1.0, 2.0], [1.0 + 1e-7, 2.0 - 1e-7])
    assert_close(np.zeros((0, 3)), np.zeros((0, 3)))
    assert_close([np.nan, np.inf, -np.inf], [np.nan, np.inf, -np.inf])
    assert_close(np.float32(1.0), 1.0)


def test_assert_close_names_the_worst_element():
    actual = np.zeros((3, 4))
    expected = np.zeros((3, 4))
    actual[2, 1] = 0.5
    actual[0, 0] = 1e-3
    with pytest.raises(
        AssertionError,
        match=r"grads: 2 of 12 elements differ; worst at \(2, 1\): got 0.5, expected 0",
    ):
        assert_close(actual, expected, name="grads")


@pytest.mark.parametrize(
    ("actual", "expected"),
    [
        ([1.0], [np.inf]),
        ([np.inf], [1.0]),
        ([np.inf], [-np.inf]),
        ([np.nan], [1.0]),
        ([1.0], [np.nan]),
        ([np.nan], [np.inf]),
        ([1.0, 2.0], [1.0, 2.1]),
    ],
)
def test_assert_close_catches_non_finite_and_large_differences(actual, expected):
    with pytest.raises(AssertionError, match="elements differ"):
        assert_close(actual, expected)


def test_assert_close_shape_mismatch():
    with pytest.raises(AssertionError, match=r"x: shape \(2,\) != expected \(3,\)"):
        assert_close(np.zeros(2), np.zeros(3), name="x")


def test_assert_close_uses_both_tolerances():
    assert_close([100.0], [100.5], rtol=1e-2, atol=0)
    with pytest.raises(AssertionError):
        assert_close([100.0], [100.5], rtol=1e-3, atol=0)
    assert_close([0.0], [1e-3], rtol=0, atol=1e-2)


def test_clone_is_independent():
    layer = Linear(2, 2)
    copy = clone(layer)
    copy.weight.data += 1
    assert not np.array_equal(copy.weight.data, layer.weight.data)
