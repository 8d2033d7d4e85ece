"""Module, Parameter and Sequential: the core every layer builds on.

A tinynet layer is a Python object with two methods:

* ``forward(x)`` computes the output and saves, under named attributes, what backward needs;
* ``backward(grad_out)`` returns the gradient with respect to the input and *adds* each
  parameter's gradient into ``Parameter.grad`` (so gradients accumulate until ``zero_grad``).

There is no tape and no autograd: the chain rule is applied by calling ``backward`` on the
layers in reverse order, which ``Sequential`` (and the graph in ``tinynet.graph``) do.

A training step rarely needs the gradient with respect to the data: PyTorch skips it because
the input does not require a gradient. Here ``model.backward(grad, input_grad=False)`` says
so: layers before the first one with parameters are not visited, and that layer computes
only its parameter gradients when it can (Linear and Conv2d/Conv3d on their GEMM paths do;
for the first layer of an MLP that is a third of its backward). It returns None.
"""

from __future__ import annotations

from collections import OrderedDict, namedtuple
from collections.abc import Iterator

import numpy as np

from .. import config

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Parameter:
    """A trainable array and its accumulated gradient.

    ``data`` is the value the optimizer updates; ``grad`` has the same shape and dtype and
    holds zeros until a backward pass adds into it.
    """

    __slots__ = ("data", "grad")

    def __init__(self, data):
        data = np.array(data, dtype=None if _is_float(data) else config.get_default_dtype())
        self.data = data
        self.grad = np.zeros_like(data)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


def _is_float(data) -> bool:
    return isinstance(data, np.ndarray) and data.dtype in (np.float32, np.float64)


