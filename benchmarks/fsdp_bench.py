"""The sparsity scheduler under FSDP2: its memory per rank against a full copy of the weights,
and its wall-clock cost against the same FSDP loop without it.

An MLP (``--inputs``-``--hidden``-``--hidden``-10, every Linear and the whole model
``fully_shard``ed) trains on Gaussian blobs for ``--steps`` steps, global batch 128, with
ProxSGD (momentum 0.9) on ``param_groups(model)``:

- ``without``: no scheduler (every ``l1`` stays 0), the reference loop;
- ``with``: a ``SparsityScheduler`` to 90 % zeros over the same steps (reweighted ℓ1: the
  penalty weights ``c_i`` live in the optimizer state; the first-order guess, the counts every
  ``check_every`` steps and the final projection at the last step all run within the steps).

**Memory.** Every tensor the scheduler allocates while it runs (its step on the optimizer's
hook: counts, first-order guess, penalty weights, final projection) is tracked by a
``TorchDispatchMode`` — bytes of new storage, released when the tensor is freed — and the
peak of the live bytes over the run is reported per rank, with the part that persists (the
``c_i``). Compared with the bytes of one full copy of the penalised weights, what a scheduler
that gathered the weights would hold at least, and with the rank's own shard of them.

**Time.** Wall-clock seconds of the loop (``--repeats`` runs of each, interleaved, the
fastest kept: the machine may be shared), and the CPU seconds of the process.

Usage::

    OMP_NUM_THREADS=1 torchrun --standalone --nproc-per-node 2 benchmarks/fsdp_bench.py \\
        [--steps 60] [--hidden 1024] [--repeats 2] [--penalty l1] [--check-every 10] \\
        [--write benchmarks/FSDP.md]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import weakref

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _machine import git_describe, machine_description  # noqa: E402

from l1sparse import ProxSGD, SparsityScheduler, mlp, param_groups  # noqa: E402
from l1sparse.sharded import is_dtensor, local  # noqa: E402

TARGET = 0.9
BATCH = 128


class LiveBytes(TorchDispatchMode):
    """Bytes of the storages created by the ops run under it, live until their tensor is
    freed; ``peak`` is the most ever live at once."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, int] = {}
        self.now = self.peak = 0

    def _release(self, ptr):
        self.now -= self.live.pop(ptr, 0)

    def _track(self, t):
        if is_dtensor(t):
            t = t._local_tensor
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return
        storage = t.untyped_storage()
        ptr, size = storage.data_ptr(), storage.nbytes()
        if size == 0 or ptr in self.live:
            return  # a view of a storage already counted (or of one from outside)
        self.live[ptr] = size
        self.now += size
        self.peak = max(self.peak, self.now)
        weakref.finalize(t, self._release, ptr)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {_ptr(t) for t in (*args, *(kwargs or {}).values())
                  if isinstance(t, torch.Tensor)}
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor) and _ptr(t) not in inputs:  # not a view, in place
                self._track(t)
        return out


def _ptr(t: torch.Tensor) -> int:
    return (t._local_tensor if is_dtensor(t) else t).untyped_storage().data_ptr()


