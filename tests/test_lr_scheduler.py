"""Learning-rate schedules against torch.optim.lr_scheduler and their closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinynet import optim
from tinynet.nn import Parameter

EPOCHS = 60
BASE_LRS = (0.1, 0.03)

SCHEDULES = [
    ("StepLR", dict(step_size=7, gamma=0.5)),
    ("StepLR", dict(step_size=1, gamma=0.9)),
    ("MultiStepLR", dict(milestones=[3, 10, 10, 25], gamma=0.3)),
    ("ExponentialLR", dict(gamma=0.95)),
    ("CosineAnnealingLR", dict(T_max=13)),
    ("CosineAnnealingLR", dict(T_max=20, eta_min=0.01)),
]
IDS = ["step7", "step1", "multistep", "exponential", "cosine", "cosine-eta_min"]


def make_optimizer(lrs=BASE_LRS, cls=optim.SGD):
    groups = [{"params": [Parameter(np.zeros(2))], "lr": lr} for lr in lrs]
    return cls(groups, lr=1.0, momentum=0.9)


def closed_form(name, kwargs, base_lr, epoch):
    """The schedule's formula as torch documents it."""
    if name == "StepLR":
        return base_lr * kwargs["gamma"] ** (epoch // kwargs["step_size"])
    if name == "MultiStepLR":
        passed = sum(1 for m in kwargs["milestones"] if m <= epoch)
        return base_lr * kwargs["gamma"] ** passed
    if name == "ExponentialLR":
        return base_lr * kwargs["gamma"] ** epoch
    eta_min = kwargs.get("eta_min", 0.0)
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * epoch / kwargs["T_max"])) / 2


def history(scheduler, epochs=EPOCHS):
    """The rates of every group, for epochs 0 .. epochs - 1."""
    rates = [scheduler.get_last_lr()]
    for _ in range(epochs - 1):
        scheduler.optimizer.step()
        scheduler.step()
        rates.append(scheduler.get_last_lr())
    return np.array(rates)


@pytest.mark.parametrize(("name", "kwargs"), SCHEDULES, ids=IDS)
def test_matches_torch(name, kwargs):
    torch = pytest.importorskip("torch")
    mine = getattr(optim, name)(make_optimizer(), **kwargs)
    tparams = [torch.zeros(2, requires_grad=True) for _ in BASE_LRS]
    topt = torch.optim.SGD(
        [{"params": [p], "lr": lr} for p, lr in zip(tparams, BASE_LRS, strict=True)], lr=1.0
    )
    for p in tparams:
        p.grad = torch.zeros(2)
    theirs = getattr(torch.optim.lr_scheduler, name)(topt, **kwargs)
    got = history(mine)
    expected = history(theirs)
    np.testing.assert_array_equal(got, expected)  # the same arithmetic, bit for bit
    assert mine.last_epoch == theirs.last_epoch == EPOCHS - 1


@pytest.mark.parametrize("resume", [-1, 5])
def test_chained_and_resumed_schedules_match_torch(resume):
    """Two schedulers on one optimizer multiply their effects (each reads group["lr"]); a
    schedule built with last_epoch resumes as torch's does."""
    torch = pytest.importorskip("torch")
    lrs = (0.5, 0.2)

    def build(module, opt):
        return [
            module.StepLR(opt, step_size=3, gamma=0.1, last_epoch=resume),
            module.CosineAnnealingLR(opt, T_max=4, eta_min=0.001, last_epoch=resume),
        ]

    mine = make_optimizer(lrs)
    tparams = [torch.zeros(2, requires_grad=True) for _ in lrs]
    theirs = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(tparams, lrs)], lr=1.0)
    for p in tparams:
        p.grad = torch.zeros(2)
    if resume >= 0:  # a resumed schedule needs the optimizer's initial_lr, as in torch
        for opt in (mine, theirs):
            for group in opt.param_groups:
                group["initial_lr"] = group["lr"]
    schedules = (build(optim, mine), build(torch.optim.lr_scheduler, theirs))
    for _ in range(25):
        for opt, chain in zip((mine, theirs), schedules):
            opt.step()
            for scheduler in chain:
                scheduler.step()
        got = [g["lr"] for g in mine.param_groups]
        np.testing.assert_allclose(got, [g["lr"] for g in theirs.param_groups], rtol=1e-13)


@pytest.mark.parametrize(("name", "kwargs"), SCHEDULES, ids=IDS)
def test_matches_closed_form_and_sets_group_lr(name, kwargs):
    opt = make_optimizer()
    scheduler = getattr(optim, name)(opt, **kwargs)
    assert scheduler.last_epoch == 0
    assert scheduler.base_lrs == list(BASE_LRS)
    assert [g["initial_lr"] for g in opt.param_groups] == list(BASE_LRS)
    rates = history(scheduler)
    for epoch, row in enumerate(rates):
        for lr, base in zip(row, BASE_LRS, strict=True):
            assert lr == pytest.approx(closed_form(name, kwargs, base, epoch), rel=1e-12, abs=1e-15)
    assert [g["lr"] for g in opt.param_groups] == list(rates[-1])


