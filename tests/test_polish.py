"""The full-batch polish (l1sparse.polish) reaches a stationary point with a smooth activation."""

import pytest
import torch
from sklearn.datasets import load_diabetes

from l1sparse.characterize import stationarity
from l1sparse.models import mlp
from l1sparse.penalty import resolve_lambdas
from l1sparse.polish import polish
from l1sparse.train import make_optimizer, train


def _trained(activation):
    X, y = load_diabetes(return_X_y=True)
    y = (y - y.mean()) / y.std()
    Xt = torch.tensor(X, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.float32).unsqueeze(1)
    net = mlp(10, [16, 8], 1, activation=activation, seed=0)
    lam = resolve_lambdas(net, 0.5)
    opt = make_optimizer(net, "sgd", lr=0.05, lambdas=lam, n_samples=len(y), momentum=0.9)
    train(net, Xt, yt, opt, task="regression", epochs=100, batch_size=32,
          generator=torch.Generator().manual_seed(0))
    return net, Xt, yt, lam


def test_tanh_network_is_stationary_after_polish():
    net, X, y, lam = _trained("tanh")
    before = stationarity(net, X, y, task="regression", lambdas=lam)
    assert before.nonzeros_ok < 0.5  # mini-batch training alone is far from stationary
    result = polish(net, X, y, task="regression", lambdas=lam)
    after = stationarity(net, X, y, task="regression", lambdas=lam)
    assert after.nonzeros_ok >= 0.95 and after.zeros_ok >= 0.95
    assert result.converged and result.max_violation <= 1e-3
    assert result.objective_after < result.objective_before
    assert result.nnz_after == sum(l["nnz"] for l in after.layers)
    assert net.fc1.weight.dtype == torch.float32  # written back in the model's dtype


def test_relu_network_polish_is_reported_not_converged():
    # the fidelity is not differentiable at the kinks; L-BFGS-B stalls and says so
    net, X, y, lam = _trained("relu")
    result = polish(net, X, y, task="regression", lambdas=lam)
    assert result.objective_after <= result.objective_before
    assert not result.converged and result.max_violation > 1e-3
    assert set(result.as_dict()) >= {"converged", "max_violation", "iterations", "seconds"}


def test_polish_weighted_penalty_and_bad_input():
    net, X, y, lam = _trained("tanh")
    c = {name: torch.full_like(m.weight, 2.0) for name, m in
         [("fc1", net.fc1), ("fc2", net.fc2), ("fc3", net.fc3)]}
    polish(net, X, y, task="regression", lambdas=lam, weights=c)
    st = stationarity(net, X, y, task="regression", lambdas=lam, weights=c)
    assert st.nonzeros_ok >= 0.95 and st.zeros_ok >= 0.95
    # λ·c with c = 2 is λ' = 2λ with c = 1
    st2 = stationarity(net, X, y, task="regression", lambdas={k: 2 * v for k, v in lam.items()})
    assert st2.nonzeros_ok == st.nonzeros_ok
    with pytest.raises(ValueError, match=r"The 'max_iter' parameter must be a positive integer. "
                                         r"Got 0."):
        polish(net, X, y, task="regression", lambdas=lam, max_iter=0)
    with pytest.raises(ValueError, match=r"The 'lambdas' mapping has no value for the layers"):
        polish(net, X, y, task="regression", lambdas={"fc1": 1.0})


def test_polish_to_target_rechooses_lambda_until_the_count_is_met():
    """The count of the stationary point at half the training's λ is reachable; starting from
    the training's λ, the polish must find a λ whose polished network has it, and certify it."""
    import copy

    from l1sparse.polish import polish_to_target
    from l1sparse.sparsity import nnz_per_layer
    from l1sparse.targets import make_target

    net, X, y, lam = _trained("tanh")
    at_lam = copy.deepcopy(net)
    first = polish(at_lam, X, y, task="regression", lambdas=lam)
    probe = copy.deepcopy(net)
    polish(probe, X, y, task="regression", lambdas={k: v / 2 for k, v in lam.items()})
    k = sum(nnz_per_layer(probe).values())
    tol = max(2, round(0.05 * k))
    assert abs(first.nnz_after - k) > tol  # the training's own λ does not give it
    target = make_target(net, nnz=k, tol=tol)
    sel = polish_to_target(net, X, y, task="regression", target=target, lambdas=lam)
    assert sel.met and sel.solves >= 2 and target.met(nnz_per_layer(net))
    assert sel.nnz == nnz_per_layer(net)
    assert sel.history[0]["scale"] == 1.0 and sel.history[0]["nnz"] == first.nnz_after
    assert sel.lambdas["fc1"] < lam["fc1"]  # more nonzeros asked: λ went down
    st = stationarity(net, X, y, task="regression", lambdas=sel.lambdas)
    assert st.nonzeros_ok >= 0.95 and st.zeros_ok >= 0.95  # the certificate holds
    assert set(sel.as_dict()) >= {"lambdas", "met", "solves", "history", "converged"}


def test_polish_to_target_reports_a_miss_and_refuses_bad_input():
    from l1sparse.polish import polish_to_target
    from l1sparse.targets import make_target

    net, X, y, lam = _trained("tanh")
    target = make_target(net, nnz=150, tol=0)
    sel = polish_to_target(net, X, y, task="regression", target=target, lambdas=lam,
                           max_solves=1)
    assert not sel.met and sel.solves == 1 and len(sel.history) == 1
    assert sel.counts_line().startswith("x1.0 -> ")
    with pytest.raises(ValueError, match=r"The 'max_solves' parameter must be a positive"):
        polish_to_target(net, X, y, task="regression", target=target, lambdas=lam,
                         max_solves=0)
    with pytest.raises(ValueError, match=r"The 'layers_required' parameter must be in \[1, 1\]"):
        polish_to_target(net, X, y, task="regression", target=target, lambdas=lam,
                         layers_required=2)
