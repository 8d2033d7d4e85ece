"""Checkpoints that cannot run code when loaded, written so a crash never destroys one.

A checkpoint is a NumPy ``.npz`` file (a zip of ``.npy`` arrays) holding

* ``meta``: UTF-8 JSON as a uint8 array: the architecture spec (``models.to_spec``), the
  optimizer, scheduler and DataLoader states, tinynet's RNG state, epoch, step and ``extra``;
* ``model.<key>``: the model's ``state_dict()`` under PyTorch's key names;
* ``data.<n>``: the arrays inside the optimizer/scheduler/loader states (momentum buffers, ...),
  which the JSON refers to as ``{"__array__": "data.<n>"}``.

Loading reads the arrays with pickling disabled, accepts only numeric arrays and rebuilds
the model from the spec with a whitelist of tinynet layers, so a hand-made file can at worst be
rejected with a ``ValueError``. Saving writes a temporary file in the same folder, flushes and
fsyncs it, renames it over the old checkpoint (atomic on POSIX) and fsyncs the folder: a crash
at any moment leaves either the old checkpoint or the new one, never a mixture.

Resuming is bit-identical: with the model, optimizer, scheduler, RNG and DataLoader states
restored (``Checkpoint.restore``), training continues exactly as if it had not stopped.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import models
from . import random as tn_random
from .nn.module import Module

FORMAT = "tinynet.checkpoint"
VERSION = 1


# -- atomic writing -------------------------------------------------------------------------------


@contextmanager
def atomic_write(path):
    """Open a temporary file beside ``path`` for binary writing; on success rename it to
    ``path``. On an exception the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():  # mkstemp's own error would name the temporary file
        raise FileNotFoundError(f"cannot save {path}: no folder {folder}")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):
            # mkstemp makes the file private (0600); give it the mode a plain open() would.
            os.fchmod(fd, _file_mode(path))
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(folder)


def _file_mode(path: Path) -> int:
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_dir(folder) -> None:
    """Make a rename durable: the directory entry itself must reach the disk."""
    if os.name != "posix":  # pragma: no cover - directories cannot be opened on Windows
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- saving ---------------------------------------------------------------------------------------


def save_checkpoint(
    path,
    model: Module,
    optimizer=None,
    scheduler=None,
    extra=None,
    *,
    loader=None,
    epoch: int = 0,
    step: int = 0,
) -> None:
    """Save everything needed to resume training into ``path`` (an ``.npz`` file), atomically.

    ``optimizer``, ``scheduler`` and ``loader`` are saved through their ``state_dict()``;
    tinynet's global RNG state is always saved. ``extra`` is any plain data (numbers, strings,
    lists, dicts, NumPy arrays), for example the run's settings. A model that is not a
    ``Sequential`` of tinynet layers is saved without a spec; load it with
    ``load_checkpoint(path, model=...)``.
    """
    if not isinstance(model, Module):
        raise TypeError(f"save_checkpoint expected a tinynet Module, got {type(model).__name__}")
    try:
        spec = models.to_spec(model)
    except ValueError:
        spec = None
    state = model.state_dict()
    arrays = {f"model.{key}": value for key, value in state.items()}
    encoder = _Encoder(arrays)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "spec": spec,
        "dtype": _weights_dtype(model),
        "model_keys": list(state),
        "optimizer": _object_state(optimizer, encoder),
        "scheduler": _object_state(scheduler, encoder),
        "loader": _object_state(loader, encoder),
        "rng": encoder(tn_random.get_rng_state()),
        "epoch": int(epoch),
        "step": int(step),
        "extra": encoder(extra),
    }
    text = json.dumps(meta, separators=(",", ":"))
    arrays["meta"] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    with atomic_write(path) as f:
        np.savez(f, allow_pickle=False, **arrays)


def _weights_dtype(model: Module) -> str:
    """The dtype to rebuild the model in: its parameters' (a container's own ``dtype`` may
    say float32 around float64 layers), float64 if they mix (no value is rounded)."""
    dtypes = {p.data.dtype for p in model.parameters()}
    if not dtypes:
        return str(model.dtype)
    return str(dtypes.pop()) if len(dtypes) == 1 else "float64"


