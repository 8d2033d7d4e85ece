"""Module, Parameter and Sequential: registration, traversal, mode, state and dtype."""

from __future__ import annotations

import numpy as np
import pytest

from tinynet import nn
from tinynet.nn import Linear, Module, Parameter, ReLU, Sequential, Sigmoid, Tanh
from tinynet.testing import assert_close


class WithBuffers(Module):
    """A module with a parameter, an absent parameter, a float and an int buffer and a child."""

    def __init__(self):
        super().__init__()
        self.scale = Parameter(np.arange(3.0, dtype=np.float32))
        self.register_parameter("shift", None)
        self.register_buffer("running", np.full(3, 0.5, dtype=np.float32))
        self.register_buffer("count", np.array(7, dtype=np.int64))
        self.register_buffer("absent", None)
        self.inner = Linear(3, 2)
        self.dtype_changes = 0

    def _on_dtype_change(self):
        self.dtype_changes += 1


def mlp():
    return Sequential(Linear(4, 5), ReLU(), Sequential(Linear(5, 3), Tanh()), Linear(3, 2))


def torch_mlp(torch):
    tnn = torch.nn
    return tnn.Sequential(
        tnn.Linear(4, 5), tnn.ReLU(), tnn.Sequential(tnn.Linear(5, 3), tnn.Tanh()), tnn.Linear(3, 2)
    )


# -- Parameter ---------------------------------------------------------------------------------


def test_parameter_copies_data_and_starts_with_zero_grad():
    source = np.arange(6.0).reshape(2, 3)
    p = Parameter(source)
    source[0, 0] = 99.0
    assert p.data[0, 0] == 0.0
    assert p.data.dtype == np.float64  # a float array keeps its dtype
    assert p.grad.shape == p.shape == (2, 3)
    assert p.grad.dtype == p.dtype
    assert not p.grad.any()
    assert repr(p) == "Parameter(shape=(2, 3), dtype=float64)"


@pytest.mark.parametrize("data", [[1, 2, 3], np.arange(3), np.ones(3, dtype=np.float16)])
def test_parameter_from_non_float32_64_data_gets_the_default_dtype(data):
    p = Parameter(data)
    assert p.dtype == np.float32
    assert_close(p.data, np.asarray(data, dtype=np.float64))


# -- registration ------------------------------------------------------------------------------


def test_registration_in_order():
    m = WithBuffers()
    assert list(m._parameters) == ["scale"]
    assert [name for name, _ in m.named_parameters()] == ["scale", "inner.weight", "inner.bias"]
    assert [name for name, _ in m.named_buffers()] == ["running", "count"]
    assert m.shift is None and m.absent is None
    assert list(m.children()) == [m.inner]


def test_assigning_none_unregisters_and_del_removes():
    m = WithBuffers()
    m.scale = None
    assert [n for n, _ in m.named_parameters()] == ["inner.weight", "inner.bias"]
    del m.inner
    assert list(m.children()) == []
    assert not hasattr(m, "inner")
    m.running = None  # a buffer may become None: it is then left out of state_dict
    assert "running" not in m.state_dict()


def test_replacing_a_parameter_or_child_by_another_type_is_an_error():
    layer = Linear(2, 2)
    with pytest.raises(TypeError, match="cannot assign ndarray as parameter 'weight'"):
        layer.weight = np.zeros((2, 2))
    assert isinstance(layer.weight, Parameter)
    model = mlp()
    with pytest.raises(TypeError, match="cannot assign int as child module '1'"):
        setattr(model, "1", 3)
    with pytest.raises(TypeError, match="buffer 'running' must be a NumPy array"):
        WithBuffers().running = [1.0, 2.0]
    with pytest.raises(TypeError, match="buffer 'x' must be a NumPy array"):
        WithBuffers().register_buffer("x", 3.0)


def test_assigning_before_super_init_is_a_clear_error():
    class Forgetful(Module):
        def __init__(self):
            self.weight = Parameter(np.zeros(2))

    with pytest.raises(AttributeError, match=r"must call super\(\).__init__\(\)"):
        Forgetful()


def test_base_module_has_no_forward_or_backward():
    with pytest.raises(NotImplementedError, match="Module does not define forward"):
        Module()(np.zeros(2))
    with pytest.raises(NotImplementedError, match="Module does not define backward"):
        Module().backward(np.zeros(2))


# -- traversal ---------------------------------------------------------------------------------


