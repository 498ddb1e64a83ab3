import pytest
import torch

from l1sparse.characterize import lambda_max
from l1sparse.models import build_model, mlp
from l1sparse.penalty import (
    lambda_per_sample,
    lambda_summed,
    layer_names,
    map_lambda,
    penalty_value,
    resolve_lambdas,
)
from l1sparse.sparsity import sparsity
from l1sparse.train import DivergenceError, make_optimizer, train


def test_layers_are_named_and_biases_are_not_penalised():
    net = mlp(784, [300, 100], 10)
    assert layer_names(net) == ["fc1", "fc2", "fc3"]
    report = sparsity(net)
    assert report.total == 784 * 300 + 300 * 100 + 100 * 10  # weights only, no biases
    assert report.nnz == report.total


def test_lambdas_by_index_name_list_and_default():
    net = mlp(4, [8, 8], 2)
    assert resolve_lambdas(net, 2.0) == {"fc1": 2.0, "fc2": 2.0, "fc3": 2.0}
    assert resolve_lambdas(net, layer_lam=[1, 2, 3]) == {"fc1": 1.0, "fc2": 2.0, "fc3": 3.0}
    assert resolve_lambdas(net, 1.0, layer_lam={-1: 5.0, "fc1": 0.5}) == {
        "fc1": 0.5, "fc2": 1.0, "fc3": 5.0}


@pytest.mark.parametrize("kwargs,match", [
    ({"lam": -1.0}, "'lam'.*>= 0"),
    ({"lam": float("nan")}, "'lam'"),
    ({"layer_lam": [1.0, 2.0]}, "'layer_lam'.*one value per penalised layer.*Got 2"),
    ({"layer_lam": {"fc9": 1.0}}, "'layer_lam'.*unknown layer 'fc9'"),
    ({"layer_lam": {7: 1.0}}, "'layer_lam'.*index 7"),
    ({"layer_lam": [1.0, -2.0, 1.0]}, r"layer_lam\['fc2'\]"),
    ({"layer_lam": "abc"}, "'layer_lam'"),
])
def test_bad_lambdas_raise_value_error_naming_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resolve_lambdas(mlp(4, [8, 8], 2), **kwargs)


def test_lambda_scales_and_map_estimate():
    assert lambda_per_sample(50.0, 100) == 0.5
    assert lambda_summed(0.5, 100) == 50.0
    assert map_lambda(0.5, 0.25) == pytest.approx(2.0)  # 2 v² / s
    assert map_lambda(1.0, [0.5, 2.0]) == [4.0, 1.0]
    with pytest.raises(ValueError, match="'laplace_scale'"):
        map_lambda(1.0, 0.0)
    with pytest.raises(ValueError, match="'n_samples'"):
        lambda_per_sample(1.0, 0)


def test_sklearn_alpha_correspondence_for_the_linear_model():
    # λ (summed scale) = 2·N·α for the squared loss
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(50, 3, generator=g), torch.randn(50, 1, generator=g)
    net = mlp(3, [], 1)
    assert lambda_max(net, X, y, task="regression") == pytest.approx(
        2 * 50 * float((X.T @ (y - y.mean())).abs().max()) / 50, rel=1e-5)


def test_model_config_rebuilds_the_same_architecture():
    net = mlp(5, [7, 3], 2, activation="tanh", seed=1)
    clone = build_model(net.config)
    clone.load_state_dict(net.state_dict())
    x = torch.randn(4, 5)
    torch.testing.assert_close(clone(x), net(x))
    with pytest.raises(ValueError, match="'activation'"):
        mlp(3, [2], 1, activation="swish")


def _regression(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 3, generator=g) * 2 - 1
    y = torch.sin(3 * X[:, :1]) + X[:, 1:2] ** 2
    return X, y


