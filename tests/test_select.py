"""fit_sparse in its three modes: the retrain schemes exact in the convex case, every mode within
tolerance for networks."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import lars_path

from l1sparse.models import mlp
from l1sparse.select import fit_sparse, make_target


@pytest.fixture(scope="module")
def linear_problem():
    g = np.random.default_rng(0)
    n, p = 200, 20
    X = g.standard_normal((n, p))
    w = np.zeros(p)
    w[:8] = [3, -2, 1.5, 1, -0.5, 0.4, 0.3, -0.2]
    y = X @ w + 0.5 * g.standard_normal(n) + 1.0
    # LARS path of the centred problem (same as the Lasso with an intercept), on our λ scale
    alphas, _, coefs = lars_path(X - X.mean(0), y - y.mean(), method="lasso")
    knots = alphas * 2 * n
    support = ((coefs[:, :-1] + coefs[:, 1:]) / 2 != 0).sum(axis=0)  # on each segment
    return X, y, knots, support


def _linear(X, y):
    n = X.shape[0]
    Xt = torch.tensor(X, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.float32).unsqueeze(1)
    net = mlp(X.shape[1], [], 1, seed=0)
    lipschitz = 2 * np.linalg.norm(np.hstack([X, np.ones((n, 1))]), 2) ** 2 / n
    return net, Xt, yt, dict(task="regression", optimizer="sgd", lr=1 / lipschitz,
                             momentum=0.0, batch_size=None)


@pytest.mark.parametrize("k", [5])
def test_retrain_on_a_linear_model_lands_inside_the_lars_interval_of_k(linear_problem, k):
    """Each training runs to its budget (converged in the convex case), so the λ returned has
    exactly k nonzeros at the Lasso solution: it lies in a LARS interval with support k."""
    X, y, knots, support = linear_problem
    net, Xt, yt, kw = _linear(X, y)
    result = fit_sparse(net, Xt, yt, nnz=k, tol=0, mode="retrain", epochs=2000, **kw)
    assert result.converged
    assert int(torch.count_nonzero(net.fc1.weight)) == k == result.nnz["fc1"]
    intervals = [(knots[i + 1], knots[i]) for i in np.flatnonzero(support == k)]
    assert any(lo < result.lam < hi for lo, hi in intervals), (result.lam, intervals)


def test_paper_mode_on_a_linear_model_stops_on_the_count(linear_problem):
    X, y, *_ = linear_problem
    net, Xt, yt, kw = _linear(X, y)
    seen = []
    result = fit_sparse(net, Xt, yt, nnz=5, tol=0, mode="paper", epochs=3000,
                        callback=seen.append, **kw)
    assert result.converged and result.nnz["fc1"] == 5
    # every training recorded, in order, the bracketing ones first
    assert [r.iteration for r in result.history] == list(range(1, len(result.history) + 1))
    assert [r.iteration for r in seen] == [r.iteration for r in result.history]
    phases = [r.phase for r in result.history]
    assert phases[0] == "high"  # the large-λ end of the bracket first
    assert set(phases) <= {"high", "high+widen", "low", "low+widen", "update"}
    assert result.epochs_total == pytest.approx(sum(r.epochs for r in result.history))
    assert result.history[-1].epochs < 3000  # the last one stopped as the count entered


def test_not_converged_says_how_far_off(linear_problem):
    X, y, *_ = linear_problem
    net, Xt, yt, kw = _linear(X, y)
    # one training at λ/N = 1e3, far above λ_max: every weight is zero
    result = fit_sparse(net, Xt, yt, nnz=7, tol=0, mode="paper", epochs=500,
                        max_trainings=1, start=(1e3, 1e-7), **kw)
    assert not result.converged
    assert result.distance == [7.0]
    assert result.outer_iterations == 1


def _classification(n=2000, d=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    W = torch.randn(d, 4, generator=g)
    y = (X @ W + 0.3 * torch.randn(n, 4, generator=g)).argmax(1)
    return X, y


@pytest.mark.parametrize("mode", ["warm", "retrain"])
def test_network_global_target_of_90_percent_zeros_within_0_005(mode):
    X, y = _classification()
    net = mlp(20, [64, 32], 4, seed=0)
    result = fit_sparse(net, X, y, task="classification", zero_fraction=0.9, tol=0.005,
                        mode=mode, epochs=20, optimizer="adam", lr=3e-3, batch_size=64)
    total = sum(m.weight.numel() for m in (net.fc1, net.fc2, net.fc3))
    nnz = sum(int(torch.count_nonzero(m.weight)) for m in (net.fc1, net.fc2, net.fc3))
    assert result.converged
    assert abs((1 - nnz / total) - 0.9) <= 0.005
    assert result.target.attained(result.nnz) == pytest.approx(1 - nnz / total)
    accuracy = float((net(X).argmax(1) == y).float().mean())
    assert accuracy > 0.8  # chance is about 0.25


def test_network_per_layer_targets_met_within_each_layers_tolerance():
    X, y = _classification()
    net = mlp(20, [64, 32], 4, seed=0)
    targets = [0.9, 0.8, 0.5]
    result = fit_sparse(net, X, y, task="classification", layer_zero_fraction=targets,
                        tol=0.02, mode="warm", epochs=20, optimizer="adam", lr=3e-3, batch_size=64)
    assert result.converged
    assert isinstance(result.lam, list) and len(result.lam) == 3
    for layer, target in zip((net.fc1, net.fc2, net.fc3), targets):
        zero = 1 - int(torch.count_nonzero(layer.weight)) / layer.weight.numel()
        assert abs(zero - target) <= 0.02


@pytest.mark.parametrize("kwargs,match", [
    ({"zero_fraction": 1.5}, r"'zero_fraction' parameter must be in \[0, 1\). Got 1.5"),
    ({"zero_fraction": -0.1}, "'zero_fraction'"),
    ({"nnz": 10_000}, r"'nnz' parameter must be an integer in \[0, 3456\]"),
    ({"nnz": 2.5}, "'nnz'"),
    ({"layer_zero_fraction": [0.9, 0.9]}, "one value per penalised layer.*Got 2"),
    ({"layer_nnz": [1, 2, 99_999]}, r"layer_nnz\['fc3'\]"),
    ({"zero_fraction": 0.9, "nnz": 5}, "exactly one target"),
    ({}, "exactly one target"),
    ({"zero_fraction": 0.9, "tol": 1.0}, "'tol'"),
    ({"nnz": 5, "tol": -1}, "'tol'"),
])
def test_bad_targets_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_target(mlp(20, [64, 32], 4), **kwargs)


def test_bad_mode_raises():
    X, y = _classification(n=64)
    net = mlp(20, [8], 4)
    with pytest.raises(ValueError, match="'mode'"):
        fit_sparse(net, X, y, task="classification", zero_fraction=0.5, mode="fast")


def test_network_target_with_the_default_optimizer():
    # the defaults: proximal SGD with momentum 0.9, lr 0.1, warm mode
    X, y = _classification()
    net = mlp(20, [64, 32], 4, seed=0)
    result = fit_sparse(net, X, y, task="classification", zero_fraction=0.9, tol=0.005,
                        epochs=20, batch_size=64)
    assert result.converged
    assert abs(result.target.attained(result.nnz) - 0.9) <= 0.005
    assert float((net(X).argmax(1) == y).float().mean()) > 0.8
