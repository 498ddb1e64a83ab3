"""Held-out data in fit_sparse (issue 26): the split, the budget chosen on it, and "works"
judged on it."""

import copy
from types import SimpleNamespace

import pytest
import torch

from l1sparse import fit_sparse, mlp
from l1sparse.holdout import split_validation, trivial_metric
from l1sparse.select import _budget_search, budget_rungs, resolve_steps


def _regression(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 5, generator=g)
    y = (torch.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2] + 0.1 * torch.randn(n, generator=g))
    return X, ((y - y.mean()) / y.std()).view(-1, 1)


def _classes(n=240, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g)
    y = (X[:, 0] > 0).long() + (X[:, 1] > 1).long()  # three classes, the last one rare
    return X, y


# --------------------------------------------------------------------------- the split


def test_split_is_stratified_seeded_and_a_partition():
    X, y = _classes()
    Xt, yt, Xv, yv = split_validation(X, y, 0.2, task="classification", seed=3)
    assert Xt.shape[0] + Xv.shape[0] == X.shape[0]
    for c in range(3):  # each class gives round(0.2 n_c) samples
        n_c = int((y == c).sum())
        assert int((yv == c).sum()) == round(0.2 * n_c)
    rows = {tuple(r.tolist()) for r in torch.cat([Xt, Xv])}
    assert len(rows) == X.shape[0]  # disjoint, and together all of X
    again = split_validation(X, y, 0.2, task="classification", seed=3)
    assert torch.equal(again[2], Xv)
    other = split_validation(X, y, 0.2, task="classification", seed=4)
    assert not torch.equal(other[2], Xv)


def test_split_keeps_every_class_in_training():
    X = torch.arange(7.0).view(-1, 1)
    y = torch.tensor([0, 0, 0, 0, 0, 1, 2])  # classes 1 and 2 have one sample each
    _, yt, _, yv = split_validation(X, y, 0.5, task="classification", seed=0)
    assert set(yt.tolist()) == {0, 1, 2} and set(yv.tolist()) == {0}


def test_split_that_holds_nothing_out_is_a_value_error():
    with pytest.raises(ValueError, match="leaves no held-out sample"):
        split_validation(torch.zeros(2, 1), torch.zeros(2, 1), 0.2, task="regression", seed=0)


def test_trivial_predictor_known_answers():
    y = torch.tensor([[1.0], [2.0], [3.0], [6.0]])
    assert trivial_metric(y, "regression") == pytest.approx(3.5)  # the variance, 14/4
    # the training mean 0: the mean of y² = 50/4
    assert trivial_metric(y, "regression", reference=torch.zeros(5, 1)) == pytest.approx(12.5)
    # majority class of the reference (1), scored on y
    assert trivial_metric(torch.tensor([0, 0, 1]), "classification",
                          reference=torch.tensor([1, 1, 0])) == pytest.approx(1 / 3)


# --------------------------------------------------------------------------- the budget


def test_budget_rungs_double_up_to_the_default():
    assert budget_rungs(3) == [100, 200, 400, 800, 1600, 3000]
    assert budget_rungs(40) == [400, 800, 1600, 3000]
    assert budget_rungs(469) == [4690, 9380]
    assert resolve_steps(3) == 3000 and resolve_steps(469) == 9380  # unchanged


def test_budget_search_keeps_the_best_and_stops_after_one_worse():
    net = torch.nn.Linear(1, 1)
    metrics = {100: 0.5, 200: 0.4, 400: 0.45, 800: 0.1}  # 800 is never tried
    tried = []

    def run(total):
        tried.append(total)
        with torch.no_grad():
            net.weight.fill_(total)
        return SimpleNamespace(converged=True, seconds=1.0, validation={
            "metric": metrics[total], "loss": metrics[total], "trivial_metric": 1.0,
            "n_samples": 10})

    result = _budget_search(net, run, [100, 200, 400, 800], "regression")
    assert tried == [100, 200, 400]
    assert result.validation["metric"] == 0.4 and float(net.weight.detach()) == 200.0
    assert result.seconds == 3.0 and [b["steps"] for b in result.validation["budget"]] == tried


def test_budget_search_goes_on_through_ties_and_keeps_the_longer_run():
    net = torch.nn.Linear(1, 1)
    accuracy = {100: 0.9, 200: 0.95, 400: 0.95, 800: 0.95, 1600: 0.9}

    def run(total):
        with torch.no_grad():
            net.weight.fill_(total)
        return SimpleNamespace(converged=True, seconds=0.0, validation={
            "metric": accuracy[total], "loss": total, "trivial_metric": 0.5, "n_samples": 20})

    result = _budget_search(net, run, sorted(accuracy), "classification")
    assert [b["steps"] for b in result.validation["budget"]] == [100, 200, 400, 800, 1600]
    assert float(net.weight.detach()) == 800.0  # the longest of the tied best


def test_budget_search_prefers_a_run_that_meets_its_count():
    net = torch.nn.Linear(1, 1)

    def run(total):
        return SimpleNamespace(converged=total == 200, seconds=0.0, validation={
            "metric": 0.1 if total == 100 else 0.3, "loss": 0.0, "trivial_metric": 1.0,
            "n_samples": 10})

    assert _budget_search(net, run, [100, 200, 400], "regression").converged


# --------------------------------------------------------------------------- fit_sparse


