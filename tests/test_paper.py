"""The paper's own experiments (experiments/paper.py): the quick tier end to end, its records
and tables; the mg data set and the paper's networks."""

import json
import math

import pytest
import torch

from l1sparse.data import load_dataset, load_mg
from l1sparse.experiments.paper import PAPER_CASES, paper_cases, run_paper
from l1sparse.models import paper_cnn, paper_mlp
from l1sparse.penalty import layer_names


def test_mg_is_shipped_with_the_papers_split_and_infers_regression():
    data = load_dataset("mg")
    assert data.task == "regression" and data.name == "mg"
    assert data.X_train.shape == (1000, 6) and data.X_test.shape == (385, 6)
    assert data.y_train.shape == (1000, 1) and data.y_train.dtype == torch.float32
    assert float(data.X_train.abs().max()) <= 1.0 + 1e-6
    y = torch.cat([data.y_train, data.y_test])
    assert 0.41 < float(y.min()) < 0.42 and 1.31 < float(y.max()) < 1.32
    torch.testing.assert_close(load_mg().X_test, data.X_test)
    with pytest.raises(ValueError, match="for regression, not classification"):
        load_dataset("mg", task="classification")


def test_the_papers_networks_penalise_their_4_and_5_weights():
    mlp_net, cnn = paper_mlp(seed=0), paper_cnn(seed=0)
    assert layer_names(mlp_net) == ["fc1", "fc2", "fc3", "fc4"]
    assert layer_names(cnn) == ["conv1", "conv2", "conv3", "fc1", "fc2"]
    assert [m.weight.numel() for m in (cnn.conv1, cnn.conv2, cnn.conv3, cnn.fc1, cnn.fc2)] == [
        288, 18_432, 73_728, 589_824, 5_120]
    torch.testing.assert_close(paper_mlp(seed=0).fc2.weight, mlp_net.fc2.weight)


def test_the_full_tier_holds_the_papers_targets_tolerances_and_budgets():
    assert PAPER_CASES["mg"].target == 2000 and PAPER_CASES["mg"].rel_tol == 0.001
    assert PAPER_CASES["mg"].epochs_per_training == 50_000 and PAPER_CASES["mg"].batch_size is None
    assert PAPER_CASES["mg-layers"].target == (650, 1200, 1000, 45)
    assert PAPER_CASES["mg-layers"].layers_required == 3
    assert PAPER_CASES["cnn"].target == 50_000 and PAPER_CASES["cnn"].batch_size == 128
    assert PAPER_CASES["cnn-layers"].target == (250, 8000, 13000, 20000, 4200)
    assert PAPER_CASES["cnn-layers"].rel_tol == 0.1
    assert paper_cases("quick")["mg"].target == 2000  # the same targets at small budgets
    with pytest.raises(ValueError, match="'tier' parameter must be one of"):
        paper_cases("medium")
    with pytest.raises(ValueError, match="'cases' parameter must name cases among"):
        run_paper("quick", cases=["mnist"])


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    torch.set_num_threads(1)
    return out, run_paper("quick", out=out, machine="test")


def test_the_quick_tier_runs_all_four_cases_for_three_methods(quick):
    out, records = quick
    assert [(r["case"], r["method"]) for r in records] == [
        (c, m) for c in ("mg", "mg-layers", "cnn", "cnn-layers")
        for m in ("paper", "default", "gmp")]
    saved = json.loads((out / "records.json").read_text())
    assert len(saved["records"]) == 12 and saved["config"]["tier"] == "quick"
    text = (out / "paper.md").read_text()
    for case in ("mg", "mg-layers", "cnn", "cnn-layers"):
        assert f"## {case}:" in text
    assert "test MSE 0.0143" in text  # the authors' anchor beside the mg table
    for r in records:
        assert r["nnz_total"] == sum(r["nnz"].values())
        assert len(r["nnz"]) == (4 if r["case"].startswith("mg") else 5)
        assert math.isfinite(r["test_metric"]) and r["seconds"] > 0
        target = r["target"]
        if isinstance(target, tuple):  # the k-of-K rule of the case
            inside = sum(abs(c - t) <= r["rel_tol"] * t + 1e-9
                         for c, t in zip(r["nnz"].values(), target))
            assert r["met"] == (inside >= (r["layers_required"] or len(target)))
        else:
            assert r["met"] == (abs(r["nnz_total"] - target) <= r["rel_tol"] * target)


def test_the_quick_tier_compares_like_with_like(quick):
    _, records = quick
    by = {(r["case"], r["method"]): r for r in records}
    for case in ("mg", "mg-layers", "cnn", "cnn-layers"):
        default, gmp, paper = by[case, "default"], by[case, "gmp"], by[case, "paper"]
        # GMP at the default's count and (whole) epochs
        assert gmp["nnz_total"] == default["nnz_total"]
        assert gmp["epochs"] == math.ceil(default["epochs"] - 1e-9)
        # the paper rule: its first training at the paper's large λ per sample, both scales
        first = paper["history"][0]
        lam0 = {"mg": 1e-3, "mg-layers": 1e-3, "cnn": 1e-2, "cnn-layers": 1e-4}[case]
        assert first["lambda_mean_fc1"] == pytest.approx(lam0)
        assert first["lambda_fc1"] == pytest.approx(lam0 * paper["n_train"])
        assert paper["trainings"] == len(paper["history"])
        assert paper["epochs"] == pytest.approx(sum(h["epochs"] for h in paper["history"]))
    # the default meets the single targets exactly enough; mg keeps the full training set
    assert by["mg", "default"]["met"] and by["cnn", "default"]["met"]
    assert by["mg", "default"]["n_train"] == 1000 and by["mg", "default"]["n_test"] == 385
