"""A strict reader for IDX files, the format MNIST and Fashion-MNIST are published in.

An IDX file (often gzip-compressed) is a tiny header followed by a C-order array::

    offset 0      2 bytes   0x00 0x00
    offset 2      1 byte    element type (0x08 = uint8, 0x09 = int8, 0x0B = int16,
                            0x0C = int32, 0x0D = float32, 0x0E = float64)
    offset 3      1 byte    number of dimensions n
    offset 4      4·n bytes each dimension's size, uint32 big-endian
    offset 4+4·n  the data, big-endian, last index fastest

The reader checks every field and the exact length, so a truncated or corrupted download is a
``ValueError`` naming the file, never an array of garbage.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib

import numpy as np

# Element type code → big-endian NumPy dtype.
IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"

# No real IDX file is larger; the limit stops a corrupted header from asking for terabytes.
_MAX_BYTES = 1 << 34


def read_idx(path) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed; told apart by content, not name).

    Returns a writable array in native byte order with the file's dimensions. Raises
    ``ValueError`` naming ``path`` when the header is invalid or the length is not exactly
    what the header promises, and ``FileNotFoundError`` when there is no such file.
    """
    path = os.fspath(path)
    with open(path, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as f:
            return _parse(f, path)
    except (EOFError, OSError, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        # gzip reports truncation as EOFError and bad CRCs or headers as BadGzipFile (OSError).
        raise ValueError(
            f"{path}: corrupted gzip stream ({exc}); delete it and download again"
        ) from None


def _parse(f, path: str) -> np.ndarray:
    head = _read_exact(f, 4, path, "the 4-byte IDX header")
    if head[0:2] != b"\x00\x00":
        raise ValueError(
            f"{path}: not an IDX file (the first two bytes are {head[0:2].hex()}, expected 0000)"
        )
    type_code, ndim = head[2], head[3]
    if type_code not in IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX element type 0x{type_code:02x}")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions")
    dims = struct.unpack(f">{ndim}I", _read_exact(f, 4 * ndim, path, f"{ndim} dimension sizes"))
    dtype = IDX_DTYPES[type_code]
    nbytes = math.prod(dims) * dtype.itemsize  # Python ints: no overflow for any header
    if nbytes > _MAX_BYTES:
        raise ValueError(f"{path}: IDX header declares an implausible size {dims}")
    # readinto a bytearray gives a writable array without a second copy of the data.
    buffer = bytearray(nbytes)
    view = memoryview(buffer)
    filled = 0
    while filled < nbytes:
        got = f.readinto(view[filled:])
        if not got:
            break
        filled += got
    if filled != nbytes:
        raise ValueError(
            f"{path}: truncated IDX file: header {dims} needs {nbytes} data bytes, found {filled}"
        )
    # Reading past the end makes gzip check its CRC and length trailer too.
    if f.read(1):
        raise ValueError(f"{path}: IDX file is longer than its header {dims} says")
    array = np.frombuffer(buffer, dtype=dtype).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False) if dtype.itemsize > 1 else array


def _read_exact(f, n: int, path: str, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ValueError(f"{path}: truncated IDX file: could not read {what}")
    return data


def write_idx(path, array: np.ndarray, *, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when the name ends in .gz).

    Used by the tests to make small files; kept here so the format lives in one place.
    """
    path = os.fspath(path)
    array = np.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise TypeError(f"write_idx: IDX cannot store dtype {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    if compress is None:
        compress = path.endswith(".gz")
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(data)
