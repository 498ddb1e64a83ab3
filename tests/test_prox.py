import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from l1sparse.models import mlp
from l1sparse.penalty import param_groups, resolve_lambdas
from l1sparse.prox import ProxAdam, ProxSGD, soft_threshold

finite = st.floats(-1e6, 1e6, allow_nan=False, width=64)
vectors = arrays(np.float64, st.integers(1, 50), elements=finite)
taus = st.floats(0, 1e3, allow_nan=False)


@given(vectors, taus)
def test_soft_threshold_zeroes_small_entries_and_shrinks_the_rest(z, tau):
    zt = torch.from_numpy(z)
    out = soft_threshold(zt, tau)
    small = np.abs(z) <= tau
    assert (out.numpy()[small] == 0).all()  # exact zeros
    big = ~small
    np.testing.assert_allclose(out.numpy()[big], z[big] - np.sign(z[big]) * tau, rtol=1e-12,
                               atol=1e-9)
    assert (np.sign(out.numpy()[big]) == np.sign(z[big])).all()


@given(vectors, taus, st.data())
def test_soft_threshold_is_non_expansive(z, tau, data):
    u = data.draw(arrays(np.float64, z.shape, elements=finite))
    a = soft_threshold(torch.from_numpy(z), tau)
    b = soft_threshold(torch.from_numpy(u), tau)
    assert float((a - b).norm()) <= float(np.linalg.norm(z - u)) * (1 + 1e-12) + 1e-9


@settings(max_examples=30)
@given(vectors, st.floats(0, 10))
def test_soft_threshold_with_a_tensor_threshold_matches_scalar(z, tau):
    zt = torch.from_numpy(z)
    np.testing.assert_array_equal(soft_threshold(zt, torch.full_like(zt, tau)).numpy(),
                                  soft_threshold(zt, tau).numpy())


def test_soft_threshold_is_the_prox_of_the_l1_norm():
    # prox_{τ|.|}(z) = argmin_w ½(w − z)² + τ|w|: check against a fine grid.
    grid = torch.linspace(-5, 5, 200001, dtype=torch.float64)
    for z, tau in [(2.0, 0.5), (-1.2, 2.0), (0.3, 0.3), (-4.0, 1.0)]:
        best = grid[torch.argmin(0.5 * (grid - z) ** 2 + tau * grid.abs())]
        assert float(soft_threshold(torch.tensor(z, dtype=torch.float64), tau)) == pytest.approx(
            float(best), abs=1e-4)


def _one_step(opt_cls, lambdas, **kw):
    torch.manual_seed(0)
    net = mlp(10, [20], 3, seed=0)
    opt = opt_cls(param_groups(net, resolve_lambdas(net, layer_lam=lambdas)), **kw)
    x, y = torch.randn(64, 10), torch.randint(0, 3, (64,))
    for _ in range(5):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net, opt


@pytest.mark.parametrize("opt_cls,kw", [(ProxSGD, {"lr": 0.1}), (ProxSGD, {"lr": 0.1, "momentum": 0.9}),
                                        (ProxAdam, {"lr": 0.01})])
def test_a_layer_with_a_huge_lambda_ends_all_zero_and_the_others_do_not(opt_cls, kw):
    net, _ = _one_step(opt_cls, [1e6, 0.0], **kw)
    assert torch.count_nonzero(net.fc1.weight) == 0  # exact zeros
    assert torch.count_nonzero(net.fc2.weight) == net.fc2.weight.numel()
    # biases are never thresholded
    assert torch.count_nonzero(net.fc1.bias) == net.fc1.bias.numel()
    assert torch.count_nonzero(net.fc2.bias) == net.fc2.bias.numel()


@pytest.mark.parametrize("opt_cls,kw,lam", [(ProxSGD, {"lr": 0.5}, 0.05),
                                            (ProxAdam, {"lr": 0.05}, 0.01)])
def test_moderate_lambda_leaves_exact_zeros(opt_cls, kw, lam):
    net, _ = _one_step(opt_cls, [lam, lam], **kw)
    w = net.fc1.weight
    assert 0 < torch.count_nonzero(w) < w.numel()
    # the zeros are exact: a tiny threshold-free count agrees with a count below 1e-12
    assert torch.count_nonzero(w) == int((w.abs() > 1e-12).sum())


