"""The baselines with known answers: exact pruning counts, schedules, the grid's choice."""

import math

import pytest
import torch

from l1sparse.baselines import (
    gmp_schedule,
    gradual_magnitude_pruning,
    lambda_grid_search,
    magnitude_prune,
    prune_and_finetune,
)
from l1sparse.models import mlp
from l1sparse.penalty import penalised_layers


@pytest.fixture(scope="module")
def blobs():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(256, 10, generator=g)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).long()
    return X, y


def _weights(net):
    return torch.cat([m.weight.detach().flatten() for _, m in penalised_layers(net)])


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.9, 0.95, 0.98, 0.999])
def test_magnitude_prune_hits_the_exact_count_and_removes_the_smallest_globally(fraction):
    net = mlp(20, [16, 8], 5, seed=1)
    before = _weights(net).clone()
    biases = [m.bias.detach().clone() for _, m in penalised_layers(net)]
    params = [m.weight for _, m in penalised_layers(net)]
    res = magnitude_prune(net, fraction)
    after = _weights(net)
    total = before.numel()
    expected_zeros = round(fraction * total)
    assert int((after == 0).sum()) == expected_zeros
    assert res.nnz == total - expected_zeros and res.total == total
    assert abs(res.zero_fraction - fraction) <= 1 / total + 1e-12
    # survivors untouched, and every pruned weight no larger than every survivor (global)
    kept = after != 0
    assert torch.equal(after[kept], before[kept])
    if 0 < expected_zeros < total:
        assert before[~kept].abs().max() <= before[kept].abs().min()
    # permanent: plain parameters (the same objects), no masks or hooks, biases untouched
    for (_, m), p, b in zip(penalised_layers(net), params, biases):
        assert m.weight is p and isinstance(m.weight, torch.nn.Parameter)
        assert not hasattr(m.module, "weight_mask") and not m.module._forward_pre_hooks
        assert torch.equal(m.bias, b)


def test_magnitude_prune_is_global_not_per_layer():
    net = mlp(4, [4], 2, seed=0)
    with torch.no_grad():
        net.fc1.weight.fill_(0.01)  # 16 small weights
        net.fc2.weight.fill_(5.0)  # 8 large weights
    magnitude_prune(net, 0.5)  # 12 of 24: all from fc1
    assert int((net.fc1.weight == 0).sum()) == 12
    assert int((net.fc2.weight == 0).sum()) == 0


def test_gmp_schedule_is_cubic_and_monotone():
    values = [gmp_schedule(t, initial=0.1, final=0.9, begin=10, end=20) for t in range(0, 31)]
    assert values[:11] == [0.1] * 11 and values[20:] == [0.9] * 11
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert math.isclose(values[15], 0.9 - 0.8 * 0.5 ** 3)


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_gmp_ends_at_the_target_with_the_mask_kept(blobs, fraction):
    X, y = blobs
    net = mlp(10, [32, 16], 2, seed=0)
    total = _weights(net).numel()
    res = gradual_magnitude_pruning(net, X, y, task="classification", zero_fraction=fraction,
                                    epochs=6, end=0.5, frequency=3, lr=1e-2, batch_size=32,
                                    seed=0)
    assert abs(res.nnz - (total - round(fraction * total))) <= 1
    assert res.trainings == 1 and res.epochs_total == 6 and res.details["prunes"] >= 3
    assert res.details["end_step"] == 24  # half of 6 epochs × 8 steps


def test_gmp_is_reproducible_from_the_seed(blobs):
    X, y = blobs
    kw = dict(task="classification", zero_fraction=0.8, epochs=2, frequency=2, batch_size=32)
    torch.manual_seed(100)  # the global RNG must play no part: only the seed argument does
    a = gradual_magnitude_pruning(mlp(10, [16], 2, seed=0), X, y, seed=3, **kw)
    torch.manual_seed(200)
    b = gradual_magnitude_pruning(mlp(10, [16], 2, seed=0), X, y, seed=3, **kw)
    assert torch.equal(_weights(a.model), _weights(b.model))
    # and the seed is used: another seed draws other mini-batches, so other weights
    c = gradual_magnitude_pruning(mlp(10, [16], 2, seed=0), X, y, seed=4, **kw)
    assert not torch.equal(_weights(a.model), _weights(c.model))


def test_prune_and_finetune_keeps_the_exact_zeros(blobs):
    X, y = blobs
    net = mlp(10, [32], 2, seed=0)
    res = prune_and_finetune(net, X, y, task="classification", zero_fraction=0.75, epochs=3,
                             finetune_epochs=2, lr=1e-2, batch_size=64)
    total = _weights(net).numel()
    assert res.nnz == total - round(0.75 * total)
    assert res.epochs_total == 5 and math.isclose(res.trainings, 5 / 3)


