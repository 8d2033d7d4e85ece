"""The IDX reader (strictness on hand-made broken files) and the MNIST-family loaders:
real files via TINYNET_DATA, and the download path with a fake URL opener (no network)."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import re
import socket
import struct
import threading
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


# -- downloading: a real HTTP server on localhost plays the mirrors (no network needed) ---------


class _Mirror(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` under /good/, a 404 under /missing/, half of each file under
    /truncated/ (the connection closes before Content-Length is reached) and damaged bytes
    under /corrupt/."""

    files: dict[str, bytes] = {}
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 - the name http.server calls
        self.requests.append(self.path)
        mode, _, name = self.path.strip("/").partition("/")
        data = self.files.get(name)
        if data is None or mode == "missing":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if mode == "truncated":
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
        elif mode == "corrupt":
            self.wfile.write(data[:-1] + bytes([data[-1] ^ 1]))
        else:
            self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def mirror():
    """Small valid MNIST-shaped IDX files and a server for them: (base URL, files, requests)."""
    rng = np.random.default_rng(1)
    files = {}
    for split, n in (("train", 7), ("t10k", 3)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
            files[f"{split}-{kind}-ubyte.gz"] = (gzip.compress(header + array.tobytes()), array)
    handler = type("Handler", (_Mirror,), {"files": {k: v[0] for k, v in files.items()}})
    handler.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", files, handler.requests
    server.shutdown()
    server.server_close()


@pytest.fixture
def serve_mnist(monkeypatch, mirror):
    """Point MNIST at the local mirror; call with the mirror folders to try, in order."""
    base, files, requests = mirror
    # A proxy set in the environment must not intercept requests to localhost.
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    requests.clear()

    def use(*folders, md5=None):
        source = mnist_module._Source(
            folder="mnist",
            mirrors=tuple(base + folder + "/" for folder in folders),
            md5=md5 or {name: hashlib.md5(data).hexdigest() for name, (data, _) in files.items()},
            classes=tuple("0123456789"),
        )
        monkeypatch.setattr(mnist_module, "_MNIST", source)
        return files, requests

    return use


def test_download_fetches_verifies_and_loads(tmp_path, serve_mnist, capsys):
    files, requests = serve_mnist("missing", "truncated", "good")
    dataset = MNIST(root=tmp_path / "new" / "root", train=True)
    folder = tmp_path / "new" / "root" / "mnist"
    np.testing.assert_array_equal(dataset.images[:, 0], files["train-images-idx3-ubyte.gz"][1])
    np.testing.assert_array_equal(dataset.labels, files["train-labels-idx1-ubyte.gz"][1])
    # Each file was tried on the 404 mirror and the cut-off one before the good one.
    assert [r.split("/")[1] for r in requests] == ["missing", "truncated", "good"] * 2
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        assert (folder / name).read_bytes() == files[name][0]
    # No temporary files are left, and a second load does not download again.
    assert sorted(p.name for p in folder.iterdir()) == [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]
    assert "train-images-idx3-ubyte.gz" in capsys.readouterr().err  # the progress bar
    MNIST(root=tmp_path / "new" / "root", train=True)
    assert len(requests) == 6


@pytest.mark.parametrize(
    ("folders", "message"),
    [
        (["corrupt"], "does not match the published"),
        (["truncated"], "the connection closed after"),
        (["missing"], "Not Found"),
    ],
)
def test_failed_downloads_keep_no_file(tmp_path, serve_mnist, folders, message):
    serve_mnist(*folders)
    with pytest.raises(DatasetNotFoundError, match=message) as info:
        MNIST(root=tmp_path, train=False)
    assert "could not download t10k-images-idx3-ubyte.gz" in str(info.value)
    assert "put the four files train-images-idx3-ubyte.gz" in str(info.value)
    assert f"in {tmp_path / 'mnist'}/" in str(info.value)
    assert list((tmp_path / "mnist").iterdir()) == []


def test_wrong_published_checksum_is_a_mismatch(tmp_path, serve_mnist):
    files, _ = serve_mnist("good", md5=dict.fromkeys(["t10k-images-idx3-ubyte.gz"], "0" * 32))
    with pytest.raises(DatasetNotFoundError, match="0{32}"):
        MNIST(root=tmp_path, train=False)
    assert list((tmp_path / "mnist").iterdir()) == []


def test_offline_error_says_where_to_put_the_files(tmp_path, monkeypatch):
    # A port nothing listens on: the connection is refused, as offline.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = mnist_module._FASHION_MNIST
    offline = mnist_module._Source(
        source.folder, (f"http://127.0.0.1:{port}/",), source.md5, source.classes
    )
    monkeypatch.setattr(mnist_module, "_FASHION_MNIST", offline)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with pytest.raises(DatasetNotFoundError, match="could not download") as info:
        FashionMNIST(root=tmp_path)
    message = str(info.value)
    assert "refused" in message
    assert str(tmp_path / "fashion-mnist") in message
    assert "train-images-idx3-ubyte.gz" in message and "TINYNET_DATA" in message
    with pytest.raises(DatasetNotFoundError, match="not found; put the four files"):
        MNIST(root=tmp_path, download=False)


@needs_shared
@pytest.mark.parametrize("source", [mnist_module._MNIST, mnist_module._FASHION_MNIST])
def test_published_checksums_match_the_real_files(source):
    for name, md5 in source.md5.items():
        assert hashlib.md5((SHARED / source.folder / name).read_bytes()).hexdigest() == md5


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
