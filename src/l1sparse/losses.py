"""The fidelity term L(Θ) of each task, and the metrics reported for it.

Regression: ``L = Σ_i ‖N(Θ; x_i) − y_i‖²``; classification: ``L = Σ_i CE(N(Θ; x_i), y_i)``.
``reduction="sum"`` gives the paper's scale; ``"mean"`` is the same divided by N.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["TASKS", "check_task", "fidelity", "metric", "METRIC_NAMES"]

TASKS = ("regression", "classification")
METRIC_NAMES = {"regression": "mse", "classification": "accuracy"}


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"The 'task' parameter must be one of {list(TASKS)}. Got {task!r}.")
    return task


def fidelity(output: Tensor, target: Tensor, task: str, reduction: str = "sum") -> Tensor:
    """Fidelity of ``output`` to ``target``, summed (default) or averaged over samples."""
    if task == "regression":
        sq = (output - target.view_as(output)).pow(2).sum()
        return sq if reduction == "sum" else sq / output.shape[0]
    if task == "classification":
        return F.cross_entropy(output, target, reduction=reduction)
    raise ValueError(f"The 'task' parameter must be one of {list(TASKS)}. Got {task!r}.")


@torch.no_grad()
@torch.no_grad()
def metric(model: torch.nn.Module, X: Tensor, y: Tensor, task: str,
           batch_size: int = 1024) -> float:
    """Mean squared error per sample (regression) or accuracy (classification).

    Measured in ``eval()`` mode without gradients (the model's mode is restored): a
    measurement must not move BatchNorm's running statistics or cost a backward graph.
    """
    total = torch.zeros((), dtype=torch.float64)
    device = next(model.parameters()).device
    training = model.training
    model.eval()
    try:
        for start in range(0, X.shape[0], batch_size):
            out = model(X[start:start + batch_size].to(device))
            yb = y[start:start + batch_size].to(device)
            if task == "regression":
                part = (out - yb.view_as(out)).pow(2).sum()
            else:
                part = (out.argmax(dim=1) == yb).sum()
            total += part.to("cpu", torch.float64)
    finally:
        model.train(training)
    return float(total) / X.shape[0]
