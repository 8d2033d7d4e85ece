"""tinynet.profile: each layer's forward and backward time, the model untouched."""

from __future__ import annotations

import copy
import io
import time

import numpy as np
import pytest

import tinynet
from tinynet import nn
from tinynet.model_summary import summarize
from tinynet.profiler import measure


def small_lenet() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 10),
        nn.Dropout(0.5),
        nn.Linear(10, 3),
    )


class Sleepy(nn.Module):
    """A layer whose forward takes at least ``seconds`` and whose backward is instant."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def forward(self, x):
        time.sleep(self.seconds)
        return x

    def backward(self, grad_out):
        return grad_out


def test_rows_follow_the_layers_and_add_up_to_the_step():
    model = small_lenet()
    report = measure(model, (8, 1, 12, 12), steps=3)
    assert [r.name for r in report.rows] == [str(i) for i in range(8)]
    assert [r.type for r in report.rows] == [type(m).__name__ for m in model]
    assert report.train and report.steps == 3 and report.input_shape == (8, 1, 12, 12)
    for row in report.rows:
        assert row.forward_ms >= 0 and row.backward_ms >= 0 and row.first_step_s >= 0
    # Medians need not add up exactly, but the layers cannot take longer than the step.
    inside = sum(r.forward_ms + r.backward_ms for r in report.rows)
    assert 0 < inside <= report.step_ms * 1.5
    # The first layer gets no input gradient in a training step (input_grad=False): it still
    # computes its weight gradient.
    assert report.rows[0].backward_ms > 0


def test_a_slow_layer_is_found_and_its_time_is_its_own():
    model = nn.Sequential(nn.Linear(4, 4), Sleepy(0.02), nn.ReLU())
    report = measure(model, (2, 4), steps=3)
    slow = report.rows[1]
    assert slow.type == "Sleepy" and slow.forward_ms >= 20
    assert slow.forward_ms + slow.backward_ms > 0.8 * report.step_ms
    assert report.rows[0].forward_ms < 10 and report.rows[2].forward_ms < 10


def test_the_model_is_untouched():
    model = small_lenet()
    tinynet.manual_seed(0)
    model(np.random.default_rng(0).standard_normal((8, 1, 12, 12)).astype(np.float32))
    before = copy.deepcopy(model.state_dict())
    grads = [p.grad.copy() for p in model.parameters()]
    model.eval()
    measure(model, (8, 1, 12, 12), steps=2)  # trains a copy
    assert not model.training
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    for p, g in zip(model.parameters(), grads):
        np.testing.assert_array_equal(p.grad, g)
    assert all("forward" not in vars(m) for m in model.modules())  # no wrapper left behind


def test_eval_mode_times_forwards_only_and_flops_match_summary():
    model = small_lenet()
    report = measure(model, (8, 1, 12, 12), steps=2, train=False)
    assert not report.train and report.backward_ms == 0
    assert all(r.backward_ms == 0 for r in report.rows)
    expected = {row.name: row.flops for row in summarize(model, (8, 1, 12, 12)).rows}
    for row in report.rows:
        assert row.flops == expected[row.name]
    conv = report.rows[0]
    assert conv.gflops == pytest.approx(conv.flops / (conv.forward_ms * 1e6))
    text = str(report)
    assert "eval mode" in text and "(outside layers)" in text and "step" in text


def test_graphs_fused_layers_arrays_and_float64():
    model = tinynet.fuse_relu(tinynet.fold_bn(tinynet.models.resnet_bn(num_classes=3)))
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28))
    report = measure(model, x, steps=1, train=False, dtype=np.float64)
    assert report.dtype == "float64" and report.input_shape == x.shape
    fused = [r.name + "." for r in report.rows if r.type == "FusedReLU"]
    assert fused  # each conv–ReLU is one row, its inner conv not another
    assert not any(r.name.startswith(prefix) for r in report.rows for prefix in fused)
    assert "Add" in [r.type for r in report.rows]


def test_profile_prints_the_table():
    out = io.StringIO()
    report = tinynet.profile(small_lenet(), (4, 1, 12, 12), steps=1, file=out)
    assert out.getvalue().strip() == str(report)
    lines = str(report).splitlines()
    assert lines[0].startswith("profile: Sequential, input (4, 1, 12, 12) float32, train mode")
    assert lines[1].split()[:4] == ["Layer", "Type", "Forward", "ms"]
    assert len(lines) == 2 + 8 + 2  # title, header, 8 layers, outside and step


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("not a model", (1, 2)), {}, TypeError, "expected a tinynet Module, got str"),
        ((nn.ReLU(), (1, 2)), {"steps": 0}, ValueError, "steps to be a positive int, got 0"),
        ((nn.ReLU(), (1, 0)), {}, ValueError, "profile expected input_shape to be a tuple"),
    ],
)
def test_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        measure(*args, **kwargs)


def test_algorithm_names_each_convolutions_path():
    """The Algorithm column follows the layer's own choice at the profiled input size."""
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),  # few input channels: the direct kernel
        nn.Conv2d(4, 8, 3, stride=2, padding=1),  # stride 2: vol2col + BLAS
        nn.Conv2d(8, 8, 3, padding=1),  # Winograd, with enough tiles
        nn.Conv2d(8, 8, 3, padding=1, groups=8, dilation=2),  # depthwise: direct loops
        nn.ReLU(),
    )
    report = measure(model, (32, 1, 32, 32), steps=1)
    algorithms = [r.algorithm for r in report.rows]
    assert algorithms[0] == "direct"
    assert algorithms[1] == "vol2col + BLAS"
    assert algorithms[2].startswith("Winograd F(")
    assert algorithms[3] == "direct loops"
    assert algorithms[4] == ""  # not a convolution
    header = str(report).splitlines()[1]
    assert header.split()[-1] == "Algorithm"
    assert str(report).splitlines()[2].endswith("direct")
    # A dilated Conv3d on large enough volumes: the sub-grid path.
    report = measure(nn.Conv3d(2, 2, 3, padding=2, dilation=2), (1, 2, 16, 16, 16), steps=1)
    # ... then, on (8, 2, 9, 9, 9) sub-grids of 2 channels, the direct 3x3x3 loops.
    assert report.rows[0].algorithm == "sub-grids + direct 3x3x3"