def test_names_and_order_match_torch():
    torch = pytest.importorskip("torch")
    mine, theirs = mlp(), torch_mlp(torch)
    assert [n for n, _ in mine.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in mine.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [type(m).__name__ for m in mine.modules()] == [
        type(m).__name__ for m in theirs.modules()
    ]
    assert [type(m).__name__ for m in mine.children()] == [
        type(m).__name__ for m in theirs.children()
    ]
    assert list(mine.state_dict()) == list(theirs.state_dict())


def test_parameter_names_without_torch():
    names = [n for n, _ in mlp().named_parameters()]
    assert names == [
        "0.weight",
        "0.bias",
        "2.0.weight",
        "2.0.bias",
        "3.weight",
        "3.bias",
    ]
    assert [n for n, _ in mlp().named_parameters(prefix="net")][0] == "net.0.weight"


def test_shared_modules_and_parameters_are_listed_once():
    shared = Linear(3, 3)
    model = Sequential(shared, ReLU(), shared)
    assert len(list(model.parameters())) == 2
    assert sum(1 for m in model.modules() if m is shared) == 1
    other = Linear(3, 3)
    other.weight = shared.weight  # tied weights
    assert len(list(Sequential(shared, other).parameters())) == 3


def test_state_dict_lists_a_shared_layer_at_every_place_as_torch():
    shared = Linear(3, 3).double()
    model = Sequential(shared, ReLU(), shared)
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert [n for n, _ in model.named_modules(remove_duplicate=False)] == ["", "0", "1", "2"]
    state = {k: v + 1 for k, v in model.state_dict().items()}
    model.load_state_dict(state)  # strict: both places' keys are expected
    np.testing.assert_array_equal(shared.weight.data, state["2.weight"])
    torch = pytest.importorskip("torch")
    layer = torch.nn.Linear(3, 3)
    theirs = torch.nn.Sequential(layer, torch.nn.ReLU(), layer)
    assert list(model.state_dict()) == list(theirs.state_dict())
    model.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    np.testing.assert_array_equal(shared.bias.data, layer.bias.detach().numpy())


# -- mode, gradients ---------------------------------------------------------------------------


def test_train_and_eval_recurse_and_return_self():
    model = mlp()
    assert model.eval() is model
    assert all(not m.training for m in model.modules())
    assert model.train() is model
    assert all(m.training for m in model.modules())
    assert model[2].train(False) is model[2]
    assert model.training and model[0].training
    assert not model[2].training and not model[2][1].training
    with pytest.raises(TypeError, match="train\\(\\) expected a bool, got str"):
        model.train("no")


def test_zero_grad_zeros_every_parameter():
    model = mlp()
    x = np.random.default_rng(0).standard_normal((6, 4))
    model.backward(np.ones_like(model(x)))
    assert all(p.grad.any() for p in model.parameters())
    model.zero_grad()
    assert all(not p.grad.any() for p in model.parameters())


def test_gradients_accumulate_until_zero_grad():
    model = mlp().double()
    x = np.random.default_rng(0).standard_normal((6, 4))
    grad = np.random.default_rng(1).standard_normal((6, 2))
    model(x)
    model.backward(grad)
    once = [p.grad.copy() for p in model.parameters()]
    model(x)
    model.backward(grad)
    for p, g in zip(model.parameters(), once, strict=True):
        assert_close(p.grad, 2 * g, rtol=1e-12, atol=1e-14)
    model.zero_grad()
    model(x)
    model.backward(grad)
    for p, g in zip(model.parameters(), once, strict=True):
        assert_close(p.grad, g, rtol=1e-12, atol=1e-14)


# -- state_dict --------------------------------------------------------------------------------


def test_state_dict_has_parameters_and_buffers_as_copies():
    m = WithBuffers()
    state = m.state_dict()
    assert list(state) == ["scale", "running", "count", "inner.weight", "inner.bias"]
    state["scale"] += 10
    state["running"] += 10
    assert_close(m.scale.data, np.arange(3.0))
    assert_close(m.running, np.full(3, 0.5))


def test_load_state_dict_copies_values_and_casts_to_each_dtype():
    m = WithBuffers()
    source = {
        "scale": np.array([1.5, 2.5, 3.5]),  # float64 into a float32 parameter
        "running": np.array([1, 2, 3]),  # int into a float buffer
        "count": np.array(3.9),  # float into an int buffer: cast (truncated) as NumPy does
        "inner.weight": np.ones((2, 3)),
        "inner.bias": [0.25, -0.25],  # a list works too
    }
    scale_array = m.scale.data
    result = m.load_state_dict(source)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert m.scale.data is scale_array  # loaded into the existing array
    assert m.scale.data.dtype == np.float32 and m.count.dtype == np.int64
    assert_close(m.scale.data, [1.5, 2.5, 3.5])
    assert_close(m.running, [1, 2, 3])
    assert int(m.count) == 3
    source["scale"][0] = 100.0
    assert m.scale.data[0] == 1.5


def test_load_state_dict_round_trip_between_models():
    a, b = mlp(), mlp()
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    assert not np.allclose(a(x), b(x))
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a(x), b(x))


def test_load_torch_weights_gives_torch_outputs():
    torch = pytest.importorskip("torch")
    theirs = torch_mlp(torch).double()
    mine = mlp().double()
    mine.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((5, 4))
    assert_close(mine(x), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-12, atol=1e-14)