def _object_state(obj, encoder):
    if obj is None:
        return None
    return {"type": type(obj).__name__, "state": encoder(obj.state_dict())}


class _Encoder:
    """Turn plain data with arrays into JSON; arrays go to ``arrays`` under ``data.<n>``.

    Tuples, dicts with non-string keys and NumPy scalars are tagged so that they come back as
    they went in (an optimizer's ``betas`` stays a tuple, ``{0: ...}`` keeps its int key).
    """

    def __init__(self, arrays: dict):
        self.arrays = arrays

    def __call__(self, value):
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, (np.ndarray, np.generic)):
            if value.dtype.kind not in "biuf":
                raise TypeError(f"save_checkpoint cannot store an array of dtype {value.dtype}")
            key = f"data.{len(self.arrays)}"
            self.arrays[key] = np.asarray(value)
            return {"__array__" if isinstance(value, np.ndarray) else "__scalar__": key}
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, tuple):
            return {"__tuple__": [self(v) for v in value]}
        if isinstance(value, Mapping):
            if all(isinstance(k, str) and not k.startswith("__") for k in value):
                return {k: self(v) for k, v in value.items()}
            return {"__items__": [[self(k), self(v)] for k, v in value.items()]}
        raise TypeError(f"save_checkpoint cannot store a {type(value).__name__}: {value!r:.60}")


