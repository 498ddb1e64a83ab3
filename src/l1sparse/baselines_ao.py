"""The pruning tool every PyTorch user already has: ``torch.ao.pruning``, as a baseline.

:func:`torch_ao_pruning` trains a network while ``torch.ao.pruning``'s
:class:`~torch.ao.pruning.WeightNormSparsifier` (unstructured: ``sparse_block_shape=(1, 1)``,
``zeros_per_block=1``) masks its weights on the cubic schedule of its
:class:`~torch.ao.pruning.scheduler.cubic_scheduler.CubicSL` scheduler (Zhu & Gupta, 2017). It
sparsifies the same tensors as the rest of the library
(:func:`~l1sparse.tensors.select_tensors`) and trains through the library's one loop
(:func:`~l1sparse.train.train_steps`) with the same optimizer, learning-rate decay and batch order
as :func:`~l1sparse.baselines.gradual_magnitude_pruning`, so the two differ only in how the zeros
are shared out:

* **uniform per tensor, not global.** The sparsifier gives every tensor the same zero fraction
  (each tensor keeps its own largest-magnitude entries), where GMP ranks all weights together;
  a small classifier layer is pruned as hard as a large hidden one.
* The masks are ``torch.nn.utils.parametrize`` parametrizations
  (:class:`~torch.ao.pruning.sparsifier.utils.FakeSparsity`): every forward pass computes
  ``mask · W``; at the end ``squash_mask`` folds them into plain parameters with exact zeros.

As shipped, the sparsifier reads a tensor's last two dimensions as rows and columns, so on a
4-D convolution kernel ``(out, in, kh, kw)`` it would rank within ``(kh, kw)`` planes and its
count would be wrong. :class:`FlatWeightNormSparsifier` ranks every ≥2-D tensor through its
``(out, -1)`` view instead (the mask keeps the tensor's shape).
"""

from __future__ import annotations

import logging
import math
import time

import torch
from torch import Tensor, nn
from torch.ao.pruning import WeightNormSparsifier
from torch.ao.pruning.scheduler.cubic_scheduler import CubicSL

from .baselines import BaselineResult, _check_int
from .config import DEFAULTS
from .losses import check_task
from .select import check_fraction as _check_fraction
from .tensors import select_tensors
from .train import DivergenceError, make_optimizer, train_steps

__all__ = ["FlatWeightNormSparsifier", "torch_ao_pruning"]

log = logging.getLogger(__name__)


class FlatWeightNormSparsifier(WeightNormSparsifier):
    """:class:`~torch.ao.pruning.WeightNormSparsifier` that ranks a tensor of any rank ≥ 2
    through its ``(out, -1)`` view.

    Only unstructured sparsity (``sparse_block_shape=(1, 1)``, ``zeros_per_block=1``, the
    defaults here) is supported: then a tensor's mask zeroes exactly
    ``round(sparsity_level · numel)`` entries of smallest magnitude (ties broken by
    ``torch.topk``), whatever the tensor's shape.

    Parameters
    ----------
    sparsity_level : float, default 0.5
        The zero fraction of every tensor (a :class:`CubicSL` scheduler moves it).
    norm : {1, 2}, default 2
        Ranking by ``|w|`` or ``w²`` (the same order for single entries).
    """

    def __init__(self, sparsity_level: float = 0.5, norm: int = 2) -> None:
        super().__init__(sparsity_level=sparsity_level, sparse_block_shape=(1, 1),
                         zeros_per_block=1, norm=norm)

    def update_mask(self, module, tensor_name, sparsity_level, sparse_block_shape,  # noqa: D102
                    zeros_per_block, **kwargs):
        if tuple(sparse_block_shape) != (1, 1) or zeros_per_block != 1:
            raise ValueError("FlatWeightNormSparsifier supports sparse_block_shape=(1, 1) and "
                             f"zeros_per_block=1 only. Got {sparse_block_shape}, "
                             f"{zeros_per_block}.")
        mask = getattr(module.parametrizations, tensor_name)[0].mask
        if sparsity_level <= 0:
            mask.data = torch.ones_like(mask)
            return
        if sparsity_level >= 1:
            mask.data = torch.zeros_like(mask)
            return
        weight = getattr(module, tensor_name)  # the masked weight: pruned entries rank lowest
        flat = self.norm_fn(weight).reshape(weight.shape[0], -1)
        flat_mask = self._make_tensor_mask(data=flat, input_shape=flat.shape,
                                           sparsity_level=sparsity_level,
                                           sparse_block_shape=(1, 1))
        mask.data = flat_mask.reshape(mask.shape).to(mask.dtype)


