"""Checks on the training data a user hands to the library, with messages that name the argument.

:func:`check_training_data` is what :func:`~l1sparse.fit_sparse` and the command line run before
training, so that a mistake in the data is reported as a ``TypeError`` or ``ValueError`` naming
the argument and the problem, not as an error from deep inside PyTorch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .losses import check_task

__all__ = ["check_training_data", "describe_labels"]

_SHOWN = 10  # labels listed in a message before "..."


def describe_labels(labels) -> str:
    """``[1, 2, 3]``, or the first ten and the count: the labels found, for messages."""
    values = sorted(int(v) for v in labels)
    if len(values) <= _SHOWN:
        return "[" + ", ".join(map(str, values)) + "]"
    return "[" + ", ".join(map(str, values[:_SHOWN])) + f", ... ({len(values)} labels)]"


def _as_tensor(a, name: str) -> Tensor:
    if isinstance(a, Tensor):
        return a.detach()
    if isinstance(a, np.ndarray):
        if a.dtype.kind not in "biuf":
            raise TypeError(f"The '{name}' parameter must hold real numbers; got a numpy array "
                            f"of dtype {a.dtype}.")
        if a.dtype.byteorder not in "=|":  # non-native byte order: torch refuses it
            a = a.astype(a.dtype.newbyteorder("="))
        return torch.from_numpy(np.require(a, requirements="C"))
    raise TypeError(f"The '{name}' parameter must be a numpy array or a torch.Tensor; got "
                    f"{type(a).__name__}.")


def _check_dtype(t: Tensor, name: str) -> None:
    if t.is_complex():
        raise TypeError(f"The '{name}' parameter must hold real numbers; got dtype {t.dtype}.")
    if t.is_floating_point() or t.dtype == torch.bool:
        return
    try:
        torch.iinfo(t.dtype)
    except TypeError:
        raise TypeError(f"The '{name}' parameter must hold real numbers; got dtype "
                        f"{t.dtype}.") from None


def _check_finite(t: Tensor, name: str) -> None:
    if not t.is_floating_point():
        return
    # one pass, no boolean copy (isfinite() makes one the size of the data, ~30x slower): the
    # extremes are finite exactly when every value is (aminmax propagates NaN)
    if t.numel() == 0 or all(bool(torch.isfinite(v)) for v in torch.aminmax(t)):
        return
    n_nan = int(torch.isnan(t).sum())
    n_inf = int(torch.isinf(t).sum())
    if n_nan or n_inf:
        parts = [f"{n_nan} NaN" if n_nan else "", f"{n_inf} infinite" if n_inf else ""]
        raise ValueError(f"The '{name}' parameter contains "
                         f"{' and '.join(p for p in parts if p)} values; every value must be "
                         "finite.")


def check_training_data(
    X,
    y,
    *,
    task: str,
    name_X: str = "X",
    name_y: str = "y",
    n_classes: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Check inputs and targets for training and return them as tensors of the library's types.

    Parameters
    ----------
    X : numpy.ndarray or Tensor
        Inputs of shape ``(N, features...)`` with ``N >= 1`` and at least one feature; real
        numbers, all finite.
    y : numpy.ndarray or Tensor
        Regression: real targets of shape ``(N,)`` or ``(N, q)``, all finite. Classification:
        class indices of shape ``(N,)`` (or ``(N, 1)``) that are exactly the labels
        ``0..C-1``, each present at least once; float labels are accepted when they are whole
        numbers (``2.0``), others are rejected.
    task : {"regression", "classification"}
    name_X, name_y : str, default "X", "y"
        How the arguments are called in messages (e.g. ``"X_train"``).
    n_classes : int, optional
        Classification: the number of classes ``C`` the model predicts; labels must then lie in
        ``0..C-1``. Default: ``C`` is the largest label plus one.
    dtype : torch.dtype, default torch.float32
        The floating dtype of the returned inputs (and of regression targets): the model's.

    Returns
    -------
    X : Tensor
        ``dtype``, same shape, on the device it came on (CPU for numpy arrays).
    y : Tensor
        ``dtype`` of shape ``(N, q)`` for regression (a 1-D target becomes ``(N, 1)``); ``int64``
        of shape ``(N,)`` for classification.

    Raises
    ------
    TypeError
        If ``X`` or ``y`` is not a numpy array or tensor, or does not hold real numbers.
    ValueError
        Naming the argument: a shape that is not ``(N, features...)``, no rows or no features,
        a length mismatch, NaN or infinite values (with their count), or class labels that are
        not whole numbers or not ``0..C-1`` (the message lists the labels found).

    Examples
    --------
    >>> import numpy as np
    >>> X, y = check_training_data(np.zeros((3, 2)), np.array([0.0, 1.0, 1.0]),
    ...                            task="classification")
    >>> X.dtype, y.dtype, y.tolist()
    (torch.float32, torch.int64, [0, 1, 1])
    >>> check_training_data(np.zeros((3, 2)), np.array([1, 2, 3]), task="classification")
    Traceback (most recent call last):
    ...
    ValueError: The 'y' parameter must hold the class labels 0..C-1 (every one present) for classification; found the labels [1, 2, 3]: class 0 has no sample. Relabel with numpy.unique(y, return_inverse=True)[1].
    """
    check_task(task)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"The 'dtype' parameter must be a floating torch.dtype. Got {dtype!r}.")
    X = _as_tensor(X, name_X)
    y = _as_tensor(y, name_y)
    _check_dtype(X, name_X)
    _check_dtype(y, name_y)
    if X.dim() < 2:
        raise ValueError(f"The '{name_X}' parameter must be at least 2-D (samples x features); "
                         f"got shape {tuple(X.shape)}. Reshape a single feature with "
                         "X.reshape(-1, 1).")
    if X.shape[0] == 0:
        raise ValueError(f"The '{name_X}' parameter has no rows (shape {tuple(X.shape)}).")
    if math.prod(X.shape[1:]) == 0:
        raise ValueError(f"The '{name_X}' parameter has no features (shape {tuple(X.shape)}).")
    if y.dim() == 0:
        raise ValueError(f"The '{name_y}' parameter must have one entry per sample; got a "
                         "scalar.")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"The '{name_X}' parameter has {X.shape[0]} rows but '{name_y}' has "
                         f"{y.shape[0]}; they need one row per sample each.")
    _check_finite(X, name_X)
    _check_finite(y, name_y)
    X = X.to(dtype)

    if task == "regression":
        if y.dim() == 1:
            y = y.reshape(-1, 1)
        if y.dim() != 2 or y.shape[1] == 0:
            raise ValueError(f"The '{name_y}' parameter must be of shape (N,) or (N, outputs) "
                             f"for regression; got {tuple(y.shape)}.")
        return X, y.to(dtype)

    if y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dim() != 1:
        raise ValueError(f"The '{name_y}' parameter must be a 1-D array of class labels for "
                         f"classification; got shape {tuple(y.shape)} (one-hot labels are not "
                         "accepted: use y.argmax(1)).")
    if y.is_floating_point():
        fractional = y != torch.floor(y)
        if bool(fractional.any()):
            bad = y[fractional][0].item()
            raise ValueError(f"The '{name_y}' parameter must hold whole-number class labels for "
                             f"classification; found {bad!r}.")
    labels = torch.unique(y.to(torch.int64)).cpu()
    if n_classes is not None:
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
            raise ValueError(f"The 'n_classes' parameter must be a positive integer. Got "
                             f"{n_classes!r}.")
        outside = labels[(labels < 0) | (labels >= n_classes)]
        if outside.numel():
            raise ValueError(f"The '{name_y}' parameter must hold class labels in "
                             f"0..{n_classes - 1} (the model has {n_classes} outputs); found the "
                             f"labels {describe_labels(labels.tolist())}.")
    count = n_classes if n_classes is not None else int(labels.max()) + 1
    if int(labels.min()) < 0 or labels.numel() != count:
        present = set(labels.tolist())
        missing = [c for c in range(count) if c not in present]
        why = (f"class {missing[0]} has no sample" if len(missing) == 1 and labels.min() >= 0
               else f"classes {describe_labels(missing)} have no sample" if labels.min() >= 0
               else "labels must not be negative")
        raise ValueError(f"The '{name_y}' parameter must hold the class labels 0..C-1 (every one "
                         f"present) for classification; found the labels "
                         f"{describe_labels(labels.tolist())}: {why}. Relabel with "
                         f"numpy.unique({name_y}, return_inverse=True)[1].")
    return X, y.to(torch.int64)