@pytest.mark.parametrize("grouped", [False, True])
def test_prox_sgd_without_penalty_equals_torch_sgd(grouped):
    # grouped: l1sparse's layout, one group per weight matrix and one for the biases, with two
    # learning rates; ProxSGD merges the groups that share their SGD settings into one call
    torch.manual_seed(1)
    a, b = mlp(5, [7, 4], 2, seed=3), mlp(5, [7, 4], 2, seed=3)
    zero = {"fc1": 0.0, "fc2": 0.0, "fc3": 0.0}
    ga, gb = ((param_groups(a, zero), param_groups(b, zero)) if grouped
              else (a.parameters(), b.parameters()))
    oa = ProxSGD(ga, lr=0.1, momentum=0.9)
    ob = torch.optim.SGD(gb, lr=0.1, momentum=0.9, fused=True)  # the kernel ProxSGD uses
    if grouped:
        for opt in (oa, ob):
            opt.param_groups[1]["lr"] = 0.05
    x = torch.randn(32, 5)
    for _ in range(4):
        for net, opt in ((a, oa), (b, ob)):
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            opt.step()
    state_a, state_b = oa.state_dict()["state"], ob.state_dict()["state"]
    assert state_a.keys() == state_b.keys()
    for k in state_a:
        torch.testing.assert_close(state_a[k]["momentum_buffer"], state_b[k]["momentum_buffer"],
                                   rtol=0, atol=0)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_prox_adam_without_penalty_equals_torch_adam():
    a, b = mlp(5, [7], 2, seed=3), mlp(5, [7], 2, seed=3)
    oa, ob = ProxAdam(a.parameters(), lr=0.01), torch.optim.Adam(b.parameters(), lr=0.01)
    x = torch.randn(32, 5)
    for _ in range(4):
        for net, opt in ((a, oa), (b, ob)):
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)


@pytest.mark.parametrize("opt_cls,kw", [(ProxSGD, {"lr": 0.1, "momentum": 0.9}),
                                        (ProxAdam, {"lr": 0.01})])
