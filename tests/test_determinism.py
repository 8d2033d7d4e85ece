"""Same input, same results, whether the kernels were compiled by this process or loaded from
Numba's on-disk cache.

A first run compiles the kernels; later runs load the compiled code from the cache. With
fast-math flags LLVM may reassociate a sum or fuse a multiply and an add differently in the
two, and a training run would then differ in the last bits between the first run and the
others (it did, for the Winograd kernels: see config.WINOGRAD_FASTMATH).
"""

import json
import os
import subprocess
import sys

import pytest

_SCRIPT = """
import hashlib, json
import numpy as np
import tinynet
from tinynet import nn

tinynet.set_num_threads(2)
tinynet.manual_seed(0)
rng = np.random.default_rng(0)

def digest(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()

layers = [
    ("Conv2d Winograd", nn.Conv2d(16, 32, 3, padding=1), (8, 16, 14, 14)),
    ("BatchNorm2d", nn.BatchNorm2d(16), (8, 16, 8, 8)),
    ("Linear", nn.Linear(50, 20), (16, 50)),
]
results = {}
for name, layer, shape in layers:
    x = rng.standard_normal(shape, dtype=np.float32)
    y = layer(x)
    grad_x = layer.backward(rng.standard_normal(y.shape, dtype=np.float32))
    results[name] = [digest(y), digest(grad_x)] + [digest(p.grad) for p in layer.parameters()]
winograd = layers[0][1]
results["took the Winograd path"] = winograd._x_padded is not None
print(json.dumps(results))
"""


def _run(cache_dir):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="nothing is compiled")
def test_compiled_and_cached_kernels_give_identical_results(tmp_path):
    compiled = _run(tmp_path)  # an empty cache: every kernel is compiled in the process
    loaded = _run(tmp_path)  # the same kernels, loaded from the cache
    assert compiled["took the Winograd path"]
    assert os.listdir(tmp_path), "nothing was cached: the second run compiled again"
    for name in compiled:
        assert loaded[name] == compiled[name], f"{name}: compiled and cached kernels differ"
