"""The SparsityScheduler on a model sharded with FSDP2 (``fully_shard``), with sharded
checkpoints (``torch.distributed.checkpoint``) and resume.

Run: torchrun --standalone --nproc-per-node 2 examples/fsdp_fully_shard.py --ckpt /tmp/ckpt
     (gloo on the CPU; NCCL, one GPU per rank, when CUDA is present)

Every weight is a DTensor: each rank holds a shard of it and its gradient. The proximal step
acts on the local shards; the scheduler counts nonzeros and live units on them and combines
the counts with collectives, and finds the first-order λ from a histogram of the gradient
scores over all shards (l1sparse.sharded): no rank ever holds a full weight, and every rank
takes the same λ decisions.

Every ``--ckpt-every`` steps, model, optimizer (momentum, penalty weights c_i), scheduler and
the data order (the batch position and the generator's state) go to ``--ckpt/step_NNNNNN``
through DCP, each rank writing its own shards. Started again with the same arguments, the
script resumes from the last complete checkpoint and ends with the same λ and count as an
uninterrupted run (``--kill-at`` kills rank 0 after that step, to try it).
"""

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard

from l1sparse import ProxSGD, SparsityScheduler, mlp, param_groups
from l1sparse.sharded import load_checkpoint, save_checkpoint

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=240)
parser.add_argument("--zero-fraction", type=float, default=0.9)
parser.add_argument("--global-batch", type=int, default=64)
parser.add_argument("--optimizer", choices=["proxsgd", "adamw"], default="proxsgd")
parser.add_argument("--ckpt", type=Path, help="checkpoint directory (resumes from it)")
parser.add_argument("--ckpt-every", type=int, default=50)
parser.add_argument("--kill-at", type=int, help="kill rank 0 (SIGKILL) after this step")
parser.add_argument("--save", type=Path, help="write the trained model (rank 0)")
args = parser.parse_args()

cuda = torch.cuda.is_available()
if cuda:
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
dist.init_process_group("nccl" if cuda else "gloo")
rank, world = dist.get_rank(), dist.get_world_size()
device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")

# data: the same on every rank (four Gaussian blobs in 16 dimensions)
g = torch.Generator().manual_seed(0)
centres = 3 * torch.randn(4, 16, generator=g)
y = torch.randint(0, 4, (2048,), generator=g)
X = centres[y] + torch.randn(2048, 16, generator=g)
n = len(y)


class GlobalBatches:
    """Global mini-batches from a seeded generator; each rank takes its share of each one.

    The state (epoch, position, the generator's state at the start of the epoch) goes into
    the checkpoint, so a resume repeats the data order: the same global batches in the same
    order, whatever the number of ranks."""

    def __init__(self, n, batch, seed=0):
        self.n, self.batch = n, batch
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch, self.position = 0, 0
        self._start_epoch()

    def _start_epoch(self):
        self.epoch_state = self.generator.get_state()
        self.order = torch.randperm(self.n, generator=self.generator)

    def next(self):
        if self.position + self.batch > self.n:
            self.epoch, self.position = self.epoch + 1, 0
            self._start_epoch()
        idx = self.order[self.position:self.position + self.batch]
        self.position += self.batch
        return idx[rank::world]

    def state_dict(self):
        return {"epoch": self.epoch, "position": self.position, "generator": self.epoch_state}

    def load_state_dict(self, state):
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.generator.set_state(state["generator"])
        self._start_epoch()


net = mlp(16, [64, 64], 4, seed=0).to(device)  # the same initial weights on every rank
for module in net.modules():
    if isinstance(module, nn.Linear):
        fully_shard(module)
fully_shard(net)  # every parameter is now a DTensor sharded on dim 0 over the ranks
if args.optimizer == "proxsgd":
    opt = ProxSGD(param_groups(net), lr=0.05, momentum=0.9)
    sched = SparsityScheduler(opt, zero_fraction=args.zero_fraction, total_steps=args.steps,
                              n_samples=n)
else:  # any torch.optim optimizer: the proximal step rides on its step hook
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.0)
    sched = SparsityScheduler(opt, model=net, zero_fraction=args.zero_fraction,
                              total_steps=args.steps, n_samples=n)
batches = GlobalBatches(n, args.global_batch)

start, resumed = 0, None
if args.ckpt is not None:
    done = sorted(p for p in args.ckpt.glob("step_*") if (p / ".metadata").exists())
    if done:  # the last complete checkpoint (DCP writes .metadata last)
        resumed = done[-1]
        extra = load_checkpoint(resumed, net, opt, sched,
                                extra={"data": batches.state_dict(), "step": 0, "world": 0})
        batches.load_state_dict(extra["data"])
        start = int(extra["step"])
        if int(extra["world"]) != world:  # DCP reshards; the global batches stay the same
            sys.stdout.write(f"rank {rank}: resharded from {extra['world']} to {world} ranks\n")

for step in range(start, args.steps):
    idx = batches.next()
    opt.zero_grad()
    xb, yb = X[idx].to(device), y[idx].to(device)
    # each rank's mean over its equal share: FSDP2 averages the gradients over the ranks
    nn.functional.cross_entropy(net(xb), yb).backward()
    opt.step()  # the proximal step and the scheduler's step ride on it
    if args.ckpt is not None and (step + 1) % args.ckpt_every == 0 and step + 1 < args.steps:
        save_checkpoint(args.ckpt / f"step_{step + 1:06d}", net, opt, sched,
                        extra={"data": batches.state_dict(), "step": step + 1, "world": world})
    if args.kill_at is not None and step + 1 == args.kill_at and rank == 0:
        os.kill(os.getpid(), signal.SIGKILL)  # as a crashed or preempted job

if args.save is not None:
    from l1sparse.export import save_model  # every rank: the full weights gather to rank 0

    save_model(net, args.save, metadata={"lambda": sched.lambdas})
result = {"rank": rank, "world": world, "met": sched.met, "nnz": sched.nnz,
          "lambdas": sched.lambdas, "resumed_from": None if resumed is None else resumed.name,
          "local_shard": list(net.fc1.weight.to_local().shape)}
sys.stdout.write(json.dumps(result) + "\n")  # one write per line: the ranks share stdout
sys.stdout.flush()
dist.barrier()  # no rank tears down its process group while another still uses it
dist.destroy_process_group()
sys.stderr.flush()
# the work is done and written; gloo's background threads can still abort the interpreter's
# own teardown ("terminate called without an active exception"), so leave without it
os._exit(0)
