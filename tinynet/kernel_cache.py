"""Compile the kernels a model needs in parallel processes, before its first step.

Numba compiles each kernel on its first call, one after another, in one process: the first
training step of LeNet-BN spends 30–40 s there on a 2-core laptop (LLVM optimising the
parallel loops), after which the kernels load from Numba's disk cache in well under a second.
Compilation holds Python's GIL and Numba's compiler lock, so threads cannot share it out;
processes can. ``precompile(model, input_shape)``:

1. works out the input shape of every leaf layer without running a kernel (the shape rules
   below, the same arithmetic the layers use);
2. groups the leaves by the kernels they will call (a Conv2d on the Winograd path, the
   BatchNorm2d kernels, ...), so that no kernel is compiled by two processes;
3. shares the groups among worker processes (``kernel_cache.worker_main``, longest
   compile first), each of which builds its layers from their specs (``models.to_spec``), runs
   a training forward and backward and an eval forward at the real shapes (so each layer takes
   the same path as in the real run), and so fills Numba's cache;
4. writes a stamp in the cache folder, so a later start (warm cache) skips all of this.

The main process then loads every kernel from the cache at its first step. Measured on
LeNet-BN, batch 64, 2 cores (AVX2): see bench/README.md. Anything precompile does not cover
(a layer type without a shape rule, a second batch size that takes another path) still
compiles lazily, as without it: precompile only ever saves time, and a worker that fails is
reported, not raised. With Numba's cache turned off (``TINYNET_NUMBA_CACHE=0``) there is
nothing to share, and it does nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np

from . import config, models, nn, numba_cache
from .graph import INPUT, Graph

# Cold compile seconds per kernel group, measured in the workers (2-core AVX2 machine, two
# workers at once), used only to share the groups out evenly; others count DEFAULT_COST.
COSTS = {
    "Conv:gemm": 18.0,
    "Conv2d:winograd": 20.0,
    "Conv2d:winograd4": 20.0,
    "Conv2d:winograd5": 20.0,
    "Conv2d:small": 10.0,
    "Conv:direct": 11.0,
    "Conv:shifted": 11.0,
    "Conv3d:planes": 17.5,
    "Conv3d:small3d": 8.0,
    "Conv3d:winograd3d": 20.0,
    "Conv3d:winograd3d4": 30.0,  # measured on the Zen 4 machine (27–34 s), two workers at once
    "Conv2d:winograd_s2": 22.0,  # its first forward + backward alone, cold, on the Zen 4 machine
    "BatchNorm": 9.0,
    "Linear": 2.9,
    "elementwise": 4.0,
    "MaxPool2d:2": 2.2,
    "MaxPool3d:2": 2.2,
    "MaxPool": 5.0,
    "AvgPool": 3.0,
    "AdaptiveAvgPool": 3.0,
    "loss": 0.6,
    "Dropout": 0.6,
}
DEFAULT_COST = 3.0

# Leaves whose forward and backward are NumPy only: nothing to compile.
_NO_KERNELS = (nn.Flatten, nn.Identity, nn.ChannelAffine)
# Leaves that keep their input's shape.
_SAME_SHAPE = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.ReLU,
    nn.Dropout,
    nn.Sigmoid,
    nn.Tanh,
    nn.Identity,
    nn.ChannelAffine,
)


@dataclass
class PrecompileReport:
    """What :func:`precompile` did: ``workers`` processes (0: nothing run) over ``groups``."""

    workers: int = 0
    seconds: float = 0.0
    groups: list[list[str]] = field(default_factory=list)
    skipped: str = ""  # why nothing ran ("cached", "cache off", ...), empty when workers ran
    errors: list[str] = field(default_factory=list)
    uncovered: list[str] = field(default_factory=list)  # leaves with no shape rule
    group_seconds: dict[str, float] = field(default_factory=dict)  # compile time per group

    def __str__(self) -> str:
        if not self.workers:
            return f"precompile: nothing to do ({self.skipped})"
        text = f"precompile: {self.workers} processes, {self.seconds:.1f} s"
        if self.errors:
            text += f"; {len(self.errors)} failed: " + " | ".join(self.errors)
        return text


def precompile(
    model: nn.Module,
    input_shape,
    *,
    dtype=None,
    loss: bool = True,
    optimizer: str | None = "sgd",
    workers: int | None = None,
    timeout: float = 900.0,
) -> PrecompileReport:
    """Compile, in parallel processes, the kernels that training ``model`` on inputs of
    ``input_shape`` (batch included) will call; returns a :class:`PrecompileReport`.

    ``loss`` adds CrossEntropyLoss's kernel (classes from the model's output), ``optimizer``
    ("sgd") SGD's. ``workers`` defaults to the CPU count, at most one per kernel group; with
    one worker (or one core) nothing runs: a single process compiles as fast in place.
    The model is not touched: workers build their own layers from its spec.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"precompile expected a tinynet Module, got {type(model).__name__}")
    report = PrecompileReport()
    if not config.CACHE:
        report.skipped = "Numba's cache is off"
        return report
    if numba.config.DISABLE_JIT:  # plain Python kernels: nothing to compile
        report.skipped = "NUMBA_DISABLE_JIT is set"
        return report
    dims = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if not dims or not all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in dims
    ):
        raise ValueError(
            f"precompile expected input_shape as a tuple of positive ints, batch included "
            f"(e.g. (64, 1, 28, 28)), got {input_shape!r}"
        )
    dtype = np.dtype(model.dtype if dtype is None else dtype)
    groups = _plan(model, tuple(int(s) for s in dims), loss, optimizer, report.uncovered)
    count = min(workers or os.cpu_count() or 1, len(groups))
    if count < 2:
        report.skipped = "one process is as fast" if groups else "no kernels"
        return report
    stamp = _stamp_path(groups, dtype)
    if stamp is None:
        report.skipped = "Numba's cache folder not found"
        return report
    if stamp.exists():
        report.skipped = "cached"
        return report
    lock = _save_lock(stamp.parent)
    if lock is None:
        report.skipped = "no file lock for Numba's cache on this system"
        return report
    report.groups = _share(groups, count)
    report.workers = count
    started = time.perf_counter()
    _run_workers(report, groups, dtype, lock, timeout)
    report.seconds = time.perf_counter() - started
    if not report.errors:
        try:
            stamp.write_text(json.dumps(report.groups))
        except OSError:
            pass  # a read-only cache folder: the next start runs the workers again
    return report


