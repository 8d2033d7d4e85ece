"""MNIST and Fashion-MNIST: find the four IDX files, download them if missing, read them.

Where the files are looked for, first match wins:

1. the ``root`` argument,
2. the ``TINYNET_DATA`` environment variable,
3. a per-user cache folder, ``$XDG_CACHE_HOME/tinynet`` (``~/.cache/tinynet``).

Inside the root, each data set has a folder with the original file names::

    <root>/mnist/train-images-idx3-ubyte.gz       <root>/fashion-mnist/...
    <root>/mnist/train-labels-idx1-ubyte.gz
    <root>/mnist/t10k-images-idx3-ubyte.gz
    <root>/mnist/t10k-labels-idx1-ubyte.gz

A missing file is downloaded from the public mirrors, checked against its published MD5 and
written atomically, so an interrupted download never leaves a half file under the real name.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..checkpoint import atomic_write
from .idx import read_idx

# Tests replace this with a fake opener; the library never opens URLs any other way.
urlopen = urllib.request.urlopen


@dataclass(frozen=True)
class _Source:
    folder: str
    mirrors: tuple[str, ...]
    md5: dict[str, str]
    classes: tuple[str, ...]


_MNIST = _Source(
    folder="mnist",
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    md5={
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    classes=tuple(str(digit) for digit in range(10)),
)

_FASHION_MNIST = _Source(
    folder="fashion-mnist",
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    md5={
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    classes=(
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
)  # fmt: skip


class DatasetNotFoundError(FileNotFoundError):
    """A data set's files are neither on disk nor downloadable; the message says where to
    put them."""


@dataclass
class ImageDataset:
    """Images and their labels, in memory.

    ``images`` is (N, 1, 28, 28) uint8 (0 = background), ``labels`` is (N,) int64 and
    ``classes[k]`` names class k. ``DataLoader(dataset)`` iterates over it in mini-batches.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        return self.images[index], self.labels[index]

    def __repr__(self) -> str:
        return (
            f"ImageDataset(images={self.images.shape} {self.images.dtype}, "
            f"labels={self.labels.shape}, classes={len(self.classes)})"
        )


def MNIST(root=None, train: bool = True, download: bool = True) -> ImageDataset:
    """The MNIST handwritten digits: 60,000 training or 10,000 test images."""
    return _load(_MNIST, root, train, download)


def FashionMNIST(root=None, train: bool = True, download: bool = True) -> ImageDataset:
    """Zalando's Fashion-MNIST: 60,000 training or 10,000 test images of clothing."""
    return _load(_FASHION_MNIST, root, train, download)


def data_root(root=None) -> Path:
    """The folder data sets live in: ``root``, else ``$TINYNET_DATA``, else the user cache."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("TINYNET_DATA"):
        return Path(os.environ["TINYNET_DATA"]).expanduser()
    # The XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
    cache = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(cache):
        cache = Path.home() / ".cache"
    return Path(cache) / "tinynet"


def _load(source: _Source, root, train: bool, download: bool) -> ImageDataset:
    folder = data_root(root) / source.folder
    split = "train" if train else "t10k"
    images_path = _find(source, folder, f"{split}-images-idx3-ubyte.gz", download)
    labels_path = _find(source, folder, f"{split}-labels-idx1-ubyte.gz", download)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(f"{images_path}: expected uint8 images (N, 28, 28), got {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(
            f"{labels_path}: expected {len(images)} labels to match {images_path}, "
            f"got shape {labels.shape}"
        )
    if labels.size and labels.max() >= len(source.classes):
        raise ValueError(f"{labels_path}: label {labels.max()} is not a class index 0-9")
    return ImageDataset(images[:, None], labels.astype(np.int64), source.classes)


def _find(source: _Source, folder: Path, name: str, download: bool) -> Path:
    """The path of ``name`` in ``folder`` (or its uncompressed twin), downloading if needed."""
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    target = folder / name
    if not download:
        raise DatasetNotFoundError(f"{target} not found; {_where_to_put(source, folder)}")
    _download(source, target)
    return target


def _where_to_put(source: _Source, folder: Path) -> str:
    return (
        f"put the four files {', '.join(source.md5)} in {folder}/ "
        f"(or point TINYNET_DATA at a folder that has a {source.folder}/ subfolder)"
    )


def _download(source: _Source, target: Path) -> None:
    name = target.name
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetNotFoundError(
            f"cannot create {target.parent} to download into ({exc.strerror}); "
            f"{_where_to_put(source, target.parent)}"
        ) from None
    errors = []
    for mirror in source.mirrors:
        url = mirror + name
        try:
            _fetch(url, target, source.md5[name])
            return
        except _ChecksumError as exc:
            errors.append(str(exc))
        except (OSError, http.client.HTTPException) as exc:
            # URLError, HTTPError, timeouts and refused connections are OSErrors; a connection
            # dropped mid-body is an HTTPException (IncompleteRead).
            errors.append(f"{url}: {getattr(exc, 'reason', None) or exc}")
    raise DatasetNotFoundError(
        f"could not download {name} ({'; '.join(errors)}); {_where_to_put(source, target.parent)}"
    )


class _ChecksumError(Exception):
    pass


def _fetch(url: str, target: Path, md5: str) -> None:
    """Stream ``url`` into a temporary file beside ``target``, check the MD5, then rename."""
    from tqdm import tqdm

    # MD5 guards against damage here, not against an attacker: say so, for FIPS-mode Pythons.
    digest = hashlib.md5(usedforsecurity=False)
    with atomic_write(target) as out, urlopen(url, timeout=30) as response:
        length = str(response.headers.get("Content-Length") or "")
        total = int(length) if length.isdigit() else None
        with tqdm(total=total, unit="B", unit_scale=True, desc=target.name) as bar:
            received = 0
            while chunk := response.read(1 << 16):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        # Raising inside atomic_write discards the temporary file: no bad file is kept.
        if total is not None and received != total:
            # http.client hands back a short body silently when the connection drops.
            raise ConnectionError(f"the connection closed after {received} of {total} bytes")
        if digest.hexdigest() != md5:
            raise _ChecksumError(
                f"{url}: MD5 {digest.hexdigest()} does not match the published {md5}"
            )
