"""The sparsity scheduler as a Lightning callback.

>>> from l1sparse.integrations.lightning import SparsityCallback  # doctest: +SKIP
>>> cb = SparsityCallback(zero_fraction=0.8)                        # doctest: +SKIP
>>> lightning.Trainer(max_steps=600, callbacks=[cb]).fit(module, loader)  # doctest: +SKIP
>>> cb.scheduler.met, cb.scheduler.lam                              # doctest: +SKIP

The LightningModule keeps its own ``configure_optimizers`` (optimizer and lr schedule). At
``on_train_start`` — after Lightning has set up the optimizer and restored a checkpoint — the
callback builds a :class:`~l1sparse.scheduler.SparsityScheduler` on the module's optimizer;
the scheduler's hook on ``optimizer.step()`` applies the proximal step and advances the
schedule, with the step's gradients still there, in automatic and manual optimization alike,
once per optimizer step whatever ``accumulate_grad_batches`` is.

* ``total_steps``: ``trainer.estimated_stepping_batches`` (optimizer steps, accumulation
  and ``max_steps``/``max_epochs`` taken into account), unless given.
* ``n_samples`` (N, for λ on the summed-loss scale only): ``len`` of the training
  dataloader's dataset, unless given — right for a loss that is a mean over samples; give the
  token count for a mean over tokens. Without either, λ is not logged.
* Logged after every training batch through ``pl_module.log_dict`` (so through the module's
  logger): ``l1sparse/lambda`` (or ``l1sparse/lambda/NAME`` per tensor for a per-layer
  target), ``l1sparse/nnz``, ``l1sparse/zero_fraction`` and ``l1sparse/met`` (1.0 or 0.0).
* Checkpoints: the callback's ``state_dict`` is the scheduler's; Lightning stores it in
  ``checkpoint["callbacks"]`` and ``fit(ckpt_path=...)`` restores it, so a resumed run reaches
  the same count.

This module works with the ``lightning`` package (``import lightning``), which the
``l1sparse[lightning]`` extra installs; the standalone ``pytorch_lightning`` package has its
own ``Callback`` class that it would not accept.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

try:
    from lightning.pytorch.callbacks import Callback
except ImportError as exc:  # pragma: no cover - exercised with sys.modules patched
    raise ImportError("l1sparse.integrations.lightning needs lightning: "
                      "pip install l1sparse[lightning]") from exc

from ..scheduler import SparsityScheduler
from . import metrics, positive_or_none, scheduler_keywords, unwrap_optimizer

__all__ = ["SparsityCallback"]

log = logging.getLogger(__name__)


class SparsityCallback(Callback):
    """Reach a stated sparsity inside a Lightning ``Trainer.fit``.

    Parameters
    ----------
    zero_fraction, nnz : float, int, optional
        Exactly one target (or ``layer_zero_fraction``/``layer_nnz`` among ``kwargs``), over
        the chosen tensors of the LightningModule.
    include, exclude : optional
        The tensor patterns of :func:`~l1sparse.tensors.select_tensors`, matched against the
        LightningModule's parameter names (``net.0.weight`` for a module holding ``self.net``).
    penalty : {"reweighted", "l1"} or a penalty object, default "reweighted"
    total_steps : int, optional
        Optimizer steps of the schedule; default ``trainer.estimated_stepping_batches``.
    n_samples : int, optional
        N for λ on the summed-loss scale; default the training dataset's length.
    **kwargs
        Any other keyword of :class:`~l1sparse.scheduler.SparsityScheduler`, checked here.

    Attributes
    ----------
    scheduler : SparsityScheduler or None
        Built at ``on_train_start`` (``None`` before).

    Raises
    ------
    ValueError
        At construction: not exactly one target, an unknown keyword, a non-positive
        ``total_steps``/``n_samples``. At train start: more than one optimizer; a run of
        unknown length (``max_steps=-1`` and ``max_epochs=-1``) without ``total_steps``; a
        resumed run whose checkpoint has no state of this callback.
    """

    def __init__(self, *, zero_fraction: float | None = None, nnz: int | None = None,
                 include: str | Sequence | None = None, exclude: str | Sequence | None = None,
                 penalty="reweighted", total_steps: int | None = None,
                 n_samples: int | None = None, **kwargs) -> None:
        super().__init__()
        self._keywords = scheduler_keywords(
            {"zero_fraction": zero_fraction, "nnz": nnz,
             "layer_zero_fraction": kwargs.pop("layer_zero_fraction", None),
             "layer_nnz": kwargs.pop("layer_nnz", None)},
            include, exclude, penalty, kwargs)
        self.total_steps = positive_or_none(total_steps, "total_steps")
        self.n_samples = positive_or_none(n_samples, "n_samples")
        self.scheduler: SparsityScheduler | None = None
        self._saved: dict | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        optimizers = trainer.optimizers
        if len(optimizers) != 1:
            raise ValueError(f"SparsityCallback drives one optimizer; configure_optimizers "
                             f"returned {len(optimizers)}.")
        total = self.total_steps
        if total is None:
            estimate = trainer.estimated_stepping_batches
            if not math.isfinite(estimate) or estimate < 1:
                raise ValueError("The Lightning Trainer does not know its number of optimizer "
                                 f"steps ({estimate}): give SparsityCallback(total_steps=...).")
            total = int(estimate)
        if trainer.global_step > 0 and self._saved is None:
            raise ValueError(f"Resuming at step {trainer.global_step}, but the checkpoint holds "
                             "no SparsityCallback state: resume a checkpoint of a "
                             "SparsityCallback run.")
        n = self.n_samples
        if n is None:
            try:
                n = len(trainer.train_dataloader.dataset)
            except (AttributeError, TypeError):
                log.info("SparsityCallback: the training set has no length; λ is not logged "
                         "(give n_samples=N)")
        if self.scheduler is not None:  # a second fit() on this callback
            self.scheduler.remove()
        self.scheduler = SparsityScheduler(unwrap_optimizer(optimizers[0]), model=pl_module,
                                           total_steps=total, n_samples=n, **self._keywords)
        log.info("SparsityCallback: %r over %d optimizer steps, N = %s", self.scheduler, total, n)
        if self._saved is not None:
            self.scheduler.load_state_dict(self._saved)
        self._saved = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.scheduler is not None:
            pl_module.log_dict(metrics(self.scheduler), on_step=True, on_epoch=False)

    def on_train_end(self, trainer, pl_module) -> None:
        """Drop the hooks on the optimizer (the scheduler stays readable)."""
        if self.scheduler is not None:
            self.scheduler.remove()

    def state_dict(self) -> dict:
        if self.scheduler is not None:
            return {"scheduler": self.scheduler.state_dict()}
        return {} if self._saved is None else {"scheduler": self._saved}

    def load_state_dict(self, state_dict: dict) -> None:
        # called before on_train_start: kept until the scheduler is built
        self._saved = state_dict.get("scheduler")