# -- loading --------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """What ``load_checkpoint`` returns.

    ``model`` is rebuilt from the spec with the saved weights (in training mode, as saved
    models usually continue training; call ``.eval()`` to evaluate). The ``*_state`` fields
    are the saved ``state_dict()`` of each object, or None.
    """

    path: str
    model: Module | None
    spec: list | None
    model_state: OrderedDict
    optimizer_state: dict | None = None
    scheduler_state: dict | None = None
    loader_state: dict | None = None
    rng_state: dict | None = None
    epoch: int = 0
    step: int = 0
    extra: object = None
    types: dict = field(default_factory=dict)

    def restore(self, optimizer=None, scheduler=None, loader=None, rng: bool = True) -> None:
        """Load the saved states into fresh objects (and tinynet's RNG) to resume training.

        Build the optimizer on ``self.model.parameters()`` first, then the scheduler on it.
        """
        for name, obj, state in (
            ("optimizer", optimizer, self.optimizer_state),
            ("scheduler", scheduler, self.scheduler_state),
            ("loader", loader, self.loader_state),
        ):
            if obj is None:
                continue
            if state is None:
                raise ValueError(f"{self.path}: the checkpoint holds no {name} state")
            saved = self.types.get(name)
            if saved != type(obj).__name__:
                raise ValueError(
                    f"{self.path}: the checkpoint holds a {saved} state, not {type(obj).__name__}"
                )
            obj.load_state_dict(state)
        if rng and self.rng_state is not None:
            tn_random.set_rng_state(self.rng_state)


def load_checkpoint(path, model: Module | None = None) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    The model is rebuilt from the saved spec, or the weights are loaded into ``model`` when one
    is given. Anything but a well-formed tinynet checkpoint is a ``ValueError`` naming the
    file (a missing file is a ``FileNotFoundError``); nothing in the file is ever executed.
    """
    path = os.fspath(path)
    arrays, meta = _read(path)
    try:
        return _unpack(path, arrays, meta, model)
    except (KeyError, TypeError, ValueError, OverflowError, RecursionError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise ValueError(f"{path}: invalid tinynet checkpoint: {message}") from None


def _read(path: str) -> tuple[dict[str, np.ndarray], dict]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    # zipfile raises NotImplementedError for compression methods and versions it lacks, and
    # RuntimeError for encrypted members; zlib.error for a damaged deflate stream.
    unreadable = (OSError, EOFError, zipfile.BadZipFile, KeyError, ValueError, MemoryError)
    try:
        arrays = _read_arrays(path)
    except (*unreadable, NotImplementedError, RuntimeError, zlib.error) as exc:
        raise ValueError(f"{path}: not a readable tinynet checkpoint ({exc})") from None
    raw = arrays.pop("meta", None)
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"{path}: not a tinynet checkpoint (no 'meta' entry)")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{path}: corrupted checkpoint metadata ({exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: not a tinynet checkpoint (metadata is not a JSON object)")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a tinynet checkpoint (format {meta.get('format')!r:.40})")
    if meta.get("version") != VERSION:
        raise ValueError(f"{path}: checkpoint version {meta.get('version')!r:.20} is not {VERSION}")
    return arrays, meta


# A deflate stream expands at most about 1032-fold; a member claiming more is not a real one.
_MAX_DEFLATE_RATIO = 1100


def _read_arrays(path: str) -> dict[str, np.ndarray]:
    """The ``.npy`` members of the ``.npz`` zip at ``path``, every header checked first.

    ``np.load`` would allocate whatever shape a header declares before reading a byte of data,
    so a few hundred hand-made bytes could ask for terabytes. Here each header must be numeric
    and account for exactly the member's size, and each member's size must be one the file on
    disk can really hold, before any array is allocated.
    """
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            start = f.read(6)
        if start == b"\x93NUMPY":
            raise ValueError("a single .npy array, not an .npz archive")
        raise ValueError("not a zip archive")
    disk_size = os.path.getsize(path)
    arrays = {}
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        if sum(info.compress_size for info in members) > disk_size:
            raise ValueError("the zip directory declares more data than the file holds")
        for info in members:
            name = info.filename.removesuffix(".npy")
            if name == info.filename or name in arrays:
                raise ValueError(f"unexpected entry {info.filename!r:.60}")
            if name != "meta" and not name.startswith(("model.", "data.")):
                raise ValueError(f"unexpected entry {name!r:.60}")
            stored = info.compress_type == zipfile.ZIP_STORED
            limit = info.compress_size * (1 if stored else _MAX_DEFLATE_RATIO) + 4096
            if info.file_size > limit:
                raise ValueError(f"entry {name!r} declares an implausible size")
            with archive.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f"entry {name!r} has .npy version {version}")
                if dtype.hasobject or dtype.kind not in "biuf":
                    raise ValueError(f"entry {name!r} has non-numeric dtype {dtype}")
                # Python ints: no overflow, whatever the header says.
                nbytes = math.prod(shape) * dtype.itemsize
                if f.tell() + nbytes != info.file_size:
                    raise ValueError(f"entry {name!r}: shape {shape} does not match its size")
            with archive.open(info) as f:
                arrays[name] = np.lib.format.read_array(f, allow_pickle=False)
    return arrays


def _unpack(path: str, arrays: dict, meta: dict, model: Module | None) -> Checkpoint:
    keys = meta["model_keys"]
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError("'model_keys' must be a list of names")
    stored = {name[len("model.") :] for name in arrays if name.startswith("model.")}
    if stored != set(keys):
        raise ValueError(f"model entries {sorted(stored)} do not match 'model_keys' {keys}")
    state = OrderedDict((key, arrays[f"model.{key}"]) for key in keys)
    spec = meta["spec"]
    if model is None and spec is not None:
        # The spec may ask for little more weights than the file holds (Linear(10**5, 10**5)
        # in a hand-made spec would allocate 40 GB before the weights were compared). The
        # slack lets a smaller mismatch reach load_state_dict, whose message names the entry.
        stored_values = sum(int(a.size) for a in state.values())
        try:
            model = models.from_spec(spec, max_weights=stored_values + 2**22)
        except MemoryError:
            raise ValueError("the model spec asks for more memory than there is") from None
        dtype = np.dtype(meta["dtype"])
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"model dtype {dtype} is not float32 or float64")
        model.to(dtype)
    if model is not None:
        try:
            model.load_state_dict(state)
        except KeyError as exc:
            raise ValueError(f"the weights do not fit the model: {exc.args[0]}") from None
    decoder = _Decoder(arrays)
    types = {}
    states = {}
    for name in ("optimizer", "scheduler", "loader"):
        entry = meta[name]
        if entry is not None:
            if not isinstance(entry, dict) or set(entry) != {"type", "state"}:
                raise ValueError(f"{name!r} must hold a type and a state")
            types[name] = str(entry["type"])
            states[name] = decoder(entry["state"])
    epoch, step = meta["epoch"], meta["step"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (epoch, step)):
        raise ValueError("'epoch' and 'step' must be integers")
    rng_state = decoder(meta["rng"])
    if rng_state is not None:
        _check_rng_state(rng_state)
    return Checkpoint(
        path=path,
        model=model,
        spec=spec,
        model_state=state,
        optimizer_state=states.get("optimizer"),
        scheduler_state=states.get("scheduler"),
        loader_state=states.get("loader"),
        rng_state=rng_state,
        epoch=epoch,
        step=step,
        extra=decoder(meta["extra"]),
        types=types,
    )


