"""The λ-choice on any torch.optim optimizer: the proximal step rides on its step hook."""

import copy

import pytest
import torch
import torch.nn.functional as F

from l1sparse import ProxAdam, ProxSGD, SparsityScheduler, mlp, param_groups
from l1sparse.prox_hook import ProximalStep, metric_family
from l1sparse.tensors import select_tensors


def _data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 10, generator=g)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).long()
    return X, y, g


def _steps(net, opt, X, y, g, steps, batch=32):
    for _ in range(steps):
        idx = torch.randint(0, len(X), (batch,), generator=g)
        opt.zero_grad()
        F.cross_entropy(net(X[idx]), y[idx]).backward()
        opt.step()


@pytest.mark.parametrize("kw", [{"momentum": 0.0}, {"momentum": 0.9},
                                {"momentum": 0.9, "nesterov": True}])
def test_sgd_with_the_hook_equals_prox_sgd_at_a_fixed_lambda(kw):
    X, y, _ = _data()
    a = mlp(10, [16], 2, seed=1)
    b = copy.deepcopy(a)
    ours = ProxSGD(param_groups(a, 0.02), lr=0.1, fused=False, **kw)
    theirs = torch.optim.SGD(b.parameters(), lr=0.1, **kw)
    prox = ProximalStep(theirs, select_tensors(b))
    for slot in prox.slots.values():
        slot["l1"] = 0.02
    theirs.register_step_post_hook(lambda *_: prox.apply())
    _steps(a, ours, X, y, torch.Generator().manual_seed(5), 60)
    _steps(b, theirs, X, y, torch.Generator().manual_seed(5), 60)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)
        assert torch.equal(pa == 0, pb == 0)
    assert int((a.fc1.weight == 0).sum()) > 0  # the prox did act


def test_adam_with_the_hook_equals_prox_adam_at_a_fixed_lambda():
    X, y, _ = _data()
    a = mlp(10, [16], 2, seed=2)
    b = copy.deepcopy(a)
    ours = ProxAdam(param_groups(a, 0.01), lr=0.01, fused=False)
    theirs = torch.optim.Adam(b.parameters(), lr=0.01)
    prox = ProximalStep(theirs, select_tensors(b))
    for slot in prox.slots.values():
        slot["l1"] = 0.01
    theirs.register_step_post_hook(lambda *_: prox.apply())
    _steps(a, ours, X, y, torch.Generator().manual_seed(6), 60)
    _steps(b, theirs, X, y, torch.Generator().manual_seed(6), 60)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)
    assert int((a.fc1.weight == 0).sum()) > 0


@pytest.mark.parametrize("make, ours", [
    (lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
     lambda g: ProxSGD(g, lr=0.05, momentum=0.9, fused=False)),
    (lambda p: torch.optim.Adam(p, lr=0.01), lambda g: ProxAdam(g, lr=0.01, fused=False)),
])
def test_the_scheduler_gives_the_same_run_on_torch_optimizers_and_ours(make, ours):
    X, y, _ = _data()
    a = mlp(10, [32], 2, seed=3)
    b = copy.deepcopy(a)
    oa, ob = ours(param_groups(a)), make(b.parameters())
    sa = SparsityScheduler(oa, zero_fraction=0.8, total_steps=200, n_samples=len(X))
    sb = SparsityScheduler(ob, model=b, zero_fraction=0.8, total_steps=200, n_samples=len(X))
    _steps(a, oa, X, y, torch.Generator().manual_seed(7), 200)
    _steps(b, ob, X, y, torch.Generator().manual_seed(7), 200)
    assert sa.met and sb.met
    assert sa.nnz == sb.nnz
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-5)