def test_load_state_dict_strict_reports_every_missing_and_unexpected_key():
    m = WithBuffers()
    state = m.state_dict()
    del state["running"], state["inner.bias"]
    state["bogus"] = np.zeros(1)
    before = m.state_dict()
    with pytest.raises(
        KeyError, match=r"missing keys \['running', 'inner.bias'\], unexpected keys \['bogus'\]"
    ):
        m.load_state_dict(state)
    for key, value in m.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_load_state_dict_non_strict_loads_what_matches():
    m = WithBuffers()
    result = m.load_state_dict({"scale": np.full(3, 9.0), "bogus": np.zeros(1)}, strict=False)
    assert result.unexpected_keys == ["bogus"]
    assert result.missing_keys == ["running", "count", "inner.weight", "inner.bias"]
    assert_close(m.scale.data, np.full(3, 9.0))


def test_load_state_dict_changes_nothing_on_a_bad_shape_or_dtype():
    m = WithBuffers()
    before = m.state_dict()
    state = {k: v + 1 for k, v in before.items()}
    state["inner.bias"] = np.zeros(5)  # after several valid keys
    with pytest.raises(ValueError, match=r"'inner.bias' expected shape \(2,\), got \(5,\)"):
        m.load_state_dict(state)
    state["inner.bias"] = np.array(["a", "b"])
    with pytest.raises(TypeError, match="'inner.bias' has non-numeric dtype"):
        m.load_state_dict(state)
    with pytest.raises(ValueError, match="expected shape"):
        m.load_state_dict({"inner.bias": np.zeros(5)}, strict=False)
    for key, value in m.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


# -- dtype -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["double", "to64"])
def test_to_casts_parameters_grads_and_float_buffers_only(method):
    m = WithBuffers()
    m.scale.grad += 1.5
    result = m.double() if method == "double" else m.to(np.float64)
    assert result is m
    for module in m.modules():
        assert module.dtype == np.float64
    for p in m.parameters():
        assert p.data.dtype == p.grad.dtype == np.float64
    assert_close(m.scale.grad, np.full(3, 1.5))
    assert m.running.dtype == np.float64
    assert m.count.dtype == np.int64  # an integer buffer is not a float buffer
    assert m.dtype_changes == 1
    assert m.float() is m
    assert m.scale.data.dtype == m.running.dtype == np.float32 and m.count.dtype == np.int64
    assert m.inner.weight.dtype == np.float32


def test_float64_model_runs_end_to_end():
    model = mlp().double()
    out = model(np.ones((2, 4), dtype=np.float32))
    assert out.dtype == np.float64
    grad = model.backward(np.ones_like(out))
    assert grad.dtype == np.float64
    assert all(p.grad.dtype == np.float64 for p in model.parameters())


@pytest.mark.parametrize("dtype", [np.float16, np.int32, "complex128", "not-a-dtype"])
def test_to_rejects_other_dtypes(dtype):
    with pytest.raises(TypeError):
        mlp().to(dtype)


def test_to_error_message():
    with pytest.raises(TypeError, match="Sequential.to expected float32 or float64, got int32"):
        mlp().to(np.int32)


# -- repr and Sequential -----------------------------------------------------------------------


def test_repr_matches_torch():
    torch = pytest.importorskip("torch")
    tnn = torch.nn
    mine = Sequential(Linear(3, 4, bias=False), Sigmoid(), Sequential(ReLU(), nn.Flatten()))
    theirs = tnn.Sequential(
        tnn.Linear(3, 4, bias=False), tnn.Sigmoid(), tnn.Sequential(tnn.ReLU(), tnn.Flatten())
    )
    assert repr(mine) == repr(theirs)


def test_repr_without_torch():
    assert repr(Sequential(Linear(2, 3), Sequential(Tanh()))) == (
        "Sequential(\n"
        "  (0): Linear(in_features=2, out_features=3, bias=True)\n"
        "  (1): Sequential(\n"
        "    (0): Tanh()\n"
        "  )\n"
        ")"
    )


def test_sequential_container_behaviour():
    layers = [Linear(4, 5), ReLU(), Linear(5, 2)]
    model = Sequential(*layers)
    assert len(model) == 3
    assert list(model) == layers
    assert model[0] is layers[0] and model[-1] is layers[2]
    head = model[:2]
    assert isinstance(head, Sequential) and list(head) == layers[:2]
    assert model.append(Tanh()) is model
    assert len(model) == 4 and [n for n, _ in model.named_children()][-1] == "3"
    with pytest.raises(TypeError, match="Sequential expected Module arguments, got int"):
        Sequential(Linear(1, 1), 3)


def test_sequential_forward_and_backward_chain_the_layers():
    model = mlp().double()
    x = np.random.default_rng(0).standard_normal((3, 4))
    out = x
    for layer in model:
        out = layer(out)
    np.testing.assert_array_equal(model(x), out)
    g = np.random.default_rng(1).standard_normal((3, 2))
    expected = g
    for layer in reversed(list(model)):
        expected = layer.backward(expected)
    np.testing.assert_array_equal(model.backward(g), expected)