def test_grid_search_picks_the_run_closest_to_the_target(blobs):
    X, y = blobs
    factory = lambda: mlp(10, [16], 2, seed=0)  # noqa: E731
    res = lambda_grid_search(factory, X, y, task="classification", zero_fraction=0.6,
                             lambdas=[40.0, 0.0, 5.0, 15.0], epochs=3, lr=1e-2, batch_size=64)
    assert [r.lam for r in res.runs] == [0.0, 5.0, 15.0, 40.0]
    fractions = [r.zero_fraction for r in res.runs]
    assert fractions[0] == 0.0 and fractions[-1] > fractions[1]  # λ does make zeros
    best = min(res.runs, key=lambda r: abs(r.zero_fraction - 0.6))
    assert res.lam == best.lam and res.zero_fraction == best.zero_fraction
    assert res.trainings == 4 and res.epochs_total == 12
    # the same grid judged against another target: no training, the same cost
    other = res.select(0.0)
    assert other.lam == 0.0 and other.zero_fraction == 0.0 and other.seconds == res.seconds
    assert torch.equal(other.model.fc1.weight, res.runs[0].state["fc1.weight"])


BAD = [
    (lambda X, y: magnitude_prune(mlp(4, [3], 2), 1.0), r"'zero_fraction'.*\[0, 1\)"),
    (lambda X, y: magnitude_prune(mlp(4, [3], 2), -0.1), r"'zero_fraction'.*Got -0.1"),
    (lambda X, y: magnitude_prune(mlp(4, [3], 2), "a lot"), r"'zero_fraction'.*number"),
    (lambda X, y: magnitude_prune(torch.nn.ReLU(), 0.5), "no penalisable"),
    (lambda X, y: gradual_magnitude_pruning(mlp(10, [3], 2), X, y, task="classification",
                                            zero_fraction=1.5, epochs=1), r"\[0, 1\)"),
    (lambda X, y: gradual_magnitude_pruning(mlp(10, [3], 2), X, y, task="classification",
                                            zero_fraction=0.5, initial_fraction=0.7, epochs=1),
     "initial_fraction"),
    (lambda X, y: gradual_magnitude_pruning(mlp(10, [3], 2), X, y, task="classification",
                                            zero_fraction=0.5, begin=0.8, end=0.2, epochs=1),
     "begin < end"),
    (lambda X, y: gradual_magnitude_pruning(mlp(10, [3], 2), X, y, task="classification",
                                            zero_fraction=0.5, epochs=0), "'epochs'"),
    (lambda X, y: gradual_magnitude_pruning(mlp(10, [3], 2), X, y, task="classification",
                                            zero_fraction=0.5, frequency=0), "'frequency'"),
    (lambda X, y: prune_and_finetune(mlp(10, [3], 2), X, y, task="nope", zero_fraction=0.5),
     "'task'"),
    (lambda X, y: prune_and_finetune(mlp(10, [3], 2), X, y, task="classification",
                                     zero_fraction=1.0), r"\[0, 1\)"),
    (lambda X, y: lambda_grid_search(lambda: mlp(10, [3], 2), X, y, task="classification",
                                     zero_fraction=0.5, lambdas=[]), "'lambdas'"),
    (lambda X, y: lambda_grid_search(lambda: mlp(10, [3], 2), X, y, task="classification",
                                     zero_fraction=0.5, lambdas=[1.0, -2.0]), "'lambdas'"),
    (lambda X, y: lambda_grid_search(lambda: mlp(10, [3], 2), X, y, task="classification",
                                     zero_fraction=1.2, lambdas=[1.0]), r"\[0, 1\)"),
]


@pytest.mark.parametrize("call, match", BAD)
def test_bad_inputs_raise_value_error(blobs, call, match):
    X, y = blobs
    with pytest.raises(ValueError, match=match):
        call(X, y)


def test_grid_select_needs_the_kept_states(blobs):
    X, y = blobs
    res = lambda_grid_search(lambda: mlp(10, [4], 2, seed=0), X, y, task="classification",
                             zero_fraction=0.5, lambdas=[1.0], epochs=1, keep_states=False)
    with pytest.raises(ValueError, match="keep_states"):
        res.select(0.9)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        res.select(1.0)


# --------------------------------------------------------------------------- torch.ao.pruning


