"""The layer graph: DAG forward/backward, gradient accumulation, residual blocks, printing."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinynet
from tinynet import models, nn
from tinynet.graph import Graph
from tinynet.testing import gradcheck


def branchy_graph(d: int = 5) -> Graph:
    """input feeds three layers; "a" feeds two; Add and Concat join the branches."""
    g = Graph()
    g.add("a", nn.Linear(d, d))
    g.add("b", nn.Tanh(), "a")
    g.add("c", nn.Linear(d, d), "input")
    g.add("sum", nn.Add(), ("a", "b", "c", "input"))
    g.add("cat", nn.Concat(), ("sum", "a"))
    g.add("out", nn.Linear(2 * d, 3), "cat")
    return g


def test_forward_is_the_composition_by_hand():
    tinynet.manual_seed(0)
    g = branchy_graph()
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    a = g["a"](x)
    s = a + np.tanh(a) + g["c"](x) + x
    expected = g["out"](np.concatenate([s, a], axis=1))
    np.testing.assert_allclose(g(x), expected, rtol=1e-6, atol=1e-6)


def test_backward_accumulates_gradients_of_every_consumer():
    tinynet.manual_seed(0)
    assert gradcheck(branchy_graph().double(), np.random.default_rng(1).standard_normal((4, 5)))


@given(
    wiring=st.lists(
        st.tuples(st.sampled_from(["linear", "tanh", "add", "cat"]), st.integers(0, 99)),
        min_size=1,
        max_size=7,
    ),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=25, deadline=None)
def test_random_dags_pass_gradcheck(wiring, seed):
    """Random wiring: each node reads earlier nodes chosen by the drawn integers."""
    d = 3
    rng = np.random.default_rng(seed)
    tinynet.manual_seed(seed)
    g = Graph()
    names = ["input"]
    for i, (kind, pick) in enumerate(wiring):
        first = names[pick % len(names)]
        second = names[(pick // 7) % len(names)]
        name = f"n{i}"
        if kind == "linear":
            g.add(name, nn.Linear(d, d), first)
        elif kind == "tanh":
            g.add(name, nn.Tanh(), first)
        elif kind == "add":
            g.add(name, nn.Add(), (first, second))
        else:  # Concat then a Linear back to width d, so later nodes can read it
            g.add(name + "c", nn.Concat(), (first, second))
            g.add(name, nn.Linear(2 * d, d), name + "c")
        names.append(name)
    g.output = names[rng.integers(1, len(names))]  # sometimes leaves dead nodes behind
    assert gradcheck(g.double(), rng.standard_normal((2, d)))


def test_dead_nodes_get_no_gradient_and_do_not_break_backward():
    g = Graph()
    g.add("used", nn.Linear(3, 3))
    g.add("dead", nn.Linear(3, 3), "input")
    g.output = "used"
    x = np.ones((2, 3), dtype=np.float32)
    g.backward(np.ones_like(g(x)))
    assert np.all(g["dead"].weight.grad == 0) and np.any(g["used"].weight.grad != 0)


def test_from_sequential_keeps_keys_layers_and_outputs():
    tinynet.manual_seed(0)
    seq = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
    g = Graph.from_sequential(seq)
    assert list(g.state_dict()) == list(seq.state_dict())
    x = np.random.default_rng(0).standard_normal((5, 4))
    y_seq = copy.deepcopy(seq)(x)
    np.testing.assert_array_equal(g(x), y_seq)
    assert [node.inputs for node in g.nodes] == [("input",), ("0",), ("1",), ("2",)]


def test_modes_dtype_and_state_dict_reach_every_node():
    g = models.residual_block(4, 8, stride=2)
    g.eval()
    assert all(not m.training for m in g.modules())
    g.train()
    assert all(m.training for m in g.modules())
    g.double()
    assert all(p.data.dtype == np.float64 for p in g.parameters())
    keys = set(g.state_dict())
    assert {"conv1.weight", "bn1.running_mean", "down.weight", "down_bn.bias"} <= keys


def test_repr_shows_every_node_and_its_inputs():
    text = repr(models.residual_block(4))
    assert "(add): Add()  <- bn2, input" in text
    assert "(conv1): Conv2d(4, 4" in text and "output: relu2" in text


def test_nodes_may_use_any_name_not_only_free_attributes():
    g = Graph()
    g.add("add", nn.ReLU())
    g.add("forward", nn.ReLU(), "add")
    assert g(np.array([[-1.0, 2.0]]))[0, 1] == 2.0 and g["add"] is g.nodes[0].module


def test_concat_of_one_input_passes_the_gradient_through():
    g = Graph()
    g.add("relu", nn.ReLU())
    g.add("cat", nn.Concat(1), "relu")
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 4))
    y = g(x)
    np.testing.assert_array_equal(g.backward(np.ones_like(y)), (x > 0).astype(float))


def test_iterating_a_graph_gives_its_layers_in_order():
    g = Graph()
    conv = g.add("conv", nn.Conv2d(1, 2, 3))
    g.add("flat", nn.Flatten(), conv)
    assert [type(m).__name__ for m in g] == ["Conv2d", "Flatten"] and list(Graph()) == []


def test_one_layer_at_two_places_refuses_backward_and_tied_weights_work():
    """A layer keeps its last forward's state, so the same object at two places would give
    the first place the second's input: an error. Tying weights means two layers sharing
    Parameters, whose gradient is the sum of both places' (as in torch)."""
    tinynet.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(4, 3))
    lin = nn.Linear(3, 3).double()
    g = Graph()
    g.add("a", lin)
    g.add("t", nn.Tanh(), "a")
    g.add("b", lin, "t")
    for model, names in ((g, "'a' and 'b'"), (nn.Sequential(lin, nn.Tanh(), lin), "'0' and '2'")):
        y = model(x)  # forward (inference) is fine
        with pytest.raises(ValueError, match=f"positions {names} hold the same layer object"):
            model.backward(np.ones_like(y))
    first, second = nn.Linear(3, 3).double(), nn.Linear(3, 3).double()
    second.weight, second.bias = first.weight, first.bias
    tied = nn.Sequential(first, nn.Tanh(), second)
    untied = nn.Sequential(copy.deepcopy(first), nn.Tanh(), copy.deepcopy(first))  # two copies
    assert len(list(tied.parameters())) == 2 and len(list(untied.parameters())) == 4
    for model in (tied, untied):
        model.zero_grad()
        model.backward(np.ones((4, 3)) + 0 * model(x))
    np.testing.assert_allclose(first.weight.grad, untied[0].weight.grad + untied[2].weight.grad)
    np.testing.assert_allclose(first.bias.grad, untied[0].bias.grad + untied[2].bias.grad)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda g: g.add("a.b", nn.ReLU()), "without '.'"),
        (lambda g: g.add("input", nn.ReLU()), "other than 'input'"),
        (lambda g: g.add("x", nn.ReLU(), "nope"), "'nope', which is not an earlier node"),
        (lambda g: g.add("x", nn.ReLU(), ()), "at least one input"),
        (lambda g: [g.add("x", nn.ReLU()), g.add("x", nn.ReLU())], "already has a node"),
        (lambda g: setattr(g, "output", "nope"), "no node 'nope'"),
    ],
)
def test_bad_wiring_is_refused_with_a_clear_message(build, message):
    with pytest.raises(ValueError, match=message):
        build(Graph())


