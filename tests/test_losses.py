"""Measuring a network does not change it."""

import torch
from torch import nn

from l1sparse.losses import metric


def test_metric_is_taken_in_eval_mode_and_leaves_batchnorm_statistics_alone():
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    X, y = torch.randn(64, 4) * 3 + 1, torch.randint(0, 3, (64,))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    acc = metric(net, X, y, "classification", batch_size=10)
    assert net.training  # the mode is restored
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    net.eval()
    with torch.no_grad():
        expected = float((net(X).argmax(1) == y).float().mean())
    assert acc == expected