# The bit generators NumPy ships; a state naming anything else is not one.
_BIT_GENERATORS = ("MT19937", "PCG64", "PCG64DXSM", "Philox", "SFC64")


def _check_rng_state(state) -> None:
    """A generator state is checked at load time, by NumPy itself, on a throwaway generator."""
    if not isinstance(state, dict) or state.get("bit_generator") not in _BIT_GENERATORS:
        raise ValueError("'rng' is not the state of one of NumPy's bit generators")
    try:
        getattr(np.random, state["bit_generator"])().state = state
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise ValueError(f"'rng' is not a valid generator state ({exc})") from None


class _Decoder:
    """Inverse of :class:`_Encoder`; anything malformed is a ``ValueError``."""

    def __init__(self, arrays: dict):
        self.arrays = arrays

    def __call__(self, value):
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, list):
            return [self(v) for v in value]
        if not isinstance(value, dict):
            raise ValueError(f"unexpected value {value!r:.60}")
        tags = [k for k in value if k.startswith("__")]
        if not tags:
            return {k: self(v) for k, v in value.items()}
        if len(value) != 1:
            raise ValueError(f"malformed tagged value {value!r:.60}")
        tag, inner = next(iter(value.items()))
        if tag in ("__array__", "__scalar__"):
            if (
                not isinstance(inner, str)
                or not inner.startswith("data.")
                or (inner not in self.arrays)
            ):
                raise ValueError(f"reference to a missing array {inner!r:.60}")
            array = self.arrays[inner]
            return array if tag == "__array__" else array[()]
        if tag == "__tuple__" and isinstance(inner, list):
            return tuple(self(v) for v in inner)
        if tag == "__items__" and isinstance(inner, list):
            if not all(isinstance(p, list) and len(p) == 2 for p in inner):
                raise ValueError("malformed '__items__' entry")
            return {_hashable(self(k)): self(v) for k, v in inner}
        raise ValueError(f"unknown tag {tag!r:.40}")


def _hashable(key):
    if isinstance(key, (list, dict, np.ndarray)):
        raise ValueError(f"unhashable dict key {key!r:.40}")
    return key


# -- PyTorch weights ------------------------------------------------------------------------------


def load_torch_state_dict(model: Module, source, strict: bool = True):
    """Copy a PyTorch ``state_dict`` into ``model`` (keys follow PyTorch's names).

    ``source`` is a dict of tensors (or arrays), or the path of a ``.pt`` file, which is read
    with ``torch.load(weights_only=True)``: PyTorch's restricted unpickler, which refuses
    anything but tensors and plain containers. Needs PyTorch only for a path.
    """
    if isinstance(source, (str, os.PathLike)):
        try:
            import torch
        except ImportError:
            raise ImportError("reading a .pt file needs PyTorch (pip install torch)") from None
        try:
            source = torch.load(source, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as exc:  # torch raises a zoo of types for a bad file
            raise ValueError(f"{os.fspath(source)}: not a loadable PyTorch file ({exc})") from None
    if not isinstance(source, Mapping):
        raise ValueError(f"expected a state_dict (a dict of tensors), got {type(source).__name__}")
    state = OrderedDict()
    for key, value in source.items():
        if hasattr(value, "detach"):  # a torch.Tensor
            value = value.detach().cpu()
            if str(value.dtype) in ("torch.bfloat16", "torch.float16"):
                value = value.float()
            value = value.numpy()
        state[key] = np.asarray(value)
    return model.load_state_dict(state, strict=strict)
