"""The scikit-learn estimators: scikit-learn's own contract, and use inside its tools."""

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.datasets import load_iris, make_friedman1  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from l1sparse.sklearn import SparseMLPClassifier, SparseMLPRegressor  # noqa: E402

FAST = dict(hidden=(16,), zero_fraction=0.5, steps=150, random_state=0)


@parametrize_with_checks([SparseMLPClassifier(**FAST), SparseMLPRegressor(**FAST)])
def test_sklearn_contract(estimator, check):
    check(estimator)


def _blobs(n=240, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6)) * [1, 1, 10, 100, 1, 1] + [0, 0, 5, 1000, 0, 0]
    y = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    return X, y


def test_classifier_attributes_follow_scikit_learn():
    X, y = _blobs()
    clf = SparseMLPClassifier(hidden=(12,), nnz=30, steps=300, random_state=0).fit(X, y)
    assert clf.classes_.tolist() == ["no", "yes"]
    assert clf.n_features_in_ == 6 and clf.n_iter_ == 300
    assert [c.shape for c in clf.coefs_] == [(6, 12), (12, 2)]
    assert [b.shape for b in clf.intercepts_] == [(12,), (2,)]
    # the count is exact, and folding the standardisation back kept every zero
    assert clf.nnz_ == 30 == sum(int((c != 0).sum()) for c in clf.coefs_)
    assert clf.converged_ and clf.lambda_ > 0
    proba = clf.predict_proba(X)
    assert proba.shape == (240, 2) and np.allclose(proba.sum(axis=1), 1.0)
    assert (clf.classes_[proba.argmax(axis=1)] == clf.predict(X)).all()
    assert clf.score(X, y) > 0.9  # raw, badly scaled features: trained standardised


def test_regressor_predicts_on_the_raw_target_scale():
    X, _ = _blobs()
    y = 1000.0 + 50.0 * np.tanh(X[:, 0]) - 30.0 * X[:, 1]  # far from unit scale
    reg = SparseMLPRegressor(hidden=(16,), zero_fraction=0.7, steps=400, random_state=0)
    assert reg.fit(X, y).score(X, y) > 0.9
    assert reg.predict(X).shape == (240,)
    assert abs(reg.zero_fraction_ - 0.7) <= 0.005
    Y = np.stack([y, -y], axis=1)
    assert reg.fit(X, Y).predict(X).shape == (240, 2)


def test_pipeline_grid_search_and_cross_val_score():
    X, y = load_iris(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), SparseMLPClassifier(hidden=(8,), steps=200,
                                                               random_state=0))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.8
    grid = GridSearchCV(pipe, {"sparsemlpclassifier__zero_fraction": [0.5, 0.9]}, cv=3)
    grid.fit(X, y)
    assert grid.best_params_["sparsemlpclassifier__zero_fraction"] in (0.5, 0.9)
    best = grid.best_estimator_[-1]
    assert abs(best.zero_fraction_ - grid.best_params_["sparsemlpclassifier__zero_fraction"]) \
        <= 0.005
    Xr, yr = make_friedman1(n_samples=200, random_state=0)
    r2 = cross_val_score(SparseMLPRegressor(hidden=(16,), zero_fraction=0.5, steps=300,
                                            random_state=0), Xr, yr, cv=3)
    assert r2.mean() > 0.5


def test_default_budget_uses_a_held_out_split():
    X, y = make_friedman1(n_samples=200, random_state=0)
    reg = SparseMLPRegressor(hidden=(16,), zero_fraction=0.5, random_state=0).fit(X, y)
    v = reg.validation_
    assert v["source"] == "split" and v["fraction"] == 0.2 and v["n_samples"] == 40
    assert reg.n_iter_ in [b["steps"] for b in v["budget"]]


@pytest.mark.parametrize("params, message", [
    ({"zero_fraction": 0.5, "nnz": 10}, "either 'zero_fraction' or 'nnz'"),
    ({"hidden": (4, -1)}, "'hidden' parameter"),
    ({"zero_fraction": 1.5}, "zero"),
    ({"steps": 0}, "'steps' parameter"),
])
def test_bad_parameters_are_one_clear_value_error(params, message):
    X, y = _blobs(60)
    with pytest.raises(ValueError, match=message):
        SparseMLPClassifier(**{"steps": 50, **params}).fit(X, y)


def test_one_class_is_refused():
    X, _ = _blobs(30)
    with pytest.raises(ValueError, match="at least 2 classes"):
        SparseMLPClassifier(steps=20).fit(X, np.zeros(30))
