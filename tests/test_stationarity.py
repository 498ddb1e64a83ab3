"""The stationarity certificate (characterize.stationarity) on known answers."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Lasso

from l1sparse.characterize import full_gradient, stationarity
from l1sparse.models import mlp


def _data():
    X, y = load_diabetes(return_X_y=True, scaled=False)
    return X, y, torch.tensor(X), torch.tensor(y).unsqueeze(1)


def _linear(coef, intercept):
    net = mlp(len(coef), [], 1).double()
    with torch.no_grad():
        net.fc1.weight.copy_(torch.tensor(coef).reshape(1, -1))
        net.fc1.bias.fill_(float(intercept))
    return net


def test_certified_lasso_solution_meets_every_condition():
    X, y, Xt, yt = _data()
    n = len(y)
    lam = 4000.0
    ref = Lasso(alpha=lam / (2 * n), tol=1e-12, max_iter=10**6).fit(X, y)
    assert 0 < np.count_nonzero(ref.coef_) < X.shape[1]
    st = stationarity(_linear(ref.coef_, ref.intercept_), Xt, yt, task="regression",
                      lambdas={"fc1": lam})
    assert st.nonzeros_ok == 1.0 and st.zeros_ok == 1.0
    assert st.median_residual < 1e-4 and st.max_bias_gradient < 1e-4 * lam
    assert st.tol == 0.05 and st.gradient == "full-data"
    d = st.as_dict()
    assert d["layers"][0]["name"] == "fc1" and d["layers"][0]["nnz"] == np.count_nonzero(ref.coef_)
    assert set(d) >= {"nonzeros_ok", "zeros_ok", "median_residual", "tol", "max_bias_gradient",
                      "gradient", "layers"}
    assert "nonzeros ok 100.0 %" in st.line()


def test_perturbed_solution_fails_the_conditions():
    X, y, Xt, yt = _data()
    n = len(y)
    lam = 4000.0
    ref = Lasso(alpha=lam / (2 * n), tol=1e-12, max_iter=10**6).fit(X, y)
    coef = ref.coef_.copy()
    coef[coef != 0] *= 1.2  # every nonzero off its optimum
    st = stationarity(_linear(coef, ref.intercept_), Xt, yt, task="regression",
                      lambdas={"fc1": lam})
    assert st.nonzeros_ok < 0.5
    # the same solution checked against a λ ten times smaller: the zeros fail
    st = stationarity(_linear(ref.coef_, ref.intercept_), Xt, yt, task="regression",
                      lambdas={"fc1": lam / 10})
    assert st.zeros_ok < 1.0 and st.nonzeros_ok == 0.0


def test_weighted_lasso_meets_the_weighted_conditions_only():
    # λ Σ c_i |w_i| is the Lasso on the columns X_i / c_i, with w_i = v_i / c_i
    X, y, Xt, yt = _data()
    n = len(y)
    lam = 4000.0
    c = np.linspace(0.3, 3.0, X.shape[1])
    ref = Lasso(alpha=lam / (2 * n), tol=1e-12, max_iter=10**6).fit(X / c, y)
    coef = ref.coef_ / c
    net = _linear(coef, ref.intercept_)
    weights = {"fc1": torch.tensor(c).reshape(1, -1)}
    st = stationarity(net, Xt, yt, task="regression", lambdas={"fc1": lam}, weights=weights)
    assert st.nonzeros_ok == 1.0 and st.zeros_ok == 1.0
    plain = stationarity(net, Xt, yt, task="regression", lambdas={"fc1": lam})
    assert plain.nonzeros_ok < 1.0 or plain.zeros_ok < 1.0
    assert plain.nonzeros_ok < 0.5


def test_given_gradient_and_its_source_and_per_layer_rows():
    torch.manual_seed(0)
    X = torch.randn(50, 3)
    y = torch.randint(0, 3, (50,))
    net = mlp(3, [4], 3, seed=0)
    with torch.no_grad():
        net.fc1.weight[0].zero_()
    grad = full_gradient(net, X, y, task="classification")
    st = stationarity(net, None, None, task="classification", lambdas={"fc1": 1.0, "fc2": 2.0},
                      gradient=grad, gradient_source="estimated")
    assert st.gradient == "estimated"
    assert [l["name"] for l in st.layers] == ["fc1", "fc2"]
    assert st.layers[0]["n_zero"] == 3 and st.layers[1]["lambda"] == 2.0
    assert 0.0 <= st.nonzeros_ok <= 1.0


@pytest.mark.parametrize("kwargs, message", [
    ({"tol": -0.1}, r"The 'tol' parameter must be a finite number >= 0. Got -0.1."),
    ({"gradient_source": "sampled"},
     r"The 'gradient_source' parameter must be one of \['full-data', 'estimated'\]. "
     r"Got 'sampled'."),
    ({"lambdas": {}}, r"The 'lambdas' mapping has no value for the layers \['fc1'\]."),
    ({"weights": {"fc1": torch.ones(3)}},
     r"The penalty weights of layer 'fc1' must have the shape \(1, 10\). Got \(3,\)."),
])
def test_bad_input(kwargs, message):
    X, y, Xt, yt = _data()
    args = {"task": "regression", "lambdas": {"fc1": 1.0}, **kwargs}
    with pytest.raises(ValueError, match=message):
        stationarity(_linear(np.zeros(10), 0.0), Xt, yt, **args)