class Module:
    """Base class of every layer and model.

    Assigning a ``Parameter`` or a ``Module`` to an attribute registers it (in order), so
    ``parameters()``, ``state_dict()``, ``train()`` and ``to()`` find it. Arrays that are state
    but not trained (BatchNorm's running statistics) are registered with ``register_buffer``.
    """

    # Layers whose output depends on the mode (Dropout, BatchNorm) read ``self.training``.
    training: bool

    def __init__(self):
        # object.__setattr__ because our own __setattr__ needs these dicts to exist.
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        # The dtype inputs of other real dtypes are cast to; to() changes it.
        object.__setattr__(self, "dtype", config.get_default_dtype())

    # -- registration ------------------------------------------------------------------------

    def __setattr__(self, name: str, value) -> None:
        d = self.__dict__
        # Fast path for the common case, a layer saving state for backward (self._x = x):
        # nothing to register, so skip the bookkeeping below (a layer does this every call).
        if (
            not isinstance(value, (Parameter, Module))
            and "_parameters" in d
            and name not in d["_parameters"]
            and name not in d["_modules"]
            and name not in d["_buffers"]
        ):
            object.__setattr__(self, name, value)
            return
        if "_parameters" not in d:
            raise AttributeError(
                f"{type(self).__name__}.__init__ must call super().__init__() "
                f"before assigning {name!r}"
            )
        # Replacing a registered parameter (or child) by something else would silently drop
        # it from parameters() and state_dict(), so, as torch does, only None may replace it.
        if value is not None:
            if name in self._parameters and not isinstance(value, Parameter):
                raise TypeError(
                    f"cannot assign {type(value).__name__} as parameter {name!r} "
                    f"(Parameter or None expected)"
                )
            if name in self._modules and not isinstance(value, Module):
                raise TypeError(
                    f"cannot assign {type(value).__name__} as child module {name!r} "
                    f"(Module or None expected)"
                )
        # Keep the attribute in __dict__ too: plain attribute reads stay as fast as Python's,
        # which matters when a layer runs a few microseconds of work per call.
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        elif name in self._buffers:
            if value is not None and not isinstance(value, np.ndarray):
                raise TypeError(f"buffer {name!r} must be a NumPy array or None")
            self._buffers[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self._buffers.pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name: str, value: np.ndarray | None) -> None:
        """Register state that is saved and cast with the module but not trained."""
        if value is not None and not isinstance(value, np.ndarray):
            raise TypeError(f"buffer {name!r} must be a NumPy array or None")
        self._buffers[name] = value
        object.__setattr__(self, name, value)

    def register_parameter(self, name: str, value: Parameter | None) -> None:
        """Register a parameter, or declare an absent one (``bias=False``) with None."""
        if value is None:
            self._parameters.pop(name, None)
            object.__setattr__(self, name, None)
        else:
            setattr(self, name, value)

    def add_module(self, name: str, module: Module) -> None:
        setattr(self, name, module)

    # -- the forward/backward protocol ---------------------------------------------------------

    def __call__(self, *args):
        return self.forward(*args)

    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def backward(self, grad_out):
        raise NotImplementedError(f"{type(self).__name__} does not define backward()")

    # -- traversal -----------------------------------------------------------------------------

    def children(self) -> Iterator[Module]:
        yield from self._modules.values()

    def named_children(self) -> Iterator[tuple[str, Module]]:
        yield from self._modules.items()

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_modules(
        self, prefix: str = "", remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Module]]:
        """Every module under this one, depth first, with its dotted name. A module object
        at several places comes once, at its first, unless ``remove_duplicate`` is False (as
        in torch; state_dict lists it at every place)."""
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if remove_duplicate and id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [
                (f"{name}.{child_name}" if name else child_name, child)
                for child_name, child in module._modules.items()
                if child is not None
            ]
            stack.extend(reversed(children))

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        seen = set()
        for module_name, module in self.named_modules(prefix):
            for name, param in module._parameters.items():
                if param is None or id(param) in seen:
                    continue
                seen.add(id(param))
                yield (f"{module_name}.{name}" if module_name else name), param

    def parameters(self) -> Iterator[Parameter]:
        for _, param in self.named_parameters():
            yield param

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for module_name, module in self.named_modules(prefix):
            for name, buf in module._buffers.items():
                if buf is not None:
                    yield (f"{module_name}.{name}" if module_name else name), buf

    def buffers(self) -> Iterator[np.ndarray]:
        for _, buf in self.named_buffers():
            yield buf

    # -- mode, gradients, dtype ----------------------------------------------------------------

    def train(self, mode: bool = True) -> Module:
        """Set training mode on this module and every descendant; returns self."""
        if not isinstance(mode, bool):
            raise TypeError(f"train() expected a bool, got {type(mode).__name__}")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        """Set evaluation mode (``train(False)``); returns self."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Reset every parameter's gradient to zero."""
        for param in self.parameters():
            param.grad.fill(0)

    def to(self, dtype) -> Module:
        """Cast parameters and floating-point buffers to ``dtype`` (float32 or float64)."""
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"{type(self).__name__}.to expected float32 or float64, got {dtype}")
        for module in self.modules():
            object.__setattr__(module, "dtype", dtype)
            for param in module._parameters.values():
                if param is not None:
                    param.data = param.data.astype(dtype)
                    param.grad = param.grad.astype(dtype)
            for name, buf in module._buffers.items():
                if buf is not None and np.issubdtype(buf.dtype, np.floating):
                    setattr(module, name, buf.astype(dtype))
            module._on_dtype_change()
        return self

    def _on_dtype_change(self) -> None:
        """Hook for layers that cache dtype-dependent arrays (work buffers)."""

    def float(self) -> Module:
        return self.to(np.float32)

    def double(self) -> Module:
        return self.to(np.float64)

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Parameters and buffers by PyTorch's key names, as copies. A layer object at two
        places is listed under both names, as torch lists it."""
        state = OrderedDict()
        for module_name, module in self.named_modules(remove_duplicate=False):
            prefix = f"{module_name}." if module_name else ""
            for name, param in module._parameters.items():
                if param is not None:
                    state[prefix + name] = param.data.copy()
            for name, buf in module._buffers.items():
                if buf is not None:
                    state[prefix + name] = buf.copy()
        return state

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy values into the existing arrays (cast to their dtype).

        With ``strict`` (the default) a missing or unexpected key is a ``KeyError`` that lists
        them all; a shape mismatch is always a ``ValueError``. Nothing is changed on error.
        """
        targets = {}
        for module_name, module in self.named_modules(remove_duplicate=False):
            prefix = f"{module_name}." if module_name else ""
            for name, param in module._parameters.items():
                if param is not None:
                    targets[prefix + name] = param.data
            for name, buf in module._buffers.items():
                if buf is not None:
                    targets[prefix + name] = buf
        missing = [key for key in targets if key not in state_dict]
        unexpected = [key for key in state_dict if key not in targets]
        if strict and (missing or unexpected):
            raise KeyError(
                f"{type(self).__name__}.load_state_dict: missing keys {missing}, "
                f"unexpected keys {unexpected}"
            )
        values = {}
        for key, target in targets.items():
            if key not in state_dict:
                continue
            value = np.asarray(state_dict[key])
            if value.dtype.kind not in "biuf":
                raise TypeError(f"load_state_dict: {key!r} has non-numeric dtype {value.dtype}")
            if value.shape != target.shape:
                raise ValueError(
                    f"load_state_dict: {key!r} expected shape {target.shape}, got {value.shape}"
                )
            values[key] = value
        # Copy only after every check passed, so a bad dict leaves the model as it was.
        for key, value in values.items():
            np.copyto(targets[key], value, casting="unsafe")
        return IncompatibleKeys(missing, unexpected)

    # -- printing ------------------------------------------------------------------------------

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = []
        for name, module in self._modules.items():
            child = repr(module).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child}")
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n" + "\n".join(lines) + "\n)"


