"""The retrain schemes (retrain.py): full trainings from the same start, the paper's rule and the
sorted rule, stop on entering the tolerance, bracketing, per-layer k-of-K targets."""

import copy

import pytest
import torch

from l1sparse.models import mlp
from l1sparse.retrain import BracketError, retrain_select
from l1sparse.select import SelectionResult, fit_sparse
from l1sparse.train import make_optimizer, train_steps


def _regression(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, generator=g)
    y = X[:, :1] - 0.5 * X[:, 1:2] + 0.1 * torch.randn(n, 1, generator=g)
    return X, y


@pytest.mark.parametrize("rule", ["paper", "sorted"])
def test_a_tiny_regression_reaches_the_target_count_within_the_tolerance(rule):
    X, y = _regression()
    net = mlp(3, [8], 1, seed=0)
    # every training to its budget, so that the update rule (not the stop) finds the count
    res = retrain_select(net, X, y, task="regression", nnz=10, tol=1, rule=rule,
                         epochs_per_training=300, max_trainings=12, stop_on_entry=False,
                         start=(1e-1, 1e-7))
    assert res.converged
    nnz = sum(int(torch.count_nonzero(m.weight)) for m in (net.fc1, net.fc2))
    assert abs(nnz - 10) <= 1 and nnz == sum(res.nnz.values()) == res.history[-1].nnz_total
    assert res.trainings == len(res.history) <= 12
    assert all(r.epochs == 300 and r.stopped == "budget" for r in res.history)
    assert res.epochs_total == 300 * res.trainings
    for r in res.history:  # both scales: summed = N · per sample
        for name in r.lambdas:
            assert r.lambdas[name] == pytest.approx(64 * r.lambdas_mean[name])
    if rule == "paper":  # two bracketing trainings at the given λ per sample, then updates
        phases = [r.phase for r in res.history]
        assert phases[:2] == ["high", "low"] and set(phases[2:]) == {"update"}
        assert [r.lambdas_mean["fc1"] for r in res.history[:2]] == pytest.approx([1e-1, 1e-7])
        assert res.history[0].nnz_total < 10 < res.history[1].nnz_total
        # every update lies strictly inside the bracket of the runs before it
        for k in range(2, res.trainings):
            lam, before = res.history[k].lambdas_mean["fc1"], res.history[:k]
            below = max(r.lambdas_mean["fc1"] for r in before if r.nnz_total >= 10)
            above = min(r.lambdas_mean["fc1"] for r in before if r.nnz_total <= 10)
            assert below < lam < above


def test_a_training_stops_as_soon_as_the_count_enters_the_tolerance():
    X, y = _regression()
    net = mlp(3, [8], 1, seed=0)
    res = retrain_select(net, X, y, task="regression", nnz=10, tol=1,
                         epochs_per_training=300, start=(1e-1, 1e-7))
    last = res.history[-1]
    assert res.converged and last.met and last.stopped == "tolerance" and last.epochs < 300
    assert abs(last.nnz_total - 10) <= 1


