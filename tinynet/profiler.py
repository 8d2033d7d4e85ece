"""Where a model's time goes: each layer's forward and backward, timed over training steps.

``profile(model, input_shape)`` runs a few training steps (forward, then backward with
``input_grad=False``, as a training loop does) on a deep copy of the model and prints::

    profile: Sequential, input (64, 1, 28, 28) float32, train mode, 2 threads, medians of 20 steps
    Layer             Type         Forward ms  Backward ms   Share  GFLOP/s  First step s
    0                 Conv2d            0.941        0.924    7.2%     30.7          0.33
    1                 BatchNorm2d       0.775        1.246    7.8%      4.1          0.03
    ...
    4                 Conv2d            4.843        8.745   52.5%     95.5          0.06
    ...
    (outside layers)                    0.067        0.108    0.7%
    step                               10.396       14.448  100.0%

(LeNet-BN, batch 64, on 2 cores: its second convolution is half of a training step.) A last
column, "Algorithm", names the path each convolution took at this input size ("direct" on
row 0, "Winograd F(2x2, 3x3)" on row 4; nn/conv.py picks it by kernel, stride, channels and
map size), so that a slow row can be read against the ways a convolution can be computed.

How: each leaf layer's ``forward`` and ``backward`` are wrapped, on the copy only, with a
timer (an instance attribute named ``forward`` takes precedence over the class's method, as
in model_summary.py). The timed steps come after one untimed first step, whose per-layer time
is reported on its own ("First step s"): it includes Numba's compilation of the layer's
kernels, or the loading of their machine code from the disk cache on a later run. Times are
medians over the steps; "(outside layers)" is the step's time not spent inside any leaf
layer: the containers' Python, a Graph's bookkeeping. GFLOP/s is the forward's rate (FLOPs
as tinynet.summary counts them). The loss and the optimizer are not part of the step.

The user's model is never touched: its parameters, gradients, running statistics and mode
stay bit-identical.
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from . import config
from .model_summary import check_input_shape, count_flops, leaf_layers
from .nn.conv import Conv2d, Conv3d
from .nn.fused import FusedReLU
from .nn.module import Module, backward_into


@dataclass
class LayerTime:
    """One leaf layer's medians (ms per step; 0 where it did not run) and first-step time."""

    name: str
    type: str
    forward_ms: float
    backward_ms: float
    first_step_s: float
    flops: int | None  # its forward's, per step (None: unknown)
    algorithm: str = ""  # a convolution's path (see _ALGORITHMS), "" for other layers

    @property
    def gflops(self) -> float | None:
        if self.flops is None or self.forward_ms <= 0:
            return None
        return self.flops / (self.forward_ms * 1e6)


@dataclass
class Profile:
    """What :func:`profile` measured; ``str()`` gives the table it prints."""

    model: str
    input_shape: tuple[int, ...]
    dtype: str
    train: bool
    threads: int
    steps: int
    rows: list[LayerTime] = field(default_factory=list)
    forward_ms: float = 0.0  # the whole model's, medians over the steps
    backward_ms: float = 0.0
    outside_forward_ms: float = 0.0  # each step's time outside the layers, medians
    outside_backward_ms: float = 0.0

    @property
    def step_ms(self) -> float:
        return self.forward_ms + self.backward_ms

    def __str__(self) -> str:
        mode = "train" if self.train else "eval"
        title = (
            f"profile: {self.model}, input {self.input_shape} {self.dtype}, {mode} mode, "
            f"{self.threads} threads, medians of {self.steps} steps"
        )
        header = (
            "Layer", "Type", "Forward ms", "Backward ms", "Share", "GFLOP/s", "First step s",
            "Algorithm",
        )  # fmt: skip
        step = self.step_ms or float("nan")
        body = []
        for row in self.rows:
            rate = "-" if row.gflops is None else f"{row.gflops:.1f}"
            share = f"{100 * (row.forward_ms + row.backward_ms) / step:.1f}%"
            body.append(
                (
                    row.name or "(model)",
                    row.type,
                    f"{row.forward_ms:.3f}",
                    f"{row.backward_ms:.3f}" if self.train else "-",
                    share,
                    rate,
                    f"{row.first_step_s:.2f}",
                    row.algorithm,
                )
            )
        outside_f, outside_b = self.outside_forward_ms, self.outside_backward_ms
        body.append(
            (
                "(outside layers)",
                "",
                f"{outside_f:.3f}",
                f"{outside_b:.3f}" if self.train else "-",
                f"{100 * (outside_f + outside_b) / step:.1f}%",
                "",
                "",
                "",
            )
        )
        body.append(
            (
                "step",
                "",
                f"{self.forward_ms:.3f}",
                f"{self.backward_ms:.3f}" if self.train else "-",
                "100.0%",
                "",
                "",
                "",
            )
        )
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
        lines = [title]
        for r in [header, *body]:
            left = [r[i].ljust(widths[i]) for i in range(2)]
            right = [r[i].rjust(widths[i]) for i in range(2, len(header) - 1)]
            lines.append("  ".join([*left, *right, r[-1]]).rstrip())
        return "\n".join(lines)


