"""compact / unit_report: dropping switched-off hidden units keeps the function."""

import pytest
import torch
from torch import nn

from l1sparse.compact import compact, unit_report
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
