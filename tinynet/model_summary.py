"""A table of a model's layers: output shapes, parameter counts and FLOPs, as torchinfo prints.

``summary(model, input_shape)`` runs one forward pass on zeros of ``input_shape`` (which
includes the batch dimension, as in torchinfo) through a deep copy of the model in eval mode,
recording what each leaf layer returned, and prints::

    Layer   Type         Output shape        Params       FLOPs
    0       Conv2d       (1, 32, 28, 28)        288     451,584
    ...

followed by totals. Seeing the model before and after ``fold_bn`` is the intended use: the
BatchNorm rows disappear and their parameters and FLOPs with them.

FLOPs convention: one multiply-add counts as **2** FLOPs (as fvcore-style "MACs × 2" and
``torch.utils.flop_counter`` count), for the whole batch, one forward pass in eval mode:

==========================  ===============================================================
Linear                      2·rows·in·out, plus rows·out for the bias
Conv2d / Conv3d             2·out.size·(in_channels/groups)·prod(kernel), plus out.size for
                            the bias (taps on the zero padding are counted, as torch does)
BatchNorm (eval)            2·elements (a per-channel scale and shift)
ChannelAffine               2·elements
ReLU / Sigmoid / Tanh       elements
FusedReLU                   its layer's FLOPs + elements
Max/AvgPool                 out.size·prod(kernel)
AdaptiveAvgPool             the summed window sizes (input.size when the bins do not overlap)
Add                         elements·(inputs − 1)
Flatten, Dropout, Identity,
Concat                      0
any other leaf layer        unknown: shown as "-" and left out of the total, which says so
==========================  ===============================================================

The user's model is never touched: the pass runs on ``copy.deepcopy(model)``, so its mode,
running statistics and saved state stay bit-identical.
"""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass

import numpy as np

from .nn.activation import ReLU, Sigmoid, Tanh
from .nn.affine import ChannelAffine
from .nn.batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .nn.conv import Conv2d, Conv3d
from .nn.dropout import Dropout
from .nn.flatten import Flatten
from .nn.fused import FusedReLU
from .nn.linear import Linear
from .nn.merge import Add, Concat, Identity
from .nn.module import Module
from .nn.pooling import (
    AdaptiveAvgPool2d,
    AdaptiveAvgPool3d,
    AvgPool2d,
    AvgPool3d,
    MaxPool2d,
    MaxPool3d,
)

_ELEMENTWISE = (ReLU, Sigmoid, Tanh)
_NORMALISING = (BatchNorm1d, BatchNorm2d, BatchNorm3d, ChannelAffine)
_WINDOWED = (MaxPool2d, MaxPool3d, AvgPool2d, AvgPool3d)
_ADAPTIVE = (AdaptiveAvgPool2d, AdaptiveAvgPool3d)
_FREE = (Flatten, Dropout, Identity, Concat)


@dataclass(frozen=True)
class LayerRow:
    """One layer of the table.

    ``name`` is the qualified name from ``named_modules()`` ("" for a model that is itself a
    single layer); ``output_shape`` is None for a layer the forward pass never called (a tuple
    of shapes for a layer returning several arrays); ``flops`` is None when unknown;
    ``calls`` counts the calls in the pass (a layer shared by two places runs twice, and its
    FLOPs add up).
    """

    name: str
    type: str
    output_shape: tuple | None
    params: int
    flops: int | None
    calls: int


@dataclass(frozen=True)
class ModelSummary:
    """Rows and totals of :func:`summarize`; ``str()`` gives the printed table."""

    rows: tuple[LayerRow, ...]
    input_shape: tuple[int, ...]
    dtype: np.dtype
    total_params: int
    trainable_params: int
    param_bytes: int
    buffer_values: int
    buffer_bytes: int
    activation_bytes: int
    total_flops: int
    unknown_flops: tuple[str, ...]  # names of layers whose FLOPs are not known

    def __str__(self) -> str:
        return _format(self)


def count_flops(layer: Module, inputs: tuple, output) -> int | None:
    """FLOPs of one call ``output = layer(*inputs)`` (a multiply-add is 2), None if unknown."""
    if isinstance(layer, _FREE):
        return 0
    if not isinstance(output, np.ndarray):
        return None
    out = output.size
    if isinstance(layer, FusedReLU):  # the layer's FLOPs, then one max per output value
        inner = count_flops(layer.layer, inputs, output)
        return None if inner is None else inner + out
    if isinstance(layer, Linear):
        rows = out // layer.out_features
        bias = out if layer.bias is not None else 0
        return 2 * rows * layer.in_features * layer.out_features + bias
    if isinstance(layer, (Conv2d, Conv3d)):
        taps = layer.in_channels // layer.groups * math.prod(layer.kernel_size)
        bias = out if layer.bias is not None else 0
        return 2 * out * taps + bias
    if isinstance(layer, _NORMALISING):
        return 2 * out
    if isinstance(layer, _ELEMENTWISE):
        return out
    if isinstance(layer, _WINDOWED):
        return out * math.prod(layer.kernel_size)
    if isinstance(layer, _ADAPTIVE):
        return _adaptive_flops(np.shape(inputs[0]), output.shape, layer._dims)
    if isinstance(layer, Add):
        return out * (len(inputs) - 1)
    return None


