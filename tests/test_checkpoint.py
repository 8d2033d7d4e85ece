"""Checkpoints: round trips, bit-identical resume, atomic saves (even under SIGKILL), hostile
files rejected without running code, and PyTorch weights."""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import tinynet
from tinynet import models, nn, optim
from tinynet.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from tinynet.data import DataLoader

MARKER_CODE = "open({path!r}, 'w').write('pwned')"


def _small_model():
    """BatchNorm buffers and Dropout's randomness make resuming non-trivial."""
    return nn.Sequential(
        nn.Linear(12, 16, bias=False),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(16, 3),
    )


def _assert_same_state(a, b):
    a, b = a.state_dict(), b.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# -- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_model_round_trip(tmp_path, dtype):
    tinynet.manual_seed(0)
    model = models.bn_mlp().to(dtype)
    model(np.random.default_rng(0).standard_normal((8, 784)))  # move the running statistics
    path = tmp_path / "model.npz"
    save_checkpoint(path, model, extra={"note": "hi"}, epoch=3, step=17)
    checkpoint = load_checkpoint(path)
    _assert_same_state(model, checkpoint.model)
    assert checkpoint.spec == models.to_spec(model)
    assert (checkpoint.epoch, checkpoint.step, checkpoint.extra) == (3, 17, {"note": "hi"})
    x = np.random.default_rng(1).standard_normal((4, 784))
    np.testing.assert_array_equal(model.eval()(x), checkpoint.model.eval()(x))


def test_float64_layers_in_a_float32_container_keep_their_values(tmp_path):
    """The dtype recorded is the parameters' (a Sequential built around .double() layers
    still says float32 itself)."""
    model = nn.Sequential(nn.Linear(3, 2).double())
    model[0].weight.data[...] = np.random.default_rng(0).normal(size=(2, 3))
    save_checkpoint(tmp_path / "m.npz", model)
    loaded = load_checkpoint(tmp_path / "m.npz").model
    assert loaded[0].weight.data.dtype == np.float64
    np.testing.assert_array_equal(loaded[0].weight.data, model[0].weight.data)


def test_a_layer_used_twice_is_saved_without_a_spec(tmp_path):
    """A spec would rebuild two layers where the model has one (and state_dict one set of
    weights): saved like a custom model, loaded into a model the caller builds."""
    lin = nn.Linear(4, 4)
    graph = tinynet.Graph()
    graph.add("a", lin)
    graph.add("r", nn.ReLU(), "a")
    graph.add("b", lin, "r")
    save_checkpoint(tmp_path / "g.npz", graph)
    assert load_checkpoint(tmp_path / "g.npz").model is None
    other = copy.deepcopy(graph)
    other["a"].weight.data[...] = 0
    loaded = load_checkpoint(tmp_path / "g.npz", model=other).model
    np.testing.assert_array_equal(loaded["b"].weight.data, lin.weight.data)


def test_plain_data_keeps_its_types(tmp_path):
    extra = {
        "tuple": (1, 2.5, "three"),
        "int keys": {0: "zero", 7: [1, 2]},
        "dunder": {"__array__": "not a reference"},
        "scalars": [np.float32(1.5), np.int64(7), True, None, float("inf")],
        "array": np.arange(6, dtype=np.int16).reshape(2, 3),
        "nested": [{"a": np.zeros(0)}, ()],
    }
    path = tmp_path / "c.npz"
    save_checkpoint(path, _small_model(), extra=extra)
    got = load_checkpoint(path).extra
    assert got["tuple"] == (1, 2.5, "three") and isinstance(got["tuple"], tuple)
    assert got["int keys"] == {0: "zero", 7: [1, 2]}
    assert got["dunder"] == {"__array__": "not a reference"}
    assert type(got["scalars"][0]) is np.float32 and got["scalars"][0] == 1.5
    assert type(got["scalars"][1]) is np.int64 and got["scalars"][2:] == [True, None, np.inf]
    assert got["array"].dtype == np.int16
    np.testing.assert_array_equal(got["array"], extra["array"])
    assert got["nested"][0]["a"].shape == (0,) and got["nested"][1] == ()


