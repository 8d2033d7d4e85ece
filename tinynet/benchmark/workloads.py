"""What is timed: the layer shapes and the whole-model steps, with their FLOPs and bytes.

Every workload builds one *case* per implementation (tinynet, numpy, torch). A case has
``run()`` (the timed call) and ``check()`` (one run whose outputs, as NumPy arrays by name,
are compared across implementations before any timing). All three are built from the same
layer spec, so they share architecture and weights.
"""

from __future__ import annotations

import importlib
import math
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from . import spec as specs
from .numpy_impl import NumpySGD, _Layer, cross_entropy
from .torch_impl import TorchLayer, TorchModel

LR = 0.01
MOMENTUM = 0.9


@dataclass
class Workload:
    """One timed thing: a layer's forward or backward at one shape, or a model step."""

    name: str
    group: str  # "layer" or "model"
    op: str  # "fwd", "bwd", "train", "eval", "eval-folded", "eval-fused"
    bound: str  # "compute" (compare with sgemm) or "memory" (compare with copy bandwidth)
    make: object  # make(impls, tn, torch) -> {impl: case or error string}
    flops: float | None = None
    bytes: float | None = None
    tolerance: float = 2e-3
    note: str = ""
    meta: dict = field(default_factory=dict)


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(name.encode()))


# -- layer cases ------------------------------------------------------------------------------


class TinyLayer:
    def __init__(self, layer_spec, x, g, tn):
        self.layer = specs.build_tinynet([layer_spec], tn)[0].train()
        self.x, self.g = x, g
        self._ready = False

    def forward(self):
        return self.layer(self.x)

    def backward(self):
        if not self._ready:
            self.layer(self.x)
            self._ready = True
        return self.layer.backward(self.g)

    def check_forward(self):
        return {"out": np.array(self.forward())}

    def check_backward(self):
        self.layer.zero_grad()
        self.layer(self.x)
        self._ready = True
        out = {"grad_input": np.array(self.layer.backward(self.g))}
        for i, p in enumerate(self.layer.parameters()):
            out[f"grad_param{i}"] = p.grad.copy()
        return out


class NumpyLayer:
    def __init__(self, layer_spec, x, g):
        self.layer = _Layer(layer_spec)
        self.x, self.g = x, g
        self._ready = False

    def forward(self):
        return self.layer.forward(self.x)

    def backward(self):
        if not self._ready:
            self.layer.forward(self.x)
            self._ready = True
        return self.layer.backward(self.g)

    def check_forward(self):
        return {"out": np.array(self.forward())}

    def check_backward(self):
        for grad in self.layer.grads.values():
            grad.fill(0)
        self.layer.forward(self.x)
        self._ready = True
        out = {"grad_input": np.array(self.layer.backward(self.g))}
        for i, grad in enumerate(self.layer.grads.values()):
            out[f"grad_param{i}"] = grad.copy()
        return out


class Case:
    """A timed callable and its one-off check."""

    def __init__(self, run, check):
        self.run = run
        self.check = check


def _layer_workloads(name, layer_spec, x_shape, bound, flops_fn=None, bytes_fn=None, **kw):
    """Forward and backward workloads of one layer at one input shape."""
    # The output shape from a batch of one, so listing workloads stays cheap.
    probe = np.zeros((1, *x_shape[1:]), dtype=np.float32)
    out_shape = (
        x_shape[0],
        *_Layer(specs._init([dict(layer_spec)], _rng(name))[0]).forward(probe).shape[1:],
    )

    def inputs():
        rng = _rng(name)
        s = specs._init([dict(layer_spec)], rng)[0]
        x = rng.standard_normal(x_shape, dtype=np.float32)
        g = rng.standard_normal(out_shape, dtype=np.float32)
        return s, x, g

    def make(op):
        def build(impls, tn, torch):
            s, x, g = inputs()
            cases = {}
            if "tinynet" in impls:
                try:
                    c = TinyLayer(s, x, g, tn)
                    cases["tinynet"] = _pick(c, op)
                except Exception as exc:
                    cases["tinynet"] = f"n/a ({type(exc).__name__}: {exc})"
            if "numpy" in impls:
                cases["numpy"] = _pick(NumpyLayer(s, x, g), op)
            if "torch" in impls and torch is not None:
                cases["torch"] = _pick(TorchLayer(s, x, g, torch), op)
            return cases

        return build

    work = []
    for op, factor in (("fwd", 1), ("bwd", 2)):
        flops = flops_fn(x_shape, out_shape) * factor if flops_fn else None
        nbytes = bytes_fn(x_shape, out_shape, op) if bytes_fn else None
        work.append(
            Workload(
                name=f"{name} {op}",
                group="layer",
                op=op,
                bound=bound,
                make=make(op),
                flops=flops,
                bytes=nbytes,
                meta={"input": list(x_shape), "output": list(out_shape)},
                **kw,
            )
        )
    return work