def _adaptive_flops(in_shape, out_shape, dims: int) -> int:
    """One addition per input value per bin it falls in; bins follow PyTorch's rule
    [⌊o·size/out⌋, ⌈(o + 1)·size/out⌉), which overlap when out does not divide size."""
    total = math.prod(out_shape[:-dims])  # batch and channels
    for size, bins in zip(in_shape[-dims:], out_shape[-dims:]):
        total *= sum(-(-(o + 1) * size // bins) - o * size // bins for o in range(bins))
    return total


def summarize(model: Module, input_shape, dtype=None) -> ModelSummary:
    """Run one eval-mode forward pass on a copy of ``model`` and collect the table's data.

    ``input_shape`` includes the batch dimension, e.g. (1, 1, 28, 28). ``dtype`` (float32 or
    float64) casts the copy and the input; by default the model's own dtype is used. A layer
    that rejects its input raises its own error, prefixed with the layer's name.
    """
    if not isinstance(model, Module):
        raise TypeError(f"summary expected a tinynet Module, got {type(model).__name__}")
    input_shape = check_input_shape(input_shape)
    work = copy.deepcopy(model).eval()
    if dtype is not None:
        work.to(dtype)
    params = list(work.parameters())
    if dtype is None:
        dtype = params[0].data.dtype if params else work.dtype
    dtype = np.dtype(dtype)

    shown = leaf_layers(work)
    calls = {name: [] for name, _ in shown}
    x = np.zeros(input_shape, dtype=dtype)
    for name, module in shown:
        _record(name, module, calls[name], x)
    work(x)

    rows = []
    for name, module in shown:
        if isinstance(module, FusedReLU):
            own = sum(p.data.size for p in module.parameters())
        else:
            own = sum(p.data.size for p in module._parameters.values() if p is not None)
        seen = calls[name]
        shapes = [shape for shape, _, _ in seen]
        flops = [f for _, f, _ in seen]
        rows.append(
            LayerRow(
                name=name,
                type=type(module).__name__,
                output_shape=shapes[-1] if shapes else None,
                params=own,
                flops=None if None in flops else sum(flops),
                calls=len(seen),
            )
        )
    activations = sum(nbytes for name in calls for _, _, nbytes in calls[name])
    buffers = list(work.buffers())
    return ModelSummary(
        rows=tuple(rows),
        input_shape=input_shape,
        dtype=dtype,
        total_params=sum(p.data.size for p in params),
        # Every tinynet Parameter is trained; the attribute is read in case one day it is not.
        trainable_params=sum(p.data.size for p in params if getattr(p, "requires_grad", True)),
        param_bytes=sum(p.data.nbytes for p in params),
        buffer_values=sum(b.size for b in buffers),
        buffer_bytes=sum(b.nbytes for b in buffers),
        activation_bytes=activations,
        total_flops=sum(row.flops for row in rows if row.flops is not None),
        unknown_flops=tuple(row.name for row in rows if row.flops is None),
    )


def summary(model: Module, input_shape, dtype=None, file=None) -> str:
    """Print the layer table of ``model`` for an input of ``input_shape`` and return it.

    ``input_shape`` includes the batch dimension, e.g. (1, 1, 28, 28) for one MNIST image.
    Prints to ``file`` (default ``sys.stdout``). :func:`summarize` returns the same data as
    a :class:`ModelSummary` (``.rows`` and totals). FLOPs count a multiply-add as 2.
    """
    text = str(summarize(model, input_shape, dtype))
    print(text, file=sys.stdout if file is None else file)
    return text


# -- recording ---------------------------------------------------------------------------------


def leaf_layers(model: Module) -> list[tuple[str, Module]]:
    """The (name, module) pairs a table shows: leaves, and containers that hold parameters
    of their own; a FusedReLU is one layer to its user (its inner layer never runs alone)."""
    fused = [name + "." for name, module in model.named_modules() if isinstance(module, FusedReLU)]
    return [
        (name, module)
        for name, module in model.named_modules()
        if (
            not module._modules
            or isinstance(module, FusedReLU)
            or any(p is not None for p in module._parameters.values())
        )
        and not any(name.startswith(prefix) for prefix in fused)
    ]


def check_input_shape(input_shape, caller: str = "summary") -> tuple[int, ...]:
    """``input_shape`` as a tuple of ints ≥ 1 (batch included), or a ValueError naming
    ``caller`` (summary, profile) and what it got."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if (
        not shape
        or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in shape)
        or any(s < 1 for s in shape)
    ):
        raise ValueError(
            f"{caller} expected input_shape to be a tuple of positive ints including the batch "
            f"dimension, e.g. (1, 1, 28, 28); got {input_shape!r}"
        )
    return tuple(int(s) for s in shape)


def _record(name: str, module: Module, calls: list, model_input: np.ndarray) -> None:
    """Make ``module`` (a member of the throwaway copy) log each call's output into ``calls``.

    Module.__call__ runs ``self.forward(*args)``, so an instance attribute named ``forward``
    takes precedence over the class's method; object.__setattr__ keeps the attribute out of
    Module's registration logic.
    """
    forward = module.forward

    def recording_forward(*args):
        try:
            output = forward(*args)
        except Exception as exc:
            raise _locate(exc, name, module, forward, args, model_input) from exc
        calls.append((_shape_of(output), count_flops(module, args, output), _nbytes(output)))
        return output

    object.__setattr__(module, "forward", recording_forward)


def _locate(exc, name: str, module: Module, forward, args, model_input) -> Exception:
    """The same kind of error with the failing layer's name in front of its message."""
    if getattr(exc, "_summary_layer", None) is not None:
        return exc  # a layer inside this one failed and already said so
    where = f"layer {name!r} ({type(module).__name__})" if name else type(module).__name__
    shapes = ", ".join(str(np.shape(a)) for a in args)
    hint = ""
    if len(args) == 1 and args[0] is model_input and _accepts(forward, model_input[None]):
        # The commonest slip: torchinfo's convention, the batch dimension, was left out.
        hint = f"; input_shape includes the batch dimension: did you mean {(1, *args[0].shape)}?"
    try:
        located = type(exc)(f"summary: {where} failed on input {shapes}: {exc}{hint}")
    except Exception:
        return exc  # an exception class with its own constructor arguments: pass it on as is
    located._summary_layer = name
    return located


def _accepts(forward, x) -> bool:
    """Whether the layer (a member of the throwaway copy) runs on ``x``."""
    try:
        forward(x)
    except Exception:
        return False
    return True


def _shape_of(output):
    if isinstance(output, np.ndarray):
        return output.shape
    if isinstance(output, (tuple, list)):
        return tuple(np.shape(o) for o in output)
    return None


def _nbytes(output) -> int:
    if isinstance(output, np.ndarray):
        return output.nbytes
    if isinstance(output, (tuple, list)):
        return sum(o.nbytes for o in output if isinstance(o, np.ndarray))
    return 0


# -- printing ----------------------------------------------------------------------------------


def _format(s: ModelSummary) -> str:
    header = ("Layer", "Type", "Output shape", "Params", "FLOPs")
    body = []
    for row in s.rows:
        kind = row.type if row.calls <= 1 else f"{row.type} (x{row.calls})"
        shape = "not run" if row.output_shape is None else str(row.output_shape)
        flops = "-" if row.flops is None else f"{row.flops:,}"
        body.append((row.name or "(model)", kind, shape, f"{row.params:,}", flops))
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells):
        left = [c.ljust(w) for c, w in zip(cells[:3], widths[:3])]
        right = [c.rjust(w) for c, w in zip(cells[3:], widths[3:])]
        return "  ".join(left + right).rstrip()

    flops = f"{s.total_flops:,}"
    if s.total_flops >= 1000:
        flops += f" ({_si(s.total_flops)}FLOPs)"
    flops += "; a multiply-add counts as 2"
    if s.unknown_flops:
        flops += f"; not counted: {', '.join(repr(n) for n in s.unknown_flops)}"
    totals = [
        f"Input shape: {s.input_shape}, dtype {s.dtype}",
        f"Total params: {s.total_params:,} ({_bytes(s.param_bytes)})",
        f"Trainable params: {s.trainable_params:,}",
        f"Non-trained buffers: {s.buffer_values:,} values ({_bytes(s.buffer_bytes)})",
        f"Layer outputs, one forward: {_bytes(s.activation_bytes)}",
        f"FLOPs per forward (whole batch): {flops}",
    ]
    table = [line(header), *(line(r) for r in body)]
    rule = "=" * max(len(text) for text in table + totals)
    return "\n".join([rule, table[0], rule, *table[1:], rule, *totals, rule])


def _si(n: int) -> str:
    for value, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M")):
        if n >= value:
            return f"{n / value:.2f} {prefix}"
    return f"{n / 1e3:.2f} k"


def _bytes(n: int) -> str:
    for value, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= value:
            return f"{n / value:.2f} {unit}"
    return f"{n} B"
