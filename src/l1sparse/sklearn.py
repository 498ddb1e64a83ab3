"""scikit-learn estimators: sparse MLPs at the sparsity you ask for.

:class:`SparseMLPClassifier` and :class:`SparseMLPRegressor` are thin consumers of
:func:`~l1sparse.select.fit_sparse`: ``fit`` checks the data the scikit-learn way, builds an
:func:`~l1sparse.models.mlp`, calls ``fit_sparse`` once and keeps what it returns as
attributes with a trailing underscore. They work inside ``Pipeline``, ``GridSearchCV`` and
``cross_val_score``. By default they train on standardised features (and, for a regressor,
a standardised target) and fold the statistics back into the network.

This module imports scikit-learn >= 1.6 (``pip install l1sparse[sklearn]``);
``import l1sparse`` does not.

Examples
--------
>>> from sklearn.datasets import load_iris
>>> from sklearn.pipeline import make_pipeline
>>> from sklearn.preprocessing import StandardScaler
>>> X, y = load_iris(return_X_y=True)
>>> clf = make_pipeline(StandardScaler(),
...                     SparseMLPClassifier(hidden=(16,), zero_fraction=0.8, random_state=0))
>>> clf.fit(X, y).score(X, y) > 0.9
True
>>> net = clf[-1]
>>> net.coefs_[0].shape, round(float(net.zero_fraction_), 2)
((4, 16), 0.8)
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, column_or_1d
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError as exc:  # pragma: no cover - without scikit-learn >= 1.6
    raise ImportError("l1sparse.sklearn needs scikit-learn >= 1.6: pip install "
                      "l1sparse[sklearn]") from exc

from .config import DEFAULTS
from .models import mlp
from .penalty import penalised_layers
from .select import fit_sparse
from .standardize import Standardization
from .sparsity import sparsity


__all__ = ["SparseMLPClassifier", "SparseMLPRegressor"]

_DEFAULT_ZERO_FRACTION = 0.8


class _SparseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, ``fit`` and the forward pass."""

    _task: str

    def __init__(self, hidden=(32,), *, zero_fraction=None, nnz=None, steps=None, epochs=None,
                 penalty="auto", optimizer=DEFAULTS.optimizer, lr=None,
                 batch_size=DEFAULTS.batch_size, activation="relu",
                 validation_fraction="auto", standardize=True, random_state=None):
        self.hidden = hidden
        self.zero_fraction = zero_fraction
        self.nnz = nnz
        self.steps = steps
        self.epochs = epochs
        self.penalty = penalty
        self.optimizer = optimizer
        self.lr = lr
        self.batch_size = batch_size
        self.activation = activation
        self.validation_fraction = validation_fraction
        self.standardize = standardize
        self.random_state = random_state

    # ------------------------------------------------------------------ fit

    def _seed(self) -> int:
        if isinstance(self.random_state, numbers.Integral) and not isinstance(
                self.random_state, bool):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _target(self) -> dict:
        if self.zero_fraction is not None and self.nnz is not None:
            raise ValueError("Give either 'zero_fraction' or 'nnz', not both. Got "
                             f"zero_fraction={self.zero_fraction!r}, nnz={self.nnz!r}.")
        if self.nnz is not None:
            return {"nnz": self.nnz}
        return {"zero_fraction": (_DEFAULT_ZERO_FRACTION if self.zero_fraction is None
                                  else self.zero_fraction)}

    def _hidden(self) -> list[int]:
        hidden = [self.hidden] if isinstance(self.hidden, numbers.Integral) else self.hidden
        try:
            widths = [int(h) for h in hidden]
        except (TypeError, ValueError):
            widths = None
        if widths is None or any(w < 1 or w != h for w, h in zip(widths, hidden)):
            raise ValueError("The 'hidden' parameter must be a sequence of positive integer "
                             f"widths. Got {self.hidden!r}.")
        return widths

    def _fit(self, X: np.ndarray, y: np.ndarray, n_out: int):
        torch_X = torch.tensor(np.asarray(X, dtype=np.float32))
        if self._task == "classification":
            torch_y = torch.tensor(y, dtype=torch.int64)
        else:
            torch_y = torch.tensor(np.asarray(y, dtype=np.float32))
        seed = self._seed()
        net = mlp(X.shape[1], self._hidden(), n_out, activation=self.activation, seed=seed)
        std = None
        if self.standardize:  # trained on standardised data, folded back to the raw scale
            std = Standardization.from_data(
                torch_X, torch_y if self._task == "regression" else None)
            torch_X = std.transform_X(torch_X)
            if std.target:
                torch_y = std.transform_y(torch_y)
        result = fit_sparse(net, torch_X, torch_y, task=self._task, steps=self.steps,
                            epochs=self.epochs, penalty=self.penalty,
                            optimizer=self.optimizer, lr=self.lr, batch_size=self.batch_size,
                            seed=seed, validation_fraction=self.validation_fraction,
                            **self._target())
        if std is not None:
            std.fold(net)
        net.eval()
        self.standardization_ = std
        self.model_ = net
        self.result_ = result
        self.lambda_ = result.lam
        layers = [m for _, m in penalised_layers(net)]
        self.coefs_ = [m.weight.detach().numpy().T.copy() for m in layers]
        self.intercepts_ = [m.bias.detach().numpy().copy() for m in layers]
        self.n_iter_ = int(result.steps)
        report = sparsity(net)
        self.nnz_ = int(report.nnz)
        self.zero_fraction_ = float(report.zero_fraction)
        self.converged_ = bool(result.converged)
        self.warnings_ = list(result.warnings)
        self.validation_ = result.validation
        return self

    @torch.no_grad()
    def _forward(self, X) -> torch.Tensor:
        check_is_fitted(self)
        X = _validate_data(self, X, reset=False, dtype=np.float32)
        return self.model_(torch.tensor(np.asarray(X, dtype=np.float32)))