def test_add_and_concat_check_their_inputs():
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match="Add expected inputs of one shape"):
        nn.Add()(x, np.zeros((2, 4)))
    with pytest.raises(ValueError, match="Add expected at least 2 inputs"):
        nn.Add()(x)
    with pytest.raises(ValueError, match="differ only along axis 1"):
        nn.Concat()(x, np.zeros((3, 3)))
    with pytest.raises(TypeError, match="Graph node 'x' expected a Module"):
        Graph().add("x", np.tanh)


def test_concat_matches_numpy_on_spatial_maps():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 5, 4, 4))
    cat = nn.Concat(dim=1)
    np.testing.assert_array_equal(cat(a, b), np.concatenate([a, b], axis=1))
    g = rng.standard_normal((2, 8, 4, 4))
    ga, gb = cat.backward(g)
    np.testing.assert_array_equal(ga, g[:, :3])
    np.testing.assert_array_equal(gb, g[:, 3:])
    assert ga.flags.c_contiguous and gb.flags.c_contiguous


@pytest.mark.parametrize(("channels", "out", "stride"), [(3, 3, 1), (2, 4, 2)])
def test_residual_block_gradcheck(channels, out, stride):
    tinynet.manual_seed(0)
    block = models.residual_block(channels, out, stride=stride)
    x = np.random.default_rng(0).standard_normal((2, channels, 5, 5))
    assert gradcheck(block.double(), x, max_checks=40)
    assert gradcheck(block.double().eval(), x, max_checks=40)


