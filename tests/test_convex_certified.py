"""Certified convex solves (l1sparse.convex) against scikit-learn, on real, unstandardised data.

Scales. Our regression objective is ``Σ_i (y_i − x_i·w − b)² + λ‖w‖₁``; divided by 2N it is
scikit-learn's ``(1/2N)‖y − Xw − b‖² + α‖w‖₁`` with ``α = λ / (2N)``, and ``lars_path`` (no
intercept, so on centred data) minimises the same ``(1/2N)‖y − Xw‖² + α‖w‖₁``: its knots times
2N are knots on our scale (checked below through λ_max). Classification: ``Σ_i CE + λ‖W‖₁`` is
scikit-learn's ``C Σ_i CE + ‖W‖₁`` divided by C, so ``λ = 1/C`` (multinomial, 3 classes).
"""

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_linnerud, load_wine
from sklearn.linear_model import Lasso, LogisticRegression, lars_path

from l1sparse.characterize import characterize
from l1sparse.convex import certificate, convex_lambda_max, select, solve, to_model
from l1sparse.models import mlp


def _diabetes():
    return load_diabetes(return_X_y=True, scaled=False)


def _lars_intervals(X, y):
    """(lo, hi, support size) of every piece of the Lasso path, on the summed scale."""
    n = X.shape[0]
    alphas, _, coefs = lars_path(X - X.mean(0), y - y.mean(), method="lasso")
    out = []
    for i in range(len(alphas) - 1):
        mid = (coefs[:, i] + coefs[:, i + 1]) / 2  # the path is linear between knots
        out.append((2 * n * alphas[i + 1], 2 * n * alphas[i], np.count_nonzero(mid)))
    return out


def test_lars_scale_is_ours_times_one_over_2n():
    X, y = _diabetes()
    alphas, _, _ = lars_path(X - X.mean(0), y - y.mean(), method="lasso")
    assert 2 * X.shape[0] * alphas[0] == pytest.approx(convex_lambda_max(X, y, task="regression"),
                                                       rel=1e-12)
    # and the first knot is where Lasso(alpha) leaves everything at zero
    lam = 2 * X.shape[0] * alphas[0]
    assert np.count_nonzero(Lasso(alpha=lam * 0.999 / (2 * X.shape[0]), tol=1e-12).fit(X, y).coef_) == 1
    assert np.count_nonzero(Lasso(alpha=lam * 1.001 / (2 * X.shape[0]), tol=1e-12).fit(X, y).coef_) == 0


def _check_regression_selection(X, y, k):
    n = X.shape[0]
    sel = select(X, y, k, task="regression", tol=0)
    assert sel.converged and sel.nnz == k and np.count_nonzero(sel.coef) == k
    assert sel.certificate.certified and sel.certificate.max_violation < 1e-6
    # λ at the geometric middle of an exact piece of the lars path with k nonzeros
    pieces = [(lo, hi) for lo, hi, m in _lars_intervals(X, y) if m == k and lo < sel.lam < hi]
    assert len(pieces) == 1, (sel.lam, _lars_intervals(X, y))
    lo, hi = pieces[0]
    assert sel.interval_exact
    assert sel.interval[1] == pytest.approx(hi, rel=1e-6)
    if lo > 0:
        assert sel.interval[0] == pytest.approx(lo, rel=1e-6)
        assert sel.lam == pytest.approx(np.sqrt(lo * hi), rel=1e-6)
    ref = Lasso(alpha=sel.lam / (2 * n), tol=1e-10, max_iter=10**6).fit(X, y)
    np.testing.assert_array_equal(np.flatnonzero(ref.coef_), np.flatnonzero(sel.coef))
    np.testing.assert_allclose(sel.coef, ref.coef_, rtol=1e-4, atol=1e-4 * np.abs(ref.coef_).max())
    assert sel.intercept == pytest.approx(ref.intercept_, rel=1e-4)
    return sel


@pytest.mark.parametrize("k", [1, 3, 5, 7, 9])
def test_diabetes_unscaled_exact_k_inside_the_lars_interval(k):
    X, y = _diabetes()
    assert X.std(0).max() / X.std(0).min() > 60  # really unstandardised
    _check_regression_selection(X, y, k)