class SparseMLPClassifier(ClassifierMixin, _SparseMLP):
    """A sparse MLP classifier: cross-entropy, ℓ1 steered to the sparsity asked for.

    ``fit`` label-encodes ``y`` (any labels; ``classes_`` keeps them) and trains one network
    with :func:`~l1sparse.select.fit_sparse`; see it for the training and the held-out split.

    Parameters
    ----------
    hidden : sequence of int, default (32,)
        Hidden widths; ``()`` is multinomial logistic regression (the convex case).
    zero_fraction : float, optional
        Share of the penalised weights that must be zero, in ``[0, 1)``; default 0.8 when
        ``nnz`` is not given either.
    nnz : int, optional
        Exact number of nonzero penalised weights (instead of ``zero_fraction``).
    steps, epochs : int, optional
        The length of the run (optimizer steps, or passes; ``steps`` wins). With neither, on
        small data a held-out share chooses it (``validation_fraction``).
    penalty : {"auto", "reweighted", "l1"}, default "auto"
    optimizer : {"sgd", "adam"}, default "sgd"
    lr : float, optional
        Default 0.1 for SGD, 1e-3 for Adam.
    batch_size : int or None, default 128
    activation : str, default "relu"
    validation_fraction : float or "auto", default "auto"
        Passed to :func:`~l1sparse.select.fit_sparse`.
    standardize : bool, default True
        Train on features standardised with the training mean and standard deviation (and,
        for the regressor, a standardised target), then fold the statistics into the first
        (and last) layer: zeros stay zeros, the network takes raw inputs and ``coefs_`` are
        on the raw scale, λ belongs to the standardised problem (docs/design.md on
        ``--standardize``). Without it, badly scaled data can make training diverge.
    random_state : int, RandomState or None
        Seeds the initial weights, the batch order and the held-out split (an int is the
        seed itself).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` has string column names.
    lambda_ : float
        λ on the summed-loss scale (a list for per-layer targets).
    coefs_, intercepts_ : list of ndarray
        Weights ``(n_in, n_out)`` and biases of each layer, as scikit-learn's MLPs.
    n_iter_ : int
        Optimizer steps of the returned run.
    nnz_, zero_fraction_ : int, float
        The nonzero count and zero share attained.
    converged_ : bool
        The count is within its tolerance.
    warnings_ : list of str
        Why the network may not work (empty when it does).
    validation_ : dict or None
        The held-out split and the run lengths tried (``SelectionResult.validation``).
    standardization_ : Standardization or None
        The statistics folded into the network.
    model_ : torch.nn.Module
        The trained network (logits), on raw inputs.
    result_ : SelectionResult

    Notes
    -----
    scikit-learn's ``check_estimator`` passes with every check (tests/test_sklearn.py runs it
    through ``parametrize_with_checks`` with ``steps=150``); no estimator tag changes a check
    and no check is expected to fail. A single class in ``y`` is refused: a ValueError.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(200, 4)); y = np.where(X[:, 0] > 0, "a", "b")
    >>> clf = SparseMLPClassifier(hidden=(8,), zero_fraction=0.5, steps=300,
    ...                           random_state=0).fit(X, y)
    >>> clf.classes_.tolist(), clf.nnz_, clf.score(X, y) > 0.9
    (['a', 'b'], 24, True)
    """

    _task = "classification"

    def fit(self, X, y):
        """Train on ``X`` (n_samples, n_features) and labels ``y`` (n_samples,); returns self."""
        X, y = _validate_data(self, X, y, dtype=np.float32)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError("The 'y' parameter has 1 class "
                             f"({self.classes_[0]!r}); a classifier needs at least 2 classes.")
        return self._fit(X, encoded, len(self.classes_))

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, shape ``(n_samples, n_classes)`` in the order of ``classes_``."""
        return torch.softmax(self._forward(X), dim=1).double().numpy()

    def predict(self, X) -> np.ndarray:
        """The most probable class of each sample."""
        index = self._forward(X).argmax(dim=1).numpy()
        return self.classes_[index]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        return tags


class SparseMLPRegressor(RegressorMixin, _SparseMLP):
    """A sparse MLP regressor: squared error, ℓ1 steered to the sparsity asked for.

    The parameters, attributes and notes are those of :class:`SparseMLPClassifier` (without
    ``classes_`` and ``predict_proba``); ``y`` may have several outputs ``(n_samples,
    n_outputs)``. With ``standardize`` (default) the target is standardised too (per
    output) and the network predicts on its raw scale.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(300, 5)); y = X[:, 0] - 2 * X[:, 1]
    >>> reg = SparseMLPRegressor(hidden=(16,), zero_fraction=0.8, steps=400,
    ...                          random_state=0).fit(X, y)
    >>> reg.coefs_[0].shape, reg.score(X, y) > 0.9
    ((5, 16), True)
    """

    _task = "regression"

    def fit(self, X, y):
        """Train on ``X`` (n_samples, n_features) and ``y`` (n_samples,) or (n_samples,
        n_outputs); returns self."""
        X, y = _validate_data(self, X, y, dtype=np.float32, multi_output=True, y_numeric=True)
        self._y_1d = y.ndim == 1
        y2 = y.reshape(-1, 1) if y.ndim == 1 else y
        return self._fit(X, y2, y2.shape[1])

    def predict(self, X) -> np.ndarray:
        """Predictions, shape ``(n_samples,)`` (or ``(n_samples, n_outputs)``)."""
        out = self._forward(X).double().numpy()
        return out[:, 0] if self._y_1d else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags
