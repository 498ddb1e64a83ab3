"""Known answers in the convex case: scikit-learn's Lasso, λ_max, first-order conditions."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso

from l1sparse.characterize import characterize, lambda_max, lasso_lambda_max
from l1sparse.models import mlp
from l1sparse.penalty import resolve_lambdas
from l1sparse.train import make_optimizer, train


def _fit_linear(X, y, lam, dtype=torch.float64, epochs=20000, momentum=0.0):
    n, p = X.shape
    Xt, yt = torch.tensor(X, dtype=dtype), torch.tensor(y, dtype=dtype).unsqueeze(1)
    net = mlp(p, [], 1, seed=0).to(dtype)
    # step 1/L for the mean squared loss with an intercept column
    lipschitz = 2 * np.linalg.norm(np.hstack([X, np.ones((n, 1))]), 2) ** 2 / n
    opt = make_optimizer(net, "sgd", lr=(1 - momentum) / lipschitz,
                         lambdas=resolve_lambdas(net, lam), n_samples=n, momentum=momentum)
    result = train(net, Xt, yt, opt, task="regression", epochs=epochs, tol=1e-15)
    return net, Xt, yt, result


@pytest.mark.parametrize("fraction", [0.6, 0.2, 0.05])
def test_full_batch_proximal_gradient_matches_sklearn_lasso(lasso_problem, fraction):
    X, y = lasso_problem
    n = X.shape[0]
    lam = fraction * lasso_lambda_max(torch.tensor(X), torch.tensor(y))
    net, *_ = _fit_linear(X, y, lam)
    ours = net.fc1.weight.detach().numpy().ravel()
    ref = Lasso(alpha=lam / (2 * n), tol=1e-12, max_iter=100_000).fit(X, y)
    np.testing.assert_array_equal(np.flatnonzero(ours), np.flatnonzero(ref.coef_))
    np.testing.assert_allclose(ours, ref.coef_, rtol=1e-4, atol=1e-4 * np.abs(ref.coef_).max())
    assert net.fc1.bias.item() == pytest.approx(ref.intercept_, rel=1e-4)


@pytest.mark.parametrize("momentum", [0.5, 0.9])
def test_proximal_sgd_with_momentum_solves_the_same_lasso(lasso_problem, momentum):
    # heavy-ball momentum amplifies the steady gradient step by 1/(1 − μ); the threshold must
    # follow, or the fixed point solves the Lasso at λ·(1 − μ) instead of λ
    X, y = lasso_problem
    n = X.shape[0]
    lam = 0.2 * lasso_lambda_max(torch.tensor(X), torch.tensor(y))
    net, *_ = _fit_linear(X, y, lam, momentum=momentum)
    ref = Lasso(alpha=lam / (2 * n), tol=1e-12, max_iter=100_000).fit(X, y)
    ours = net.fc1.weight.detach().numpy().ravel()
    np.testing.assert_array_equal(np.flatnonzero(ours), np.flatnonzero(ref.coef_))
    np.testing.assert_allclose(ours, ref.coef_, rtol=1e-4, atol=1e-4 * np.abs(ref.coef_).max())


def test_float32_training_also_matches_sklearn(lasso_problem):
    X, y = lasso_problem
    n = X.shape[0]
    lam = 0.2 * lasso_lambda_max(torch.tensor(X), torch.tensor(y))
    net, *_ = _fit_linear(X, y, lam, dtype=torch.float32)
    ref = Lasso(alpha=lam / (2 * n), tol=1e-12, max_iter=100_000).fit(X, y)
    ours = net.fc1.weight.detach().double().numpy().ravel()
    np.testing.assert_array_equal(np.flatnonzero(ours), np.flatnonzero(ref.coef_))
    np.testing.assert_allclose(ours, ref.coef_, rtol=1e-4, atol=1e-4 * np.abs(ref.coef_).max())


def test_lambda_max_is_where_sklearn_returns_all_zeros(lasso_problem):
    X, y = lasso_problem
    n = X.shape[0]
    Xt, yt = torch.tensor(X), torch.tensor(y).unsqueeze(1)
    ours = lambda_max(mlp(X.shape[1], [], 1).double(), Xt, yt, task="regression")
    assert ours == pytest.approx(lasso_lambda_max(Xt, yt), rel=1e-12)
    # scikit-learn: zero at alpha_max, not zero just below it
    alpha_max = ours / (2 * n)
    assert np.count_nonzero(Lasso(alpha=alpha_max, tol=1e-12).fit(X, y).coef_) == 0
    assert np.count_nonzero(Lasso(alpha=alpha_max * (1 - 1e-6), tol=1e-14,
                                  max_iter=100_000).fit(X, y).coef_) > 0


def test_lambda_max_gives_all_zeros_and_slightly_less_does_not(lasso_problem):
    X, y = lasso_problem
    lmax = lasso_lambda_max(torch.tensor(X), torch.tensor(y))
    at, *_ = _fit_linear(X, y, lmax)
    below, *_ = _fit_linear(X, y, 0.99 * lmax)
    assert torch.count_nonzero(at.fc1.weight) == 0
    assert torch.count_nonzero(below.fc1.weight) > 0


def test_first_order_conditions_hold_at_convergence(lasso_problem):
    X, y = lasso_problem
    lam = 0.1 * lasso_lambda_max(torch.tensor(X), torch.tensor(y))
    net, Xt, yt, _ = _fit_linear(X, y, lam)
    report = characterize(net, Xt, yt, task="regression",
                          lambdas=resolve_lambdas(net, lam), tol=1e-3)
    layer = report["fc1"]
    assert report.all_ok, report.summary()
    assert layer.nnz + layer.n_zero == X.shape[1]
    assert 0 < layer.nnz < X.shape[1]
    assert report.bias_grad_max < 1e-6 * lam
    # the nonzeros' gradient magnitudes equal λ: they head the sorted list
    np.testing.assert_allclose(layer.gamma[: layer.nnz].numpy(), lam, rtol=1e-3)
    assert float(layer.gamma[layer.nnz]) < lam


def test_characterisation_flags_a_point_that_is_not_a_minimiser(lasso_problem):
    X, y = lasso_problem
    lam = 0.1 * lasso_lambda_max(torch.tensor(X), torch.tensor(y))
    net, Xt, yt, _ = _fit_linear(X, y, lam, epochs=2)
    report = characterize(net, Xt, yt, task="regression",
                          lambdas=resolve_lambdas(net, lam), tol=1e-3)
    assert not report.all_ok
    assert report.max_violation > 1e-3


def test_lambda_max_for_logistic_regression_zeroes_the_weights():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(300, 6, generator=g, dtype=torch.float64)
    y = (X[:, 0] - 0.5 * X[:, 1] > 0.3).long()
    net = mlp(6, [], 2, seed=0).double()
    lmax = lambda_max(net, X, y, task="classification")

    def nnz_at(lam):
        model = mlp(6, [], 2, seed=0).double()
        opt = make_optimizer(model, "sgd", lr=0.5, lambdas=resolve_lambdas(model, lam),
                             n_samples=300)
        train(model, X, y, opt, task="classification", epochs=3000, tol=1e-14)
        return int(torch.count_nonzero(model.fc1.weight))

    assert nnz_at(lmax * 1.001) == 0
    assert nnz_at(lmax * 0.9) > 0
