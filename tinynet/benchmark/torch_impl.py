"""The PyTorch side: the same layers and models, run the way a PyTorch user runs them.

Training-style work runs with autograd on (as in a training loop); inference uses
``torch.inference_mode()``. The thread count is set with ``torch.set_num_threads`` to the
benchmark's, and tensors share memory with the NumPy inputs (``torch.from_numpy``), so no
conversion is timed.
"""

from __future__ import annotations

import numpy as np

from .spec import _BN, _CONV


def import_torch():
    """PyTorch, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def build_torch(specs: list[dict], torch):
    """A torch.nn.Sequential with the spec's layers and weights."""
    nn = torch.nn

    class Affine(nn.Module):
        """fold_bn's per-channel y = scale·x + shift (a BatchNorm with nothing to fold into)."""

        def __init__(self, scale, shift):
            super().__init__()
            self.register_buffer("scale", torch.from_numpy(scale.copy()))
            self.register_buffer("shift", torch.from_numpy(shift.copy()))

        def forward(self, x):
            shape = (1, -1) + (1,) * (x.dim() - 2)
            return x * self.scale.view(shape) + self.shift.view(shape)

    layers = []
    for s in specs:
        kind = s["type"]
        if kind in _CONV:
            layer = getattr(nn, kind)(
                s["in_channels"],
                s["out_channels"],
                s["kernel_size"],
                stride=s["stride"],
                padding=s["padding"],
                dilation=s["dilation"],
                groups=s["groups"],
                bias=s.get("bias") is not None,
            )
        elif kind in _BN:
            layer = getattr(nn, kind)(
                s["num_features"],
                eps=s["eps"],
                momentum=s["momentum"],
                affine=s.get("weight") is not None,
                track_running_stats=s.get("running_mean") is not None,
            )
        elif kind == "Linear":
            layer = nn.Linear(s["in_features"], s["out_features"], bias=s.get("bias") is not None)
        elif kind.startswith(("MaxPool", "AvgPool")):
            layer = getattr(nn, kind)(s["kernel_size"], s["stride"], s["padding"])
        elif kind.startswith("AdaptiveAvgPool"):
            layer = getattr(nn, kind)(1)
        elif kind == "Dropout":
            layer = nn.Dropout(s["p"])
        elif kind == "Affine":
            layer = Affine(s["scale"], s["shift"])
        else:
            layer = getattr(nn, kind)()
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                value = s.get(name)
                target = getattr(layer, name, None)
                if value is not None and isinstance(target, torch.Tensor):
                    target.copy_(torch.from_numpy(np.ascontiguousarray(value)))
        layers.append(layer)
    return nn.Sequential(*layers)


def _np(t) -> np.ndarray:
    return t.detach().numpy().copy()


class TorchLayer:
    """One layer's forward and backward (autograd on, as in training)."""

    def __init__(self, spec: dict, x: np.ndarray, g: np.ndarray, torch, training: bool = True):
        self.torch = torch
        self.module = build_torch([spec], torch)[0].train(training)
        self.x = torch.from_numpy(x).requires_grad_(True)
        self.g = torch.from_numpy(g)
        self.params = [p for p in self.module.parameters()]
        self.y = None

    def forward(self):
        return self.module(self.x)

    def backward(self):
        if self.y is None:
            self.y = self.module(self.x)
        # retain_graph: the benchmark replays one forward's backward many times.
        return self.torch.autograd.grad(self.y, [self.x, *self.params], self.g, retain_graph=True)

    def check_forward(self) -> dict:
        return {"out": _np(self.forward())}

    def check_backward(self) -> dict:
        self.y = self.module(self.x)
        grads = self.backward()
        out = {"grad_input": _np(grads[0])}
        for i, grad in enumerate(grads[1:]):
            out[f"grad_param{i}"] = _np(grad)
        return out


class TorchModel:
    """A whole model: a training step (SGD) or an inference forward."""

    def __init__(self, specs, x, target, torch, lr=0.01, momentum=0.9):
        self.torch = torch
        self.model = build_torch(specs, torch)
        self.x = torch.from_numpy(x)
        self.target = torch.from_numpy(target.astype(np.int64)) if target is not None else None
        self.opt = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=momentum)
        self.loss_fn = torch.nn.CrossEntropyLoss()

    def train_step(self):
        self.opt.zero_grad()
        loss = self.loss_fn(self.model(self.x), self.target)
        loss.backward()
        self.opt.step()
        return loss

    def eval_forward(self):
        with self.torch.inference_mode():
            return self.model(self.x)

    def check_train_step(self) -> dict:
        from .workloads import dropout_off

        self.model.train()
        with dropout_off(self.model.modules()):
            loss = self.train_step()
        out = {"loss": np.array(float(loss.detach()))}
        for i, p in enumerate(self.model.parameters()):
            out[f"grad{i}"] = _np(p.grad)
            out[f"param{i}"] = _np(p)
        return out

    def check_eval(self) -> dict:
        self.model.eval()
        return {"out": _np(self.eval_forward())}