def _ao(net, X, y, **kw):
    from l1sparse.baselines_ao import torch_ao_pruning

    return torch_ao_pruning(net, X, y, task="classification", **kw)


def test_flat_sparsifier_ranks_a_conv_kernel_through_its_out_by_rest_view():
    from l1sparse.baselines_ao import FlatWeightNormSparsifier

    conv = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 2, bias=False))
    with torch.no_grad():  # 24 distinct magnitudes, the sign alternating
        values = torch.arange(1.0, 25.0) * torch.tensor([1.0, -1.0]).repeat(12)
        conv[0].weight.copy_(values[torch.randperm(24, generator=torch.Generator()
                                                   .manual_seed(0))].view(3, 2, 2, 2))
    before = conv[0].weight.detach().clone()
    sp = FlatWeightNormSparsifier(sparsity_level=0.5)
    sp.prepare(conv, [{"tensor_fqn": "0.weight"}])
    sp.step()
    sp.squash_mask()
    after = conv[0].weight.detach()
    # exactly round(0.5 · 24) = 12 zeros, and they are the entries with |w| <= 12
    assert int((after == 0).sum()) == 12
    assert torch.equal(after == 0, before.abs() <= 12)
    assert torch.equal(after[after != 0], before[after != 0])


def test_torch_ao_gives_every_tensor_the_same_fraction_not_a_global_one(blobs):
    X, y = blobs
    net = mlp(10, [16], 2, seed=0)
    with torch.no_grad():  # magnitude pruning would take all its zeros from fc1
        net.fc1.weight.mul_(1e-3)
    res = _ao(net, X, y, zero_fraction=0.75, epochs=2, frequency=2, lr=1e-3, batch_size=32)
    # round(0.75 · 160) = 120 and round(0.75 · 32) = 24: per tensor, uniform
    assert res.details["zeros"] == {"fc1": 120, "fc2": 24}
    assert int((net.fc1.weight == 0).sum()) == 120 and int((net.fc2.weight == 0).sum()) == 24
    assert res.nnz == 192 - 144 and res.total == 192


def test_torch_ao_follows_the_cubic_schedule_and_leaves_plain_parameters(blobs):
    X, y = blobs
    net = mlp(10, [32, 16], 2, seed=0)
    params = [m.weight for _, m in penalised_layers(net)]
    # 256 / 32 = 8 steps per epoch, 4 epochs = 32 steps; window [0, 16], an update every 3
    res = _ao(net, X, y, zero_fraction=0.9, epochs=4, end=0.5, frequency=3, lr=1e-2,
              batch_size=32)
    steps = [s for s, _ in res.details["levels"]]
    assert steps == [3, 6, 9, 12, 15, 16] and res.details["end_step"] == 16
    for s, level in res.details["levels"]:
        assert math.isclose(level, gmp_schedule(s, initial=0.0, final=0.9, begin=0, end=16))
    assert res.details["zeros"] == {"fc1": 288, "fc2": 461, "fc3": 29}
    for (_, m), p in zip(penalised_layers(net), params):  # the mask folded in, same objects
        assert m.weight is p and not hasattr(m.module, "parametrizations")


def test_torch_ao_counts_per_tensor_on_conv_kernels_and_attention():
    from l1sparse.models import resnet_small, vit_small
    from l1sparse.tensors import select_tensors

    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(32, 784, generator=g), torch.randint(0, 10, (32,), generator=g)
    nets = [resnet_small(width=2, seed=0),
            vit_small(dim=8, depth=1, heads=2, mlp_dim=16, seed=0)]
    for net, opt in zip(nets, ("sgd", "adam")):
        res = _ao(net, X, y, zero_fraction=0.9, epochs=2, frequency=1, batch_size=16,
                  optimizer=opt)
        tensors = select_tensors(net, warn=False)
        assert any(t.param.dim() == 4 for t in tensors)
        for t in tensors:
            assert int(t.numel() - torch.count_nonzero(t.param)) == round(0.9 * t.numel()), t.name
        assert net(X[:2]).shape == (2, 10)


@pytest.mark.parametrize("kw, match", [
    (dict(zero_fraction=1.0), r"\[0, 1\)"),
    (dict(zero_fraction=0.5, begin=0.6, end=0.6), "begin < end"),
    (dict(zero_fraction=0.5, frequency=0), "'frequency'"),
    (dict(zero_fraction=0.5, epochs=0), "'epochs'"),
])
def test_torch_ao_bad_inputs_raise_value_error(blobs, kw, match):
    X, y = blobs
    with pytest.raises(ValueError, match=match):
        _ao(mlp(10, [3], 2), X, y, **kw)