def test_state_dict_round_trip_continues_identically(opt_cls, kw):
    net, opt = _one_step(opt_cls, [0.01, 0.02], **kw)
    clone = mlp(10, [20], 3)
    opt2 = opt_cls(param_groups(clone, resolve_lambdas(clone, 0.0)), **kw)
    buffer = io.BytesIO()
    torch.save({"model": net.state_dict(), "optim": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    clone.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["optim"])
    assert [g["l1"] for g in opt2.param_groups] == [g["l1"] for g in opt.param_groups]
    x, y = torch.randn(8, 10), torch.randint(0, 3, (8,))
    for m, o in ((net, opt), (clone, opt2)):
        o.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        o.step()
    for pa, pb in zip(net.parameters(), clone.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


@pytest.mark.parametrize("kw,match", [({"lr": -1}, "'lr'"), ({"l1": -0.1}, "'l1'"),
                                      ({"momentum": 1.5}, "'momentum'")])
def test_bad_hyperparameters_are_rejected(kw, match):
    net = mlp(3, [], 1)
    with pytest.raises(ValueError, match=match):
        ProxSGD(net.parameters(), **{"lr": 0.1, **kw})


def _eager_and_compiled(make_optimizer, lr: float, steps: int, dtype=torch.float32):
    """Parameters and optimizer state after ``steps`` steps (a changing learning rate, as under
    a schedule), eager then compiled, from the same start."""
    results, states = [], []
    for compiled in (False, True):
        torch.manual_seed(0)
        net = mlp(10, [20], 3, seed=0).to(dtype)
        opt = make_optimizer(net, compiled)
        x, y = torch.randn(64, 10, dtype=dtype), torch.randint(0, 3, (64,))
        for step in range(steps):
            for g in opt.param_groups:
                g["lr"] = lr / (1 + step)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        results.append([p.detach().clone() for p in net.parameters()])
        states.append(opt.state_dict()["state"])
    return results, states


def _assert_same_result(results, states, atol: float) -> None:
    for eager, fused in zip(*results):
        assert torch.equal(eager == 0, fused == 0)  # the same exact zeros
        torch.testing.assert_close(fused, eager, rtol=1e-4, atol=atol)
    assert any(int((p == 0).sum()) > 0 for p in results[1])
    _assert_same_state(*states, atol=atol)


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_compiled_prox_adam_matches_the_eager_one(weight_decay):
    pytest.importorskip("torch._inductor")

    def make(net, compiled):
        opt = ProxAdam(param_groups(net, resolve_lambdas(net, layer_lam=[0.01, 0.02])), lr=0.05,
                       compile=compiled)
        for g in opt.param_groups:
            g["weight_decay"] = weight_decay
        return opt

    # float32 rounding differs (torch's lerp against β·m + (1 − β)·g, fused multiply-adds), and
    # Adam's normalisation by √v̂ amplifies it; 1e-5 is still a hundredth of one step (lr 0.05)
    _assert_same_result(*_eager_and_compiled(make, 0.05, 5), atol=1e-5)


def _assert_same_state(eager: dict, fused: dict, atol: float = 1e-6) -> None:
    """The same optimizer state (keys, dtypes, values): checkpoints resume either way."""
    assert eager.keys() == fused.keys()
    for k in eager:
        assert eager[k].keys() == fused[k].keys()
        for name, value in eager[k].items():
            assert fused[k][name].dtype == value.dtype, name
            torch.testing.assert_close(fused[k][name], value, rtol=1e-4, atol=atol)


@pytest.mark.parametrize("kw", [{"momentum": 0.9}, {"momentum": 0.0},
                                {"momentum": 0.5, "nesterov": True},
                                {"momentum": 0.8, "dampening": 0.3, "weight_decay": 1e-3}])
def test_compiled_prox_sgd_matches_the_eager_one(kw):
    pytest.importorskip("torch._inductor")

    def make(net, compiled):
        opt = ProxSGD(param_groups(net, resolve_lambdas(net, layer_lam=[0.3, 0.1])), lr=0.1,
                      momentum=kw["momentum"], nesterov=kw.get("nesterov", False),
                      compile=compiled)
        for g in opt.param_groups:  # options ProxSGD's signature leaves to torch's SGD
            g["dampening"], g["weight_decay"] = kw.get("dampening", 0), kw.get("weight_decay", 0)
        return opt

    _assert_same_result(*_eager_and_compiled(make, 0.1, 6), atol=1e-6)


def test_compiled_steps_keep_their_constants_in_bfloat16():
    # in bfloat16, β₂ = 0.999 rounds to 1: a kernel computing 1 − β₂ from a bfloat16 β₂ froze
    # v at 0 and made Adam's step m/ε (NaN here within 4 steps); 1 − β comes in from Python
    pytest.importorskip("torch._inductor")

    def adam(net, compiled):
        return ProxAdam(param_groups(net, resolve_lambdas(net, layer_lam=[0.01, 0.02])),
                        lr=0.05, compile=compiled)

    def sgd(net, compiled):
        return ProxSGD(param_groups(net, resolve_lambdas(net, layer_lam=[0.3, 0.1])), lr=0.1,
                       momentum=0.9, compile=compiled)

    for make, lr in ((adam, 0.05), (sgd, 0.1)):
        results, _ = _eager_and_compiled(make, lr, 4, dtype=torch.bfloat16)
        for eager, fused in zip(*results):
            torch.testing.assert_close(fused.float(), eager.float(), rtol=0.05, atol=0.02)


def test_compile_survives_a_deep_copy_and_bad_options_fail_before_any_step():
    import copy

    net = mlp(4, [3], 2, seed=0)
    opt = ProxAdam(param_groups(net, {"fc1": 0.1}), lr=0.1, compile=True)
    assert copy.deepcopy(opt).compile is True
    opt.param_groups[0]["amsgrad"] = True
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match="amsgrad"):
        opt.step()
    assert not opt.state  # nothing was counted or allocated