@pytest.mark.parametrize("k", [3, 10, 20])
def test_breast_cancer_features_from_0_001_to_4000(k):
    X, y = load_breast_cancer(return_X_y=True)
    assert X.std(0).min() < 0.01 and X.std(0).max() > 500
    _check_regression_selection(X, y.astype(float), k)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_linnerud_every_support_size(k):
    X, Y = load_linnerud(return_X_y=True)
    _check_regression_selection(X, Y[:, 0], k)


def test_tolerance_in_weights_and_the_history():
    X, y = _diabetes()
    sel = select(X, y, 6, task="regression", tol=1)
    assert abs(sel.nnz - 6) <= 1 and sel.converged
    assert sel.history and all(isinstance(n, int) for _, n in sel.history)
    assert sel.as_dict()["certificate"]["certified"] is True


def test_a_perturbed_solution_is_not_certified():
    X, y = _diabetes()
    sol = solve(X, y, 5000.0, task="regression")
    assert sol.certificate.certified
    bad = sol.coef.copy()
    bad[np.flatnonzero(bad)[0]] *= 1.01
    cert = certificate(X, y, bad, sol.intercept, 5000.0, task="regression")
    assert not cert.certified and cert.max_violation > 1e-3


def test_weighted_lasso_is_the_lasso_on_rescaled_columns():
    X, y = _diabetes()
    n = X.shape[0]
    c = np.linspace(0.5, 2.0, X.shape[1])
    lam = 3000.0
    sol = solve(X, y, lam, task="regression", weights=c)
    ref = Lasso(alpha=lam / (2 * n), tol=1e-10, max_iter=10**6).fit(X / c, y)
    np.testing.assert_allclose(sol.coef, ref.coef_ / c, rtol=1e-4,
                               atol=1e-4 * np.abs(ref.coef_ / c).max())
    assert sol.certificate.certified
    assert not certificate(X, y, sol.coef, sol.intercept, lam, task="regression").certified


