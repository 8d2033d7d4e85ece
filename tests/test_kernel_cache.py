"""tinynet.precompile: leaf shapes without kernels, kernel groups, and the parallel warm-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinynet
from tinynet import kernel_cache, nn

ROOT = Path(__file__).resolve().parent.parent


def recorded_inputs(model, x):
    """(leaf, input shape) in call order, from a real forward (train mode)."""
    seen = []
    for leaf in model.modules():
        if next(leaf.children(), None) is not None:
            continue

        def record(*args, _leaf=leaf, _forward=leaf.forward):
            seen.append((_leaf, args[0].shape if len(args) == 1 else None))
            return _forward(*args)

        leaf.forward = record
    y = model(x)
    return seen, y.shape


MODELS = [
    ("lenet_bn", (3, 1, 28, 28)),
    ("bn_mlp", (4, 784)),
    ("resnet_bn", (2, 1, 28, 28)),
    ("cnn3d_bn", (2, 1, 16, 16, 16)),
]


@pytest.mark.parametrize(("name", "shape"), MODELS, ids=[m[0] for m in MODELS])
def test_leaf_shapes_match_a_real_forward(name, shape):
    tinynet.manual_seed(0)
    model = tinynet.models.get(name)
    leaves, uncovered = [], []
    out = kernel_cache.leaf_inputs(model, shape, leaves, uncovered)
    seen, real_out = recorded_inputs(model, np.random.default_rng(0).standard_normal(shape))
    assert uncovered == []
    assert out == real_out
    # Merge layers (Add, Concat) have several inputs and no kernels: not listed.
    want = [(leaf, s) for leaf, s in seen if s is not None]
    assert [(leaf, s) for leaf, s, _ in leaves] == want
    # Only the first layer reads the model's input (its backward skips the input gradient).
    assert [first for _, _, first in leaves] == [i == 0 for i in range(len(leaves))]


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(["conv", "maxpool", "avgpool", "adaptive", "flatten"]),
    size=st.tuples(st.integers(3, 9), st.integers(3, 9)),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 3),
    padding=st.integers(0, 1),
    dilation=st.integers(1, 2),
    ceil_mode=st.booleans(),
    ends=st.tuples(st.integers(-4, 3), st.integers(-4, 3)),
)
def test_output_shape_rules_match_the_layers(
    kind, size, kernel, stride, padding, dilation, ceil_mode, ends
):
    shape = (2, 3, *size)
    if kind == "conv":
        layer = nn.Conv2d(3, 4, kernel, stride=stride, padding=padding, dilation=dilation)
    elif kind == "maxpool":
        padding = min(padding, kernel // 2)
        layer = nn.MaxPool2d(kernel, stride, padding, dilation=dilation, ceil_mode=ceil_mode)
    elif kind == "avgpool":
        padding = min(padding, kernel // 2)
        layer = nn.AvgPool2d(kernel, stride, padding, ceil_mode=ceil_mode)
    elif kind == "adaptive":
        layer = nn.AdaptiveAvgPool2d((kernel, None))
    else:
        layer = nn.Flatten(*ends)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    try:
        want = layer(x).shape
    except ValueError:
        want = None  # too small a map, a bad Flatten range: no rule may claim a shape
    try:
        got = kernel_cache.output_shape(layer, shape)
    except ValueError:
        got = None
    assert got == want


def test_group_keys_name_the_path_the_layer_takes():
    key = kernel_cache.group_key
    assert key(nn.Conv2d(1, 8, 3, padding=1), (4, 1, 8, 8)) == "Conv2d:small"
    wino = nn.Conv2d(8, 8, 3, padding=1)
    assert key(wino, (8, 8, 16, 16)) == "Conv2d:winograd"
    wino(np.zeros((8, 8, 16, 16), np.float32))
    assert wino._x_padded is not None  # the forward did take the Winograd path
    assert key(wino, (1, 8, 4, 4)) == "Conv:gemm"  # too few tiles for Winograd
    assert key(nn.Conv2d(12, 8, 5, padding=2), (8, 12, 16, 16)) == "Conv2d:winograd5"
    assert key(nn.Conv2d(4, 4, 3, groups=4), (2, 4, 6, 6)) == "Conv2d:small"  # depthwise 3×3
    assert key(nn.Conv2d(4, 4, 5, groups=4), (2, 4, 6, 6)) == "Conv2d:small"  # depthwise 5×5
    assert key(nn.Conv2d(4, 4, 7, groups=4), (2, 4, 8, 8)) == "Conv:direct"
    # Kernels shared across ranks are one group (one worker compiles them).
    assert key(nn.Conv2d(8, 8, 3, stride=2), (2, 8, 8, 8)) == "Conv:gemm"
    assert key(nn.Conv3d(10, 10, 3, groups=2), (2, 10, 5, 5, 5)) == "Conv:gemm"
    assert key(nn.BatchNorm1d(4), (2, 4)) == key(nn.BatchNorm3d(4), (2, 4, 2, 2, 2))
    assert key(nn.Conv3d(5, 8, 3, padding=1), (2, 5, 6, 6, 6)) == "Conv3d:planes"
    assert key(nn.Conv3d(1, 8, 3, padding=1), (2, 1, 6, 6, 6)) == "Conv3d:small3d"
    # Conv3d's two Winograd forms, each the one its forward takes.
    for shape, form in [((8, 16, 8, 8, 8), "winograd3d4"), ((1, 64, 4, 4, 4), "winograd3d")]:
        wino3d = nn.Conv3d(shape[1], shape[1], 3, padding=1)
        assert key(wino3d, shape) == f"Conv3d:{form}"
        wino3d(np.zeros(shape, np.float32))
        assert wino3d._x_padded is not None and wino3d._winograd3d_f4 == form.endswith("4")
    assert key(nn.FusedReLU(nn.Conv2d(1, 8, 3)), (2, 1, 8, 8)) == "Conv2d:small"
    assert key(nn.MaxPool2d(2), (2, 3, 8, 8)) == "MaxPool2d:2"
    assert key(nn.MaxPool2d(3), (2, 3, 8, 8)) == key(nn.MaxPool3d(3), (2, 3, 4, 4, 4))
    assert key(nn.Flatten(), (2, 3, 8, 8)) is None
    assert key(nn.Dropout(), (2, 3)) == "Dropout"  # its mask kernel (kernels/dropout.py)
    assert key(nn.Sigmoid(), (2, 3)) == key(nn.ReLU(), (2, 3, 4)) == "elementwise"


def test_nothing_runs_without_the_cache_or_the_jit(monkeypatch):
    monkeypatch.setattr(tinynet.config, "CACHE", False)
    report = tinynet.precompile(tinynet.models.lenet_bn(), (2, 1, 28, 28))
    assert report.workers == 0 and report.skipped == "Numba's cache is off"
    monkeypatch.setattr(tinynet.config, "CACHE", True)
    monkeypatch.setattr(numba.config, "DISABLE_JIT", True)
    report = tinynet.precompile(tinynet.models.lenet_bn(), (2, 1, 28, 28))
    assert report.workers == 0 and report.skipped == "NUMBA_DISABLE_JIT is set"


def test_a_failing_worker_is_reported_not_raised(monkeypatch, tmp_path):
    stamp = tmp_path / "cache" / "job.stamp"
    monkeypatch.setattr(kernel_cache, "_stamp_path", lambda groups, dtype: stamp)

    def failing(job):
        return subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.exit('worker broke')"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    monkeypatch.setattr(kernel_cache, "_start_worker", failing)
    report = tinynet.precompile(tinynet.models.lenet_bn(), (2, 1, 28, 28), workers=2)
    assert report.workers == 2
    assert len(report.errors) == 2 and all("worker broke" in e for e in report.errors)
    assert not stamp.exists()  # a failed run is tried again next time


_SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])  # the tinynet under test, not the decoy in the folder
import numba
import numpy as np
from numba.core import event
import tinynet
from tinynet import nn

compiled = []

class Listener(event.Listener):
    def on_start(self, ev):
        compiled.append(ev.data["dispatcher"].py_func.__qualname__)

    def on_end(self, ev):
        pass

tinynet.manual_seed(0)
# Two threads if there are two: Linear(64, 4096) on 8 rows is then split across threads (its
# parallel kernel), Linear(4096, 3) is not (its serial one); the workers must pick the same.
tinynet.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
model = nn.Sequential(
    nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(4 * 4 * 4, 4096), nn.ReLU(), nn.Linear(4096, 3),
)
report = tinynet.precompile(model, (8, 1, 8, 8), workers=2)
event.register("numba:compile", Listener())
rng = np.random.default_rng(0)
x, y = rng.standard_normal((8, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 8)
criterion = nn.CrossEntropyLoss()
opt = tinynet.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
loss = criterion(model(x), y)
model.backward(criterion.backward(), input_grad=False)
opt.step()
model.eval()
model(x)
print(json.dumps({"workers": report.workers, "errors": report.errors,
                  "skipped": report.skipped, "compiled": compiled}))
"""


