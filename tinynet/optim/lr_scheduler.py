"""Learning-rate schedules, with torch.optim.lr_scheduler's names and values.

A scheduler sets ``group["lr"]`` of each of its optimizer's parameter groups. Create it after
the optimizer and call ``scheduler.step()`` once per epoch, after that epoch's optimizer
steps::

    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = StepLR(opt, step_size=30, gamma=0.1)
    for epoch in range(90):
        train_one_epoch(model, opt)
        sched.step()

``last_epoch`` counts the ``step()`` calls (0 after construction). Each group's starting rate
is kept in ``group["initial_lr"]`` (``base_lrs``), as torch does.
"""

from __future__ import annotations

import math
from collections import Counter

from .optimizer import Optimizer, check_number


class LRScheduler:
    """Base class: subclasses compute the new rates in ``get_lr`` from ``last_epoch``.

    StepLR, MultiStepLR and ExponentialLR multiply the current rate, as torch's "chained"
    form does, so the values equal torch's bit for bit and compose with changes made to
    ``group["lr"]`` from outside.
    """

    # Names of the constructor's settings, saved by state_dict with the counters.
    _settings: tuple[str, ...] = ()

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1):
        name = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{name} expected a tinynet Optimizer, got {type(optimizer).__name__}")
        if isinstance(last_epoch, bool) or not isinstance(last_epoch, int) or last_epoch < -1:
            raise ValueError(f"{name} expected last_epoch to be an int >= -1, got {last_epoch!r}")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"{name}(last_epoch={last_epoch}) resumes a schedule, but "
                        f"param_groups[{i}] has no 'initial_lr': load the optimizer's "
                        f"state_dict first"
                    )
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._step_count = 0
        # The first step moves last_epoch to 0 (or resumes at last_epoch + 1).
        self._initial = True
        self.step()
        self._initial = False

    def get_lr(self) -> list[float]:
        """The rates for epoch ``last_epoch`` (called by ``step`` after it counts)."""
        raise NotImplementedError(f"{type(self).__name__} does not define get_lr()")

    def step(self) -> None:
        """Advance one epoch and set each group's ``lr``."""
        self._step_count += 1
        self.last_epoch += 1
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """The rates the last ``step()`` set, one per parameter group."""
        return list(self._last_lr)

    def _current_lrs(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    # -- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The counters, base rates and settings, as plain numbers and lists."""
        state = {
            "last_epoch": self.last_epoch,
            "base_lrs": list(self.base_lrs),
            "_last_lr": list(self._last_lr),
            "_step_count": self._step_count,
        }
        for key in self._settings:
            state[key] = self._export(key)
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what :meth:`state_dict` saved (the optimizer's rates are not touched)."""
        expected = set(self.state_dict())
        missing = sorted(expected - set(state_dict))
        unexpected = sorted(set(state_dict) - expected)
        if missing or unexpected:
            raise KeyError(
                f"{type(self).__name__}.load_state_dict: missing keys {missing}, "
                f"unexpected keys {unexpected}"
            )
        self.last_epoch = int(state_dict["last_epoch"])
        self.base_lrs = [float(lr) for lr in state_dict["base_lrs"]]
        self._last_lr = [float(lr) for lr in state_dict["_last_lr"]]
        self._step_count = int(state_dict["_step_count"])
        for key in self._settings:
            self._import(key, state_dict[key])

    def _export(self, key: str):
        return getattr(self, key)

    def _import(self, key: str, value) -> None:
        setattr(self, key, value)

    def __repr__(self) -> str:
        settings = ", ".join(f"{key}={self._export(key)!r}" for key in self._settings)
        return f"{type(self).__name__}({settings}, last_epoch={self.last_epoch})"


class StepLR(LRScheduler):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs:
    lr = base_lr · gamma^⌊epoch / step_size⌋."""

    _settings = ("step_size", "gamma")

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch=-1):
        if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"StepLR expected step_size to be a positive int, got {step_size!r}")
        check_number("StepLR", "gamma", gamma, minimum=0.0)
        self.step_size = step_size
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]


class MultiStepLR(LRScheduler):
    """Multiply the rate by ``gamma`` at each epoch listed in ``milestones``:
    lr = base_lr · gamma^(number of milestones ≤ epoch). A milestone listed twice counts
    twice, as in torch."""

    _settings = ("milestones", "gamma")

    def __init__(self, optimizer: Optimizer, milestones, gamma: float = 0.1, last_epoch=-1):
        milestones = list(milestones)
        if any(isinstance(m, bool) or not isinstance(m, int) or m < 0 for m in milestones):
            raise ValueError(f"MultiStepLR expected milestones to be ints >= 0, got {milestones!r}")
        check_number("MultiStepLR", "gamma", gamma, minimum=0.0)
        self.milestones = Counter(milestones)
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch not in self.milestones:
            return self._current_lrs()
        factor = self.gamma ** self.milestones[self.last_epoch]
        return [lr * factor for lr in self._current_lrs()]

    def _export(self, key: str):
        if key == "milestones":
            return sorted(self.milestones.elements())
        return super()._export(key)

    def _import(self, key: str, value) -> None:
        if key == "milestones":
            value = Counter(int(m) for m in value)
        super()._import(key, value)


class ExponentialLR(LRScheduler):
    """Multiply the rate by ``gamma`` every epoch: lr = base_lr · gamma^epoch."""

    _settings = ("gamma",)

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch=-1):
        check_number("ExponentialLR", "gamma", gamma, minimum=0.0)
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self._initial:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]


class CosineAnnealingLR(LRScheduler):
    """Anneal from the base rate to ``eta_min`` along half a cosine over ``T_max`` epochs::

        lr = eta_min + (base_lr − eta_min) · (1 + cos(π · epoch / T_max)) / 2

    (SGDR, Loshchilov & Hutter, 2017, without restarts). Past ``T_max`` the cosine continues,
    so the rate climbs back, as torch's does. Each step evaluates torch's recursive form: the
    current rate times the ratio of this epoch's cosine factor to the last one's. While
    nothing else sets ``group["lr"]`` that equals the closed form (up to rounding); chained
    with another scheduler (StepLR's decay, say) the two multiply, as in torch; a schedule
    built with ``last_epoch`` continues from the optimizer's current rates, as torch's does.
    """

    _settings = ("T_max", "eta_min")

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch=-1):
        if isinstance(T_max, bool) or not isinstance(T_max, int) or T_max < 1:
            raise ValueError(
                f"CosineAnnealingLR expected T_max to be a positive int, got {T_max!r}"
            )
        check_number("CosineAnnealingLR", "eta_min", eta_min, minimum=0.0)
        self.T_max = T_max
        self.eta_min = float(eta_min)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        epoch, period, low = self.last_epoch, self.T_max, self.eta_min
        groups = self.optimizer.param_groups
        if self._initial:  # construction keeps the rates (a resumed optimizer's included)
            return self._current_lrs()
        if (epoch - 1 - period) % (2 * period) == 0:
            # The previous factor 1 + cos(π·(epoch − 1)/T_max) is 0 (the rate sat at eta_min):
            # the ratio below would divide by it, so step up from the bottom instead.
            rise = (1 - math.cos(math.pi / period)) / 2
            return [g["lr"] + (base - low) * rise for g, base in zip(groups, self.base_lrs)]
        ratio = (1 + math.cos(math.pi * epoch / period)) / (
            1 + math.cos(math.pi * (epoch - 1) / period)
        )
        return [low + ratio * (g["lr"] - low) for g in groups]