def torch_ao_pruning(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    *,
    task: str,
    zero_fraction: float,
    epochs: int = DEFAULTS.epochs,
    begin: float = 0.0,
    end: float = 0.7,
    frequency: int = 100,
    optimizer: str = DEFAULTS.optimizer,
    lr: float | None = None,
    lr_final: float = DEFAULTS.lr_final,
    momentum: float = DEFAULTS.momentum,
    batch_size: int | None = DEFAULTS.batch_size,
    seed: int = 0,
    device: str | torch.device | None = None,
    include=None,
    exclude=None,
) -> BaselineResult:
    """Train with ``torch.ao.pruning``'s magnitude sparsifier on its cubic schedule.

    The zero fraction of **every** penalised tensor follows ``CubicSL`` from 0 at
    ``begin · T`` to ``zero_fraction`` at ``end · T`` (T the optimizer steps of the run); the
    masks are recomputed every ``frequency`` steps in that window and once at its end, and
    fixed otherwise. The allocation is **uniform per tensor, not global**: each tensor ends
    with ``round(zero_fraction · numel)`` zeros (the overall fraction is ``zero_fraction`` up
    to that rounding), unlike :func:`~l1sparse.baselines.gradual_magnitude_pruning`, which
    ranks all weights together. Everything else (optimizer without penalty, cosine decay of
    the learning rate per epoch to ``lr · lr_final``, batch order from ``seed``) is as in
    :func:`~l1sparse.baselines.gradual_magnitude_pruning`.

    Parameters
    ----------
    model : nn.Module
        Trained in place; it ends with plain parameters (the same objects) holding exact
        zeros, no parametrization left.
    X, y : Tensor
        Training data.
    task : {"regression", "classification"}
    zero_fraction : float
        Final zero fraction of each tensor, in ``[0, 1)``.
    epochs : int, default 20
    begin, end : float, default 0 and 0.7
        The pruning window as fractions of the run, ``0 ≤ begin < end ≤ 1``.
    frequency : int, default 100
        Optimizer steps between mask updates (``CubicSL``'s ``delta_t``).
    optimizer : {"sgd", "adam"}, default "sgd"
        :class:`~l1sparse.prox.ProxSGD` / :class:`~l1sparse.prox.ProxAdam` with ``l1 = 0``.
    lr : float, optional
        Default ``DEFAULTS.lr_for(optimizer)`` (0.1 for SGD, 1e-3 for Adam).
    lr_final : float, default 0.05
    momentum : float, default 0.9
        For ``optimizer="sgd"``.
    batch_size : int or None, default 128
    seed : int, default 0
        Seeds the mini-batch order.
    device : str or torch.device, optional
    include, exclude : patterns, optional
        Which tensors are sparsified (:func:`~l1sparse.tensors.select_tensors`).

    Returns
    -------
    BaselineResult
        ``method = "torch.ao.pruning"``; ``details`` has the number of mask updates,
        ``levels`` (``(step, zero fraction)`` at each update), the window and each tensor's
        zero count.

    Raises
    ------
    ValueError
        For a zero fraction outside ``[0, 1)``, a window that is not ``0 ≤ begin < end ≤ 1``,
        non-positive ``epochs``/``frequency``, or a model with nothing to sparsify.
    DivergenceError
        If the loss becomes NaN or infinite.

    Examples
    --------
    >>> from l1sparse.models import mlp
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(256, 10, generator=g); y = (X[:, 0] > 0).long()
    >>> res = torch_ao_pruning(mlp(10, [32], 2, seed=0), X, y, task="classification",
    ...                        zero_fraction=0.8, epochs=4, frequency=4, lr=1e-2)
    >>> res.details["zeros"]  # round(0.8 · 320), round(0.8 · 64)
    {'fc1': 256, 'fc2': 51}
    """
    target = _check_fraction(zero_fraction, "zero_fraction")
    check_task(task)
    epochs = _check_int(epochs, "epochs", 1)
    frequency = _check_int(frequency, "frequency", 1)
    begin, end = float(begin), float(end)
    if not (0.0 <= begin < end <= 1.0):
        raise ValueError("The 'begin' and 'end' parameters must satisfy 0 <= begin < end <= 1. "
                         f"Got begin={begin}, end={end}.")
    if batch_size is not None:
        batch_size = _check_int(batch_size, "batch_size", 1)
    tensors = select_tensors(model, include, exclude, warn=False)
    if not tensors:
        raise ValueError("The model has no tensor to sparsify (select_tensors chose none).")
    lr = DEFAULTS.lr_for(optimizer) if lr is None else float(lr)

    t_start = time.perf_counter()
    if device is not None:
        model.to(device)
        X, y = X.to(device), y.to(device)
    n = X.shape[0]
    bs = n if batch_size is None else min(batch_size, n)
    total_steps = epochs * math.ceil(n / bs)
    t_end = max(1, round(end * total_steps))
    t_begin = min(round(begin * total_steps), t_end - 1)
    # the optimizer first: the parametrization keeps the same Parameter objects
    opt = make_optimizer(model, optimizer, lr=lr, lambdas={t.name: 0.0 for t in tensors},
                         n_samples=n, momentum=momentum, include=include, exclude=exclude)
    sparsifier = FlatWeightNormSparsifier(sparsity_level=target)
    sparsifier.prepare(model, [{"tensor_fqn": (f"{t.module_name}." if t.module_name else "")
                                + t.attr} for t in tensors])
    # s_t = s_f (1 - (t - t_0) / (Δt · n))³ from t_0 = t_begin to t_0 + Δt · n = t_end
    schedule = CubicSL(sparsifier, init_sl=0.0, init_t=t_begin, delta_t=frequency,
                       total_t=(t_end - t_begin) / frequency, initially_zero=True)
    sparsifier.step()  # the level at step 0 (the scheduler's constructor set it)
    state = {"step": 0, "levels": []}

    def after_step() -> None:
        state["step"] += 1
        step = state["step"]
        schedule.step()  # the level at this step
        if t_begin < step <= t_end and ((step - t_begin) % frequency == 0 or step == t_end):
            sparsifier.step()
            state["levels"].append((step, sparsifier.groups[0]["sparsity_level"]))

    decay = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda e: lr_final + (1 - lr_final) * 0.5 * (1 + math.cos(math.pi * e / epochs)))
    try:
        train_steps(model, (X, y), opt, task=task, steps=total_steps,
                    batch_size=None if bs >= n else bs,
                    generator=torch.Generator().manual_seed(seed), after_step=after_step,
                    on_epoch=lambda *_: decay.step())
    except DivergenceError as exc:
        raise DivergenceError(f"torch.ao.pruning: {exc}") from None
    finally:
        sparsifier.squash_mask()  # plain parameters with exact zeros, no parametrization
    zeros = {t.name: int(t.numel() - torch.count_nonzero(t.param)) for t in tensors}
    total = sum(t.numel() for t in tensors)
    nnz = total - sum(zeros.values())
    log.debug("torch.ao.pruning: %d mask updates, zeros %s", len(state["levels"]), zeros)
    return BaselineResult("torch.ao.pruning", model, target, 1 - nnz / total, nnz, total,
                          epochs=epochs, epochs_total=epochs,
                          seconds=time.perf_counter() - t_start,
                          details={"updates": len(state["levels"]), "levels": state["levels"],
                                   "begin_step": t_begin, "end_step": t_end,
                                   "steps": total_steps, "zeros": zeros})
