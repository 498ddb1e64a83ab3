"""Ask for a sparsity level on your own nn.Module (here a small CNN) and let l1sparse find λ.

Run: python examples/select_for_your_module.py
"""

import torch
from torch import nn

from l1sparse import characterize, fit_sparse, sparsity

torch.manual_seed(0)
X = torch.randn(1024, 1, 12, 12)
y = (X[:, 0, :6].mean(dim=(1, 2)) > X[:, 0, 6:].mean(dim=(1, 2))).long()

net = nn.Sequential(
    nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 10 * 10, 32), nn.ReLU(),
    nn.Linear(32, 2),
)
# Conv kernels and Linear weights are penalised; one λ for all, chosen for 85 % zeros.
result = fit_sparse(net, X, y, task="classification", zero_fraction=0.85, tol=0.01,
                    mode="warm", epochs=10, optimizer="adam", lr=3e-3, batch_size=64)
print(f"converged={result.converged} lambda={result.lam:.4g} "
      f"after {result.outer_iterations} outer iterations ({result.epochs_total} epochs)")
print(sparsity(net).table())
print(characterize(net, X, y, task="classification", lambdas=result.lambdas).summary())
