"""SGD, Adam and AdamW against torch.optim and a NumPy transcription of their update rules."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import dense as ref

from tinynet import nn, optim
from tinynet.nn import Parameter
from tinynet.testing import assert_close

SHAPES = [(4, 3), (3,), (2, 1, 3), ()]
STEPS = 25

SGD_OPTIONS = [
    dict(momentum=momentum, dampening=dampening, weight_decay=decay, nesterov=nesterov)
    for momentum, dampening, decay, nesterov in itertools.product(
        (0.0, 0.9), (0.0, 0.3), (0.0, 0.05), (False, True)
    )
    if not (nesterov and (momentum == 0 or dampening != 0))
]
ADAM_OPTIONS = [
    dict(weight_decay=decay, amsgrad=amsgrad, betas=betas)
    for decay, amsgrad, betas in itertools.product(
        (0.0, 0.1), (False, True), ((0.9, 0.999), (0.5, 0.8), (0.0, 0.99))
    )
]


def random_problem(dtype, seed=0, steps=STEPS, shapes=SHAPES):
    """Initial values and one list of gradients per step (no zero gradients)."""
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)]
    return init, grads


def run_tinynet(cls, init, grads, **kwargs):
    params = [Parameter(a.copy()) for a in init]
    opt = cls(params, **kwargs)
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad[...] = g
        opt.step()
    return params, opt


def run_torch(torch, cls, init, grads, **kwargs):
    params = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    opt = cls(params, **kwargs)
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = torch.tensor(g)
        opt.step()
    return [p.detach().numpy() for p in params]


def tolerance(dtype):
    # torch's CPU kernels fuse some multiply-adds (FMA), so results agree to rounding, not bits.
    return dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)


# -- against torch.optim -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", SGD_OPTIONS, ids=str)
def test_sgd_matches_torch(options, dtype):
    torch = pytest.importorskip("torch")
    init, grads = random_problem(dtype)
    params, _ = run_tinynet(optim.SGD, init, grads, lr=0.05, **options)
    expected = run_torch(torch, torch.optim.SGD, init, grads, lr=0.05, **options)
    for i, (p, e) in enumerate(zip(params, expected, strict=True)):
        assert p.data.dtype == dtype
        assert_close(p.data, e, name=f"param {i}", **tolerance(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", ADAM_OPTIONS, ids=str)
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_matches_torch(name, options, dtype):
    torch = pytest.importorskip("torch")
    init, grads = random_problem(dtype)
    kwargs = dict(lr=0.02, eps=1e-6, **options)
    params, _ = run_tinynet(getattr(optim, name), init, grads, **kwargs)
    expected = run_torch(torch, getattr(torch.optim, name), init, grads, **kwargs)
    for i, (p, e) in enumerate(zip(params, expected, strict=True)):
        assert p.data.dtype == dtype
        assert_close(p.data, e, name=f"param {i}", **tolerance(dtype))


def test_adamw_default_weight_decay_matches_torch():
    torch = pytest.importorskip("torch")
    init, grads = random_problem(np.float64)
    params, opt = run_tinynet(optim.AdamW, init, grads, lr=0.1)
    expected = run_torch(torch, torch.optim.AdamW, init, grads, lr=0.1)
    assert opt.param_groups[0]["weight_decay"] == 1e-2
    for p, e in zip(params, expected, strict=True):
        assert_close(p.data, e, **tolerance(np.float64))


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_param_groups_with_own_options_match_torch(name):
    torch = pytest.importorskip("torch")
    init, grads = random_problem(np.float64)
    extra = dict(momentum=0.9) if name == "SGD" else dict(betas=(0.8, 0.9))

    def groups(params):
        return [
            {"params": params[:2], "lr": 0.3, "weight_decay": 0.1},
            {"params": params[2:], **extra},
        ]

    mine = [Parameter(a.copy()) for a in init]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    opt = getattr(optim, name)(groups(mine), lr=0.01)
    topt = getattr(torch.optim, name)(groups(theirs), lr=0.01)
    for step_grads in grads:
        for p, t, g in zip(mine, theirs, step_grads, strict=True):
            p.grad[...] = g
            t.grad = torch.tensor(g)
        opt.step()
        topt.step()
    for p, t in zip(mine, theirs, strict=True):
        assert_close(p.data, t.detach().numpy(), **tolerance(np.float64))
    assert opt.param_groups[0]["lr"] == 0.3
    assert opt.param_groups[1]["lr"] == 0.01


# -- against the NumPy transcription (no torch needed) -----------------------------------------


@pytest.mark.parametrize("options", SGD_OPTIONS, ids=str)
def test_sgd_matches_reference(options):
    init, grads = random_problem(np.float64, seed=1)
    params, _ = run_tinynet(optim.SGD, init, grads, lr=0.05, **options)
    expected = ref.sgd(init, grads, lr=0.05, **options)
    for p, e in zip(params, expected, strict=True):
        assert_close(p.data, e, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("options", ADAM_OPTIONS, ids=str)
@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_matches_reference(options, decoupled):
    init, grads = random_problem(np.float64, seed=2)
    cls = optim.AdamW if decoupled else optim.Adam
    params, _ = run_tinynet(cls, init, grads, lr=0.02, eps=1e-6, **options)
    expected = ref.adam(init, grads, lr=0.02, eps=1e-6, decoupled=decoupled, **options)
    for p, e in zip(params, expected, strict=True):
        assert_close(p.data, e, rtol=1e-10, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple),
    lr=st.floats(1e-4, 1.0),
    momentum=st.floats(0.0, 0.99),
    weight_decay=st.sampled_from([0.0, 1e-3, 0.5]),
    seed=st.integers(0, 2**16),
)
def test_sgd_property_against_reference(shape, lr, momentum, weight_decay, seed):
    init, grads = random_problem(np.float64, seed=seed, steps=5, shapes=[shape])
    options = dict(lr=lr, momentum=momentum, weight_decay=weight_decay)
    params, _ = run_tinynet(optim.SGD, init, grads, **options)
    assert_close(params[0].data, ref.sgd(init, grads, **options)[0], rtol=1e-10, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple),
    lr=st.floats(1e-4, 0.5),
    beta1=st.floats(0.0, 0.99),
    beta2=st.floats(0.0, 0.9999),
    amsgrad=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_adam_property_against_reference(shape, lr, beta1, beta2, amsgrad, seed):
    init, grads = random_problem(np.float64, seed=seed, steps=5, shapes=[shape])
    options = dict(lr=lr, betas=(beta1, beta2), amsgrad=amsgrad, eps=1e-4)
    params, _ = run_tinynet(optim.Adam, init, grads, **options)
    assert_close(params[0].data, ref.adam(init, grads, **options)[0], rtol=1e-9, atol=1e-12)


# -- how a step touches the arrays -------------------------------------------------------------

ALL = [
    (optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True)),
    (optim.SGD, dict(lr=0.1, momentum=0.5, dampening=0.5, weight_decay=0.1)),
    (optim.Adam, dict(lr=0.1, weight_decay=0.1, amsgrad=True)),
    (optim.AdamW, dict(lr=0.1)),
]
ALL_IDS = ["sgd-nesterov", "sgd-dampening", "adam-amsgrad", "adamw"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("cls", "kwargs"), ALL, ids=ALL_IDS)
def test_step_updates_in_place_and_keeps_dtype(cls, kwargs, dtype):
    init, grads = random_problem(dtype, steps=3)
    params = [Parameter(a.copy()) for a in init]
    arrays = [p.data for p in params]
    opt = cls(params, **kwargs)
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad[...] = g
        opt.step()
        for p, a, g in zip(params, arrays, step_grads, strict=True):
            assert p.data is a, "step must update p.data in place"
            assert p.data.dtype == dtype
            np.testing.assert_array_equal(p.grad, g)  # the gradient is left as it was
    for state in opt.state.values():
        for value in state.values():
            if isinstance(value, np.ndarray):
                assert value.dtype == dtype
    assert not all(np.array_equal(p.data, a) for p, a in zip(params, init, strict=True))


def test_float64_scalar_hyper_parameters_do_not_promote():
    # A NumPy float64 learning rate (from a schedule computed with NumPy) must not turn a
    # float32 update into float64 arithmetic: the result must equal the Python-float one.
    init, grads = random_problem(np.float32, steps=4)
    for cls in (optim.SGD, optim.Adam):
        a, _ = run_tinynet(cls, init, grads, lr=0.1)
        b, _ = run_tinynet(cls, init, grads, lr=np.float64(0.1))
        for p, q in zip(a, b, strict=True):
            np.testing.assert_array_equal(p.data, q.data)


def test_zero_grad_zeros_every_group():
    params = [Parameter(np.ones(3)), Parameter(np.ones((2, 2)))]
    opt = optim.SGD([{"params": [params[0]]}, {"params": [params[1]]}], lr=0.1)
    for p in params:
        p.grad += 5
    opt.zero_grad()
    for p in params:
        assert p.grad.shape == p.shape
        assert not p.grad.any()


def test_step_returns_closure_value():
    p = Parameter(np.zeros(2))
    opt = optim.SGD([p], lr=0.1)

    def closure():
        p.grad[...] = 1.0
        return 3.5

    assert opt.step(closure) == 3.5
    np.testing.assert_allclose(p.data, [-0.1, -0.1])
    assert opt.step() is None


def test_gradients_accumulate_until_zero_grad():
    # Two backward passes before one step equal one step on the summed gradient.
    x = np.random.default_rng(0).standard_normal((5, 3))
    model = nn.Linear(3, 2).double()
    twin = nn.Linear(3, 2).double()
    twin.load_state_dict(model.state_dict())
    model.backward(model(x) * 0 + 1)
    model.backward(model(x) * 0 + 1)
    twin.backward(twin(x) * 0 + 2)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert_close(p.grad, q.grad, rtol=1e-12)
    optim.SGD(model.parameters(), lr=0.1).step()
    optim.SGD(twin.parameters(), lr=0.1).step()
    assert_close(model.weight.data, twin.weight.data, rtol=1e-12)


# -- argument checks ---------------------------------------------------------------------------


def one_param():
    return [Parameter(np.zeros(3))]


@pytest.mark.parametrize(
    ("cls", "kwargs", "error", "match"),
    [
        (optim.SGD, dict(lr=-0.1), ValueError, "expected lr >= 0"),
        (optim.SGD, dict(lr=float("nan")), ValueError, "expected lr >= 0"),
        (optim.SGD, dict(lr="0.1"), TypeError, "expected lr to be a number"),
        (optim.SGD, dict(lr=True), TypeError, "expected lr to be a number"),
        (optim.SGD, dict(lr=0.1, momentum=-0.5), ValueError, "expected momentum >= 0"),
        (optim.SGD, dict(lr=0.1, weight_decay=-1), ValueError, "expected weight_decay >= 0"),
        (optim.SGD, dict(lr=0.1, nesterov=True), ValueError, "nesterov=True expects momentum"),
        (
            optim.SGD,
            dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
            ValueError,
            "dampening = 0",
        ),
        (optim.SGD, dict(lr=0.1, nesterov=1), TypeError, "expected nesterov to be a bool"),
        (optim.Adam, dict(lr=-1e-3), ValueError, "expected lr >= 0"),
        (optim.Adam, dict(betas=(1.0, 0.999)), ValueError, r"expected betas\[0\] < 1.0"),
        (optim.Adam, dict(betas=(0.9, -0.1)), ValueError, r"expected betas\[1\] >= 0"),
        (optim.Adam, dict(betas=0.9), TypeError, "expected betas to be a tuple"),
        (optim.Adam, dict(betas=(0.9, 0.99, 0.9)), TypeError, "expected betas to be a tuple"),
        (optim.Adam, dict(eps=-1e-8), ValueError, "expected eps >= 0"),
        (optim.Adam, dict(weight_decay=-0.1), ValueError, "expected weight_decay >= 0"),
        (optim.Adam, dict(amsgrad="yes"), TypeError, "expected amsgrad to be a bool"),
        (optim.AdamW, dict(weight_decay=-0.1), ValueError, "AdamW expected weight_decay >= 0"),
    ],
)
def test_bad_hyper_parameters(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(one_param(), **kwargs)


def test_bad_hyper_parameter_in_a_group_is_caught():
    with pytest.raises(ValueError, match="expected lr >= 0"):
        optim.SGD([{"params": one_param(), "lr": -1.0}], lr=0.1)


def test_bad_params_arguments():
    p = Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="wrap it in a list"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(TypeError, match="can only optimize Parameters, got ndarray"):
        optim.Adam([np.zeros(2)])
    with pytest.raises(TypeError, match="got a set"):
        optim.SGD([{"params": {p}}], lr=0.1)
    with pytest.raises(ValueError, match="lists a parameter twice"):
        optim.SGD([p, p], lr=0.1)
    with pytest.raises(ValueError, match="more than one group"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(ValueError, match="'params' entry"):
        optim.SGD([{"lr": 0.1}], lr=0.1)


def test_params_from_a_generator_and_add_param_group():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    opt = optim.SGD(model[0].parameters(), lr=0.1)
    opt.add_param_group({"params": model[1].parameters(), "lr": 0.5})
    assert [len(g["params"]) for g in opt.param_groups] == [2, 2]
    assert opt.param_groups[1]["momentum"] == 0.0  # the default filled in
    assert opt.param_groups[1]["lr"] == 0.5
    with pytest.raises(ValueError, match="more than one group"):
        opt.add_param_group({"params": model[0].parameters()})


# -- checkpoints -------------------------------------------------------------------------------


def plain_data(value) -> bool:
    """True if ``value`` holds only numbers, strings, None, containers and NumPy arrays."""
    if value is None or isinstance(value, (bool, int, float, str, np.ndarray)):
        return True
    if isinstance(value, (list, tuple)):
        return all(plain_data(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, (int, str)) and plain_data(v) for k, v in value.items())
    return False


@pytest.mark.parametrize(("cls", "kwargs"), ALL, ids=ALL_IDS)
def test_resume_from_state_dict_is_exact(cls, kwargs):
    init, grads = random_problem(np.float32, steps=10)
    straight, _ = run_tinynet(cls, init, grads, **kwargs)

    first, opt = run_tinynet(cls, init, grads[:6], **kwargs)
    state = opt.state_dict()
    assert plain_data(state)
    resumed = [Parameter(p.data.copy()) for p in first]
    opt2 = cls(resumed, lr=123.0)  # hyper-parameters come back from the state dict
    opt2.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == kwargs["lr"]
    for step_grads in grads[6:]:
        for p, g in zip(resumed, step_grads, strict=True):
            p.grad[...] = g
        opt2.step()
    for p, q in zip(straight, resumed, strict=True):
        np.testing.assert_array_equal(p.data, q.data)


def test_state_dict_layout_matches_torch():
    torch = pytest.importorskip("torch")
    init, grads = random_problem(np.float32, steps=2)
    for name, kwargs in [("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", dict(lr=0.1))]:
        _, opt = run_tinynet(getattr(optim, name), init, grads, **kwargs)
        params = [torch.tensor(a, requires_grad=True) for a in init]
        topt = getattr(torch.optim, name)(params, **kwargs)
        for step_grads in grads:
            for p, g in zip(params, step_grads, strict=True):
                p.grad = torch.tensor(g)
            topt.step()
        mine, theirs = opt.state_dict(), topt.state_dict()
        assert mine["param_groups"][0]["params"] == theirs["param_groups"][0]["params"]
        assert set(mine["param_groups"][0]) <= set(theirs["param_groups"][0])
        assert sorted(mine["state"]) == sorted(theirs["state"])
        for index, values in theirs["state"].items():
            assert set(mine["state"][index]) == set(values)
            for key, value in values.items():
                assert_close(mine["state"][index][key], value.numpy(), rtol=1e-5, atol=1e-6)


def test_state_dict_is_a_copy_and_survives_npz_without_pickle():
    init, grads = random_problem(np.float32, steps=3)
    params, opt = run_tinynet(optim.Adam, init, grads, lr=0.1)
    state = opt.state_dict()
    saved = state["state"][0]["exp_avg"].copy()
    state["state"][0]["exp_avg"] += 1.0
    np.testing.assert_array_equal(opt.state[params[0]]["exp_avg"], saved)

    # Arrays go through an npz file without pickle; the rest is plain numbers.
    state = opt.state_dict()
    buffer = io.BytesIO()
    arrays = {f"{i}.{k}": v for i, s in state["state"].items() for k, v in s.items()}
    np.savez(buffer, allow_pickle=False, **{k: np.asarray(v) for k, v in arrays.items()})
    buffer.seek(0)
    loaded = np.load(buffer, allow_pickle=False)
    rebuilt = {"param_groups": state["param_groups"], "state": {}}
    for key in loaded.files:
        index, name = key.split(".")
        value = loaded[key]
        rebuilt["state"].setdefault(int(index), {})[name] = value if value.ndim else value.item()
    twin = optim.Adam([Parameter(p.data.copy()) for p in params])
    twin.load_state_dict(rebuilt)
    for p, q in zip(params, twin.param_groups[0]["params"], strict=True):
        for key in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(opt.state[p][key], twin.state[q][key])
        assert twin.state[q]["step"] == 3


def test_load_state_dict_copies_and_casts():
    init, grads = random_problem(np.float64, steps=2)
    _, opt = run_tinynet(optim.SGD, init, grads, lr=0.1, momentum=0.9)
    state = opt.state_dict()
    params32 = [Parameter(a.astype(np.float32)) for a in init]
    opt32 = optim.SGD(params32, lr=0.1)
    opt32.load_state_dict(state)
    buf = opt32.state[params32[0]]["momentum_buffer"]
    assert buf.dtype == np.float32
    assert_close(buf, state["state"][0]["momentum_buffer"], rtol=1e-6)
    state["state"][0]["momentum_buffer"] += 1  # the loaded optimizer keeps its own copy
    assert_close(buf, state["state"][0]["momentum_buffer"] - 1, rtol=1e-6)


def test_load_state_dict_errors_leave_optimizer_unchanged():
    init, grads = random_problem(np.float64, steps=2)
    params, opt = run_tinynet(optim.SGD, init, grads, lr=0.1, momentum=0.9)
    before = opt.state_dict()

    def unchanged():
        after = opt.state_dict()
        assert after["param_groups"] == before["param_groups"]
        for i in before["state"]:
            np.testing.assert_array_equal(
                after["state"][i]["momentum_buffer"], before["state"][i]["momentum_buffer"]
            )

    bad = opt.state_dict()
    bad["param_groups"].append(dict(bad["param_groups"][0]))
    with pytest.raises(ValueError, match="has 2 parameter groups, the optimizer has 1"):
        opt.load_state_dict(bad)
    bad = opt.state_dict()
    bad["param_groups"][0]["params"] = [0, 1]
    with pytest.raises(ValueError, match="group 0 has 2 parameters"):
        opt.load_state_dict(bad)
    bad = opt.state_dict()
    bad["param_groups"][0]["lr"] = 7.0
    bad["state"][3]["momentum_buffer"] = np.zeros((9, 9))
    with pytest.raises(ValueError, match=r"expected shape \(\), got \(9, 9\)"):
        opt.load_state_dict(bad)
    bad = opt.state_dict()
    bad["param_groups"][0]["lr"] = -7.0
    with pytest.raises(ValueError, match="expected lr >= 0"):
        opt.load_state_dict(bad)
    bad = opt.state_dict()
    bad["state"][17] = bad["state"][0]
    with pytest.raises(ValueError, match="state for parameter 17"):
        opt.load_state_dict(bad)
    unchanged()


def test_sgd_updates_a_non_contiguous_parameter():
    # The fused kernel works on flat views; a parameter whose data is a transposed view must
    # still be updated in place, exactly as a contiguous one.
    rng = np.random.default_rng(5)
    a = rng.standard_normal((4, 3))
    g = rng.standard_normal((3, 4))
    p, q = Parameter(a.T), Parameter(np.ascontiguousarray(a.T))
    assert not p.data.flags.c_contiguous
    p.grad[...] = g
    q.grad[...] = g
    for param in (p, q):
        opt = optim.SGD([param], lr=0.1, momentum=0.9, weight_decay=0.01)
        opt.step()
        opt.step()
    np.testing.assert_array_equal(p.data, q.data)
    assert not np.array_equal(q.data, a.T)


def test_sgd_rejects_a_gradient_of_the_wrong_shape():
    # The fused kernel reads the gradient with the parameter's indices: a gradient someone
    # replaced by another shape must be a clear error, not a read past its end.
    p = Parameter(np.zeros((4, 3)))
    p.grad = np.ones(5)
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"SGD expected .* shape \(4, 3\).* got \(5,\)"):
        opt.step()
    np.testing.assert_array_equal(p.data, 0)  # nothing was updated
    assert p not in opt.state  # and no momentum buffer started


def test_float32_sgd_kernel_has_no_float64_arithmetic():
    # A literal 1 in "1 - dampening" once made the float32 update run in float64 (slower, and
    # rounded unlike PyTorch). A fresh compile (cached code cannot be inspected) of the kernel
    # for float32 arguments must do all its arithmetic in float.
    import re

    import numba

    from tinynet import config
    from tinynet.kernels.optim import sgd_update

    kernel = numba.njit(fastmath=config.FASTMATH)(sgd_update.py_func)
    a, f = np.zeros(4, np.float32), np.float32
    kernel(a, a.copy(), a.copy(), f(0.1), f(0.9), f(0.1), f(0.01), True, False)
    ir = "\n".join(kernel.inspect_llvm().values())
    assert re.findall(r"= f(?:add|sub|mul)[a-z ]* float", ir)  # the update is there
    assert not re.findall(r"= f(?:add|sub|mul|div)[a-z ]* double", ir)


@pytest.mark.parametrize("betas", [(0.0, 0.0), (0.3, 0.9), (0.7, 0.99)])
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_first_moment_is_torchs_lerp(name, betas):
    """m ← lerp(m, g, 1 − β₁) takes torch's two forms: with β₁ < 0.5 a large m followed by a
    small g must give torch's m (β₁ = 0: m = g exactly), not m + (g − m), which loses it."""
    torch = pytest.importorskip("torch")
    grads = [[np.array([1000.0, -3.0], np.float32)], [np.array([1e-3, 2e-4], np.float32)]]
    init = [np.zeros(2, np.float32)]
    kwargs = dict(lr=1.0, betas=betas)
    params, opt = run_tinynet(getattr(optim, name), init, grads, **kwargs)
    t_params = [torch.zeros(2, requires_grad=True)]
    t_opt = getattr(torch.optim, name)(t_params, **kwargs)
    for step_grads in grads:
        t_params[0].grad = torch.from_numpy(step_grads[0])
        t_opt.step()
    m = opt.state[params[0]]["exp_avg"]
    expected_m = t_opt.state[t_params[0]]["exp_avg"].numpy()
    assert_close(m, expected_m, rtol=1e-7, atol=0, name="exp_avg")
    assert_close(params[0].data, t_params[0].detach().numpy(), rtol=1e-6, atol=0, name="param")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("SGD", dict(momentum=0.9, weight_decay=0.05)),
        ("SGD", dict(momentum=0.9, nesterov=True)),
        ("Adam", dict(weight_decay=0.1, amsgrad=True)),
        ("AdamW", dict()),
    ],
    ids=str,
)
def test_maximize_matches_torch(name, options, dtype):
    """maximize=True ascends: the step of the negated gradient, as torch's."""
    torch = pytest.importorskip("torch")
    init, grads = random_problem(dtype)
    kwargs = dict(lr=0.02, maximize=True, **options)
    params, opt = run_tinynet(getattr(optim, name), init, grads, **kwargs)
    expected = run_torch(torch, getattr(torch.optim, name), init, grads, **kwargs)
    assert opt.param_groups[0]["maximize"] is True
    for i, (p, e) in enumerate(zip(params, expected, strict=True)):
        assert_close(p.data, e, name=f"param {i}", **tolerance(dtype))
    # The gradients themselves are left as they were.
    for p, g in zip(params, grads[-1], strict=True):
        np.testing.assert_array_equal(p.grad, g)
    with pytest.raises(TypeError, match="maximize to be a bool"):
        getattr(optim, name)(params, lr=0.1, maximize=1)


@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam, optim.AdamW])
def test_state_saved_before_an_option_existed_loads_with_its_default(cls):
    """A checkpoint from before maximize= existed has no such key: the default fills it."""
    p = Parameter(np.ones(3, np.float32))
    p.grad[...] = 1
    opt = cls([p], lr=0.1)
    opt.step()
    state = opt.state_dict()
    for group in state["param_groups"]:
        del group["maximize"]
    again = cls([p], lr=0.1)
    again.load_state_dict(state)
    assert again.param_groups[0]["maximize"] is False
    again.step()  # no KeyError
