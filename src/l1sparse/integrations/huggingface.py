"""The sparsity scheduler as a Hugging Face ``Trainer`` callback.

>>> from l1sparse.integrations.huggingface import SparsityCallback  # doctest: +SKIP
>>> cb = SparsityCallback(zero_fraction=0.8)                          # doctest: +SKIP
>>> Trainer(model=model, args=args, train_dataset=ds, callbacks=[cb]).train()  # doctest: +SKIP
>>> cb.scheduler.met, cb.scheduler.lam                                # doctest: +SKIP

The Trainer keeps its own optimizer (AdamW by default) and learning-rate schedule. At train
start the callback builds a :class:`~l1sparse.scheduler.SparsityScheduler` on the torch
optimizer under accelerate's ``AcceleratedOptimizer``; the scheduler's hook on
``optimizer.step()`` applies the proximal step to the chosen tensors and advances the
schedule there, while the gradients of the step still exist (a callback that stepped in
``on_step_end`` would run after ``zero_grad``). So the schedule counts optimizer steps, as
``state.max_steps`` does, whatever ``gradient_accumulation_steps`` is.

What the callback reads from the Trainer
----------------------------------------
* ``total_steps``: ``state.max_steps`` (optimizer steps), unless given.
* ``n_samples`` (N, only for reporting λ on the summed-loss scale, docs/design.md §1): unless
  given, from the training set and its first example. The Trainer's losses are means, so N is
  the number of terms the loss averages over the whole set: ``len(train_dataset)`` when an
  example's ``labels`` is a scalar (or absent, for a model that is not a causal language
  model); ``len(train_dataset) × tokens`` when ``labels`` is a sequence (tokens = entries
  other than -100, less the first one for a causal language model, which predicts from the
  second position on) or absent for a causal language model (tokens = ``len(input_ids) − 1``).
  The first example stands for all of them: give ``n_samples`` for an exact count of
  variable-length or padded sequences. With a training set without a length, λ is not
  logged unless ``n_samples`` is given.

Logs and checkpoints
--------------------
Every Trainer log gets ``l1sparse/lambda`` (one value per tensor, ``l1sparse/lambda/NAME``,
for a per-layer target), ``l1sparse/nnz``, ``l1sparse/zero_fraction`` (over the chosen tensors,
at the scheduler's last count) and ``l1sparse/met`` (1.0 or 0.0), in ``state.log_history`` and
for the callbacks after this one (the printer and progress bar). Reporting callbacks that the
Trainer puts before the user's callbacks (``report_to``: TensorBoard, W&B, ...) have already
written the step's logs: to have them see these keys, put this callback first with
``trainer.callback_handler.callbacks.insert(0, cb)``.

The scheduler's state travels inside the optimizer's state dict (a key of its first parameter
group, added by a state-dict hook), so every Trainer checkpoint that saves the optimizer holds
it and ``trainer.train(resume_from_checkpoint=...)`` from any path restores it; the resumed
run reaches the same count as an uninterrupted one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch

try:
    import accelerate  # noqa: F401  (the Trainer needs it)
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - exercised with sys.modules patched
    raise ImportError("l1sparse.integrations.huggingface needs transformers and accelerate: "
                      "pip install l1sparse[huggingface]") from exc

from ..scheduler import SparsityScheduler
from . import metrics, positive_or_none, scheduler_keywords, unwrap_optimizer

__all__ = ["SparsityCallback", "STATE_KEY", "infer_n_samples"]

log = logging.getLogger(__name__)

#: the key of the optimizer's first parameter group under which a checkpoint holds the
#: scheduler's state
STATE_KEY = "l1sparse_scheduler"
IGNORE_INDEX = -100  # the label the Trainer's losses skip


def _is_causal_lm(model) -> bool:
    name = type(model).__name__
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        known = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    except ImportError:  # pragma: no cover - moved in some transformers version
        known = set()
    return name in known or name.endswith(("ForCausalLM", "LMHeadModel"))


def infer_n_samples(dataset, model=None) -> tuple[int | None, str]:
    """N for a Trainer's mean loss over ``dataset`` (module docstring), and how it was found.

    Returns
    -------
    (int or None, str)
        ``None`` when the dataset has no length.

    Examples
    --------
    >>> infer_n_samples([{"x": [0.0], "labels": 1}] * 10)
    (10, '10 samples (scalar labels)')
    >>> infer_n_samples([{"labels": [5, 6, -100, 7]}] * 10)
    (30, '10 samples x 3 labelled tokens')
    """
    try:
        n = len(dataset)
    except TypeError:
        return None, "the training set has no length"
    if n == 0:
        return None, "the training set is empty"
    try:
        first = dataset[0]
    except Exception:  # noqa: BLE001 - any dataset that cannot be indexed: count samples
        return n, f"{n} samples (examples not indexable)"
    causal = model is not None and _is_causal_lm(model)
    if isinstance(first, Mapping):
        labels = first.get("labels")
        if labels is not None:
            try:
                labels = torch.as_tensor(labels)
            except (TypeError, ValueError, RuntimeError):  # not numbers: count samples
                return n, f"{n} samples (labels not numeric)"
            if labels.dim() == 0:
                return n, f"{n} samples (scalar labels)"
            flat = labels.flatten()[1:] if causal else labels.flatten()
            tokens = int((flat != IGNORE_INDEX).sum())
            return n * max(1, tokens), f"{n} samples x {tokens} labelled tokens"
        ids = first.get("input_ids")
        if causal and ids is not None:
            tokens = max(1, int(torch.as_tensor(ids).numel()) - 1)
            return n * tokens, f"{n} samples x {tokens} predicted tokens (causal LM)"
    return n, f"{n} samples"


class SparsityCallback(TrainerCallback):
    """Reach a stated sparsity inside a Hugging Face ``Trainer`` run.

    Parameters
    ----------
    zero_fraction, nnz : float, int, optional
        Exactly one target (or ``layer_zero_fraction``/``layer_nnz`` among ``kwargs``), over
        the chosen tensors, as in :class:`~l1sparse.scheduler.SparsityScheduler`.
    include, exclude : optional
        The tensor patterns of :func:`~l1sparse.tensors.select_tensors`. The default set is
        every ≥2-D weight except embeddings and norms, GPT-2's ``Conv1D`` weights included.
    penalty : {"reweighted", "l1"} or a penalty object, default "reweighted"
    total_steps : int, optional
        Optimizer steps of the schedule. Default: the Trainer's ``state.max_steps``.
    n_samples : int, optional
        N for λ on the summed-loss scale. Default: inferred (module docstring).
    **kwargs
        Any other keyword of :class:`~l1sparse.scheduler.SparsityScheduler` (``tol``,
        ``hold``, ``layer_nnz``, ...), checked here.

    Attributes
    ----------
    scheduler : SparsityScheduler or None
        The scheduler this callback drives, built at train start (``None`` before); read
        ``scheduler.met``, ``.lambdas``, ``.nnz``, ``.history`` as usual.
    n_samples_source : str
        How N was found.

    Raises
    ------
    ValueError
        At construction: not exactly one target, an unknown keyword, a non-positive
        ``total_steps``/``n_samples``. At train start: the Trainer's step count is unknown
        (``max_steps`` = -1 with a training set without length) and ``total_steps`` was not
        given; a resumed run whose checkpoint has no scheduler state.
    """

    def __init__(self, *, zero_fraction: float | None = None, nnz: int | None = None,
                 include: str | Sequence | None = None, exclude: str | Sequence | None = None,
                 penalty="reweighted", total_steps: int | None = None,
                 n_samples: int | None = None, **kwargs) -> None:
        self._keywords = scheduler_keywords(
            {"zero_fraction": zero_fraction, "nnz": nnz,
             "layer_zero_fraction": kwargs.pop("layer_zero_fraction", None),
             "layer_nnz": kwargs.pop("layer_nnz", None)},
            include, exclude, penalty, kwargs)
        self.total_steps = positive_or_none(total_steps, "total_steps")
        self.n_samples = positive_or_none(n_samples, "n_samples")
        self.scheduler: SparsityScheduler | None = None
        self.n_samples_source = ""
        self._state_hook = None

    # ------------------------------------------------------------------ train start / end

    def on_train_begin(self, args, state, control, model=None, optimizer=None,
                       train_dataloader=None, **kwargs):
        total = self.total_steps or state.max_steps
        if total is None or total < 1:
            raise ValueError("The Trainer does not know its number of optimizer steps "
                             f"(max_steps={state.max_steps}): give "
                             "SparsityCallback(total_steps=...).")
        if self.total_steps is not None and state.max_steps and self.total_steps > \
                state.max_steps:
            log.warning("SparsityCallback: total_steps=%d is longer than the run (%d steps); "
                        "the schedule will not finish", self.total_steps, state.max_steps)
        inner = unwrap_optimizer(optimizer)
        saved = inner.param_groups[0].pop(STATE_KEY, None) if inner.param_groups else None
        if state.global_step > 0 and saved is None:
            raise ValueError(
                f"Resuming at step {state.global_step}, but the checkpoint's optimizer state "
                "holds no l1sparse scheduler state (saved without SparsityCallback, or without "
                "the optimizer): resume a checkpoint of a SparsityCallback run.")
        n, self.n_samples_source = self.n_samples, "given"
        if n is None:
            dataset = getattr(train_dataloader, "dataset", None)
            n, self.n_samples_source = infer_n_samples(dataset, model)
        if self.scheduler is not None:  # a second train() on this callback
            self.scheduler.remove()
        self.scheduler = SparsityScheduler(inner, model=model, total_steps=total, n_samples=n,
                                           **self._keywords)
        log.info("SparsityCallback: %r over %d optimizer steps; N = %s", self.scheduler,
                 total, self.n_samples_source)
        if state.global_step > 0:  # resumed: the state came back with the optimizer's
            self.scheduler.load_state_dict(saved)
            if self.scheduler.last_step != state.global_step:
                log.warning("SparsityCallback: the scheduler resumes at step %d, the Trainer "
                            "at %d", self.scheduler.last_step, state.global_step)
        if self._state_hook is not None:
            self._state_hook.remove()
        self._state_hook = inner.register_state_dict_post_hook(self._add_state)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        """Drop the hooks on the optimizer (the scheduler stays readable)."""
        if self.scheduler is not None:
            self.scheduler.remove()
        if self._state_hook is not None:
            self._state_hook.remove()
            self._state_hook = None
        return control

    def _add_state(self, optimizer, state_dict: dict) -> dict:
        """Optimizer state-dict hook: the scheduler's state rides in the first group."""
        if self.scheduler is not None and state_dict.get("param_groups"):
            state_dict["param_groups"][0][STATE_KEY] = self.scheduler.state_dict()
        return state_dict

    # ------------------------------------------------------------------ logs

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.scheduler is None or logs is None:
            return control
        values = metrics(self.scheduler)
        logs.update(values)
        # the Trainer appended a copy of these logs to the history just before this call
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(values)
        return control

    def __repr__(self) -> str:
        return f"SparsityCallback({self._keywords!r}, scheduler={self.scheduler!r})"

