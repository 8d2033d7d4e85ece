"""How long tinynet takes to start: Numba compilation, cold and warm.

Each measurement runs in a fresh Python process, which imports tinynet, builds LeNet-BN,
runs one training step and one eval forward (every kernel a LeNet-BN training run needs),
then a few more steps for the steady-state time.

* **cold**: ``NUMBA_CACHE_DIR`` points at a new empty folder, so every kernel compiles.
* **precompiled**: another empty folder, with ``tinynet.precompile`` run first (the kernels
  compiled in parallel worker processes, as ``tinynet train`` does on a first run).
* **warm**: the cold run's folder again, now filled: kernels load from the cache.
* **torch**: the same steps in PyTorch, for comparison (its import is its start-up cost).
* **kernels**: per kernel group (each conv path, max and average pooling), the first forward
  and backward of a small layer, cold and warm, in processes of their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

_SCRIPT = r"""
import json, sys, time
impl, threads, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t0 = time.perf_counter()
if impl == "torch":
    import torch
    torch.set_num_threads(threads)
else:
    import tinynet
    tinynet.set_num_threads(threads)
import_s = time.perf_counter() - t0

import numpy as np
from tinynet.benchmark import workloads, spec

tn = sys.modules.get("tinynet")
if tn is None:
    import tinynet as tn
rng = np.random.default_rng(0)
model, layer_specs, source = workloads.model_source("lenet_bn", tn, rng)
x = rng.standard_normal(spec.input_shape(layer_specs, batch, 28), dtype=np.float32)
target = rng.integers(0, 10, batch)
if impl == "torch":
    train = workloads.TorchModel(layer_specs, x, target, torch)
    step, evaluate = train.train_step, train.eval_forward
    def to_eval():
        train.model.eval()
else:
    if model is None:
        raise SystemExit(json.dumps({"error": source}))
    train = workloads.TinyModel(model, x, target, tn)
    step, evaluate = train.train_step, train.eval_forward
    def to_eval():
        model.eval()

precompile_s = 0.0
if impl == "precompiled":  # the kernels compiled in parallel processes first (the CLI's way)
    t = time.perf_counter()
    report = tn.precompile(model, x.shape)
    precompile_s = time.perf_counter() - t
    if report.errors:
        raise SystemExit(json.dumps({"error": "; ".join(report.errors)}))
t = time.perf_counter(); step(); first_step = time.perf_counter() - t
to_eval()
t = time.perf_counter(); evaluate(); first_eval = time.perf_counter() - t
if impl == "torch":
    train.model.train()
else:
    model.train()
