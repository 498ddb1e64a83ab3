"""compact / unit_report: dropping switched-off hidden units keeps the function."""

import pytest
import torch
from torch import nn

from l1sparse.compact import compact, rebalance, unit_report
from l1sparse.penalty import penalised_layers
from l1sparse.models import mlp


def _outputs_agree(a, b):
    x = torch.randn(64, a.in_features, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(b(x), a(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_units_without_input_or_output_are_removed_and_the_function_kept(activation):
    net = mlp(6, [5, 4], 3, activation=activation, seed=0)
    with torch.no_grad():
        net.fc1.bias.fill_(0.3)  # σ(b) ≠ 0: the constant units must be folded, not just dropped
        net.fc1.weight[1] = 0      # h1 unit 1: no input (constant σ(0.3))
        net.fc2.weight[:, 3] = 0   # h1 unit 3: no output
        net.fc2.weight[2] = 0      # h2 unit 2: no input
    before = {k: v.clone() for k, v in net.state_dict().items()}
    report = unit_report(net)
    assert [(r.layer, r.width, r.no_input, r.no_output, r.live) for r in report] == [
        ("fc1", 5, 1, 1, 3), ("fc2", 4, 1, 0, 3)]
    small = compact(net)
    assert small.hidden == [3, 3]
    _outputs_agree(net, small)
    for k, v in net.state_dict().items():  # the original is untouched
        assert torch.equal(v, before[k])


def test_folding_a_unit_can_silence_the_next_one():
    net = mlp(4, [3, 3], 2, seed=1)
    with torch.no_grad():
        net.fc1.bias.fill_(0.5)
        net.fc1.weight[0] = 0            # h1 unit 0 constant ...
        net.fc2.weight[1] = 0
        net.fc2.weight[1, 0] = 0.7       # ... and the only input of h2 unit 1
    small = compact(net)
    assert small.hidden == [2, 2]        # h2 unit 1 became constant once h1 unit 0 was folded
    _outputs_agree(net, small)


def test_a_layer_with_every_unit_switched_off_keeps_one():
    net = mlp(4, [3], 2, seed=2)
    with torch.no_grad():
        net.fc1.weight.zero_()
        net.fc1.bias.copy_(torch.tensor([0.2, -0.1, 0.4]))
    small = compact(net)
    assert small.hidden == [1]
    _outputs_agree(net, small)


def test_a_model_without_switched_off_units_is_copied_unchanged():
    net = mlp(5, [4], 2, seed=0)
    small = compact(net)
    assert small.hidden == [4] and small is not net
    for a, b in zip(net.parameters(), small.parameters()):
        assert torch.equal(a, b)


def test_only_mlps_are_accepted():
    with pytest.raises(TypeError, match="MLP"):
        unit_report(nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)))


def test_compact_leaves_the_global_random_stream_alone():
    net = mlp(6, [5, 4], 3, seed=0)
    with torch.no_grad():
        net.fc2.weight[:, 0] = 0
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    compact(net)
    assert torch.equal(torch.rand(3), expected)


def test_rebalance_keeps_the_function_and_balances_every_unit():
    net = mlp(6, [5, 4], 3, seed=0)
    with torch.no_grad():
        net.fc1.weight.mul_(torch.tensor([0.1, 1.0, 5.0, 2.0, 0.3])[:, None])  # unbalanced
        net.fc2.weight[:, 4] = 0  # a unit without output stays as it is
    lambdas = {"fc1": 2.0, "fc2": 1.0, "fc3": 0.5}
    before = {k: v.clone() for k, v in net.state_dict().items()}

    def penalty(m):
        return sum(lambdas[n] * float(layer.weight.detach().abs().sum())
                   for n, layer in penalised_layers(m))

    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out, pen = net(x), penalty(net)
    rebalance(net, lambdas)
    torch.testing.assert_close(net(x), out, rtol=1e-5, atol=1e-6)
    assert penalty(net) < pen
    # the last layer visited is balanced: λ_in‖a_j‖₁ = λ_out‖b_j‖₁ for every unit of h2
    torch.testing.assert_close(lambdas["fc2"] * net.fc2.weight.abs().sum(1),
                               lambdas["fc3"] * net.fc3.weight.abs().sum(0))
    assert torch.equal(net.fc1.weight[4], before["fc1.weight"][4])


def test_rebalance_refuses_activations_it_would_change():
    with pytest.raises(ValueError, match="positively homogeneous"):
        rebalance(mlp(3, [2], 1, activation="tanh"), {"fc1": 1.0, "fc2": 1.0})
