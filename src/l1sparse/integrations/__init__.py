"""Trainer integrations: the sparsity scheduler as a callback of a training framework.

* :mod:`l1sparse.integrations.huggingface` — ``SparsityCallback`` for the Hugging Face
  ``Trainer`` (``pip install l1sparse[huggingface]``);
* :mod:`l1sparse.integrations.lightning` — ``SparsityCallback`` for a Lightning ``Trainer``
  (``pip install l1sparse[lightning]``).

Both are thin: at train start they build a :class:`~l1sparse.scheduler.SparsityScheduler` on
the trainer's own optimizer (its step hook applies the proximal step and advances the
scheduler inside ``optimizer.step()``, while the gradients still exist), log λ, the nonzeros
and ``met`` through the trainer, and keep the scheduler's state in the trainer's checkpoints.
This package itself imports neither framework; the helpers below are shared by both modules.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping

import torch

__all__: list[str] = []

TARGET_KEYS = ("zero_fraction", "nnz", "layer_zero_fraction", "layer_nnz")
# set by the callbacks themselves, never passed through by the user
_OWN_KEYS = ("optimizer", "model", "total_steps", "n_samples", "include", "exclude", "penalty")


def scheduler_keywords(targets: Mapping, include, exclude, penalty, extra: Mapping) -> dict:
    """Check a callback's keywords once, at construction, and return those the scheduler
    gets (everything but ``total_steps`` and ``n_samples``, known at train start).

    Raises
    ------
    ValueError
        If not exactly one target is given, or a keyword is not one of the scheduler's.
    """
    from ..scheduler import SparsityScheduler

    given = [k for k in TARGET_KEYS if targets.get(k) is not None]
    if len(given) != 1:
        raise ValueError("SparsityCallback needs exactly one target: zero_fraction=, nnz=, "
                         f"layer_zero_fraction= or layer_nnz=. Got {given or 'none'}.")
    known = set(inspect.signature(SparsityScheduler).parameters) - set(_OWN_KEYS)
    unknown = sorted(set(extra) - known)
    if unknown:
        raise ValueError(f"SparsityCallback got keywords that SparsityScheduler does not take: "
                         f"{unknown}; it takes {sorted(known)}.")
    return {given[0]: targets[given[0]], "include": include, "exclude": exclude,
            "penalty": penalty, **extra}


def positive_or_none(value, what: str) -> int | None:
    """``None`` or a positive integer (one-line ValueError otherwise)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) \
            or value < 1:
        raise ValueError(f"The '{what}' parameter must be a positive integer. Got {value!r}.")
    return int(value)


def unwrap_optimizer(optimizer) -> torch.optim.Optimizer:
    """The torch optimizer under a framework's wrapper (accelerate's ``AcceleratedOptimizer``,
    Lightning's ``LightningOptimizer``): the one whose ``step()`` runs the step hooks."""
    seen = 0
    while hasattr(optimizer, "optimizer") and seen < 8:
        inner = optimizer.optimizer
        if not isinstance(inner, torch.optim.Optimizer):
            break
        optimizer, seen = inner, seen + 1
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"SparsityCallback needs a torch.optim optimizer; the trainer has "
                        f"{type(optimizer).__name__}.")
    return optimizer


def metrics(scheduler, prefix: str = "l1sparse/") -> dict[str, float]:
    """What a callback logs: λ (one value for a global target, one per tensor otherwise, on
    the summed scale; left out when N is unknown), the nonzeros and zero fraction over the
    chosen tensors at the scheduler's last count, and ``met`` (1.0 or 0.0)."""
    out: dict[str, float] = {}
    try:
        lam = scheduler.lam
    except ValueError:  # no N to put λ on the summed scale: not logged
        lam = None
    if isinstance(lam, (list, tuple)):
        for name, value in scheduler.lambdas.items():
            out[f"{prefix}lambda/{name}"] = float(value)
    elif lam is not None:
        out[f"{prefix}lambda"] = float(lam)
    nnz = scheduler.nnz
    total = sum(s.total for s in scheduler.target.scopes)
    count = sum(nnz.values())
    out[f"{prefix}nnz"] = float(count)
    out[f"{prefix}zero_fraction"] = 1.0 - count / total if total else math.nan
    out[f"{prefix}met"] = float(scheduler.met)
    return out