times = []
for _ in range(5):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
print(json.dumps({
    "import_s": import_s, "first_step_s": first_step, "first_eval_s": first_eval,
    "steady_step_s": sorted(times)[2], "source": source, "precompile_s": precompile_s,
}))
"""


# The conv and pooling kernels one group at a time: the first forward + backward of a small
# layer that takes each path (compilation, or loading from the cache when warm).
_KERNELS_SCRIPT = r"""
import json, sys, time
import numpy as np
import tinynet
from tinynet import nn
tinynet.set_num_threads(int(sys.argv[1]))
rng = np.random.default_rng(0)
groups = {
    "conv2d vol2col+GEMM": [(nn.Conv2d(8, 8, 3, stride=2, padding=1), (2, 8, 8, 8))],
    "conv2d direct 3x3": [(nn.Conv2d(3, 8, 3, padding=1), (2, 3, 8, 8))],
    "conv2d Winograd": [(nn.Conv2d(8, 8, 3, padding=1), (8, 8, 16, 16))],
    # 16×16 maps and 512 tiles of 4×4: F(4×4, 3×3) on up to 4 threads (see conv_winograd.py).
    "conv2d Winograd 4x4 tiles": [(nn.Conv2d(8, 8, 3, padding=1), (32, 8, 16, 16))],
    "conv2d Winograd 5x5": [(nn.Conv2d(12, 8, 5, padding=2), (8, 12, 16, 16))],
    # 64 tiles of 4×4 and ≤ 4096 channel pairs: forward and backward (see conv_winograd.py).
    "conv2d Winograd stride 2": [(nn.Conv2d(32, 48, 3, stride=2, padding=1), (4, 32, 32, 32))],
    # 3×3 and 5×5 depthwise layers take the direct kernels above; others the general loops.
    "conv2d depthwise 7x7": [(nn.Conv2d(4, 4, 7, padding=3, groups=4), (2, 4, 8, 8))],
    # After the depthwise group, whose phase planes it shares: the shifted products' kernels.
    "conv2d shifted products": [(nn.Conv2d(16, 16, 3, stride=2, padding=1), (2, 16, 20, 20))],
    "conv3d planes": [(nn.Conv3d(5, 8, 3, padding=1), (2, 5, 6, 6, 6))],
    # 16×16 output planes: F(4×4, 3×3) per depth tap; 4×4 planes of 40 channels: F(2×2×2,
    # 3×3×3) (see conv_winograd3d.py).
    "conv3d Winograd F(4x4) per depth tap": [(nn.Conv3d(4, 4, 3, padding=1), (1, 4, 16, 16, 16))],
    "conv3d Winograd F(2x2x2)": [(nn.Conv3d(40, 40, 3, padding=1), (1, 40, 4, 4, 4))],
    "conv3d direct 3x3x3": [(nn.Conv3d(1, 4, 3, padding=1), (2, 1, 6, 6, 6))],
    # After the direct group: what this adds is the sub-grid kernels (see conv_dilated.py).
    "conv3d dilated (sub-grids)": [
        (nn.Conv3d(1, 4, 3, padding=2, dilation=2), (1, 1, 16, 16, 16))
    ],
    "max pooling": [(nn.MaxPool2d(2), (2, 3, 8, 8)), (nn.MaxPool3d(3, 2, 1), (2, 3, 6, 6, 6))],
    "avg pooling": [
        (nn.AvgPool2d(2), (2, 3, 8, 8)),
        (nn.AdaptiveAvgPool2d(1), (2, 3, 8, 8)),
        (nn.AvgPool3d(2), (2, 3, 4, 4, 4)),
    ],
}
out = {}
for name, layers in groups.items():
    t = time.perf_counter()
    for layer, shape in layers:
        y = layer(rng.standard_normal(shape, dtype=np.float32))
        layer.backward(np.ones_like(y))
    out[name] = time.perf_counter() - t
print(json.dumps(out))
"""


def _run(impl: str, threads: int, batch: int, cache_dir: str | None) -> dict:
    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    start = time.perf_counter()
    script = _KERNELS_SCRIPT if impl == "kernels" else _SCRIPT
    args = [str(threads)] if impl == "kernels" else [impl, str(threads), str(batch)]
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    elapsed = time.perf_counter() - start
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail) or f"exit code {proc.returncode}"}
    result = json.loads(lines[-1])
    result["process_s"] = elapsed
    return result


def measure_compile(threads: int, with_torch: bool, batch: int = 64) -> dict:
    """Cold and warm tinynet start-up (and PyTorch's) for a LeNet-BN training run."""
    with tempfile.TemporaryDirectory(prefix="tinynet-numba-cache-") as cache_dir:
        cold = _run("tinynet", threads, batch, cache_dir)
        warm = _run("tinynet", threads, batch, cache_dir)
    with tempfile.TemporaryDirectory(prefix="tinynet-numba-cache-") as cache_dir:
        precompiled = _run("precompiled", threads, batch, cache_dir)
    with tempfile.TemporaryDirectory(prefix="tinynet-numba-cache-") as cache_dir:
        kernels = {
            "cold": _run("kernels", threads, batch, cache_dir),
            "warm": _run("kernels", threads, batch, cache_dir),
        }
    out = {"cold": cold, "precompiled": precompiled, "warm": warm, "batch": batch}
    out["kernels"] = kernels
    for key in ("cold", "precompiled", "warm"):
        r = out[key]
        if "error" not in r:
            r["compile_s"] = (
                r["precompile_s"] + r["first_step_s"] + r["first_eval_s"] - 2 * r["steady_step_s"]
            )
    if with_torch:
        out["torch"] = _run("torch", threads, batch, None)
    return out