def test_the_first_step_after_precompile_compiles_nothing(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    # Run from a folder holding another "tinynet" (as a source checkout beside an installed
    # copy): the workers must import the caller's tinynet, or they fill another cache.
    decoy = tmp_path / "tinynet"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise ImportError('the decoy tinynet was imported')\n")

    def run():
        proc = subprocess.run(
            [sys.executable, "-c", _SCRIPT, str(ROOT)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    cold = run()
    assert cold["workers"] == 2 and cold["errors"] == []
    assert cold["compiled"] == []  # every kernel came from the cache the workers filled
    warm = run()
    assert warm["workers"] == 0 and warm["skipped"] == "cached"
    assert warm["compiled"] == []


def test_cache_saves_wait_for_the_lock(tmp_path):
    # A worker's Numba cache save must block while another process holds the lock. The child
    # says "ready" once its lock is installed, so a slow import cannot pass for a wait.
    fcntl = pytest.importorskip("fcntl")
    lock = tmp_path / "tinynet-precompile.lock"
    script = (
        "import sys\n"
        "from numba.core import caching\n"
        "from tinynet import kernel_cache\n"
        "caching.IndexDataCacheFile.save = lambda self, key, data: print('saved', flush=True)\n"
        "kernel_cache._lock_cache_saves(sys.argv[1])\n"
        "print('ready', flush=True)\n"
        "caching.IndexDataCacheFile.save(None, None, None)\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = subprocess.Popen(
            [sys.executable, "-c", script, str(lock)], stdout=subprocess.PIPE, text=True, env=env
        )
        assert proc.stdout.readline().strip() == "ready"
        try:
            proc.wait(timeout=2)
            finished_while_locked = True
        except subprocess.TimeoutExpired:
            finished_while_locked = False
        fcntl.flock(held, fcntl.LOCK_UN)
    out, _ = proc.communicate(timeout=60)
    assert not finished_while_locked
    assert out.splitlines() == ["saved"]


@pytest.mark.parametrize("shape", [64, (64, 0, 28, 28), (64, 1.5, 28, 28), "64", None, ()])
def test_a_bad_input_shape_is_a_clear_error(shape):
    with pytest.raises(ValueError, match="precompile expected input_shape as a tuple"):
        tinynet.precompile(tinynet.models.lenet_bn(), shape)


def test_a_model_that_is_not_a_module_is_a_clear_error():
    with pytest.raises(TypeError, match="precompile expected a tinynet Module, got list"):
        tinynet.precompile([nn.ReLU()], (2, 3))
