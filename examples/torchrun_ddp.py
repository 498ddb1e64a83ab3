"""The SparsityScheduler under torchrun with DistributedDataParallel.

Run: torchrun --standalone --nproc-per-node 2 examples/torchrun_ddp.py
 or: python examples/torchrun_ddp.py            (one process, the same global batches)

Every rank sees the same all-reduced gradient and holds the same weights, so every rank's
scheduler counts the same nonzeros and takes the same λ decisions: nothing to synchronise.
"""

import os
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from l1sparse import ProxSGD, SparsityScheduler, mlp, param_groups

world = int(os.environ.get("WORLD_SIZE", 1))
if world > 1:
    dist.init_process_group("gloo")
rank = dist.get_rank() if world > 1 else 0

g = torch.Generator().manual_seed(0)
centres = 3 * torch.randn(4, 20, generator=g)
y = torch.randint(0, 4, (2048,), generator=g)
X = centres[y] + torch.randn(2048, 20, generator=g)
dataset = TensorDataset(X, y)
global_batch, epochs = 64, 8
sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=0)
loader = DataLoader(dataset, batch_size=global_batch // world, sampler=sampler)

net = mlp(20, [64, 32], 4, seed=0)  # the same initial weights on every rank
model = DistributedDataParallel(net) if world > 1 else net
opt = ProxSGD(param_groups(net), lr=0.05, momentum=0.9)
sched = SparsityScheduler(opt, zero_fraction=0.9, total_steps=epochs * len(loader),
                          n_samples=len(dataset))
for epoch in range(epochs):
    sampler.set_epoch(epoch)
    for xb, yb in loader:
        opt.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()  # DDP averages over the ranks
        opt.step()
        sched.step()

lambdas = ",".join(f"{v:.9g}" for v in sched.lambdas.values())
nnz = ",".join(str(v) for v in sched.nnz.values())
# one write per line: the ranks share the launcher's stdout
sys.stdout.write(f"rank {rank} of {world}: met={sched.met} lambda={lambdas} nnz={nnz}\n")
sys.stdout.flush()
if world > 1:
    dist.destroy_process_group()
