"""The parameter-choice algorithms: exact in the convex case, within tolerance for networks."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import lars_path

from l1sparse.models import mlp
from l1sparse.select import TrainingSolver, fit_sparse, make_target, select_lambda


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


def _linear_solver(X, y):
    n = X.shape[0]
    Xt, yt = torch.tensor(X), torch.tensor(y).unsqueeze(1)
    net = mlp(X.shape[1], [], 1, seed=0).double()
    lipschitz = 2 * np.linalg.norm(np.hstack([X, np.ones((n, 1))]), 2) ** 2 / n
    return net, TrainingSolver(net, Xt, yt, task="regression", optimizer="sgd", lr=1 / lipschitz,
                               batch_size=None, tol=1e-13)


@pytest.mark.parametrize("k", [1, 3, 5, 8, 12])
@pytest.mark.parametrize("mode", ["retrain", "warm"])
def test_convex_case_hits_every_support_size_exactly_inside_the_lars_interval(
        linear_problem, k, mode):
    X, y, knots, support = linear_problem
    net, solver = _linear_solver(X, y)
    result = select_lambda(solver, make_target(net, nnz=k, tol=0), mode=mode, epochs=20000,
                           warm_chunk=20000, refine=3, max_outer=40)
    assert result.converged
    assert int(torch.count_nonzero(net.fc1.weight)) == k == result.nnz["fc1"]
    lam = result.lam
    intervals = [(knots[i + 1], knots[i]) for i in np.flatnonzero(support == k)]
    inside = [(lo, hi) for lo, hi in intervals if lo < lam < hi]
    assert inside, f"λ={lam} is in none of the intervals with {k} nonzeros: {intervals}"
    lo, hi = inside[0]
    if mode == "retrain":  # refined: well inside, not at a knot
        position = np.log(lam / lo) / np.log(hi / lo)
        assert 0.1 < position < 0.9, f"λ={lam} sits at {position:.2f} of ({lo}, {hi})"


def test_every_outer_iteration_is_recorded(linear_problem):
    X, y, *_ = linear_problem
    net, solver = _linear_solver(X, y)
    seen = []
    result = select_lambda(solver, make_target(net, nnz=5, tol=0), mode="retrain",
                           epochs=20000, callback=seen.append)
    assert [r.iteration for r in result.history] == list(range(1, len(result.history) + 1))
    assert seen == result.history
    assert all(r.lambdas["fc1"] > 0 and r.epochs > 0 for r in result.history)
    assert result.epochs_total == sum(r.epochs for r in result.history)


def test_the_first_lambda_is_a_factor_of_the_first_order_guess(linear_problem):
    X, y, *_ = linear_problem
    first = {}
    for mode, factor in (("retrain", None), ("warm", None), ("warm", 0.5)):
        net, solver = _linear_solver(X, y)
        result = select_lambda(solver, make_target(net, nnz=5, tol=0), mode=mode, epochs=200,
                               max_outer=1, lam_init_factor=factor)
        first[mode, factor] = result.history[0].lambdas["fc1"]
    assert solver.lam_init_factor == 1.0  # proximal SGD without momentum: the guess itself
    assert first["warm", None] == pytest.approx(first["retrain", None], rel=1e-12)
    assert first["warm", 0.5] == pytest.approx(0.5 * first["retrain", None], rel=1e-12)
    # the solver's own factor is what select_lambda uses: proximal SGD with momentum 0.9 starts
    # at a tenth of the same first-order guess
    net = mlp(X.shape[1], [], 1, seed=0).double()
    momentum = TrainingSolver(net, torch.tensor(X), torch.tensor(y).unsqueeze(1),
                              task="regression", optimizer="sgd", lr=0.01, momentum=0.9,
                              batch_size=None)
    assert momentum.lam_init_factor == pytest.approx(0.1)
    result = select_lambda(momentum, make_target(net, nnz=5, tol=0), mode="warm", epochs=20,
                           max_outer=1)
    assert result.history[0].lambdas["fc1"] == pytest.approx(0.1 * first["retrain", None],
                                                             rel=1e-12)
    net, solver = _linear_solver(X, y)
    with pytest.raises(ValueError, match="'lam_init_factor'"):
        select_lambda(solver, make_target(net, nnz=5), lam_init_factor=0.0)


def test_not_converged_says_how_far_off(linear_problem):
    X, y, *_ = linear_problem
    net, solver = _linear_solver(X, y)
    result = select_lambda(solver, make_target(net, nnz=7, tol=0), mode="retrain",
                           epochs=20000, max_outer=1, lam_init={"fc1": 1e5})
    assert not result.converged
    assert result.distance == [7.0]  # λ = 1e5 > λ_max: all zero
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


def test_gradient_subsample_is_the_subset_gradient_scaled_to_the_summed_loss():
    from l1sparse.characterize import full_gradient

    X, y = _classification(n=2000)
    net = mlp(20, [16], 4, seed=0)
    lam = {"fc1": 1.0, "fc2": 1.0}
    sub = TrainingSolver(net, X, y, task="classification", batch_size=64, grad_samples=500)
    report = sub.characterize(lam)
    idx = sub._grad_idx
    assert len(set(idx.tolist())) == 500  # 500 distinct samples
    expected = full_gradient(net, X[idx], y[idx], task="classification")
    for name in ("fc1", "fc2"):
        torch.testing.assert_close(
            report[name].gamma, (expected.weights[name].abs() * 2000 / 500).flatten()
            .sort(descending=True).values, rtol=1e-5, atol=1e-5)
    full = TrainingSolver(net, X, y, task="classification", batch_size=64).characterize(lam)
    assert report.loss == pytest.approx(full.loss, rel=0.15)  # same scale as the full sum
    with pytest.raises(ValueError, match="'grad_samples'"):
        TrainingSolver(net, X, y, task="classification", grad_samples=0)