def test_default_on_small_data_splits_searches_and_refits():
    X, y = _regression()
    net = mlp(5, [16], 1, seed=0)
    res = fit_sparse(net, X, y, task="regression", zero_fraction=0.8, seed=0)
    v = res.validation
    assert v["source"] == "split" and v["fraction"] == 0.2 and v["n_samples"] == 40
    steps = [b["steps"] for b in v["budget"]]
    assert steps[:2] == [100, 200] and len(steps) >= 2
    best = min(v["budget"], key=lambda b: b["metric"])
    assert v["metric"] == best["metric"]
    # the refit: the chosen length in passes (2 batches of 160, then of 200) on all the data
    assert v["refit"]["epochs"] == pytest.approx(best["steps"] / 2)
    assert res.steps == round(best["steps"] / 2 * 2)
    assert res.converged and res.works and v["metric"] < 0.9 * v["trivial_metric"]
    assert sum(res.nnz.values()) == round(0.2 * (5 * 16 + 16))  # the count is exact


def test_a_given_budget_keeps_all_the_data_unless_asked():
    X, y = _regression()
    res = fit_sparse(mlp(5, [16], 1, seed=0), X, y, task="regression", zero_fraction=0.8,
                     steps=300)
    assert res.validation is None and res.steps == 300
    res = fit_sparse(mlp(5, [16], 1, seed=0), X, y, task="regression", zero_fraction=0.8,
                     steps=300, validation_fraction=0.25)
    v = res.validation
    assert v["n_samples"] == 50 and "budget" not in v and res.steps == 300
    assert 255 < v["checkpoint_step"] <= 300  # after λ is held (85 %), met, best held out
    rows = [r.val_metric for r in res.history]
    assert all(r == r for r in rows[-5:])  # the held-out metric is in the history


def test_works_is_judged_on_held_out_data():
    X, y = _regression()
    g = torch.Generator().manual_seed(1)
    X_val = torch.randn(60, 5, generator=g)
    y_val = torch.randn(60, 1, generator=g) * 3  # unrelated to X: nothing generalises
    net = mlp(5, [16], 1, seed=0)
    res = fit_sparse(net, X, y, task="regression", zero_fraction=0.5, steps=400,
                     validation=(X_val, y_val))
    assert res.converged  # the count: met
    assert not res.works and "validation MSE" in res.warnings[0]
    # the same network judged on its training data works
    res_train = fit_sparse(mlp(5, [16], 1, seed=0), X, y, task="regression",
                           zero_fraction=0.5, steps=400)
    assert res_train.works


def test_classification_held_out_check_names_the_majority_class():
    X, y = _classes()
    X_val = torch.randn(50, 4)
    y_val = 1 - (X_val[:, 0] > 0).long()  # the opposite rule: accuracy near 0
    res = fit_sparse(mlp(4, [16], 3, seed=0), X, y, task="classification", zero_fraction=0.5,
                     steps=300, validation=(X_val, y_val))
    assert res.converged and not res.works
    assert "validation accuracy" in res.warnings[0] and "majority class" in res.warnings[0]


def test_resume_finishes_the_refit_exactly():
    X, y = _regression(120)
    saved = []
    net = mlp(5, [8], 1, seed=0)
    fit_sparse(net, X, y, task="regression", zero_fraction=0.5, seed=0,
               checkpoint=lambda p: saved.append(copy.deepcopy(p)))
    refit = [p for p in saved if not p["held_out"]]
    assert refit and all(p["held_out"] for p in saved[:-len(refit)])
    middle = refit[len(refit) // 2]
    again = mlp(5, [8], 1, seed=0)
    fit_sparse(again, X, y, task="regression", zero_fraction=0.5, seed=0, resume=middle)
    for a, b in zip(net.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_loaders_for_training_and_held_out_data():
    from torch.utils.data import DataLoader, TensorDataset

    X, y = _regression(160)
    train = DataLoader(TensorDataset(X[:120], y[:120]), batch_size=40, shuffle=False)
    held = DataLoader(TensorDataset(X[120:], y[120:]), batch_size=16)
    res = fit_sparse(mlp(5, [8], 1, seed=0), train, task="regression", zero_fraction=0.5,
                     validation=held)
    v = res.validation
    assert v["source"] == "given" and v["n_samples"] == 40 and "refit" not in v
    assert [b["steps"] for b in v["budget"]][:2] == [100, 200] and res.converged
    with pytest.raises(ValueError, match="cannot split a loader"):
        fit_sparse(mlp(5, [8], 1, seed=0), train, task="regression", zero_fraction=0.5,
                   validation_fraction=0.2)


def test_held_out_data_is_for_warm_mode_only():
    X, y = _regression(40)
    with pytest.raises(ValueError, match="held-out data .* is for mode='warm'"):
        fit_sparse(mlp(5, [4], 1, seed=0), X, y, task="regression", zero_fraction=0.5,
                   mode="retrain", validation_fraction=0.2)


@pytest.mark.parametrize("kwargs, message", [
    ({"validation_fraction": 1.0}, "'validation_fraction' parameter must be 'auto' or a number"),
    ({"validation_fraction": -0.1}, "'validation_fraction' parameter"),
    ({"validation_fraction": 0.2, "validation": (torch.zeros(3, 5), torch.zeros(3))},
     "either 'validation' or a 'validation_fraction'"),
    ({"validation": (torch.zeros(3, 4), torch.zeros(3))}, "X_val"),
    ({"validation": (torch.zeros(3, 5), torch.zeros(2))}, "X_val"),
    ({"validation": (torch.zeros(3, 5), torch.full((3,), float("nan")))}, "y_val"),
    ({"validation": (torch.zeros(3, 5),)}, "pair"),
])
def test_bad_validation_input_is_one_value_error(kwargs, message):
    X, y = _regression(40)
    with pytest.raises(ValueError, match=message):
        fit_sparse(mlp(5, [4], 1, seed=0), X, y, task="regression", zero_fraction=0.5,
                   steps=20, **kwargs)
