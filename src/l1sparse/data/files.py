"""User data files: ``.npz`` (``X_train``, ``y_train``, optionally ``X_test``, ``y_test``) and
``.csv`` (a header row, the target in the last column), loaded exactly as stored."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np

from ..losses import check_task
from .dataset import Dataset, _to_dataset, _validate_split_shapes, validate_arrays

__all__ = ["FILE_EXTENSIONS", "load_file"]

log = logging.getLogger(__name__)

FILE_EXTENSIONS = (".npz", ".csv")
"""The file types :func:`load_file` accepts."""


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