def test_model_without_spec_loads_into_a_given_model(tmp_path):
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

    model = Custom()
    save_checkpoint(tmp_path / "c.npz", model)
    assert load_checkpoint(tmp_path / "c.npz").model is None
    target = Custom()
    load_checkpoint(tmp_path / "c.npz", model=target)
    _assert_same_state(model, target)


# -- bit-identical resume -------------------------------------------------------------------------


def _make_run(kind, model=None):
    model = _small_model() if model is None else model
    params = list(model.parameters())
    if kind == "sgd":
        optimizer = optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True)
        scheduler = optim.StepLR(optimizer, step_size=2, gamma=0.5)
    elif kind == "adam":
        optimizer = optim.Adam(params, lr=1e-2)
        scheduler = optim.ExponentialLR(optimizer, gamma=0.9)
    else:
        optimizer = optim.AdamW(params, lr=1e-2)
        scheduler = optim.CosineAnnealingLR(optimizer, T_max=5)
    return model, optimizer, scheduler


def _train_steps(model, optimizer, scheduler, loader, iterator, steps):
    """Run ``steps`` optimizer steps, stepping the scheduler at every epoch's end."""
    criterion = nn.CrossEntropyLoss()
    for _ in range(steps):
        batch = next(iterator, None)
        if batch is None:
            scheduler.step()
            iterator = iter(loader)
            batch = next(iterator)
        x, y = batch
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        model.backward(criterion.backward())
        optimizer.step()
        assert np.isfinite(loss)
    return iterator


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_resume_is_bit_identical(tmp_path, kind):
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((40, 12)).astype(np.float32), rng.integers(0, 3, 40))
    k, m = 7, 9  # 5 batches per epoch: the save falls mid-epoch

    tinynet.manual_seed(1)
    model, optimizer, scheduler = _make_run(kind)
    loader = DataLoader(data, batch_size=8, shuffle=True)
    _train_steps(model, optimizer, scheduler, loader, iter(loader), k + m)

    tinynet.manual_seed(1)
    first, optimizer1, scheduler1 = _make_run(kind)
    loader1 = DataLoader(data, batch_size=8, shuffle=True)
    iterator = _train_steps(first, optimizer1, scheduler1, loader1, iter(loader1), k)
    path = tmp_path / "run.npz"
    save_checkpoint(path, first, optimizer1, scheduler1, loader=loader1, epoch=1, step=k)
    del iterator  # the first process ends here

    tinynet.manual_seed(12345)  # a new process: other state everywhere
    checkpoint = load_checkpoint(path)
    resumed, optimizer2, scheduler2 = _make_run(kind, checkpoint.model)
    loader2 = DataLoader(data, batch_size=8, shuffle=True)
    checkpoint.restore(optimizer2, scheduler2, loader2)
    _train_steps(resumed, optimizer2, scheduler2, loader2, iter(loader2), m)

    for (name, a), b in zip(model.named_parameters(), resumed.parameters(), strict=True):
        assert np.array_equal(a.data, b.data), name
    _assert_same_state(model, resumed)


def test_restore_checks_types(tmp_path):
    model = _small_model()
    optimizer = optim.SGD(list(model.parameters()), lr=0.1)
    save_checkpoint(tmp_path / "c.npz", model, optimizer)
    checkpoint = load_checkpoint(tmp_path / "c.npz")
    with pytest.raises(ValueError, match="holds a SGD state, not Adam"):
        checkpoint.restore(optim.Adam(list(checkpoint.model.parameters())))
    with pytest.raises(ValueError, match="holds no scheduler state"):
        checkpoint.restore(scheduler=optim.StepLR(optimizer, step_size=1))


# -- atomic saving --------------------------------------------------------------------------------


def test_saving_into_a_missing_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no folder {tmp_path / 'nope'}"):
        save_checkpoint(tmp_path / "nope" / "m.npz", nn.Linear(2, 2))


