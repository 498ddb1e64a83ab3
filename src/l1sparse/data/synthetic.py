"""Regression problems with a known ground truth: ``y = f(x) + N(0, noise_std²)``."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .dataset import Dataset, _to_dataset

__all__ = [
    "REGRESSION_FUNCTIONS",
    "ground_truth",
    "make_synthetic_regression",
    "make_regression",
]


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
"""The synthetic regression functions ``f: [-1, 1]^d → R`` (see
:func:`make_synthetic_regression`)."""

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
    """The noise-free regression function ``f(X)`` of :func:`make_synthetic_regression`.

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


def make_synthetic_regression(
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
    deviation ``v = noise_std``, the MAP reading of the ℓ1 model is ``λ = 2v²/s``
    (docs/design.md §1).

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


def make_regression(*args, **kwargs) -> Dataset:
    """Deprecated alias of :func:`make_synthetic_regression`.

    The old name shadowed :func:`sklearn.datasets.make_regression`, which makes a *linear*
    problem with different parameters. It will be removed in the release after 0.2.

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     ds = make_regression("sine1d", n_train=5, n_test=0)
    >>> caught[0].category.__name__, ds.n_train
    ('DeprecationWarning', 5)
    """
    warnings.warn(
        "l1sparse.data.make_regression is deprecated and will be removed in the release after "
        "0.2; use make_synthetic_regression (the same function under a name that does not "
        "shadow scikit-learn's make_regression).",
        DeprecationWarning,
        stacklevel=2,
    )
    return make_synthetic_regression(*args, **kwargs)
