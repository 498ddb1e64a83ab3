"""The Mackey–Glass regression set "mg", shipped inside the package (the paper's regression data).

The LIBSVM regression set "mg" (Flake & Lawrence's Mackey–Glass series): 1,385 samples, 6
features scaled to [−1, 1], a scalar target in [0.418, 1.317]. The shipped file
``mg.npz`` holds ``X`` (1385×6) and ``y`` (1385) in the published order; the split is made here.

Split: the first 1,000 samples train, the remaining **385** test. The authors' code skips sample
1,000 (its test set is samples 1,001…1,384, 384 of them); keeping it is the sensible reading of
"the first 1,000 train, the rest test", and one sample moves a test MSE by well under 1 %.
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np

from .dataset import Dataset, _to_dataset

__all__ = ["MG_TRAIN", "load_mg"]

MG_TRAIN = 1000
"""Samples in the training split (the first ones, in the published order)."""


@functools.lru_cache(maxsize=1)
def _mg_arrays() -> tuple[np.ndarray, np.ndarray]:
    with resources.files(__package__).joinpath("mg.npz").open("rb") as fh:
        with np.load(fh) as data:
            X, y = np.asarray(data["X"]), np.asarray(data["y"])
    if X.shape != (1385, 6) or y.shape != (1385,):
        raise ValueError(f"The shipped mg file has an unexpected shape: X {X.shape}, "
                         f"y {y.shape}; expected (1385, 6) and (1385,).")
    return X, y


def load_mg() -> Dataset:
    """The Mackey–Glass set ``"mg"``: 1,000 training samples, 385 test samples.

    Returns
    -------
    Dataset
        ``"mg"``, task ``"regression"``; inputs ``float32`` ``(N, 6)`` in [−1, 1] as published
        (no further scaling), targets ``float32`` ``(N, 1)``; both splits in the file's order.

    Examples
    --------
    >>> data = load_mg()
    >>> data.X_train.shape, data.X_test.shape, data.task
    (torch.Size([1000, 6]), torch.Size([385, 6]), 'regression')
    """
    X, y = _mg_arrays()
    X = X.astype(np.float32)
    y = y.astype(np.float32).reshape(-1, 1)
    return _to_dataset(X[:MG_TRAIN], y[:MG_TRAIN], X[MG_TRAIN:], y[MG_TRAIN:],
                       task="regression", name="mg")