def _saga(X, y, lam, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a ConvergenceWarning would make the oracle unfit
        return LogisticRegression(l1_ratio=1.0, solver="saga", C=1 / lam, tol=1e-12,
                                  max_iter=100_000, **kw).fit(X, y)


@pytest.mark.parametrize("lam", [2.0, 10.0])
def test_iris_unscaled_matches_saga(lam):
    X, y = load_iris(return_X_y=True)
    sol = solve(X, y, lam, task="classification")
    assert sol.coef.shape == (3, 4) and sol.certificate.certified
    ref = _saga(X, y, lam)
    np.testing.assert_array_equal(ref.coef_ != 0, sol.coef != 0)
    np.testing.assert_allclose(sol.coef, ref.coef_, rtol=1e-4, atol=1e-4 * np.abs(sol.coef).max())
    np.testing.assert_allclose(sol.intercept - sol.intercept.mean(),
                               ref.intercept_ - ref.intercept_.mean(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k", [2, 4])
def test_iris_selection_exact_k_and_interval_from_bisection(k):
    X, y = load_iris(return_X_y=True)
    sel = select(X, y, k, task="classification")
    assert sel.converged and sel.nnz == k and sel.certificate.certified
    lo, hi = sel.interval
    assert not sel.interval_exact and lo < sel.lam < hi
    assert sel.lam == pytest.approx(np.sqrt(lo * hi))
    # outside the interval by more than its precision the count differs
    assert solve(X, y, lo / 1.01, task="classification").nnz != k
    assert solve(X, y, hi * 1.01, task="classification").nnz != k
    ref = _saga(X, y, sel.lam)
    np.testing.assert_allclose(sel.coef, ref.coef_, rtol=1e-4, atol=1e-4 * np.abs(sel.coef).max())


def test_wine_unscaled_weighted_matches_saga_on_standardised_data():
    # saga does not converge on the raw wine features (proline ~ 10³ next to hue ~ 1), so the
    # oracle runs on standardised columns z = (x − x̄)/s; its plain ℓ1 on the z-weights V is the
    # weighted ℓ1 with c_j = s_j on the raw weights W = V/s — the problem we then solve raw
    X, y = load_wine(return_X_y=True)
    xbar, s = X.mean(0), X.std(0)
    lam = 5.0
    ref = _saga((X - xbar) / s, y, lam)
    W = ref.coef_ / s
    c = np.broadcast_to(s, W.shape)
    sol = solve(X, y, lam, task="classification", weights=c)
    assert sol.certificate.certified
    np.testing.assert_array_equal(W != 0, sol.coef != 0)
    np.testing.assert_allclose(sol.coef, W, rtol=1e-4, atol=1e-4 * np.abs(W).max())


def _objective(X, y, W, b, lam):
    logits = X @ W.T + b
    m = logits.max(1, keepdims=True)
    lse = (m[:, 0] + np.log(np.exp(logits - m).sum(1)))
    return float((lse - logits[np.arange(len(y)), y]).sum() + lam * np.abs(W).sum())


def test_wine_unscaled_plain_l1_beats_the_unconverged_oracle():
    # on the raw features saga stops at max_iter; we compare objective and conditions
    X, y = load_wine(return_X_y=True)
    lam = 10.0
    sol = solve(X, y, lam, task="classification")
    assert sol.certificate.certified and sol.certificate.max_violation < 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = LogisticRegression(l1_ratio=1.0, solver="saga", C=1 / lam, tol=1e-10,
                                 max_iter=5000).fit(X, y)
    ours = _objective(X, y, sol.coef, sol.intercept, lam)
    theirs = _objective(X, y, ref.coef_, ref.intercept_, lam)
    assert ours <= theirs + 1e-9 * abs(theirs)
    assert not certificate(X, y, ref.coef_, ref.intercept_, lam,
                           task="classification").certified


def test_wine_selection_exact_k():
    X, y = load_wine(return_X_y=True)
    for k in (3, 6):
        sel = select(X, y, k, task="classification")
        assert sel.nnz == k and sel.converged and sel.certificate.certified


def test_to_model_copies_the_solution_and_the_conditions_hold():
    X, y = _diabetes()
    sel = select(X, y, 4, task="regression")
    net = mlp(X.shape[1], [], 1).double()
    to_model(sel, net)
    Xt, yt = torch.tensor(X), torch.tensor(y).unsqueeze(1)
    assert int((net.fc1.weight != 0).sum()) == 4
    report = characterize(net, Xt, yt, task="regression", lambdas={"fc1": sel.lam}, tol=1e-6)
    assert report.all_ok
    X, y = load_iris(return_X_y=True)
    sel = select(X, y, 3, task="classification")
    net = mlp(4, [], 3).double()
    to_model(sel, net)
    report = characterize(net, torch.tensor(X), torch.tensor(y), task="classification",
                          lambdas={"fc1": sel.lam}, tol=1e-6)
    assert report.all_ok and int((net.fc1.weight != 0).sum()) == 3


@pytest.mark.parametrize("kwargs, message", [
    ({"k": 0}, r"The 'k' parameter must be an integer in \[1, 10\]. Got 0."),
    ({"k": 11}, r"The 'k' parameter must be an integer in \[1, 10\]. Got 11."),
    ({"k": 2.5}, r"The 'k' parameter must be an integer in \[1, 10\]. Got 2.5."),
    ({"k": 3, "tol": -1}, r"The 'tol' parameter must be a finite number >= 0. Got -1."),
    ({"k": 3, "weights": np.ones(3)},
     r"The 'weights' parameter must have the shape of the coefficients \(10,\). Got \(3,\)."),
    ({"k": 3, "weights": -np.ones(10)}, r"The 'weights' parameter must hold finite numbers > 0."),
])
def test_bad_input(kwargs, message):
    X, y = _diabetes()
    with pytest.raises(ValueError, match=message):
        select(X, y, task="regression", **kwargs)


def test_bad_lambda_and_labels():
    X, y = _diabetes()
    with pytest.raises(ValueError, match=r"The 'lam' parameter must be a finite number > 0. "
                                         r"Got 0.0."):
        solve(X, y, 0.0, task="regression")
    with pytest.raises(ValueError, match="integer class labels"):
        solve(X, y + 0.5, 1.0, task="classification")