def test_the_returned_lambda_retrained_from_the_same_start_gives_the_same_network():
    X, y = _regression()
    net = mlp(3, [8], 1, seed=0)
    start = copy.deepcopy(net.state_dict())
    res = retrain_select(net, X, y, task="regression", nnz=10, tol=1, stop_on_entry=False,
                         epochs_per_training=300, max_trainings=12, start=(1e-1, 1e-7))
    steps = round(res.history[-1].epochs)
    again = mlp(3, [8], 1)
    again.load_state_dict(start)
    opt = make_optimizer(again, "sgd", lr=0.1, lambdas=res.lambdas, n_samples=64)
    train_steps(again, (X, y), opt, task="regression", steps=steps, batch_size=None)
    for a, b in zip(again.parameters(), net.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_per_layer_targets_are_met_when_k_of_the_k_layers_are_within_their_relative_tol():
    X, y = _regression()
    net = mlp(3, [8, 8], 1, seed=0)
    res = retrain_select(net, X, y, task="regression", layer_nnz=[12, 30, 5], rel_tol=0.2,
                         layers_required=2, epochs_per_training=300, max_trainings=15)
    assert res.converged and res.layers_required == 2
    inside = [abs(res.nnz[n] - t) <= 0.2 * t for n, t in zip(["fc1", "fc2", "fc3"], [12, 30, 5])]
    assert sum(inside) >= 2
    assert [s.tol for s in res.target.scopes] == pytest.approx([2.4, 6.0, 1.0])


def test_a_target_that_cannot_be_bracketed_stops_with_one_line_naming_the_counts():
    X, y = _regression()
    net = mlp(3, [8], 1, seed=0)
    with pytest.raises(BracketError) as err:
        retrain_select(net, X, y, task="regression", nnz=5, tol=0, epochs_per_training=20,
                       start=(1e-9, 1e-10), widen=10, max_widen=1)
    text = str(err.value)
    assert "\n" not in text
    assert "Cannot bracket the target 5 nonzeros exactly" in text
    assert "high-lambda training is not sparse enough after 1 widenings by 10x" in text
    assert "lambda/N 1e-09 -> 32; lambda/N 1e-08 -> 32" in text
    assert [r.phase for r in err.value.history] == ["high", "high+widen"]


def test_bad_input_is_refused_naming_the_problem():
    X, y = _regression()
    net = mlp(3, [8, 8], 1, seed=0)
    kw = dict(task="regression", epochs_per_training=10)
    with pytest.raises(ValueError, match=r"one value per penalised layer \(3: \['fc1', 'fc2', 'fc3'\]\)"):
        retrain_select(net, X, y, layer_nnz=[3, 4], **kw)
    with pytest.raises(ValueError, match=r"unknown: \['fc9'\]"):
        retrain_select(net, X, y, layer_nnz={"fc1": 3, "fc2": 4, "fc9": 1}, **kw)
    with pytest.raises(ValueError, match="'layers_required' parameter must be an integer in"):
        retrain_select(net, X, y, layer_nnz=[3, 4, 1], layers_required=4, **kw)
    with pytest.raises(ValueError, match="'rule' parameter must be one of"):
        retrain_select(net, X, y, nnz=3, rule="median", **kw)
    with pytest.raises(ValueError, match="'start' parameter"):
        retrain_select(net, X, y, nnz=3, start=(1e-7, 1e-3), **kw)
    with pytest.raises(ValueError, match="'epochs_per_training' parameter"):
        retrain_select(net, X, y, nnz=3, task="regression", epochs_per_training=0)


def test_fit_sparse_paper_mode_returns_a_selection_from_the_retrain_engine():
    X, y = _regression()
    net = mlp(3, [8], 1, seed=0)
    res = fit_sparse(net, X, y, task="regression", nnz=10, tol=1, mode="paper",
                     batch_size=None, epochs=300, max_trainings=12, start=(1e-1, 1e-7))
    assert isinstance(res, SelectionResult) and res.converged and res.penalty == "l1"
    assert res.history[0].phase == "high" and res.outer_iterations == len(res.history)
    with pytest.raises(ValueError, match="mode='paper' retrains with plain l1"):
        fit_sparse(net, X, y, task="regression", nnz=10, mode="paper", penalty="reweighted")


def _retrain_on_rank(rank, world, port, path):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        X, y = _regression()
        res = retrain_select(mlp(3, [8], 1, seed=0), X, y, task="regression", nnz=10, tol=1,
                             epochs_per_training=50, max_trainings=4, stop_on_entry=False,
                             start=(1e-1, 1e-7), shard=(rank, world))
        if rank == 0:
            torch.save([(r.lambdas["fc1"], r.nnz_total) for r in res.history], path)
    finally:
        dist.destroy_process_group()


def test_two_data_parallel_ranks_take_the_same_decisions_as_one_process(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "history.pt"
    mp.spawn(_retrain_on_rank, args=(2, port, str(path)), nprocs=2, join=True)
    two = torch.load(path, weights_only=True)
    X, y = _regression()
    one = retrain_select(mlp(3, [8], 1, seed=0), X, y, task="regression", nnz=10, tol=1,
                         epochs_per_training=50, max_trainings=4, stop_on_entry=False,
                         start=(1e-1, 1e-7))
    assert [c for _, c in two] == [r.nnz_total for r in one.history]
    assert [lam for lam, _ in two] == pytest.approx([r.lambdas["fc1"] for r in one.history],
                                                    rel=1e-3)  # float32 sums in another order


@pytest.mark.parametrize("rule", ["paper", "sorted"])
def test_a_selection_resumed_from_a_checkpoint_ends_as_an_uninterrupted_one(rule):
    X, y = _regression()
    kw = dict(task="regression", nnz=10, tol=1, rule=rule, epochs_per_training=150,
              max_trainings=8, stop_on_entry=False, start=(1e-1, 1e-7))
    saved = []
    whole = retrain_select(mlp(3, [8], 1, seed=0), X, y, checkpoint=saved.append, **kw)
    assert len(saved) == whole.trainings >= 2
    net = mlp(3, [8], 1, seed=5)  # other weights: the checkpoint holds the initial ones
    calls = []
    resumed = retrain_select(net, X, y, resume=copy.deepcopy(saved[-2]), callback=calls.append,
                             **kw)
    assert len(calls) == 1  # only the new training is reported
    assert [(r.phase, r.lambdas, r.nnz) for r in resumed.history] == [
        (r.phase, r.lambdas, r.nnz) for r in whole.history]
    assert resumed.lambdas == whole.lambdas and resumed.converged == whole.converged
    with pytest.raises(ValueError, match="'resume' checkpoint is not from retrain_select"):
        retrain_select(net, X, y, resume=saved[0], **{**kw, "rule": "paper" if rule == "sorted"
                                                       else "sorted"})
