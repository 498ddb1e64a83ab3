"""The :class:`Dataset` container and the validation every loader shares.

Every loader of :mod:`l1sparse.data` returns a :class:`Dataset` whose tensors are ready for the
model: inputs as ``float32``, regression targets as ``float32`` of shape ``(N, q)``, class labels
as ``int64`` of shape ``(N,)``. :func:`validate_arrays` is the one place where user arrays are
checked and converted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..losses import check_task

__all__ = ["Dataset", "validate_arrays"]

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
        regression), so that the MAP reading ``λ = 2v²/s`` (docs/design.md §1) can be used.
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
