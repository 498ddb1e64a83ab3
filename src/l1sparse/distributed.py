"""Data-parallel ``fit`` on ``torch.distributed`` (``torchrun``), CPU (gloo) or CUDA (nccl).

Every rank holds the data and the same initial weights. The training loops take a
``shard=(rank, world_size)``: warm mode (:func:`l1sparse.select.fit_sparse`) and the retrain
schemes (:func:`l1sparse.retrain.retrain_select`) wrap the network in
``DistributedDataParallel``; all ranks draw the same global mini-batches and each takes its
share, so the all-reduced gradient is the gradient of the global batch's mean loss and the
proximal step, applied to identical weights with identical gradients, keeps every rank's
weights identical. The full-data gradient that steers λ is each rank's summed gradient over its
shard, all-reduced with a sum: the summed-loss gradient of the whole training set, so λ keeps its
summed-loss scale (docs/design.md §1) whatever the number of ranks. This module only reads the
group from ``torchrun``'s environment and sets it up.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch
import torch.distributed as dist

__all__ = ["world_from_env", "initialised"]


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
        # ranks finish at different times (rank 0 writes the results): tearing the group
        # down while another rank still works aborted gloo's threads now and then
        dist.barrier()
    finally:
        dist.destroy_process_group()
