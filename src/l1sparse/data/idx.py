"""The IDX codec (the file format of MNIST and Fashion-MNIST): :func:`read_idx` and
:func:`write_idx`, raw or gzip-compressed."""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

__all__ = ["IDX_TYPES", "read_idx", "write_idx"]


IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
"""IDX type codes and their (big-endian) element types."""

_GZIP_MAGIC = b"\x1f\x8b"


def _read_maybe_gzip(path: Path) -> bytes:
    where = repr(str(path))
    if not path.exists():
        raise FileNotFoundError(f"The file {where} does not exist.")
    if path.is_dir():
        raise ValueError(f"{where} is a directory, not an IDX file.")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{where} cannot be read: {exc}") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{where} is a corrupted or truncated gzip file: {exc}") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), raw or gzip-compressed.

    Gzip is recognised by its magic bytes ``1f 8b``, whatever the file is called. The header is
    two zero bytes, a type code (:data:`IDX_TYPES`), the number of dimensions ``d``, then ``d``
    big-endian ``uint32`` sizes; the data follow in C order, big-endian.

    Returns
    -------
    np.ndarray
        Of the file's shape, in the native byte order of the file's element type
        (``uint8`` for MNIST images and labels).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        Naming the file: corrupted gzip data, a bad magic number, an unknown type code, or a
        size that does not match the header (expected and found byte counts are reported).
    """
    path = Path(path)
    where = repr(str(path))
    data = _read_maybe_gzip(path)
    if len(data) < 4:
        raise ValueError(
            f"{where} is too short for an IDX header ({len(data)} bytes; at least 4 needed)."
        )
    if data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"{where} is not an IDX file: bad magic number {data[:4].hex()} (it must start "
            "with two zero bytes)."
        )
    code, ndim = data[2], data[3]
    if code not in IDX_TYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_TYPES)
        raise ValueError(f"{where} has an unknown IDX type code 0x{code:02X} (known: {known}).")
    if ndim == 0:
        raise ValueError(f"{where} declares 0 dimensions; an IDX file needs at least one.")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"{where} is truncated: expected a header of {header} bytes, found {len(data)}."
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[code]
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) < expected:
        raise ValueError(
            f"{where} is truncated: expected {expected} bytes (shape {dims} of "
            f"{dtype.newbyteorder('=').name}), found {len(data)}."
        )
    if len(data) > expected:
        raise ValueError(
            f"{where} is corrupted: expected {expected} bytes (shape {dims} of "
            f"{dtype.newbyteorder('=').name}), found {len(data)} (extra data after the array)."
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file (the inverse of :func:`read_idx`).

    Parameters
    ----------
    compress : bool, optional
        Gzip the file; by default when ``path`` ends in ``.gz``.
    """
    path = Path(path)
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_TYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(
            f"IDX files hold uint8, int8, int16, int32, float32 or float64; got {array.dtype}."
        )
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX arrays need 1 to 255 dimensions; got {array.ndim}.")
    header = bytes([0, 0, codes[native], array.ndim])
    header += np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(array, dtype=native.newbyteorder(">")).tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