def profile(
    model: Module, input, *, steps: int = 20, train: bool = True, dtype=None, file=None
) -> Profile:
    """Time each layer of ``model`` over ``steps`` steps, print the table and return it.

    ``input`` is an input shape including the batch dimension, e.g. (64, 1, 28, 28) (random
    normal data is used), or an array. ``train=False`` times eval-mode forwards only.
    ``dtype`` casts the copy and the input (default: the model's dtype). Prints to ``file``
    (default ``sys.stdout``).
    """
    report = measure(model, input, steps=steps, train=train, dtype=dtype)
    print(report, file=sys.stdout if file is None else file)
    return report


def measure(model: Module, input, *, steps: int = 20, train: bool = True, dtype=None) -> Profile:
    """:func:`profile` without printing."""
    if not isinstance(model, Module):
        raise TypeError(f"profile expected a tinynet Module, got {type(model).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"profile expected steps to be a positive int, got {steps!r}")
    work = copy.deepcopy(model).train(bool(train))
    if dtype is not None:
        work.to(dtype)
    params = list(work.parameters())
    dtype = np.dtype(dtype if dtype is not None else params[0].data.dtype if params else work.dtype)
    if isinstance(input, np.ndarray):
        x = input.astype(dtype, copy=False)
    else:
        x = (
            np.random.default_rng(0)
            .standard_normal(check_input_shape(input, "profile"))
            .astype(dtype)
        )

    # Leaves only (a container with parameters of its own would count its children twice:
    # its time stays outside the layers), a FusedReLU as one.
    leaves = [(n, m) for n, m in leaf_layers(work) if not m._modules or isinstance(m, FusedReLU)]
    # Per leaf: [forward seconds, backward seconds] of the current step; forward FLOPs, counted
    # in the first step (None: unknown).
    current = {name: [0.0, 0.0] for name, _ in leaves}
    flops = {name: 0 for name, _ in leaves}
    shapes = {}  # each leaf's first input shape, for its algorithm
    counting = [True]
    for name, layer in leaves:
        _time(layer, current[name], flops, name, counting, shapes)

    forward_s, backward_s, outside_f, outside_b = [], [], [], []
    per_layer = {name: ([], []) for name, _ in leaves}
    first = {}
    grad = None
    for step in range(steps + 1):
        for name in current:
            current[name][:] = [0.0, 0.0]
        work.zero_grad()
        started = time.perf_counter()
        y = work(x)
        middle = time.perf_counter()
        if train:
            if grad is None:
                grad = np.full(np.shape(y), 1.0 / max(np.size(y), 1), dtype=np.asarray(y).dtype)
                middle = time.perf_counter()
            backward_into(work, grad, input_grad=False)
        done = time.perf_counter()
        if step == 0:  # compilation or the kernels' loading from the cache: reported apart
            first = {name: sum(current[name]) for name in current}
            counting[0] = False
            continue
        forward_s.append(middle - started)
        backward_s.append(done - middle)
        for name, (f, b) in current.items():
            per_layer[name][0].append(f)
            per_layer[name][1].append(b)
        outside_f.append(forward_s[-1] - sum(f for f, _ in current.values()))
        outside_b.append(backward_s[-1] - sum(b for _, b in current.values()))

    report = Profile(
        model=type(model).__name__,
        input_shape=tuple(x.shape),
        dtype=str(dtype),
        train=bool(train),
        threads=config.get_num_threads(),
        steps=steps,
        forward_ms=float(np.median(forward_s)) * 1e3,
        backward_ms=float(np.median(backward_s)) * 1e3 if train else 0.0,
        outside_forward_ms=float(np.median(outside_f)) * 1e3,
        outside_backward_ms=float(np.median(outside_b)) * 1e3 if train else 0.0,
    )
    for name, layer in leaves:
        f, b = per_layer[name]
        report.rows.append(
            LayerTime(
                name=name,
                type=type(layer).__name__,
                forward_ms=float(np.median(f)) * 1e3,
                backward_ms=float(np.median(b)) * 1e3,
                first_step_s=first[name],
                flops=flops[name],
                algorithm=algorithm(layer, shapes.get(name)),
            )
        )
    return report


# Conv2d's and Conv3d's paths, by the kernel group kernel_cache.group_key gives them.
_ALGORITHMS = {
    "gemm": "vol2col + BLAS",
    "direct": "direct loops",
    "small": "direct",
    "small3d": "direct 3x3x3",
    "planes": "planes + BLAS",
    "shifted": "shifted products",
    "winograd": "Winograd F(2x2, 3x3)",
    "winograd4": "Winograd F(4x4, 3x3)",
    "winograd5": "Winograd F(2x2, 5x5)",
    "winograd3d": "Winograd F(2x2x2, 3x3x3)",
    "winograd3d4": "Winograd F(4x4, 3x3) per depth tap",
    "winograd_s2": "Winograd F(4x4, 2x2) polyphase",
    "dilated": "sub-grids",
}


def algorithm(layer: Module, shape) -> str:
    """The path a Conv2d or Conv3d (or a FusedReLU around one) takes on inputs of ``shape``:
    one of _ALGORITHMS' values; "" for other layers, or when the shape is unknown."""
    from .kernel_cache import group_key  # here: kernel_cache imports the models, and so on

    inner = layer.layer if isinstance(layer, FusedReLU) else layer
    if shape is None or not isinstance(inner, (Conv2d, Conv3d)):
        return ""
    key = group_key(inner, shape)
    name = _ALGORITHMS.get(key.split(":")[-1], key)
    if key.endswith(":dilated"):  # and the path its undilated layer takes on the sub-grids
        name += " + " + algorithm(inner._dilated_inner(), inner._dilated_shape(shape))
    return name


def _time(
    layer: Module, current: list, flops: dict, name: str, counting: list, shapes: dict
) -> None:
    """Wrap ``layer``'s forward and backward (a member of the throwaway copy) so that each
    call adds its seconds to current[0] or current[1], and, while counting[0], its forward
    FLOPs to flops[name] (None once a call's count is unknown) and its first input's shape
    to shapes[name]."""
    forward, backward = layer.forward, layer.backward

    def timed_forward(*args):
        started = time.perf_counter()
        output = forward(*args)
        current[0] += time.perf_counter() - started
        if counting[0] and args:
            shapes.setdefault(name, np.shape(args[0]))
        if counting[0] and flops[name] is not None:
            count = count_flops(layer, args, output)
            flops[name] = None if count is None else flops[name] + count
        return output

    def timed_backward(*args, **kwargs):
        started = time.perf_counter()
        grad = backward(*args, **kwargs)
        current[1] += time.perf_counter() - started
        return grad

    object.__setattr__(layer, "forward", timed_forward)
    object.__setattr__(layer, "backward", timed_backward)