class Sequential(Module):
    """Layers applied one after another; backward runs them in reverse.

    Children are named "0", "1", ... as in PyTorch, so state_dict keys match.
    """

    skips_input_grad = True  # backward takes input_grad (see backward_into)

    def __init__(self, *layers: Module):
        super().__init__()
        for index, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(
                    f"Sequential expected Module arguments, got {type(layer).__name__} "
                    f"at position {index}"
                )
            setattr(self, str(index), layer)
        # A tuple of the layers: the hot loop reads it instead of walking a dict.
        object.__setattr__(self, "_layers", tuple(layers))

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if isinstance(value, Module) and "_layers" in self.__dict__:
            object.__setattr__(self, "_layers", tuple(self._modules.values()))

    def forward(self, x):
        for layer in self._layers:
            x = layer(x)
        return x

    def backward(self, grad_out, input_grad: bool = True):
        """The input gradient; with ``input_grad=False`` only the parameter gradients (and
        None is returned): see the module docstring."""
        layers = self._layers
        if len({id(layer) for layer in layers}) < len(layers):
            shared = next(i for i, m in enumerate(layers) if any(m is n for n in layers[:i]))
            first_use = next(i for i, m in enumerate(layers) if m is layers[shared])
            raise ValueError(shared_layer_message("Sequential", [str(first_use), str(shared)]))
        first = 0
        if not input_grad:
            first = next((i for i, m in enumerate(layers) if _has_parameters(m)), len(layers))
        for layer in reversed(layers[first + 1 :]):
            grad_out = layer.backward(grad_out)
        if first == len(layers):  # no parameters at all: nothing to compute
            return None
        return backward_into(layers[first], grad_out, input_grad)

    def append(self, layer: Module) -> Sequential:
        setattr(self, str(len(self._layers)), layer)
        return self

    def __len__(self) -> int:
        return len(self._layers)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._layers)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(*self._layers[index])
        return self._layers[index]


def _has_parameters(module: Module) -> bool:
    return next(iter(module.parameters()), None) is not None


def shared_layer_message(container: str, places: list[str]) -> str:
    """The error for one layer object placed twice in a container that is asked for backward."""
    return (
        f"{container}.backward: positions {' and '.join(map(repr, places))} hold the same layer "
        f"object; a layer keeps what its last forward saved (its input, say), so the earlier "
        f"position's backward would use the later one's. Use a layer per position "
        f"(copy.deepcopy), sharing weights if wanted by assigning the same Parameter: "
        f"second.weight = first.weight"
    )


def backward_into(module: Module, grad_out, input_grad: bool = True):
    """``module.backward(grad_out)``, or, when ``input_grad`` is False, the parameter
    gradients only (None returned) from modules that can skip the input gradient
    (those whose backward takes ``input_grad``: Linear, Conv, Sequential, Graph)."""
    if input_grad:
        return module.backward(grad_out)
    if getattr(module, "skips_input_grad", False):
        return module.backward(grad_out, input_grad=False)
    module.backward(grad_out)
    return None