def _plan(model, input_shape, loss, optimizer, uncovered) -> dict[str, list[dict]]:
    """The work, by kernel group: a task per distinct (layer spec, input shape), plus the
    loss and optimizer kernels as a group of their own."""
    leaves = []
    out_shape = leaf_inputs(model, input_shape, leaves, uncovered)
    groups: dict[str, list[dict]] = {}
    for layer, shape, first in leaves:
        key = group_key(layer, shape)
        if key is None:
            continue
        try:
            spec = models.to_spec(layer)
        except ValueError:  # a user's subclass: a spec cannot rebuild it in a worker
            uncovered.append(type(layer).__name__)
            continue
        task = {"spec": spec, "shape": list(shape), "first": first}
        if task not in groups.setdefault(key, []):
            groups[key].append(task)
    extras = []
    if loss and out_shape is not None and len(out_shape) == 2:
        extras.append({"loss": list(out_shape)})
    if optimizer == "sgd":
        extras.append({"sgd": True})
    if extras:
        groups["loss"] = extras
    return groups


def _share(groups: dict, count: int) -> list[list[str]]:
    """The groups shared among ``count`` workers: longest compile first, each to the least
    loaded worker (by COSTS)."""
    bins = [[] for _ in range(count)]
    loads = [0.0] * count
    for key in sorted(groups, key=lambda k: -COSTS.get(k, DEFAULT_COST)):
        i = loads.index(min(loads))
        bins[i].append(key)
        loads[i] += COSTS.get(key, DEFAULT_COST)
    return bins


def _run_workers(report: PrecompileReport, groups: dict, dtype, lock: str, timeout) -> None:
    """Start one worker per bin of report.groups, all at once; wait for them, collecting
    their seconds per group, or their errors (never raised: the lazy compile still works)."""
    procs = []
    for keys in report.groups:
        job = {"dtype": dtype.name, "lock": lock, "groups": {k: groups[k] for k in keys}}
        job["tinynet"] = str(Path(__file__).resolve())  # the worker must import this one
        # The caller's thread count: some layers pick a kernel by it (one block of work runs
        # a serial kernel, several a parallel one), and the worker must pick the same.
        job["threads"] = config.get_num_threads()
        procs.append((keys, _start_worker(job)))
    for keys, proc in procs:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            report.errors.append(f"{', '.join(keys)}: timed out")
            continue
        if proc.returncode != 0:
            last = (err or "").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
            report.errors.append(f"{', '.join(keys)}: {last[0]}")
        else:
            report.group_seconds.update(json.loads(out.strip().splitlines()[-1]))


# -- shapes without running a kernel ------------------------------------------------------------


def leaf_inputs(module, shape, out: list, uncovered: list):
    """Append (leaf, its input shape, whether it reads the model's input) for every leaf of
    ``module`` fed ``shape``; return ``module``'s output shape, or None where a leaf has no
    shape rule (its name goes to ``uncovered``, and what follows it is not covered)."""
    return _walk(module, shape, True, out, uncovered)


