"""SparsityScheduler in a plain PyTorch loop: targets, state round trip, AMP, validation,
the guard, and the weighted penalty's known answers."""

import io

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from l1sparse import ProxAdam, ProxSGD, mlp, param_groups
from l1sparse.penalty import L1_WEIGHT, L1Penalty, ReweightedL1Penalty
from l1sparse.scheduler import SparsityScheduler, live_units


def _blobs(n=600, d=12, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = 2.5 * torch.randn(classes, d, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    X = centres[y] + torch.randn(n, d, generator=g)
    return X, y


def _loop(net, opt, sched, loader, epochs, autocast=False):
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                out = net(xb)
            nn.functional.cross_entropy(out.float(), yb).backward()
            opt.step()
            sched.step()


def _loader(X, y, seed=0, batch=32):
    return DataLoader(TensorDataset(X, y), batch_size=batch, shuffle=True,
                      generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("penalty", ["reweighted", "l1"])
def test_global_target_met_in_a_plain_loop_with_a_shuffling_dataloader(penalty):
    X, y = _blobs()
    net = mlp(12, [32, 16], 3, seed=0)
    loader = _loader(X, y)
    epochs = 40
    opt = ProxSGD(param_groups(net), lr=0.05, momentum=0.9)
    sched = SparsityScheduler(opt, zero_fraction=0.9, total_steps=epochs * len(loader),
                              n_samples=len(X), penalty=penalty)
    _loop(net, opt, sched, loader, epochs)
    total = sum(m.weight.numel() for m in (net.fc1, net.fc2, net.fc3))
    nnz = sum(int((m.weight != 0).sum()) for m in (net.fc1, net.fc2, net.fc3))
    assert sched.met and abs(1 - nnz / total - 0.9) <= 0.005
    assert sched.nnz == {n: int((getattr(net, n).weight != 0).sum()) for n in ("fc1", "fc2", "fc3")}
    # λ is reported on the summed scale: the group's l1 times N
    assert sched.lambdas["fc1"] == pytest.approx(opt.param_groups[0]["l1"] * len(X))
    with torch.no_grad():
        acc = float((net(X).argmax(1) == y).float().mean())
    assert acc > 0.9
    assert bool(penalty == "reweighted") == bool(sched.penalty_weights)


def test_per_layer_targets_met_and_a_layer_of_64_weights_has_a_tolerance_of_one_weight():
    X, y = _blobs(d=8)
    net = mlp(8, [8, 16], 3, seed=1)  # fc1 has 64 weights
    loader = _loader(X, y, seed=1)
    epochs = 40
    opt = ProxSGD(param_groups(net), lr=0.05, momentum=0.9)
    targets = {"fc1": 0.75, "fc2": 0.9, "fc3": 0.5}
    sched = SparsityScheduler(opt, layer_zero_fraction=targets, total_steps=epochs * len(loader),
                              n_samples=len(X))
    assert [s.tol for s in sched.target.scopes] == [1.0, 1.0, 1.0]  # 0.005·64 < 1 weight
    _loop(net, opt, sched, loader, epochs)
    assert sched.met, sched.target.misses(sched.nnz)
    for name, zf in targets.items():
        w = getattr(net, name).weight
        assert abs(int((w != 0).sum()) - (1 - zf) * w.numel()) <= 1
    assert len(sched.lam) == 3


@pytest.mark.parametrize("k", [50, 123, 400])
def test_an_exact_count_is_landed_exactly(k):
    X, y = _blobs()
    net = mlp(12, [32], 3, seed=0)
    loader = _loader(X, y)
    opt = ProxSGD(param_groups(net), lr=0.05, momentum=0.9)
    sched = SparsityScheduler(opt, nnz=k, total_steps=20 * len(loader), n_samples=len(X))
    _loop(net, opt, sched, loader, 20)
    assert sum(sched.nnz.values()) == k and sched.met
    assert int((net.fc1.weight != 0).sum() + (net.fc2.weight != 0).sum()) == k


def _fixed_batches(X, y, steps, seed=0, batch=32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, len(X), (batch,), generator=g) for _ in range(steps)]


def _run(net, opt, sched, X, y, batches):
    for idx in batches:
        opt.zero_grad()
        nn.functional.cross_entropy(net(X[idx]), y[idx]).backward()
        opt.step()
        sched.step()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_state_round_trip_mid_run_resumes_exactly(optimizer):
    X, y = _blobs()
    steps = 400
    batches = _fixed_batches(X, y, steps)

    def build():
        net = mlp(12, [32], 3, seed=0)
        opt = (ProxSGD(param_groups(net), lr=0.05, momentum=0.9) if optimizer == "sgd"
               else ProxAdam(param_groups(net), lr=3e-3))
        return net, opt, SparsityScheduler(opt, zero_fraction=0.8, total_steps=steps,
                                           n_samples=len(X))

    net, opt, sched = build()
    _run(net, opt, sched, X, y, batches)

    net2, opt2, sched2 = build()
    _run(net2, opt2, sched2, X, y, batches[:173])
    buf = io.BytesIO()
    torch.save({"model": net2.state_dict(), "opt": opt2.state_dict(),
                "sched": sched2.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)  # plain types and tensors only
    net3, opt3, sched3 = build()
    net3.load_state_dict(saved["model"])
    opt3.load_state_dict(saved["opt"])
    sched3.load_state_dict(saved["sched"])
    _run(net3, opt3, sched3, X, y, batches[173:])
    for p, q in zip(net.parameters(), net3.parameters()):
        torch.testing.assert_close(q, p, rtol=0, atol=0)
    assert sched3.lambdas == sched.lambdas and sched3.nnz == sched.nnz
    assert sched3.history == sched.history


def test_bfloat16_autocast_gives_the_same_count_within_the_tolerance():
    X, y = _blobs()
    counts = []
    for autocast in (False, True):
        net = mlp(12, [32, 16], 3, seed=0)
        loader = _loader(X, y)
        opt = ProxSGD(param_groups(net), lr=0.05, momentum=0.9)
        sched = SparsityScheduler(opt, zero_fraction=0.85, total_steps=30 * len(loader),
                                  n_samples=len(X))
        _loop(net, opt, sched, loader, 30, autocast=autocast)
        assert sched.met
        counts.append(sum(sched.nnz.values()))
    assert abs(counts[0] - counts[1]) <= 2 * sched.target.scopes[0].tol


def test_a_step_the_optimizer_skipped_is_ignored():
    """As with a GradScaler that found non-finite gradients: ``scaler.step(opt)`` skips
    ``opt.step()``, the loop still calls ``sched.step()``."""
    X, y = _blobs()
    net = mlp(12, [8], 3, seed=0)
    opt = ProxSGD(param_groups(net), lr=0.05)
    sched = SparsityScheduler(opt, zero_fraction=0.5, total_steps=10, n_samples=len(X))
    nn.functional.cross_entropy(net(X), y).backward()
    sched.step()  # no optimizer step before it
    assert sched.last_step == 0 and sched.skipped_steps == 1
    opt.step()
    sched.step()
    assert sched.last_step == 1 and sched.skipped_steps == 1


def test_non_finite_gradients_never_set_the_first_lambda():
    X, y = _blobs()
    net = mlp(12, [8], 3, seed=0)
    opt = ProxSGD(param_groups(net), lr=0.05)
    sched = SparsityScheduler(opt, zero_fraction=0.5, total_steps=20, n_samples=len(X),
                              lead=0.5)
    nn.functional.cross_entropy(net(X), y).backward()
    net.fc1.weight.grad[0, 0] = float("nan")
    opt.step()
    sched.step()
    assert sched._l1 == [0.0] and sched.last_step == 1


@pytest.mark.parametrize("kwargs,match", [
    ({"zero_fraction": 1.5}, r"'zero_fraction' parameter must be in \[0, 1\)"),
    ({"zero_fraction": 0.5, "nnz": 3}, "exactly one target"),
    ({}, "exactly one target"),
    ({"layer_zero_fraction": {"fc9": 0.5}}, "unknown: \\['fc9'\\]"),
    ({"layer_zero_fraction": [0.5]}, "one value per penalised layer"),
    ({"zero_fraction": 0.5, "total_steps": 0}, "'total_steps' parameter must be a positive"),
    ({"zero_fraction": 0.5, "loss_reduction": "max"}, "'loss_reduction'"),
    ({"zero_fraction": 0.5, "penalty": "l2"}, "'penalty'"),
    ({"zero_fraction": 0.5, "ramp_end": 0.9, "hold": 0.8}, "ramp_start <= ramp_end <= hold"),
])
def test_bad_arguments_raise_value_error_naming_them(kwargs, match):
    net = mlp(4, [8], 2)
    opt = ProxSGD(param_groups(net), lr=0.1)
    kwargs = {"total_steps": 10, "n_samples": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        SparsityScheduler(opt, **kwargs)


def test_a_foreign_optimizer_without_the_model_is_refused_in_one_line():
    net = mlp(4, [8], 2)
    with pytest.raises(ValueError, match=r"With SGD \(not ProxSGD/ProxAdam\) give .*model=model"):
        SparsityScheduler(torch.optim.SGD(net.parameters(), lr=0.1), zero_fraction=0.5,
                          total_steps=10, n_samples=10)


def test_lambdas_on_the_summed_scale_need_n_samples_with_a_mean_loss():
    net = mlp(4, [8], 2)
    sched = SparsityScheduler(ProxSGD(param_groups(net), lr=0.1), zero_fraction=0.5,
                              total_steps=10)
    with pytest.raises(ValueError, match="n_samples"):
        sched.lambdas
    summed = SparsityScheduler(ProxSGD(param_groups(net), lr=0.1), zero_fraction=0.5,
                               total_steps=10, loss_reduction="sum")
    assert summed.lambdas == {"fc1": 0.0, "fc2": 0.0}


def test_param_groups_refuses_layer_names_the_model_does_not_have():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match=r"\['fc1'\].*penalised tensors are \['0', '2'\]"):
        param_groups(net, {"fc1": 0.1})
    groups = param_groups(net, {"0": 0.1})  # the names named_modules() gives
    assert [g["name"] for g in groups] == ["0", "2", "unpenalised"] and groups[0]["l1"] == 0.1


def test_the_guard_stops_a_collapse_it_is_shown():
    """When a layer loses more than 10 % of its live units within a guard window, λ backs off
    at once and may not rise again for a window."""
    X, y = _blobs()
    net = mlp(12, [64], 3, seed=0)
    opt = ProxSGD(param_groups(net), lr=0.05, momentum=0.9)
    sched = SparsityScheduler(opt, zero_fraction=0.9, total_steps=1000, n_samples=len(X),
                              guard_every=50, penalty="l1", check_every=1)
    batches = _fixed_batches(X, y, 60)
    _run(net, opt, sched, X, y, batches[:40])
    assert sched.guard_events == 0 and sched._l1[0] > 0
    before = sched._l1[0]
    with torch.no_grad():  # a collapse: 20 of the 64 hidden units lose every incoming weight
        net.fc1.weight[:20] = 0
    opt.zero_grad()  # an optimizer step that changes nothing (no gradients)
    opt.step()
    sched.step()
    assert sched.guard_events == 1
    assert sched._l1[0] == pytest.approx(before / 1.5)
    # the count is far above the schedule, yet λ may not rise for the rest of the window
    backed = sched._l1[0]
    for _ in range(20):
        opt.step()
        sched.step()
    assert sched._l1[0] <= backed
    # without the guard the same collapse is ignored (one scheduler per optimizer: the first
    # is detached)
    with pytest.raises(ValueError, match="already has a SparsityScheduler"):
        SparsityScheduler(opt, zero_fraction=0.9, total_steps=1000, n_samples=len(X))
    sched.remove()
    free = SparsityScheduler(opt, zero_fraction=0.9, total_steps=1000, n_samples=len(X),
                             guard=1.0, penalty="l1", check_every=1)
    with torch.no_grad():
        net.fc1.weight[20:40] = 0
    opt.step()
    free.step()
    assert free.guard_events == 0


def _weighted_lasso_data():
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    X = X[:, :6] * np.array([1.0, 3.0, 0.5, 2.0, 1.5, 0.7])  # real data, unequal scales
    return torch.tensor(X), torch.tensor(y - y.mean())


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_weighted_penalty_matches_sklearn_lasso_on_rescaled_columns(optimizer):
    """min Σ(y − Xw)² + λ Σ c_i |w_i| is the Lasso of X / c in v = c·w."""
    from sklearn.linear_model import Lasso

    X, y = _weighted_lasso_data()
    n = X.shape[0]
    c = torch.tensor([1.0, 0.5, 2.0, 1.0, 3.0, 0.8], dtype=torch.float64)
    lam = 2.0 * n * 0.01  # summed scale; α = λ / 2N
    ref = Lasso(alpha=lam / (2 * n), fit_intercept=False, tol=1e-12, max_iter=100_000)
    w_ref = ref.fit((X / c).numpy(), y.numpy()).coef_ / c.numpy()

    w = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    if optimizer == "sgd":
        L = float(torch.linalg.matrix_norm(X, ord=2) ** 2) * 2 / n
        opt, steps = ProxSGD([{"params": [w], "name": "w", "l1": lam / n}], lr=1 / L), 40_000
    else:
        opt, steps = ProxAdam([{"params": [w], "name": "w", "l1": lam / n}], lr=20.0), 20_000
    decay = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=(1e-4) ** (1 / steps))
    opt.state[w][L1_WEIGHT] = c
    for _ in range(steps):
        opt.zero_grad()
        ((X @ w - y) ** 2).mean().backward()
        opt.step()
        if optimizer == "adam":
            decay.step()
    w_fit = w.detach().numpy()
    assert np.array_equal(w_fit == 0, w_ref == 0)
    np.testing.assert_allclose(w_fit, w_ref, rtol=1e-3, atol=1e-3 * np.abs(w_ref).max())
    # the weighted first-order conditions hold at convergence, the plain ones do not
    grad = -2 * X.T @ (y - X @ w.detach())
    dist = L1Penalty.distance(grad, w.detach(), lam, c)
    assert float(dist.max()) <= 1e-2 * lam
    assert float(L1Penalty.distance(grad, w.detach(), lam).max()) > 0.1 * lam


def test_reweighted_weights_are_one_for_an_all_zero_layer_and_favour_large_weights():
    pen = ReweightedL1Penalty(eps=0.1)
    assert torch.equal(pen.weights(torch.zeros(3, 4)), torch.ones(3, 4))
    c = pen.weights(torch.tensor([0.0, 0.1, 1.0, 10.0]))
    assert bool((c[:-1] > c[1:]).all()) and float(c[0]) == pytest.approx(10.0)
    assert L1Penalty().weights(torch.ones(2)) is None
    with pytest.raises(ValueError, match="'eps'"):
        ReweightedL1Penalty(eps=0)


def test_lambda_max_of_the_weighted_penalty_zeroes_the_linear_model():
    X, y = _weighted_lasso_data()
    c = torch.tensor([1.0, 0.5, 2.0, 1.0, 3.0, 0.8], dtype=torch.float64)
    grad0 = -2 * X.T @ y
    lam_max = L1Penalty.lambda_max(grad0, c)
    assert lam_max == pytest.approx(float((grad0.abs() / c).max()))
    w = torch.zeros(6, dtype=torch.float64)
    assert float(L1Penalty.distance(grad0, w, lam_max, c).max()) == 0.0
    assert float(L1Penalty.distance(grad0, w, 0.99 * lam_max, c).max()) > 0


def test_reweighted_scale_global_uses_one_numerator_for_every_layer():
    net = mlp(4, [8], 2, seed=0)
    with torch.no_grad():
        net.fc2.weight.mul_(10)  # a layer with ten times larger weights
    opt = ProxSGD(param_groups(net), lr=0.1)
    from l1sparse.penalty import l1_weights, set_l1_weights

    set_l1_weights(opt, ReweightedL1Penalty(eps=0.1, scale="layer"))
    per_layer = l1_weights(opt)
    set_l1_weights(opt, ReweightedL1Penalty(eps=0.1, scale="global"))
    shared = l1_weights(opt)
    w1, w2 = net.fc1.weight.abs(), net.fc2.weight.abs()
    m1, m2 = w1.mean(), w2.mean()
    M = (w1.sum() + w2.sum()) / (w1.numel() + w2.numel())
    torch.testing.assert_close(per_layer["fc2"], m2 / (w2 + 0.1 * m2))
    torch.testing.assert_close(shared["fc1"], M / (w1 + 0.1 * m1))
    torch.testing.assert_close(shared["fc2"], M / (w2 + 0.1 * m2))
    with pytest.raises(ValueError, match="'scale'"):
        ReweightedL1Penalty(scale="unit")


def _held_back(net, steps, **kw):
    """A scheduler that cannot reach 90 % zeros by its hold point: λ barely moves."""
    opt = ProxSGD(param_groups(net), lr=0.05, momentum=0.9)
    return opt, SparsityScheduler(opt, zero_fraction=0.9, total_steps=steps, n_samples=600,
                                  gain=1e-4, max_factor=1.0001, ramp_end=0.4, hold=0.5, **kw)


@pytest.mark.parametrize("optimizer", ["ours", "torch"])
def test_a_count_missed_at_the_hold_point_is_projected_then_and_its_zeros_kept(optimizer):
    X, y = _blobs()
    steps = 120
    batches = _fixed_batches(X, y, steps)
    net = mlp(12, [32], 3, seed=0)
    if optimizer == "ours":
        opt, sched = _held_back(net, steps)
    else:  # the step hook's path
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        sched = SparsityScheduler(opt, model=net, zero_fraction=0.9, total_steps=steps,
                                  n_samples=600, gain=1e-4, max_factor=1.0001, ramp_end=0.4,
                                  hold=0.5)
    _run(net, opt, sched, X, y, batches[:60])
    assert not sched.met and not sched.frozen  # steering: far from 90 %
    _run(net, opt, sched, X, y, batches[60:61])  # the first step past the hold point
    assert sched.frozen and sched.met and sched.final["step"] == 61
    zeros = [(m.weight == 0).clone() for m in (net.fc1, net.fc2)]
    _run(net, opt, sched, X, y, batches[61:])
    for z, m in zip(zeros, (net.fc1, net.fc2)):
        assert bool((m.weight[z] == 0).all())  # the projected zeros stayed zero
    assert sched.met
    sched.remove()
    assert not any("l1_mask" in s for s in opt.state.values())


def test_a_count_met_at_the_hold_point_is_left_alone():
    X, y = _blobs()
    net = mlp(12, [32], 3, seed=0)
    loader = _loader(X, y)
    opt = ProxSGD(param_groups(net), lr=0.05, momentum=0.9)
    sched = SparsityScheduler(opt, zero_fraction=0.8, tol=0.05, total_steps=20 * len(loader),
                              n_samples=len(X))
    _loop(net, opt, sched, loader, 20)
    assert sched.met and not sched.frozen and sched.final is None
    assert not any("l1_mask" in s for s in opt.state.values())


def test_a_resume_after_the_hold_projection_keeps_the_same_zeros():
    X, y = _blobs()
    steps = 120
    batches = _fixed_batches(X, y, steps)
    net = mlp(12, [32], 3, seed=0)
    opt, sched = _held_back(net, steps)
    _run(net, opt, sched, X, y, batches)
    net2 = mlp(12, [32], 3, seed=0)
    opt2, sched2 = _held_back(net2, steps)
    _run(net2, opt2, sched2, X, y, batches[:80])
    assert sched2.frozen
    buf = io.BytesIO()
    torch.save({"model": net2.state_dict(), "opt": opt2.state_dict(),
                "sched": sched2.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    net3 = mlp(12, [32], 3, seed=0)
    opt3, sched3 = _held_back(net3, steps)
    net3.load_state_dict(saved["model"])
    opt3.load_state_dict(saved["opt"])
    sched3.load_state_dict(saved["sched"])
    assert sched3.frozen
    _run(net3, opt3, sched3, X, y, batches[80:])
    for p, q in zip(net.parameters(), net3.parameters()):
        torch.testing.assert_close(q, p, rtol=0, atol=0)
