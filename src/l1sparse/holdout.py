"""Held-out data for a sparse fit: the validation split, its metric and the trivial predictor.

:func:`~l1sparse.select.fit_sparse` uses these to choose the length of a run on small data
and to judge whether the network it returns works (docs/design.md §5.3). The split is seeded
and, for classification, stratified; the metric is the library's (:func:`~l1sparse.losses.
metric`: MSE per sample, or accuracy) and the held-out loss its fidelity per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .losses import fidelity

__all__ = ["HeldOut", "auto_validation_fraction", "split_validation", "evaluate",
           "trivial_metric", "score_key"]

AUTO = "auto"


def auto_validation_fraction(default_steps: int, steps_per_epoch: int, epochs: int,
                             fraction: float) -> float:
    """``fraction`` where the default budget would stretch a run past ``epochs`` passes, else 0.

    The default budget (:func:`~l1sparse.select.resolve_steps`) is ``epochs`` passes but at
    least a floor of steps; on a small data set the floor means hundreds or thousands of
    passes, and that is where a fixed budget overfits (issue 26: diabetes, 1,000 passes, test
    MSE above the variance). There a held-out share chooses the budget instead.

    >>> auto_validation_fraction(3000, 3, 20, 0.2), auto_validation_fraction(9380, 469, 20, 0.2)
    (0.2, 0.0)
    """
    return fraction if default_steps > epochs * steps_per_epoch else 0.0


def check_validation_fraction(value) -> float:
    """``value`` as a float in ``[0, 1)``, or a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise ValueError("The 'validation_fraction' parameter must be 'auto' or a number in "
                         f"[0, 1). Got {value!r}.")
    return float(value)