def _walk(module, shape, first, out, uncovered):
    if isinstance(module, nn.Sequential):
        for i, child in enumerate(module):
            shape = _walk(child, shape, first and i == 0, out, uncovered)
            if shape is None:
                return None
        return shape
    if isinstance(module, Graph):
        shapes = {INPUT: shape}
        for node in module.nodes:
            inputs = [shapes.get(source) for source in node.inputs]
            if any(s is None for s in inputs):
                shapes[node.name] = None
            elif len(inputs) == 1:
                reads_input = first and node.inputs == (INPUT,)
                shapes[node.name] = _walk(node.module, inputs[0], reads_input, out, uncovered)
            else:
                shapes[node.name] = _merged_shape(node.module, inputs)
        return shapes.get(module.output)
    try:
        result = output_shape(module, shape)
    except (ValueError, IndexError, TypeError):
        result = None  # the real forward will raise its own clear error
    if result is None:
        uncovered.append(type(module).__name__)
        return None
    out.append((module, shape, first))
    return result


def output_shape(layer, shape):
    """The output shape of a leaf ``layer`` for an input of ``shape``, or None if unknown."""
    if isinstance(layer, nn.FusedReLU):
        return output_shape(layer.layer, shape)
    if isinstance(layer, _SAME_SHAPE):
        return shape
    if isinstance(layer, nn.Linear):
        return shape[:-1] + (layer.out_features,)
    if isinstance(layer, (nn.Conv2d, nn.Conv3d)):
        return (shape[0], layer.out_channels, *layer._output_size(shape[2:]))
    if isinstance(layer, nn.Flatten):
        ndim = len(shape)
        start, end = layer.start_dim % ndim, layer.end_dim % ndim
        if not (-ndim <= layer.start_dim < ndim and -ndim <= layer.end_dim < ndim) or start > end:
            return None
        return shape[:start] + (int(np.prod(shape[start : end + 1])),) + shape[end + 1 :]
    pools = (nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool2d, nn.AvgPool3d)
    adaptive = (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
    if isinstance(layer, pools + adaptive):
        return shape[:2] + tuple(layer._output_size(shape[2:]))
    return None


def _merged_shape(layer, shapes):
    if isinstance(layer, nn.Add):
        return shapes[0]
    if isinstance(layer, nn.Concat):
        axis = layer.dim % len(shapes[0])
        total = sum(s[axis] for s in shapes)
        return shapes[0][:axis] + (total,) + shapes[0][axis + 1 :]
    return None


def group_key(layer, shape) -> str | None:
    """Which kernels ``layer`` calls on inputs of ``shape``; None for none (NumPy layers)."""
    if isinstance(layer, nn.FusedReLU):
        return group_key(layer.layer, shape)
    if isinstance(layer, _NO_KERNELS):
        return None
    # Conv2d and Conv3d share the vol2col and depthwise kernels (an image is a volume of
    # depth 1), the BatchNorms and poolings of either rank theirs: one group each, so that
    # one worker compiles them.
    name = type(layer).__name__
    if isinstance(layer, (nn.Conv2d, nn.Conv3d)):
        out_size = layer._output_size(shape[2:])
        if layer._dilated_fits(out_size):  # the sub-grid kernels, then an undilated path
            return f"{name}:dilated"
        if layer._winograd_fits(shape[0], out_size):  # F(2×2, 3×3), F(4×4, 3×3), F(2×2, 5×5)
            if layer.kernel_size[0] == 5:
                return f"{name}:winograd5"
            tile = layer._winograd_tile(shape[0], out_size)
            return f"{name}:winograd" + ("4" if tile == 4 else "")
        form = layer._winograd3d_form(shape[0], out_size)
        if form:  # F(4×4, 3×3) per depth tap, or F(2×2×2, 3×3×3)
            return f"{name}:winograd3d" + ("4" if form == 4 else "")
        if layer._winograd_s2_fits(shape[0], out_size):  # polyphase F(4×4, 2×2), stride 2
            return f"{name}:winograd_s2"
        if layer._direct_fits(shape[0], out_size):
            return "Conv:direct"
        for path in ("small3d", "planes", "small"):
            if getattr(layer, f"_{path}"):
                return f"{name}:{path}"
        if layer._shifted_fits(shape[0], out_size):
            return "Conv:shifted"
        return "Conv:direct" if layer._direct else "Conv:gemm"
    if isinstance(layer, (nn.MaxPool2d, nn.MaxPool3d)):
        return f"{name}:2" if layer._plain_2 else "MaxPool"
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
        return "BatchNorm"
    if isinstance(layer, (nn.AvgPool2d, nn.AvgPool3d)):
        return "AvgPool"
    if isinstance(layer, (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)):
        return "AdaptiveAvgPool"
    if isinstance(layer, (nn.ReLU, nn.Sigmoid, nn.Tanh)):
        return "elementwise"  # one serial and one parallel loop for all three
    return name


# -- the workers ----------------------------------------------------------------------------------


# The worker's command: this same tinynet first on the path. ``python -m`` would put the
# current folder first, and from a source checkout that is another copy of tinynet than the
# installed one the caller uses, with a cache of its own (seen in CI: every kernel compiled
# twice).
_WORKER = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from tinynet.kernel_cache import worker_main; worker_main()"
)


