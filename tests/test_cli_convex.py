"""``l1sparse fit --hidden ""``: the certified convex selection behind the command line."""

import json

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import lars_path

from l1sparse.cli import main
from l1sparse.export import load


@pytest.fixture
def diabetes_file(tmp_path):
    X, y = load_diabetes(return_X_y=True, scaled=False)
    path = tmp_path / "diabetes.npz"
    np.savez(path, X_train=X, y_train=y)
    return path, X, y


@pytest.mark.parametrize("k", [3, 7])
def test_fit_linear_is_certified_and_inside_the_lars_interval(tmp_path, diabetes_file, k):
    path, X, y = diabetes_file
    out = tmp_path / f"run{k}"
    rc = main(["fit", "--data", str(path), "--task", "regression", "--hidden", "",
               "--target-nnz", str(k), "--tol", "0", "--out", str(out), "--quiet"])
    assert rc == 0
    res = json.loads((out / "result.json").read_text())
    assert res["nnz"] == k and res["converged"] is True
    n = X.shape[0]
    alphas, _, coefs = lars_path(X - X.mean(0), y - y.mean(), method="lasso")
    inside = [i for i in range(len(alphas) - 1)
              if 2 * n * alphas[i + 1] < res["lambda"] < 2 * n * alphas[i]]
    assert len(inside) == 1
    i = inside[0]
    assert np.count_nonzero(coefs[:, i] + coefs[:, i + 1]) == k
    assert res["convex"]["certificate"]["certified"] is True
    assert res["convex"]["interval_exact"] is True
    st = res["stationarity"]
    assert st["nonzeros_ok"] == 1.0 and st["zeros_ok"] == 1.0 and st["gradient"] == "full-data"
    model = load(out / "model.safetensors")
    assert int((model.fc1.weight != 0).sum()) == k  # the exported model is the certified one


def test_fit_linear_classifier_and_stationarity_line(tmp_path, capsys):
    X, y = load_iris(return_X_y=True)
    path = tmp_path / "iris.npz"
    np.savez(path, X_train=X, y_train=y)
    rc = main(["fit", "--data", str(path), "--task", "classification", "--hidden", "",
               "--target-nnz", "4", "--tol", "0", "--out", str(tmp_path / "o")])
    assert rc == 0
    err = capsys.readouterr().err
    assert "stationarity (tol 0.05, full-data gradient): nonzeros ok 100.0 %, zeros ok 100.0 %" \
        in err
    res = json.loads((tmp_path / "o" / "result.json").read_text())
    assert res["nnz"] == 4 and res["convex"]["interval_exact"] is False
    lo, hi = res["convex"]["interval"]
    assert lo < res["lambda"] < hi