def test_minibatch_training_records_history_and_reduces_the_objective():
    X, y = _regression()
    net = mlp(3, [16], 1, seed=0)
    lambdas = resolve_lambdas(net, 0.5)
    opt = make_optimizer(net, "adam", lr=1e-2, lambdas=lambdas, n_samples=len(X))
    result = train(net, X, y, opt, task="regression", epochs=30, batch_size=32,
                   generator=torch.Generator().manual_seed(0))
    assert result.epochs == 30 and result.stopped == "max_epochs"
    first, last = result.history[0], result.history[-1]
    assert last.objective < 0.5 * first.objective
    assert last.penalty == pytest.approx(penalty_value(net, lambdas), rel=1e-6)
    assert last.nnz == {"fc1": int(torch.count_nonzero(net.fc1.weight)),
                        "fc2": int(torch.count_nonzero(net.fc2.weight))}


def test_training_is_deterministic_given_the_generator():
    X, y = _regression()
    outs = []
    for _ in range(2):
        net = mlp(3, [16], 1, seed=0)
        opt = make_optimizer(net, "sgd", lr=0.05, lambdas=resolve_lambdas(net, 1.0),
                             n_samples=len(X), momentum=0.9)
        train(net, X, y, opt, task="regression", epochs=3, batch_size=16,
              generator=torch.Generator().manual_seed(7))
        outs.append(torch.cat([p.flatten() for p in net.parameters()]))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_relative_change_stopping():
    X, y = _regression()
    net = mlp(3, [], 1, seed=0)
    opt = make_optimizer(net, "sgd", lr=0.1, lambdas=resolve_lambdas(net, 1.0), n_samples=len(X))
    result = train(net, X, y, opt, task="regression", epochs=10_000, tol=1e-8)
    assert result.stopped == "converged" and result.epochs < 10_000


def test_divergence_is_caught_and_no_nan_weight_is_left():
    X, y = _regression()
    net = mlp(3, [16], 1, seed=0)
    opt = make_optimizer(net, "sgd", lr=1e6, lambdas=resolve_lambdas(net, 0.0), n_samples=len(X))
    with pytest.raises(DivergenceError, match="smaller learning rate"):
        train(net, X, y, opt, task="regression", epochs=50)
    assert all(bool(torch.isfinite(p).all()) for p in net.parameters())


@pytest.mark.parametrize("kwargs,match", [({"epochs": -1}, "'epochs'"),
                                          ({"epochs": 1, "batch_size": 0}, "'batch_size'"),
                                          ({"epochs": 1, "task": "ranking"}, "'task'")])
def test_bad_training_arguments(kwargs, match):
    X, y = _regression()
    net = mlp(3, [], 1)
    opt = make_optimizer(net, "sgd", lr=0.1, lambdas=resolve_lambdas(net, 0.0), n_samples=len(X))
    with pytest.raises(ValueError, match=match):
        train(net, X, y, opt, **{"task": "regression", **kwargs})
    with pytest.raises(ValueError, match="'optimizer'"):
        make_optimizer(net, "lbfgs", lr=0.1, lambdas={}, n_samples=10)


def test_debias_keeps_the_support_and_lowers_the_loss():
    from l1sparse.losses import fidelity
    from l1sparse.train import debias

    X, y = _regression()
    net = mlp(3, [32], 1, seed=0)
    opt = make_optimizer(net, "adam", lr=1e-2, lambdas=resolve_lambdas(net, 20.0),
                         n_samples=len(X))
    train(net, X, y, opt, task="regression", epochs=40, batch_size=32,
          generator=torch.Generator().manual_seed(0))
    support = {n: (m.weight != 0).clone() for n, m in (("fc1", net.fc1), ("fc2", net.fc2))}
    assert 0 < int(support["fc1"].sum()) < support["fc1"].numel()
    before = fidelity(net(X), y, "regression").item()
    debias(net, X, y, task="regression", epochs=20, lr=1e-2, batch_size=32,
           generator=torch.Generator().manual_seed(0))
    after = fidelity(net(X), y, "regression").item()
    for name, m in (("fc1", net.fc1), ("fc2", net.fc2)):
        assert torch.equal(m.weight != 0, support[name])
    assert after < before