def _start_worker(job: dict) -> subprocess.Popen:
    root = str(Path(__file__).resolve().parent.parent)
    proc = subprocess.Popen(
        [sys.executable, "-c", _WORKER, root],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdin.write(json.dumps(job))
    proc.stdin.close()
    proc.stdin = None  # communicate() must not write (or flush) it again
    return proc


def run_job(job: dict) -> None:
    """A worker's part: each layer's training forward and backward, then its eval forward,
    at the real shapes (so it takes the real run's path); then the loss and SGD kernels."""
    from . import optim

    if job.get("lock"):
        _lock_cache_saves(job["lock"])
    config.set_num_threads(min(job["threads"], numba.config.NUMBA_NUM_THREADS))
    dtype = np.dtype(job["dtype"])
    rng = np.random.default_rng(0)
    seconds = {}
    for key, tasks in job["groups"].items():
        started = time.perf_counter()
        for task in tasks:
            if "loss" in task:
                n, classes = task["loss"]
                criterion = nn.CrossEntropyLoss()
                criterion(rng.standard_normal((n, classes)).astype(dtype), np.zeros(n, np.intp))
                criterion.backward()
                continue
            if "sgd" in task:
                for momentum in (0.0, 0.9):
                    param = nn.Parameter(np.zeros(3, dtype))
                    optim.SGD([param], lr=0.1, momentum=momentum).step()
                continue
            layer = models.from_spec(task["spec"]).to(dtype).train()
            x = rng.standard_normal(task["shape"]).astype(dtype)
            y = layer(x)
            if getattr(layer, "skips_input_grad", False):
                layer.backward(np.ones_like(y), input_grad=not task["first"])
            else:
                layer.backward(np.ones_like(y))
            layer.eval()
            layer(x)
        seconds[key] = round(time.perf_counter() - started, 2)
    return seconds


def _save_lock(folder: Path) -> str | None:
    """The lock file that serialises the workers' cache writes (see _lock_cache_saves), or
    None where there is no file lock (Windows) or Numba saves differently than expected."""
    try:
        import fcntl  # noqa: F401

        from numba.core import caching

        if not callable(getattr(caching.IndexDataCacheFile, "save", None)):
            return None
        folder.mkdir(parents=True, exist_ok=True)
    except (ImportError, OSError):
        return None
    return str(folder / "tinynet-precompile.lock")


def _lock_cache_saves(lock_path: str) -> None:
    """Make this process's Numba cache saves exclusive among the workers.

    A save reads a function's cache index, adds its entry under the first free data-file
    name and rewrites the index, without a lock: two processes saving different signatures
    of one function (a helper that several kernel groups call) at the same moment could both
    take the same name, and the index could end up pointing one signature at the other's
    code. Under an exclusive file lock each save sees the one before it.
    """
    import fcntl

    from numba.core import caching

    save = caching.IndexDataCacheFile.save

    def locked_save(self, key, data):
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                save(self, key, data)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    caching.IndexDataCacheFile.save = locked_save


def _stamp_path(groups: dict, dtype) -> Path | None:
    """Where the stamp of this job lives: Numba's cache folder for tinynet's kernels, under a
    name that changes with the job, the kernel sources, Numba, Python and the flags."""
    from .kernels import conv as conv_kernels

    cache = getattr(conv_kernels.conv_forward_gemm, "_cache", None)
    folder = getattr(cache, "_cache_path", None)
    if folder is None:
        return None
    sources = numba_cache.kernels_stamp()  # the kernels' sources and flags, hashed
    # FASTMATH may be a set: sorted, as a set's order changes from process to process.
    flags = config.FASTMATH
    fastmath = sorted(flags) if isinstance(flags, (set, frozenset)) else flags
    key = json.dumps(
        [groups, dtype.name, sources, numba.__version__, sys.version, fastmath],
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return Path(folder) / f"tinynet-precompiled-{digest}.stamp"


def worker_main() -> None:
    """A worker process: the job on stdin, the seconds per group on stdout."""
    job = json.loads(sys.stdin.read())
    if job.get("tinynet") != str(Path(__file__).resolve()):
        raise SystemExit(f"worker imported another tinynet: {__file__}")
    print(json.dumps(run_job(job)))