def run(mode: str, args, X, y, rank, world, device):
    net = mlp(args.inputs, [args.hidden, args.hidden], 10, seed=0)
    for module in net.modules():
        if isinstance(module, nn.Linear):
            fully_shard(module)
    fully_shard(net)
    net.to(device)
    opt = ProxSGD(param_groups(net), lr=0.05, momentum=0.9)
    sched = tracker = None
    if mode == "with":
        sched = SparsityScheduler(opt, zero_fraction=TARGET, total_steps=args.steps,
                                  n_samples=len(y), penalty=args.penalty,
                                  check_every=args.check_every)
        if args.track:
            tracker = LiveBytes()
            advance = sched._advance

            def tracked():  # the scheduler's whole step, under the tracker
                with tracker:
                    advance()
            sched._advance = tracked
    g = torch.Generator().manual_seed(1)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dist.barrier()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        idx = torch.randint(0, len(y), (BATCH,), generator=g)[rank::world]
        opt.zero_grad()
        nn.functional.cross_entropy(net(X[idx]), y[idx]).backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dist.barrier()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    out = {"wall": wall, "cpu": cpu}
    if sched is not None:
        weights = [p for g_ in opt.param_groups if g_["name"] != "unpenalised"
                   for p in g_["params"]]
        out["met"] = sched.met
        out["zeros"] = 1 - sum(sched.nnz.values()) / sum(p.numel() for p in weights)
        out["full_bytes"] = sum(p.numel() * p.element_size() for p in weights)
        out["shard_bytes"] = sum(local(p).numel() * local(p).element_size() for p in weights)
        out["c_bytes"] = sum(local(c).numel() * local(c).element_size()
                             for c in sched.penalty_weights.values())
        if tracker is not None:
            out["peak_bytes"] = tracker.peak
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--inputs", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--penalty", choices=["reweighted", "l1"], default="reweighted")
    parser.add_argument("--check-every", type=int,
                        help="steps between counts (default: the scheduler's, 1 for short runs)")
    parser.add_argument("--write", help="append the result line to this markdown file")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    centres = 2 * torch.randn(10, args.inputs, generator=g)
    y = torch.randint(0, 10, (4096,), generator=g)
    X = (centres[y] + torch.randn(len(y), args.inputs, generator=g)).to(device)
    y = y.to(device)

    args.track = True  # one run with the memory tracker (its bookkeeping slows the step) ...
    memory = run("with", args, X, y, rank, world, device)
    args.track = False  # ... then the timed runs, interleaved
    times = {"without": [], "with": []}
    for _ in range(args.repeats):
        for mode in ("without", "with"):
            times[mode].append(run(mode, args, X, y, rank, world, device))
    per_rank = [None] * world
    dist.all_gather_object(per_rank, {"memory": memory, "times": times})
    if rank == 0:
        mib = 2 ** 20
        lines = []
        for r, res in enumerate(per_rank):
            m = res["memory"]
            lines.append(f"rank {r}: scheduler peak {m['peak_bytes'] / mib:.2f} MiB "
                         f"(c_i {m['c_bytes'] / mib:.2f} MiB persistent) vs full weights "
                         f"{m['full_bytes'] / mib:.2f} MiB, own shard {m['shard_bytes'] / mib:.2f} "
                         f"MiB (peak/full {m['peak_bytes'] / m['full_bytes']:.2f})")
        best = {k: min(v, key=lambda t: t["wall"]) for k, v in times.items()}
        w0, w1 = best["without"]["wall"], best["with"]["wall"]
        c0, c1 = best["without"]["cpu"], best["with"]["cpu"]
        lines.append(f"wall {w0:.2f} s without the scheduler, {w1:.2f} s with "
                     f"(x{w1 / w0:.2f}); CPU {c0:.2f} s vs {c1:.2f} s (x{c1 / c0:.2f}); "
                     f"met={best['with']['met']}, zeros {best['with']['zeros']:.4f}")
        head = (f"{world} ranks ({'nccl' if cuda else 'gloo'}), MLP {args.inputs}-{args.hidden}-"
                f"{args.hidden}-10 ({memory['full_bytes'] // 4:,} weights), {args.steps} steps, "
                f"penalty {args.penalty}, check_every {args.check_every or 'default'}")
        text = "\n".join([head, *lines])
        print(text, flush=True)
        if args.write:
            machine = machine_description(int(os.environ.get("OMP_NUM_THREADS", "1")))
            where = ", ".join(f"{k}: {v}" for k, v in machine.items())
            with open(args.write, "a") as f:
                f.write(f"\n## {machine.get('date', '')} ({git_describe()})\n\n"
                        f"`torchrun --nproc-per-node {world} benchmarks/fsdp_bench.py "
                        f"--steps {args.steps} --hidden {args.hidden} --penalty {args.penalty}"
                        f"{f' --check-every {args.check_every}' if args.check_every else ''}`; "
                        f"{where}\n\n```\n{text}\n```\n")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
