"""The IDX reader (strictness on hand-made broken files) and the MNIST-family loaders:
real files via TINYNET_DATA, and the download path with a fake URL opener (no network)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinynet.data import MNIST, DatasetNotFoundError, FashionMNIST, data_root, read_idx, write_idx
from tinynet.data import mnist as mnist_module

SHARED = Path(os.environ.get("TINYNET_DATA", Path(__file__).parents[2] / "shared" / "data"))
needs_shared = pytest.mark.skipif(
    not (SHARED / "mnist" / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="real MNIST files not found (set TINYNET_DATA)",
)


def _reference_read(path: Path) -> np.ndarray:
    """The README's plain gzip + NumPy recipe, independent of tinynet's reader."""
    with gzip.open(path, "rb") as f:
        buf = f.read()
    ndim = buf[3]
    dims = [int.from_bytes(buf[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(buf, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


# -- the IDX reader ---------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=4),
    dtype=st.sampled_from(["u1", "i1", "i2", "i4", "f4", "f8"]),
    compress=st.booleans(),
)
def test_round_trip_matches_hand_packed_bytes(tmp_path_factory, shape, dtype, compress):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal(shape) * 100).astype(dtype)
    path = tmp_path_factory.mktemp("idx") / ("a.idx.gz" if compress else "a.idx")
    write_idx(path, array)
    # The header packed by hand, as the format's description reads.
    codes = {"u1": 8, "i1": 9, "i2": 11, "i4": 12, "f4": 13, "f8": 14}
    expected = bytes([0, 0, codes[dtype], len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    expected += array.astype(np.dtype(dtype).newbyteorder(">")).tobytes()
    raw = gzip.decompress(path.read_bytes()) if compress else path.read_bytes()
    assert raw == expected
    result = read_idx(path)
    assert result.dtype == np.dtype(dtype) and result.shape == tuple(shape)
    np.testing.assert_array_equal(result, array)
    assert result.flags.writeable


def _header(code=8, dims=(2, 3)):
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "truncated IDX file: could not read the 4-byte"),
        (b"\x00\x00\x08", "truncated IDX file: could not read the 4-byte"),
        (b"\x01\x02\x08\x01" + bytes(8), "not an IDX file"),
        (_header(code=0x07) + bytes(6), "unknown IDX element type 0x07"),
        (_header(dims=()), "0 dimensions"),
        (_header()[:9], "could not read 2 dimension sizes"),
        (_header() + bytes(5), "truncated IDX file: header (2, 3) needs 6 data bytes, found 5"),
        (_header() + bytes(7), "longer than its header"),
        (_header(dims=(65536, 65536, 65536)), "implausible size"),
        (_header(dims=(2**32 - 1,) * 8), "implausible size"),  # overflows 64-bit products
    ],
    ids=[
        "empty",
        "short",
        "magic",
        "type",
        "ndim",
        "dims",
        "short-data",
        "long",
        "huge",
        "overflow",
    ],
)
@pytest.mark.parametrize("compress", [False, True])
def test_malformed_files_raise_with_the_path(tmp_path, content, message, compress):
    path = tmp_path / ("bad.gz" if compress else "bad")
    path.write_bytes(gzip.compress(content) if compress else content)
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_and_corrupted_gzip_streams(tmp_path):
    data = gzip.compress(_header(dims=(50, 40)) + np.arange(2000, dtype=np.uint8).tobytes())
    cut = tmp_path / "cut.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupted gzip stream") as info:
        read_idx(cut)
    assert str(cut) in str(info.value)
    # Flip one byte of the CRC trailer: the data decompresses but must not be accepted.
    flipped = bytearray(data)
    flipped[-6] ^= 0xFF
    bad = tmp_path / "crc.gz"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="corrupted gzip stream"):
        read_idx(bad)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nothing.gz")


# -- real data ---------------------------------------------------------------------------------


@needs_shared
@pytest.mark.parametrize("loader", [MNIST, FashionMNIST])
def test_real_test_sets_match_plain_numpy_reading(loader):
    dataset = loader(root=SHARED, train=False, download=False)
    folder = SHARED / ("mnist" if loader is MNIST else "fashion-mnist")
    images = _reference_read(folder / "t10k-images-idx3-ubyte.gz")
    labels = _reference_read(folder / "t10k-labels-idx1-ubyte.gz")
    assert dataset.images.shape == (10000, 1, 28, 28) and dataset.images.dtype == np.uint8
    assert dataset.labels.dtype == np.int64 and len(dataset) == 10000
    np.testing.assert_array_equal(dataset.images[:, 0], images)
    np.testing.assert_array_equal(dataset.labels, labels)
    assert len(dataset.classes) == 10
    image, label = dataset[3]
    assert image.shape == (1, 28, 28) and label == labels[3]


@needs_shared
def test_environment_variable_selects_the_root(monkeypatch):
    monkeypatch.setenv("TINYNET_DATA", str(SHARED))
    train = MNIST(download=False)
    assert len(train) == 60000
    np.testing.assert_array_equal(
        train.labels, _reference_read(SHARED / "mnist" / "train-labels-idx1-ubyte.gz")
    )


def test_root_resolution_order(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYNET_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("TINYNET_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_root() == tmp_path / "cache" / "tinynet"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root() == tmp_path / "home" / ".cache" / "tinynet"


# -- downloading (a fake opener; the tests never touch the network) --------------------------


class _FakeResponse(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


@pytest.fixture
def tiny_source(monkeypatch):
    """Small valid IDX files served by a fake opener, with their MD5s as the published ones."""
    rng = np.random.default_rng(1)
    files = {}
    for split, n in (("train", 7), ("t10k", 3)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
            files[f"{split}-{kind}-ubyte.gz"] = (gzip.compress(header + array.tobytes()), array)
    source = mnist_module._Source(
        folder="mnist",
        mirrors=("https://mirror-one.invalid/", "https://mirror-two.invalid/"),
        md5={name: hashlib.md5(data).hexdigest() for name, (data, _) in files.items()},
        classes=tuple("0123456789"),
    )
    monkeypatch.setattr(mnist_module, "_MNIST", source)
    requested = []

    def serve(url, timeout=None):
        requested.append(url)
        if url.startswith("https://mirror-one.invalid/"):
            raise urllib.error.URLError("mirror one is down")
        return _FakeResponse(files[url.rsplit("/", 1)[1]][0])

    monkeypatch.setattr(mnist_module, "urlopen", serve)
    return files, requested


def test_download_fetches_verifies_and_loads(tmp_path, tiny_source):
    files, requested = tiny_source
    dataset = MNIST(root=tmp_path, train=True)
    np.testing.assert_array_equal(dataset.images[:, 0], files["train-images-idx3-ubyte.gz"][1])
    np.testing.assert_array_equal(dataset.labels, files["train-labels-idx1-ubyte.gz"][1])
    # The first mirror failed, the second served the files.
    assert any("mirror-one" in url for url in requested)
    assert (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").read_bytes() == files[
        "train-images-idx3-ubyte.gz"
    ][0]
    # No temporary files are left, and a second load does not download again.
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]
    count = len(requested)
    MNIST(root=tmp_path, train=True)
    assert len(requested) == count


def test_checksum_mismatch_keeps_no_file(tmp_path, tiny_source, monkeypatch):
    source = mnist_module._MNIST
    wrong = dict(source.md5, **{"t10k-images-idx3-ubyte.gz": "0" * 32})
    monkeypatch.setattr(
        mnist_module, "_MNIST", mnist_module._Source("mnist", source.mirrors, wrong, source.classes)
    )
    with pytest.raises(DatasetNotFoundError, match="does not match the published") as info:
        MNIST(root=tmp_path, train=False)
    assert f"in {tmp_path / 'mnist'}/" in str(info.value)
    assert not any((tmp_path / "mnist").iterdir())


def test_offline_error_says_where_to_put_the_files(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(mnist_module, "urlopen", offline)
    with pytest.raises(DatasetNotFoundError, match="could not download") as info:
        FashionMNIST(root=tmp_path)
    message = str(info.value)
    assert "Name or service not known" in message
    assert str(tmp_path / "fashion-mnist") in message
    assert "train-images-idx3-ubyte.gz" in message and "TINYNET_DATA" in message
    with pytest.raises(DatasetNotFoundError, match="not found; put the four files"):
        MNIST(root=tmp_path, download=False)


def test_corrupted_file_on_disk_is_reported(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((2, 28, 28), np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="expected 2 labels"):
        MNIST(root=tmp_path, train=False, download=False)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([1, 12], np.uint8))
    with pytest.raises(ValueError, match="label 12 is not a class"):
        MNIST(root=tmp_path, train=False, download=False)
