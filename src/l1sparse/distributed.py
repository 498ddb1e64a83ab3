"""Data-parallel selection on ``torch.distributed`` (``torchrun``), CPU (gloo) or CUDA (nccl).

Every rank holds the data and the same initial weights. Training wraps the network in
``DistributedDataParallel``: all ranks draw the same global mini-batches and each takes its
share, so the all-reduced gradient is the gradient of the global batch's mean loss and the
proximal step — applied to identical weights with identical gradients — keeps every rank's
weights identical. The characterisation's full-data gradient is each rank's summed gradient over
its shard, all-reduced with a sum: the summed-loss gradient of the whole training set, so λ keeps
its summed-loss scale (docs/design.md §1) whatever the number of ranks.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .characterize import Characterization, characterize, full_gradient
from .select import TrainingSolver
from .train import train

__all__ = ["world_from_env", "initialised", "DistributedSolver"]


def world_from_env() -> tuple[int, int]:
    """``(rank, world_size)`` as ``torchrun`` sets them; ``(0, 1)`` outside it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


@contextmanager
def initialised(device: torch.device):
    """Initialise the default process group from ``torchrun``'s environment, then tear it down."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend)
    try:
        yield dist.get_rank(), dist.get_world_size()
    finally:
        dist.destroy_process_group()


class DistributedSolver(TrainingSolver):
    """A :class:`~l1sparse.select.TrainingSolver` whose training and full-data gradient are
    data-parallel over the ranks of the default process group."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        device_ids = [self.X.device.index] if self.X.device.type == "cuda" else None
        self.ddp = DistributedDataParallel(self.model, device_ids=device_ids)

    def _train(self, epochs: int, **kwargs):
        return train(self.ddp, self.X, self.y, self.optimizer, task=self.task, epochs=epochs,
                     batch_size=self.batch_size, generator=self.generator,
                     epoch_offset=self.epochs_done, shard=(self.rank, self.world), **kwargs)

    def characterize(self, lambdas: dict[str, float]) -> Characterization:
        """The summed-loss gradient (all samples, or the same ``grad_samples`` subset as one
        process, scaled by N/m), each rank's share all-reduced with a sum: every rank, and a
        single process, steer λ from the same statistics."""
        self.model.eval()
        n = self.X.shape[0]
        m = self.grad_samples
        subset = m is not None and m < n
        if subset:
            idx = self._grad_idx[self.rank::self.world]
            Xs, ys = self.X[idx], self.y[idx]
        else:
            Xs, ys = self.X[self.rank::self.world], self.y[self.rank::self.world]
        grad = full_gradient(self.model, Xs, ys, task=self.task,
                             batch_size=self.grad_batch_size)
        for g in [*grad.weights.values(), *grad.others.values()]:
            dist.all_reduce(g, op=dist.ReduceOp.SUM)
            if subset:
                g.mul_(n / m)
        loss = torch.tensor([grad.loss], dtype=torch.float64, device=self.X.device)
        dist.all_reduce(loss, op=dist.ReduceOp.SUM)
        grad.loss = float(loss) * (n / m if subset else 1.0)
        return characterize(self.model, self.X, self.y, task=self.task, lambdas=lambdas,
                            gradient=grad)