def torch_basic_block(torch, channels, out, stride):
    """PyTorch's ResNet BasicBlock with the same child names as models.residual_block."""
    tnn = torch.nn

    class Block(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = tnn.Conv2d(channels, out, 3, stride, padding=1, bias=False)
            self.bn1 = tnn.BatchNorm2d(out)
            self.conv2 = tnn.Conv2d(out, out, 3, padding=1, bias=False)
            self.bn2 = tnn.BatchNorm2d(out)
            self.down = None
            if stride != 1 or out != channels:
                self.down = tnn.Conv2d(channels, out, 1, stride, bias=False)
                self.down_bn = tnn.BatchNorm2d(out)

        def forward(self, x):
            y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            shortcut = x if self.down is None else self.down_bn(self.down(x))
            return torch.relu(y + shortcut)

    return Block().double()


@pytest.mark.parametrize(("channels", "out", "stride"), [(4, 4, 1), (4, 8, 2)])
def test_residual_block_matches_pytorch(channels, out, stride):
    torch = pytest.importorskip("torch")
    tinynet.manual_seed(1)
    ours = models.residual_block(channels, out, stride=stride).double()
    theirs = torch_basic_block(torch, channels, out, stride)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()})
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, channels, 8, 8))
    grad = rng.standard_normal((3, out, 8 // stride, 8 // stride))
    for _ in range(2):  # training: batch statistics and running-statistics updates
        xt = torch.from_numpy(x).requires_grad_()
        yt = theirs(xt)
        yt.backward(torch.from_numpy(grad))
        y = ours(x)
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(ours.backward(grad), xt.grad.numpy(), rtol=1e-8, atol=1e-10)
    for name, p in ours.named_parameters():
        expected = dict(theirs.named_parameters())[name].grad.numpy()
        np.testing.assert_allclose(p.grad, expected, rtol=1e-8, atol=1e-9, err_msg=name)
    for name, value in ours.state_dict().items():
        expected = theirs.state_dict()[name].numpy()
        np.testing.assert_allclose(value, expected, rtol=1e-12, err_msg=name)
    ours.eval(), theirs.eval()
    np.testing.assert_allclose(ours(x), theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-9)


def test_a_residual_network_trains():
    """A conv stem, one residual block, pooling and a classifier learn a spatial task."""
    rng = np.random.default_rng(0)
    n = 256
    x = rng.standard_normal((n, 2, 8, 8)).astype(np.float32)
    y = (x[:, 0, :4].mean(axis=(1, 2)) > x[:, 1, 4:].mean(axis=(1, 2))).astype(np.int64)
    tinynet.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        models.residual_block(8),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    )
    loss_fn = nn.CrossEntropyLoss()
    opt = tinynet.optim.Adam(model.parameters(), lr=0.01)
    loader = tinynet.data.DataLoader((x, y), batch_size=32, shuffle=True, seed=0)
    first = None
    for _ in range(15):
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            first = loss if first is None else first
            model.backward(loss_fn.backward())
            opt.step()
    model.eval()
    accuracy = np.mean(model(x).argmax(axis=1) == y)
    assert loss < first / 2 and accuracy > 0.9, (first, loss, accuracy)


def test_replace_swaps_a_node_and_the_next_run_uses_it():
    g = Graph()
    g.add("a", nn.ReLU())
    x = np.array([[-1.0, 2.0]])
    np.testing.assert_array_equal(g(x), [[0.0, 2.0]])  # a plan exists now
    g.replace("a", nn.Tanh())
    np.testing.assert_allclose(g(x), np.tanh(x))
    with pytest.raises(ValueError, match="no node 'b'"):
        g.replace("b", nn.ReLU())
    with pytest.raises(TypeError, match="expected a Module"):
        g.replace("a", np.tanh)