def test_adamw_with_weight_decay_reaches_the_target_and_lambda_follows_the_schedule():
    X, y, g = _data(512)
    net = mlp(10, [64, 32], 2, seed=0)
    opt = torch.optim.AdamW(net.parameters(), lr=5e-3, weight_decay=1e-2)
    sched = SparsityScheduler(opt, model=net, zero_fraction=0.9, total_steps=400,
                              n_samples=len(X))
    assert metric_family(opt) == "adam" and sched.tensors == ["fc1", "fc2", "fc3"]
    _steps(net, opt, X, y, g, 400, batch=64)
    assert sched.met and sched.last_step == 400
    # λ moved during the run and the count came down along the schedule, not at the end
    lams = [sum(h["lambdas"].values()) for h in sched.history]
    assert lams[0] < max(lams) and max(lams) > 0
    mid = [h for h in sched.history if 150 <= h["step"] <= 250]
    total = sum(p.numel() for p in (net.fc1.weight, net.fc2.weight, net.fc3.weight))
    assert any(sum(h["nnz"].values()) < 0.7 * total for h in mid)
    assert sched.final is None or sched.final["removed"] + sched.final["revived"] < 0.02 * total
    acc = (net(X).argmax(1) == y).float().mean()
    assert acc > 0.9


def test_sched_step_is_optional_and_idempotent_and_remove_detaches():
    X, y, g = _data()
    net = mlp(10, [16], 2, seed=0)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    sched = SparsityScheduler(opt, model=net, zero_fraction=0.5, total_steps=50,
                              n_samples=len(X))
    for _ in range(5):
        _steps(net, opt, X, y, g, 1)
        sched.step()
        sched.step()  # a second call in the same step: one recorded skip, no advance
    assert sched.last_step == 5
    with pytest.raises(ValueError, match="already has a SparsityScheduler"):
        SparsityScheduler(opt, model=net, zero_fraction=0.5, total_steps=50, n_samples=len(X))
    sched.remove()
    _steps(net, opt, X, y, g, 3)
    assert sched.last_step == 5
    SparsityScheduler(opt, model=net, zero_fraction=0.5, total_steps=50, n_samples=len(X))


def test_state_dict_round_trip_resumes_the_same_run():
    X, y, _ = _data()

    def run(split):
        torch.manual_seed(0)
        net = mlp(10, [16], 2, seed=4)
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        kw = dict(model=net, zero_fraction=0.8, total_steps=120, n_samples=len(X))
        sched = SparsityScheduler(opt, **kw)
        g = torch.Generator().manual_seed(9)
        _steps(net, opt, X, y, g, split)
        if split < 120:
            saved = copy.deepcopy((net.state_dict(), opt.state_dict(), sched.state_dict()))
            net = mlp(10, [16], 2, seed=99)
            opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
            sched = SparsityScheduler(opt, **{**kw, "model": net})
            net.load_state_dict(saved[0])
            opt.load_state_dict(saved[1])
            sched.load_state_dict(saved[2])
            _steps(net, opt, X, y, g, 120 - split)
        return sched.nnz, [p.detach().clone() for p in net.parameters()]

    nnz_a, wa = run(120)
    nnz_b, wb = run(70)
    assert nnz_a == nnz_b
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(wa, wb))


def test_bad_input_each_gets_one_clear_error():
    net = mlp(10, [16], 2)
    other = mlp(10, [16], 2)
    with pytest.raises(ValueError, match=r"chosen tensors \['fc1', 'fc2'\] are not parameters"):
        SparsityScheduler(torch.optim.SGD(other.parameters(), lr=0.1), model=net,
                          zero_fraction=0.5, total_steps=10, n_samples=10)
    with pytest.raises(ValueError, match="more than one parameter group|appear in more than"):
        torch.optim.SGD([{"params": list(net.parameters())},
                         {"params": [net.fc1.weight]}], lr=0.1)
    with pytest.raises(ValueError, match="groups penalise"):
        SparsityScheduler(ProxSGD(param_groups(net), lr=0.1), model=net, exclude="fc2",
                          zero_fraction=0.5, total_steps=10, n_samples=10)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="total_steps"):  # a failed constructor ...
        SparsityScheduler(opt, model=net, zero_fraction=0.5, total_steps=0, n_samples=10)
    sched = SparsityScheduler(opt, model=net, layer_nnz={"fc1.weight": 10, "fc2": 5},
                              total_steps=10, n_samples=10)
    assert sched.target.per_layer  # ... left the optimizer free
    sched.remove()
    with pytest.raises(ValueError, match=r"'fc9' is not one of the penalised tensors"):
        SparsityScheduler(opt, model=net, layer_nnz={"fc9": 10}, total_steps=10, n_samples=10)