def _pick(case, op):
    if op == "fwd":
        return Case(case.forward, case.check_forward)
    return Case(case.backward, case.check_backward)


def _conv_flops(cin, k):
    def flops(x_shape, out_shape):
        return 2.0 * math.prod(out_shape) * cin * math.prod(k)

    return flops


def _linear_flops(x_shape, out_shape):
    return 2.0 * math.prod(out_shape) * x_shape[-1]


def _memory_bytes(x_shape, out_shape, op):
    """Compulsory traffic (float32): each input read once, each output written once.

    Forward reads x and writes y. Backward reads the gradient and what it needs from forward
    (x or y, the size of x for BN/ReLU) and writes the input gradient; pooling's backward
    reads the small output gradient and writes the input-sized one.
    """
    x, y = math.prod(x_shape), math.prod(out_shape)
    if op == "fwd":
        return 4.0 * (x + y)
    if y < x:  # pooling: g (small) in, grad_input out
        return 4.0 * (y + x)
    return 4.0 * (y + 2 * x)


def layer_workloads(quick: bool) -> list[Workload]:
    c2, c3, bn, mp, lin = specs._conv, specs._conv, specs._bn, specs._pool, None
    del lin
    if quick:
        convs2d = [
            ("conv2d lenet1 1->4 3x3 p1 (2,1,8,8)", c2(2, 1, 4, 3, padding=1), (2, 1, 8, 8)),
            ("conv2d s2 3->4 3x3 s2 p1 (2,3,8,8)", c2(2, 3, 4, 3, 2, 1), (2, 3, 8, 8)),
            ("conv2d dw 4 3x3 p1 (2,4,8,8)", c2(2, 4, 4, 3, padding=1, groups=4), (2, 4, 8, 8)),
            ("conv2d 5x5 12->4 p2 (2,12,8,8)", c2(2, 12, 4, 5, padding=2), (2, 12, 8, 8)),
        ]
        conv3d = ("conv3d 2->3 3x3x3 p1 (2,2,4,4,4)", c3(3, 2, 3, 3, padding=1), (2, 2, 4, 4, 4))
        bns = [
            ("bn1d 8 (4,8)", bn(1, 8), (4, 8)),
            ("bn2d 4 (2,4,5,5)", bn(2, 4), (2, 4, 5, 5)),
            ("bn3d 3 (2,3,4,4,4)", bn(3, 3), (2, 3, 4, 4, 4)),
        ]
        pools = [
            ("maxpool2d 2 (2,3,8,8)", mp("MaxPool2d", 2), (2, 3, 8, 8)),
            ("avgpool2d 2 (2,3,8,8)", mp("AvgPool2d", 2), (2, 3, 8, 8)),
        ]
        linear = ("linear 12->5 (4,12)", 12, 5, 4)
        relu = ("relu (2,3,8,8)", (2, 3, 8, 8))
    else:
        convs2d = [
            (
                "conv2d lenet1 1->32 3x3 p1 (64,1,28,28)",
                c2(2, 1, 32, 3, padding=1),
                (64, 1, 28, 28),
            ),
            (
                "conv2d lenet2 32->64 3x3 p1 (64,32,14,14)",
                c2(2, 32, 64, 3, padding=1),
                (64, 32, 14, 14),
            ),
            (
                "conv2d cifar1 3->16 3x3 p1 (64,3,32,32)",
                c2(2, 3, 16, 3, padding=1),
                (64, 3, 32, 32),
            ),
            (
                "conv2d cifar2 16->32 3x3 p1 (64,16,32,32)",
                c2(2, 16, 32, 3, padding=1),
                (64, 16, 32, 32),
            ),
            ("conv2d s2 32->64 3x3 s2 p1 (64,32,32,32)", c2(2, 32, 64, 3, 2, 1), (64, 32, 32, 32)),
            (
                "conv2d wide 128->128 3x3 p1 (16,128,8,8)",
                c2(2, 128, 128, 3, padding=1),
                (16, 128, 8, 8),
            ),
            (  # the second layer of TensorFlow's MNIST tutorial CNN (Winograd F(2×2, 5×5))
                "conv2d 5x5 32->64 p2 (64,32,14,14)",
                c2(2, 32, 64, 5, padding=2),
                (64, 32, 14, 14),
            ),
            (
                "conv2d depthwise 64 3x3 p1 (32,64,16,16)",
                c2(2, 64, 64, 3, padding=1, groups=64),
                (32, 64, 16, 16),
            ),
        ]
        conv3d = (
            "conv3d 16->32 3x3x3 p1 (8,16,16,16,16)",
            c3(3, 16, 32, 3, padding=1),
            (8, 16, 16, 16, 16),
        )
        bns = [
            ("bn1d 256 (128,256)", bn(1, 256), (128, 256)),
            ("bn2d 64 (64,64,14,14)", bn(2, 64), (64, 64, 14, 14)),
            ("bn3d 32 (8,32,16,16,16)", bn(3, 32), (8, 32, 16, 16, 16)),
        ]
        pools = [
            ("maxpool2d 2 (64,32,28,28)", mp("MaxPool2d", 2), (64, 32, 28, 28)),
            ("avgpool2d 2 (64,32,28,28)", mp("AvgPool2d", 2), (64, 32, 28, 28)),
        ]
        linear = ("linear 3136->128 (64,3136)", 3136, 128, 64)
        relu = ("relu (64,32,28,28)", (64, 32, 28, 28))

    work: list[Workload] = []
    name, fin, fout, batch = linear
    lin_spec = {"type": "Linear", "in_features": fin, "out_features": fout, "bias": True}
    work += _layer_workloads(name, lin_spec, (batch, fin), "compute", _linear_flops)
    for name, s, shape in [*convs2d, conv3d]:
        flops = _conv_flops(s["in_channels"] // s["groups"], s["kernel_size"])
        work += _layer_workloads(name, s, shape, "compute", flops)
    for name, s, shape in bns:
        work += _layer_workloads(name, s, shape, "memory", bytes_fn=_memory_bytes)
    for name, s, shape in pools:
        work += _layer_workloads(name, s, shape, "memory", bytes_fn=_memory_bytes)
    name, shape = relu
    work += _layer_workloads(name, {"type": "ReLU"}, shape, "memory", bytes_fn=_memory_bytes)
    return work


# -- model cases ------------------------------------------------------------------------------


@contextmanager
def dropout_off(layers):
    """Dropout as identity for a check: the implementations draw different random masks."""
    dropouts = [
        m for m in layers if type(m).__name__ == "Dropout" or getattr(m, "kind", "") == "Dropout"
    ]
    for m in dropouts:
        m.training = False
    try:
        yield
    finally:
        for m in dropouts:
            m.training = True


class TinyModel:
    def __init__(self, model, x, target, tn):
        self.tn = tn
        self.model = model
        self.x, self.target = x, target
        self.crit = tn.nn.CrossEntropyLoss()
        self.opt = None

    def train_step(self):
        if self.opt is None:
            sgd = getattr(getattr(self.tn, "optim", None), "SGD", None)
            if sgd is None:
                raise NotImplementedError("tinynet.optim.SGD is missing")
            self.opt = sgd(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.opt.zero_grad()
        loss = self.crit(self.model(self.x), self.target)
        self.model.backward(self.crit.backward(), input_grad=False)  # as torch: x needs none
        self.opt.step()
        return loss

    def eval_forward(self):
        return self.model(self.x)

    def check_train_step(self):
        self.model.train()
        with dropout_off(self.model.modules()):
            out = {"loss": np.array(self.train_step())}
        for i, p in enumerate(self.model.parameters()):
            out[f"grad{i}"] = p.grad.copy()
            out[f"param{i}"] = p.data.copy()
        return out

    def check_eval(self):
        self.model.eval()
        return {"out": np.array(self.eval_forward())}


class NumpyModel:
    def __init__(self, layer_specs, x, target):
        self.net = specs.build_numpy(layer_specs)
        self.x, self.target = x, target
        self.opt = NumpySGD(self.net.parameters(), lr=LR, momentum=MOMENTUM)

    def train_step(self):
        self.net.zero_grad()
        loss, grad = cross_entropy(self.net(self.x), self.target)
        self.net.backward(grad)
        self.opt.step()
        return loss

    def eval_forward(self):
        return self.net(self.x)

    def check_train_step(self):
        self.net.train()
        with dropout_off(self.net.layers):
            out = {"loss": np.array(self.train_step())}
        for i, (p, g) in enumerate(self.net.parameters()):
            out[f"grad{i}"] = g.copy()
            out[f"param{i}"] = p.copy()
        return out

    def check_eval(self):
        self.net.eval()
        return {"out": np.array(self.eval_forward())}


def _tinynet_models(tn):
    try:
        return importlib.import_module("tinynet.models")
    except ImportError:
        return None


_MODELS = {
    # name: (tinynet.models factory, its kwargs, fallback spec builder, input spatial size)
    "lenet_bn": ("lenet_bn", {}, specs.lenet_bn_spec, 28),
    "bn_mlp": ("bn_mlp", {"bn": True}, specs.bn_mlp_spec, None),
    "cnn3d_bn": ("cnn3d_bn", {"num_classes": 10}, specs.cnn3d_bn_spec, 16),
}


def model_source(key: str, tn, rng):
    """(tinynet model or None, spec, note): tinynet.models' model, or the fallback spec."""
    factory_name, kwargs, fallback, _ = _MODELS[key]
    models = _tinynet_models(tn)
    factory = getattr(models, factory_name, None) if models is not None else None
    model = None
    if factory is not None:
        tn.manual_seed(0)
        try:
            model = factory(**kwargs)
        except Exception as exc:  # a layer it needs is not written yet
            reason = f"tinynet.models.{factory_name} failed: {type(exc).__name__}: {exc}"
    else:
        reason = f"tinynet.models.{factory_name} is missing"
    if model is not None:
        layer_specs = specs.spec_from_tinynet(model)
        _randomize_bn(layer_specs, rng)
        for layer, s in zip(specs._flat_layers(model), layer_specs, strict=True):
            specs.load_tinynet_layer(layer, s)
        return model, layer_specs, f"tinynet.models.{factory_name}"
    layer_specs = fallback(rng)
    try:
        model = specs.build_tinynet(layer_specs, tn)
    except Exception as exc:
        return None, layer_specs, f"{reason}; benchmark's copy of the architecture ({exc})"
    return model, layer_specs, f"{reason}; benchmark's copy of the architecture"


def _randomize_bn(layer_specs, rng):
    for s in layer_specs:
        if s["type"] in specs._BN and s.get("weight") is not None:
            c = s["num_features"]
            s["weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
            s["bias"] = rng.uniform(-0.5, 0.5, c).astype(np.float32)
            if s.get("running_mean") is not None:
                s["running_mean"] = rng.uniform(-0.1, 0.1, c).astype(np.float32)
                s["running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)


def _model_flops(layer_specs, x_shape):
    """Multiply-add FLOPs of one forward: the convolutions and linears (the rest is small)."""
    net = specs.build_numpy(layer_specs).eval()
    x = np.zeros(x_shape, dtype=np.float32)
    total = 0.0
    for layer in net.layers:
        y = layer.forward(x)
        kind = layer.kind
        if kind.startswith("Conv"):
            w = layer.params["weight"]
            total += 2.0 * y.size * math.prod(w.shape[1:])
        elif kind == "Linear":
            total += 2.0 * y.size * x.shape[-1]
        x = y
    return total


def model_workloads(quick: bool) -> list[Workload]:
    sizes = {
        # key: (train batch, eval batch, spatial override)
        "lenet_bn": (4 if quick else 64, 8 if quick else 256, None),
        "bn_mlp": (6 if quick else 60, 8 if quick else 256, None),
        "cnn3d_bn": (2 if quick else 8, 2 if quick else 16, None),
    }
    work = []
    for key, (train_batch, eval_batch, spatial_override) in sizes.items():
        spatial = spatial_override or _MODELS[key][3]
        for op, batch in (
            ("train", train_batch),
            ("eval", eval_batch),
            ("eval-folded", eval_batch),
            ("eval-fused", eval_batch),
        ):
            if key != "lenet_bn" and op != "train":
                continue
            work.append(_model_workload(key, op, batch, spatial))
    return work


def _model_workload(key, op, batch, spatial):
    label = {
        "train": "train step",
        "eval": "eval fwd",
        "eval-folded": "eval fwd folded",
        "eval-fused": "eval fwd folded+fused ReLU",
    }[op]
    name = f"{key} {label} b{batch}"
    state = {}

    def build(impls, tn, torch):
        rng = _rng(name)
        model, layer_specs, source = model_source(key, tn, rng)
        x_shape = specs.input_shape(layer_specs, batch, spatial)
        x = rng.standard_normal(x_shape, dtype=np.float32)
        target = rng.integers(0, _num_classes(layer_specs), batch)
        state["source"] = source
        state["flops"] = _model_flops(layer_specs, x_shape) * (3 if op == "train" else 1)
        state["input"] = list(x_shape)
        # NumPy and PyTorch run the folded model for both folded rows (ReLU fusion is tinynet's).
        folded = op in ("eval-folded", "eval-fused")
        numpy_specs = specs.fold_spec(layer_specs) if folded else layer_specs
        cases = {}
        if "tinynet" in impls:
            cases["tinynet"] = _tiny_model_case(model, source, x, target, tn, op)
        if "numpy" in impls:
            cases["numpy"] = _model_case(NumpyModel(numpy_specs, x, target), op)
        if "torch" in impls and torch is not None:
            cases["torch"] = _model_case(TorchModel(numpy_specs, x, target, torch), op)
        return cases

    return Workload(
        name=name,
        group="model",
        op=op,
        bound="compute",
        make=build,
        tolerance=2e-2 if op == "train" else 2e-3,
        meta=state,
    )


def _num_classes(layer_specs):
    for s in reversed(layer_specs):
        if s["type"] == "Linear":
            return s["out_features"]
    return 10


def _tiny_model_case(model, source, x, target, tn, op):
    if model is None:
        return f"n/a ({source})"
    if op in ("eval-folded", "eval-fused"):
        fold = getattr(tn, "fold_bn", None) or getattr(getattr(tn, "passes", None), "fold_bn", None)
        if fold is None:
            return "n/a (tinynet.fold_bn is missing)"
        model.eval()
        model = fold(model)
        if op == "eval-fused":
            fuse = getattr(tn, "fuse_relu", None)
            if fuse is None:
                return "n/a (tinynet.fuse_relu is missing)"
            model = fuse(model)
    return _model_case(TinyModel(model, x, target, tn), op)


def _model_case(case, op):
    if op == "train":
        case_train = case
        return Case(case_train.train_step, case_train.check_train_step)

    def check():
        return case.check_eval()

    # check() puts the model in eval mode once; the timed call is the bare forward.
    return Case(case.eval_forward, check)


def all_workloads(quick: bool) -> list[Workload]:
    return layer_workloads(quick) + model_workloads(quick)
