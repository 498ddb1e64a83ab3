"""Use l1sparse's proximal optimizer in an ordinary PyTorch training loop.

Run: python examples/own_training_loop.py
"""

import torch
from torch import nn

from l1sparse import ProxAdam, lambda_per_sample, param_groups, resolve_lambdas, sparsity

torch.manual_seed(0)
X = torch.randn(2048, 32)
y = (X[:, :4].sum(dim=1) > 0).long()  # only 4 of 32 inputs matter

net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 2))
lambdas = resolve_lambdas(net, layer_lam=[20.0, 2.0])  # λ_k on the summed-loss scale
l1 = {name: lambda_per_sample(lam, len(X)) for name, lam in lambdas.items()}
opt = ProxAdam(param_groups(net, l1), lr=3e-3)  # weights thresholded, biases not

for epoch in range(15):
    for idx in torch.randperm(len(X)).split(128):
        opt.zero_grad()
        nn.functional.cross_entropy(net(X[idx]), y[idx]).backward()  # mean loss ↔ λ/N
        opt.step()

accuracy = (net(X).argmax(dim=1) == y).float().mean().item()
first = net[0].weight
inputs_used = int((first != 0).any(dim=0).sum())
print(sparsity(net).table())
print(f"accuracy {accuracy:.3f}; the first layer reads {inputs_used} of 32 inputs")