def test_failed_save_leaves_the_old_checkpoint(tmp_path):
    path = tmp_path / "c.npz"
    model = _small_model()
    save_checkpoint(path, model, extra={"version": 1})
    before = path.read_bytes()
    with pytest.raises(TypeError, match="cannot store a object"):
        save_checkpoint(path, model, extra={"version": 2, "bad": object()})
    with pytest.raises(RuntimeError, match="disk full"), atomic_write(path) as f:
        f.write(b"half a file")
        raise RuntimeError("disk full")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.npz"]  # no temporary files left behind


_SAVER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tinynet
    from tinynet import nn

    model = nn.Sequential(nn.Linear(500, 1000), nn.Linear(1000, 10))  # a 2 MB checkpoint
    version = 0
    while True:
        version += 1
        for param in model.parameters():
            param.data.fill(version)
        tinynet.save_checkpoint(sys.argv[1], model, extra={"version": version})
        print(version, flush=True)
    """
)


def test_kill_during_save_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "c.npz"
    rng = np.random.default_rng(0)
    for _ in range(3):
        process = subprocess.Popen(
            [sys.executable, "-c", _SAVER, str(path)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(Path(tinynet.__file__).parents[1])},
        )
        first = process.stdout.readline()
        assert first.strip().isdigit(), "the saver did not start"
        time.sleep(rng.uniform(0.01, 0.3))  # somewhere inside a later save
        process.send_signal(signal.SIGKILL)
        process.wait()
        printed = [int(line) for line in [first, *process.stdout.read().split()] if line]
        checkpoint = load_checkpoint(path)
        version = checkpoint.extra["version"]
        # The file holds a complete version: the last one announced or the one after it.
        assert version in (printed[-1], printed[-1] + 1)
        for name, value in checkpoint.model_state.items():
            assert np.all(value == version), name
        process.stdout.close()


# -- hostile and damaged files --------------------------------------------------------------------


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (MARKER_CODE.format(path=str(self.marker)),))


def _rewrite(source: Path, target: Path, change_meta=None, change_arrays=None):
    """Copy a valid checkpoint with its JSON metadata or arrays edited."""
    with np.load(source) as npz:
        arrays = {name: npz[name] for name in npz.files}
    meta = json.loads(arrays["meta"].tobytes())
    if change_meta:
        change_meta(meta)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    if change_arrays:
        change_arrays(arrays)
    with open(target, "wb") as f:
        np.savez(f, **arrays)
    return target


@pytest.fixture
def valid(tmp_path):
    tinynet.manual_seed(0)
    model = _small_model()
    optimizer = optim.SGD(list(model.parameters()), lr=0.1, momentum=0.9)
    model(np.ones((4, 12)))
    model.backward(np.ones((4, 3)))
    optimizer.step()
    path = tmp_path / "valid.npz"
    save_checkpoint(path, model, optimizer, extra={"a": [1, 2]})
    return path


def _set(key, value):
    return lambda meta: meta.__setitem__(key, value)


HOSTILE_META = {
    "not-whitelisted": (
        _set("spec", [{"type": "exec", "kwargs": {"source": "print(1)"}}]),
        "not an allowed tinynet layer",
    ),
    "wrong-spec-shape": (
        _set("spec", [{"type": "Linear", "kwargs": {"in_features": 5, "out_features": 16}}]),
        "weights do not fit the model",
    ),
    "format": (_set("format", "numpy"), "not a tinynet checkpoint"),
    "version": (_set("version", 99), "version 99"),
    "keys": (_set("model_keys", ["0.weight"]), "do not match 'model_keys'"),
    "missing-field": (lambda meta: meta.pop("epoch"), "invalid tinynet checkpoint: epoch"),
    "dangling-ref": (
        _set("extra", {"__array__": "data.999"}),
        "reference to a missing array 'data.999'",
    ),
    "bad-ref": (_set("extra", {"__array__": "model.0.weight"}), "reference to a missing array"),
    "unknown-tag": (_set("extra", {"__reduce__": ["os.system", "echo"]}), "unknown tag"),
    "epoch-type": (_set("epoch", "3"), "must be integers"),
    "rng-type": (_set("rng", {"bit_generator": "seed", "state": {}}), "NumPy's bit generators"),
    "rng-state": (
        _set("rng", {"bit_generator": "PCG64", "state": {"state": "x", "inc": 1}}),
        "not a valid generator state",
    ),
    "huge-layer": (
        _set("spec", [{"type": "Linear", "kwargs": {"in_features": 2**22, "out_features": 2**22}}]),
        "needs more weights than there are",
    ),
    # Allocatable (0.6 GB), but more than the file holds: refused before it is allocated.
    "large-layer": (
        _set("spec", [{"type": "Linear", "kwargs": {"in_features": 12000, "out_features": 12000}}]),
        r"layer 0 \(Linear\) needs more weights than there are",
    ),
    "large-conv": (
        _set(
            "spec",
            [
                {
                    "type": "Conv3d",
                    "kwargs": {"in_channels": 512, "out_channels": 512, "kernel_size": [9, 9, 9]},
                }
            ],
        ),
        r"\(Conv3d\) needs more weights",
    ),  # fmt: skip
    "deep-nesting": (_set("extra", json.loads("[" * 900 + "1" + "]" * 900)), "recursion"),
    "empty-metadata": (lambda meta: meta.clear(), "not a tinynet checkpoint"),
    "dtype": (_set("dtype", "object"), "not float32 or float64"),
}


@pytest.mark.parametrize("case", list(HOSTILE_META))
def test_tampered_metadata_is_a_value_error(valid, tmp_path, case):
    change, message = HOSTILE_META[case]
    path = _rewrite(valid, tmp_path / "bad.npz", change_meta=change)
    with pytest.raises(ValueError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_arrays_that_do_not_fit_are_rejected(valid, tmp_path):
    def wrong_shape(arrays):
        arrays["model.0.weight"] = np.zeros((3, 3), np.float32)

    def extra_entry(arrays):
        arrays["payload"] = np.zeros(3)

    def strings(arrays):
        arrays["data.0"] = np.array(["a", "b"])

    for change, message in (
        (wrong_shape, "expected shape"),
        (extra_entry, "unexpected entry 'payload'"),
        (strings, "non-numeric dtype"),
    ):
        path = _rewrite(valid, tmp_path / "bad.npz", change_arrays=change)
        with pytest.raises(ValueError, match=message):
            load_checkpoint(path)


def _npy_header(shape, descr="<f4") -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        out, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return out.getvalue()


def test_hand_made_zips_cannot_ask_for_memory(valid, tmp_path):
    with zipfile.ZipFile(valid) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}

    def write(name, replace, **kwargs):
        path = tmp_path / name
        with zipfile.ZipFile(path, "w", **kwargs) as archive:
            for member, data in {**members, **replace}.items():
                archive.writestr(member, data)
        return path

    # A header promising 4 TiB over a few bytes of data: np.load would allocate first.
    huge = write("huge.npz", {"model.0.weight.npy": _npy_header((2**40,)) + bytes(16)})
    # The same in a deflated member, where the zip directory may claim a big size honestly.
    deflated = write(
        "deflated.npz",
        {"model.0.weight.npy": _npy_header((2**31,)) + bytes(64)},
        compression=zipfile.ZIP_DEFLATED,
    )
    for path in (huge, deflated):
        with pytest.raises(ValueError, match="does not match its size") as info:
            load_checkpoint(path)
        assert str(path) in str(info.value)
    # An object array's header is refused before any unpickling could start.
    objects = write("objects.npz", {"data.0.npy": _npy_header((1,), descr="|O") + bytes(8)})
    with pytest.raises(ValueError, match="non-numeric dtype object"):
        load_checkpoint(objects)
    # A zip directory that claims more data than the file holds.
    data = bytearray(valid.read_bytes())
    directory = data.rindex(b"PK\x01\x02")  # the last member's central directory entry
    data[directory + 24 : directory + 28] = (2**31).to_bytes(4, "little")  # uncompressed size
    data[directory + 20 : directory + 24] = (2**31).to_bytes(4, "little")  # compressed size
    (tmp_path / "directory.npz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="more data than the file holds"):
        load_checkpoint(tmp_path / "directory.npz")


def test_pickles_never_run(valid, tmp_path):
    marker = tmp_path / "marker"
    pickled = tmp_path / "pickle.npz"
    with open(pickled, "wb") as f:
        pickle.dump({"model": _Evil(marker)}, f)
    with pytest.raises(ValueError, match="not a readable tinynet checkpoint"):
        load_checkpoint(pickled)

    def object_array(arrays):
        arrays["data.0"] = np.array([_Evil(marker)], dtype=object)

    inside = _rewrite(valid, tmp_path / "object.npz", change_arrays=object_array)
    with pytest.raises(ValueError, match="not a readable tinynet checkpoint"):
        load_checkpoint(inside)
    # Sanity: the payload really does run when unpickled.
    assert not marker.exists()
    pickle.loads(pickle.dumps(_Evil(marker)))
    assert marker.read_text() == "pwned"


def test_truncated_and_corrupted_files(valid, tmp_path):
    data = valid.read_bytes()
    bad = tmp_path / "bad.npz"
    for cut in (0, 10, len(data) // 3, len(data) // 2, len(data) - 30, len(data) - 1):
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="bad.npz"):
            load_checkpoint(bad)
    # Flip bytes inside the stored arrays: the zip's CRC catches them.
    corrupted = bytearray(data)
    for offset in range(200, len(data) - 200, max(1, (len(data) - 400) // 20)):
        corrupted[offset] ^= 0x5A
    bad.write_bytes(bytes(corrupted))
    with pytest.raises(ValueError, match="bad.npz"):
        load_checkpoint(bad)
    # zipfile's own refusals (a compression method or version it lacks, encryption) too.
    # Central-directory fields: method 99 (AES), the "encrypted" flag, version needed 25.5.
    for field, value in ((10, 99), (8, 1), (6, 255)):
        odd = bytearray(data)
        entry = odd.find(b"PK\x01\x02")  # the first central-directory entry
        odd[entry + field] = value
        bad.write_bytes(bytes(odd))
        with pytest.raises(ValueError, match="bad.npz"):
            load_checkpoint(bad)
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(ValueError, match="single .npy array"):
        load_checkpoint(tmp_path / "plain.npy")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.npz")


# -- PyTorch weights ------------------------------------------------------------------------------


def test_load_torch_state_dict_matches_pytorch_outputs(tmp_path):
    torch = pytest.importorskip("torch")
    tnn = torch.nn
    torch.manual_seed(0)
    reference = tnn.Sequential(
        tnn.Linear(784, 100, bias=False), tnn.BatchNorm1d(100), tnn.Sigmoid(),
        tnn.Linear(100, 100, bias=False), tnn.BatchNorm1d(100), tnn.Sigmoid(),
        tnn.Linear(100, 100, bias=False), tnn.BatchNorm1d(100), tnn.Sigmoid(),
        tnn.Linear(100, 10),
    )  # fmt: skip
    reference.train()
    reference(torch.randn(32, 784) * 3 + 1)  # non-trivial running statistics
    reference.eval()
    x = np.random.default_rng(0).standard_normal((5, 784)).astype(np.float32)
    expected = reference(torch.from_numpy(x)).detach().numpy()

    from_dict = models.bn_mlp().eval()
    tinynet.load_torch_state_dict(from_dict, reference.state_dict())
    np.testing.assert_allclose(from_dict(x), expected, rtol=1e-5, atol=1e-5)

    torch.save(reference.state_dict(), tmp_path / "weights.pt")
    from_file = models.bn_mlp().eval()
    tinynet.load_torch_state_dict(from_file, tmp_path / "weights.pt")
    _assert_same_state(from_dict, from_file)

    with pytest.raises(KeyError, match="missing keys"):
        tinynet.load_torch_state_dict(models.mlp(), reference.state_dict())
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a loadable PyTorch file"):
        tinynet.load_torch_state_dict(from_file, tmp_path / "junk.pt")
    marker = tmp_path / "marker"
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"0.weight": _Evil(marker)}, f, protocol=2)
    with pytest.raises(ValueError, match="not a loadable PyTorch file"):
        tinynet.load_torch_state_dict(from_file, tmp_path / "evil.pt")
    assert not marker.exists()