def split_validation(X: Tensor, y: Tensor, fraction: float, *, task: str, seed: int
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Carve a seeded held-out share from ``(X, y)``; stratified by class for classification.

    Each class gives ``round(fraction · n_c)`` of its samples, but keeps at least one for
    training (the network must see every class); a regression set gives ``round(fraction ·
    N)`` samples, and keeps at least one.

    Returns
    -------
    X_train, y_train, X_val, y_val : Tensor

    Raises
    ------
    ValueError
        If the split leaves no held-out sample (too few samples for ``fraction``).

    Examples
    --------
    >>> X = torch.arange(10.0).view(-1, 1); y = torch.tensor([0] * 6 + [1] * 4)
    >>> Xt, yt, Xv, yv = split_validation(X, y, 0.5, task="classification", seed=0)
    >>> sorted(yv.tolist()), len(yt)
    ([0, 0, 0, 1, 1], 5)
    """
    gen = torch.Generator().manual_seed(int(seed) + 7919)  # not the batch order's stream
    n = X.shape[0]
    if task == "classification":
        labels = y.cpu()
        held = []
        for c in torch.unique(labels).tolist():
            idx = torch.nonzero(labels == c).flatten()
            idx = idx[torch.randperm(idx.numel(), generator=gen)]
            k = min(round(fraction * idx.numel()), idx.numel() - 1)
            held.append(idx[:k])
        val = torch.cat(held) if held else torch.empty(0, dtype=torch.long)
    else:
        k = min(round(fraction * n), n - 1)
        val = torch.randperm(n, generator=gen)[:k]
    if val.numel() == 0:
        raise ValueError(f"The 'validation_fraction' parameter ({fraction:g}) leaves no held-out "
                         f"sample of the {n} given; give more samples, a larger fraction, "
                         "validation=(X_val, y_val), or validation_fraction=0.")
    keep = torch.ones(n, dtype=torch.bool)
    keep[val] = False
    val = val.sort().values.to(X.device)
    train = torch.nonzero(keep).flatten().to(X.device)
    return X[train], y[train], X[val], y[val]


@dataclass
class HeldOut:
    """The held-out metric of a model: ``metric`` (MSE or accuracy), ``loss`` (fidelity per
    sample) and ``trivial`` (the trivial predictor's metric on the same samples)."""

    metric: float
    loss: float
    trivial: float
    n: int


@torch.no_grad()
def evaluate(model: nn.Module, data, task: str, *, trivial_from: Tensor | None = None,
             batch_size: int = 8192) -> HeldOut:
    """The held-out metric of ``model`` on ``data``: a pair of tensors or an iterable of
    ``(x, y)`` batches. ``trivial_from`` (training targets) defines the trivial predictor:
    the training mean (regression) or majority class; without it, the held-out data's own."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    if isinstance(data, tuple):
        X, y = data
        source = ((X[i:i + batch_size], y[i:i + batch_size])
                  for i in range(0, X.shape[0], batch_size))
    else:
        source = iter(data)
    total = loss = 0.0
    n = 0
    ys = []
    try:
        for xb, yb in source:
            xb, yb = xb.to(device), yb.to(device)
            out = model(xb)
            if task == "regression":
                yb = yb.to(out.dtype).reshape(out.shape)
                total += float((out - yb).pow(2).sum())
            else:
                total += float((out.argmax(dim=1) == yb).sum())
            loss += float(fidelity(out, yb, task, reduction="sum"))
            n += xb.shape[0]
            ys.append(yb.detach().cpu())
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("The validation data holds no sample.")
    y_all = torch.cat(ys)
    return HeldOut(metric=total / n, loss=loss / n,
                   trivial=trivial_metric(y_all, task, reference=trivial_from), n=n)


def trivial_metric(y: Tensor, task: str, *, reference: Tensor | None = None) -> float:
    """The metric on ``y`` of the predictor that ignores its input: the mean of ``reference``
    (regression; MSE) or its majority class (classification; accuracy). ``reference``
    defaults to ``y`` itself (then the MSE is the variance of ``y``).

    >>> trivial_metric(torch.tensor([0, 1, 1, 2]), "classification")
    0.5
    >>> trivial_metric(torch.tensor([[1.0], [3.0]]), "regression", reference=torch.zeros(3, 1))
    5.0
    """
    ref = y if reference is None else reference.to(y.device)
    if task == "classification":
        majority = int(torch.bincount(ref.flatten().long()).argmax())
        return float((y.flatten().long() == majority).double().mean())
    yd = y.double().reshape(y.shape[0], -1)
    centre = ref.double().reshape(ref.shape[0], -1).mean(dim=0)
    return float((yd - centre).pow(2).sum(dim=1).mean())


def score_key(held: HeldOut, task: str) -> tuple[float, ...]:
    """Smaller is better: the held-out MSE, or minus the accuracy.

    The accuracy alone, not the cross-entropy: the held-out loss of a longer run grows with
    its confidence while its accuracy does not fall, and breaking accuracy ties by the loss
    cut runs short (0.1-0.5 point of test accuracy lower on breast_cancer and iris). Ties go
    to the later, longer run (the callers compare with ``<=``)."""
    if task == "regression":
        return (held.metric, held.loss)
    return (-held.metric,)


def check_validation_data(validation, *, task: str, like: Tensor | None = None):
    """``validation=`` as given to :func:`~l1sparse.select.fit_sparse`: a pair ``(X_val,
    y_val)`` (checked, against the training inputs ``like`` when given, and returned as
    tensors of the library's types) or an iterable of ``(x, y)`` batches (returned as it
    is)."""
    from .validation import check_training_data

    if not isinstance(validation, (tuple, list)):
        if not hasattr(validation, "__iter__"):
            raise ValueError("The 'validation' parameter must be a pair (X_val, y_val) or an "
                             f"iterable of (x, y) batches. Got {type(validation).__name__}.")
        return validation
    if len(validation) != 2:
        raise ValueError("The 'validation' parameter must be a pair (X_val, y_val). Got "
                         f"{len(validation)} items.")
    X, y = validation
    if like is not None and hasattr(X, "shape") and tuple(X.shape[1:]) != tuple(like.shape[1:]):
        raise ValueError(f"The 'X_val' parameter has samples of shape {tuple(X.shape[1:])}; "
                         f"the training inputs have {tuple(like.shape[1:])}.")
    if task == "classification":
        # the held-out labels need not contain every class: checked as numbers, then as labels
        X, yf = check_training_data(X, y, task="regression", name_X="X_val", name_y="y_val")
        if yf.shape[1] != 1 or bool((yf != yf.floor()).any()) or bool((yf < 0).any()):
            raise ValueError("The 'y_val' parameter must hold class labels (whole numbers "
                             ">= 0, one per sample).")
        return X, yf[:, 0].long()
    return check_training_data(X, y, task=task, name_X="X_val", name_y="y_val")