@settings(max_examples=25, deadline=None)
@given(
    T_max=st.integers(1, 30),
    eta_min=st.floats(0.0, 0.05),
    base_lr=st.floats(0.06, 2.0),
    epochs=st.integers(1, 80),
)
def test_cosine_closed_form_property(T_max, eta_min, base_lr, epochs):
    opt = make_optimizer(lrs=(base_lr,))
    scheduler = optim.CosineAnnealingLR(opt, T_max=T_max, eta_min=eta_min)
    rates = history(scheduler, epochs)[:, 0]
    kwargs = dict(T_max=T_max, eta_min=eta_min)
    expected = [closed_form("CosineAnnealingLR", kwargs, base_lr, e) for e in range(epochs)]
    np.testing.assert_allclose(rates, expected, rtol=1e-12, atol=1e-15)
    # torch's recursive form (matched bit for bit above) drifts by rounding, period to period.
    slack = 1e-12 * base_lr
    assert np.all(rates >= eta_min - slack) and np.all(rates <= base_lr + slack)
    if epochs > T_max:
        assert rates[T_max] == pytest.approx(eta_min, abs=slack)


def test_scheduled_rate_reaches_the_update():
    p = Parameter(np.zeros(1))
    opt = optim.SGD([p], lr=1.0)
    scheduler = optim.StepLR(opt, step_size=1, gamma=0.5)
    moves = []
    for _ in range(4):
        before = p.data.copy()
        p.grad[...] = 1.0
        opt.step()
        scheduler.step()
        moves.append(float(before[0] - p.data[0]))
    assert moves == [1.0, 0.5, 0.25, 0.125]


@pytest.mark.parametrize(("name", "kwargs"), SCHEDULES, ids=IDS)
def test_resume_from_state_dict(name, kwargs):
    straight = getattr(optim, name)(make_optimizer(), **kwargs)
    expected = history(straight, 40)

    opt = make_optimizer()
    first = getattr(optim, name)(opt, **kwargs)
    head = history(first, 15)
    opt_state = opt.state_dict()
    state = first.state_dict()
    for value in state.values():
        assert isinstance(value, (int, float, list))

    # The usual order: build the optimizer and the scheduler, then load both states.
    opt2 = make_optimizer(lrs=(5.0, 5.0))
    second = getattr(optim, name)(opt2, **kwargs)
    opt2.load_state_dict(opt_state)
    second.load_state_dict(state)
    tail = [second.get_last_lr()]
    for _ in range(40 - 15):
        second.step()
        tail.append(second.get_last_lr())
    np.testing.assert_allclose(np.vstack([head, tail[1:]]), expected, rtol=1e-12)
    assert second.last_epoch == 39


def test_state_dict_round_trip_restores_settings():
    first = optim.MultiStepLR(make_optimizer(), milestones=[5, 2, 5], gamma=0.5)
    state = first.state_dict()
    assert state["milestones"] == [2, 5, 5]
    second = optim.MultiStepLR(make_optimizer(), milestones=[1], gamma=0.9)
    second.load_state_dict(state)
    assert second.state_dict() == state
    with pytest.raises(KeyError, match=r"missing keys \['gamma'\]"):
        second.load_state_dict({k: v for k, v in state.items() if k != "gamma"})
    with pytest.raises(KeyError, match=r"unexpected keys \['extra'\]"):
        second.load_state_dict({**state, "extra": 1})


def test_resume_without_initial_lr_is_an_error():
    with pytest.raises(KeyError, match="no 'initial_lr'"):
        optim.StepLR(make_optimizer(), step_size=2, last_epoch=4)


def test_initial_lr_is_kept_when_already_set():
    opt = make_optimizer()
    for group in opt.param_groups:
        group["initial_lr"] = 0.5
    scheduler = optim.ExponentialLR(opt, gamma=0.5)
    assert scheduler.base_lrs == [0.5, 0.5]


def test_works_with_adam_and_get_last_lr_is_a_copy():
    opt = make_optimizer(cls=lambda groups, **_: optim.Adam(groups))
    scheduler = optim.ExponentialLR(opt, gamma=0.5)
    scheduler.step()
    rates = scheduler.get_last_lr()
    rates[0] = 99.0
    assert scheduler.get_last_lr() == [0.05, 0.015]
    assert "ExponentialLR(gamma=0.5, last_epoch=1)" == repr(scheduler)


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda o: optim.StepLR(o, step_size=0), ValueError, "step_size to be a positive int"),
        (lambda o: optim.StepLR(o, step_size=2.5), ValueError, "step_size to be a positive int"),
        (lambda o: optim.StepLR(o, 2, gamma=-0.1), ValueError, "expected gamma >= 0"),
        (lambda o: optim.StepLR(o, 2, gamma="x"), TypeError, "gamma to be a number"),
        (lambda o: optim.MultiStepLR(o, [2, -1]), ValueError, "milestones to be ints >= 0"),
        (lambda o: optim.ExponentialLR(o, gamma=None), TypeError, "gamma to be a number"),
        (lambda o: optim.CosineAnnealingLR(o, T_max=0), ValueError, "T_max to be a positive"),
        (lambda o: optim.CosineAnnealingLR(o, 5, eta_min=-1), ValueError, "eta_min >= 0"),
        (lambda o: optim.StepLR(o, 2, last_epoch=-2), ValueError, "last_epoch to be an int"),
        (lambda o: optim.StepLR(object(), 2), TypeError, "expected a tinynet Optimizer"),
    ],
)
def test_bad_arguments(build, error, match):
    with pytest.raises(error, match=match):
        build(make_optimizer())
