"""Optimizer: the base class of SGD, Adam and AdamW.

An optimizer holds ``param_groups``, a list of dicts, each with its ``"params"`` (a list of
:class:`~tinynet.nn.Parameter`) and its hyper-parameters (``"lr"``, ...), and ``state``, a dict
from each Parameter to its own running quantities (momentum buffer, Adam's moments). As in
torch.optim, ``params`` may be an iterable of Parameters or of dicts for per-group options::

    SGD([{"params": model[0].parameters(), "lr": 0.1}, {"params": model[2].parameters()}],
        lr=0.01, momentum=0.9)

``step()`` updates every ``p.data`` in place, in the parameter's dtype, from ``p.grad``.
One difference from torch.optim: a tinynet gradient is an array, zeros after ``zero_grad()``,
never None, so every parameter of the optimizer is stepped, also one that no backward
reached (a branch left unused this step): with a zero gradient, weight decay and momentum
(or Adam's moments) still move it, where torch would skip a parameter whose ``.grad`` is
None. To freeze parameters, leave them out of the optimizer.
``state_dict()`` is plain data (numbers, tuples, lists, dicts and NumPy arrays), in torch's
layout, so a checkpoint can store it without pickle.
"""

from __future__ import annotations

import numpy as np

from ..nn.module import Parameter


class Optimizer:
    """Base class: parameter groups, per-parameter state, ``zero_grad`` and checkpoints.

    A subclass passes its ``defaults`` (every hyper-parameter and its default value), checks a
    group's values in ``_check_group`` and implements ``step``.
    """

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.state: dict[Parameter, dict] = {}
        self.param_groups: list[dict] = []
        name = type(self).__name__
        if isinstance(params, (Parameter, dict)):
            raise TypeError(
                f"{name} expected an iterable of Parameters or of dicts, "
                f"got a single {type(params).__name__}; wrap it in a list"
            )
        groups = list(params)
        if not groups:
            raise ValueError(f"{name} got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict) -> None:
        """Add a group of parameters; options it leaves out take the optimizer's defaults."""
        name = type(self).__name__
        if not isinstance(group, dict):
            raise TypeError(f"{name} expected a parameter group dict, got {type(group).__name__}")
        if "params" not in group:
            raise ValueError(f"{name} expected a parameter group with a 'params' entry")
        params = group["params"]
        if isinstance(params, Parameter):
            params = [params]
        elif isinstance(params, set):
            raise TypeError(f"{name} expected params in a fixed order, got a set; use a list")
        else:
            params = list(params)
        for p in params:
            if not isinstance(p, Parameter):
                raise TypeError(f"{name} can only optimize Parameters, got {type(p).__name__}")
        ids = {id(p) for p in params}
        if len(ids) != len(params):
            raise ValueError(f"{name} got a parameter group that lists a parameter twice")
        for other in self.param_groups:
            if any(id(p) in ids for p in other["params"]):
                raise ValueError(f"{name}: some parameters appear in more than one group")
        group = {**self.defaults, **group, "params": params}
        self._check_group(group)
        self.param_groups.append(group)

    def _check_group(self, group: dict) -> None:
        """Raise ValueError/TypeError for a bad hyper-parameter (subclasses extend this)."""
        check_number(self, "lr", group["lr"], minimum=0.0)

    def zero_grad(self) -> None:
        """Reset the gradient of every parameter this optimizer updates to zero."""
        for group in self.param_groups:
            for p in group["params"]:
                p.grad.fill(0)

    def step(self, closure=None):
        raise NotImplementedError(f"{type(self).__name__} does not define step()")

    # -- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """``{"state": {index: {...}}, "param_groups": [{..., "params": [index, ...]}]}``.

        Parameters are numbered in the order of the groups, as torch does; arrays are copies.
        """
        index = {}
        groups = []
        for group in self.param_groups:
            packed = {key: value for key, value in group.items() if key != "params"}
            packed["params"] = []
            for p in group["params"]:
                index[id(p)] = len(index)
                packed["params"].append(index[id(p)])
            groups.append(packed)
        state = {}
        for p, values in self.state.items():
            state[index[id(p)]] = {
                key: value.copy() if isinstance(value, np.ndarray) else value
                for key, value in values.items()
            }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore hyper-parameters and state saved by :meth:`state_dict`.

        The optimizer must have been built on the same parameters in the same order. Arrays
        are copied and cast to each parameter's dtype. Nothing changes when a check fails.
        """
        name = type(self).__name__
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"{name}.load_state_dict: the saved state has {len(saved_groups)} parameter "
                f"groups, the optimizer has {len(self.param_groups)}"
            )
        params = []
        groups = []
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups, strict=True)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"{name}.load_state_dict: saved group {i} has {len(saved['params'])} "
                    f"parameters, the optimizer's has {len(group['params'])}"
                )
            # Options the saved group lacks (saved before they existed) take the defaults.
            new_group = {**self.defaults, **saved, "params": group["params"]}
            if isinstance(new_group.get("betas"), list):
                new_group["betas"] = tuple(new_group["betas"])
            self._check_group(new_group)
            groups.append(new_group)
            params.extend(zip(saved["params"], group["params"], strict=True))
        by_index = dict(params)
        state = {}
        for key, values in state_dict["state"].items():
            if key not in by_index:
                raise ValueError(
                    f"{name}.load_state_dict: state for parameter {key!r}, which no saved "
                    f"group lists"
                )
            p = by_index[key]
            state[p] = {k: _restore(name, key, k, v, p) for k, v in values.items()}
        self.param_groups[:] = groups
        self.state = state


def _restore(owner: str, index, key: str, value, p: Parameter):
    """Copy one saved state entry, cast to the parameter's dtype where it is an array."""
    if isinstance(value, (np.ndarray, list)):
        value = np.asarray(value)
        if value.dtype.kind not in "biuf":
            raise TypeError(f"{owner}.load_state_dict: state {key!r} has dtype {value.dtype}")
        if value.shape != p.shape:
            raise ValueError(
                f"{owner}.load_state_dict: state {key!r} of parameter {index} expected shape "
                f"{p.shape}, got {value.shape}"
            )
        return value.astype(p.dtype)  # astype copies: the loaded dict stays independent
    if isinstance(value, np.generic):
        return value.item()
    return value


def check_number(owner, name: str, value, minimum: float | None = None, below: float | None = None):
    """Check a real-valued hyper-parameter: a TypeError if it is not a number, a ValueError if
    it is not ``>= minimum`` (and ``< below`` when given)."""
    label = owner if isinstance(owner, str) else type(owner).__name__
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{label} expected {name} to be a number, got {type(value).__name__}")
    if minimum is not None and not value >= minimum:
        raise ValueError(f"{label} expected {name} >= {minimum}, got {value}")
    if below is not None and not value < below:
        raise ValueError(f"{label} expected {name} < {below}, got {value}")
