"""Training a network to a prescribed sparsity: :func:`fit_sparse` (docs/design.md §5).

One entry point, three drivers on the library's one training loop
(:func:`~l1sparse.train.train_steps`):

* ``mode="warm"`` (default): one run stepped with a
  :class:`~l1sparse.scheduler.SparsityScheduler`, λ steered as the training goes;
* ``mode="retrain"`` and ``mode="paper"``: a full training at a fixed λ per outer iteration,
  all from the same initial weights (:func:`l1sparse.retrain.retrain_select`), the next λ from
  the sorted-gradient rule or the paper's bracketed median (:mod:`l1sparse.rule`).

Also here: the records of a selection (:class:`OuterRecord`, :class:`SelectionResult`), the
step budget (:func:`resolve_steps`) and the checks that a sparse network still works
(:func:`network_warnings`).

(About 650 lines: ``fit_sparse`` with its budget search and held-out checkpoint, and the
result records every driver returns, which the command line, the experiments and the
estimators read; the drivers themselves are in :mod:`l1sparse.scheduler` and
:mod:`l1sparse.retrain`.)
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from .penalty import layer_names, penalised_layers
from .sparsity import nnz_per_layer
from .config import DEFAULTS
from .targets import Scope, Target, check_fraction, make_target  # noqa: F401 - re-exported
from .train import (batches_per_epoch, evenly_spaced, make_optimizer, recalibrate_batchnorm,
                    train_steps)

__all__ = [
    "MODES",
    "Target",
    "make_target",
    "OuterRecord",
    "SelectionResult",
    "fit_sparse",
]

log = logging.getLogger(__name__)

MODES = ("warm", "retrain", "paper")


# --------------------------------------------------------------------------- targets


# --------------------------------------------------------------------------- records


@dataclass
class OuterRecord:
    """One outer iteration of the selection."""

    iteration: int
    phase: str  # "search", "refine" or "final"
    lambdas: dict[str, float]
    nnz: dict[str, int]
    nnz_total: int
    attained: float | list[float]
    met: bool
    loss: float  # full-data summed fidelity at the end of the iteration
    objective: float
    max_violation: float
    epochs: float
    seconds: float
    val_metric: float = float("nan")  # held-out metric at the row's last pass (warm mode)

    def as_row(self) -> dict:
        row = {k: v for k, v in asdict(self).items() if k not in ("lambdas", "nnz", "attained")}
        row["attained"] = self.attained
        for name, lam in self.lambdas.items():
            row[f"lambda_{name}"] = lam
        for name, count in self.nnz.items():
            row[f"nnz_{name}"] = count
        return row


@dataclass
class SelectionResult:
    lambdas: dict[str, float]
    target: Target
    converged: bool
    distance: list[float]  # per scope, weights off the target at the returned model
    nnz: dict[str, int]
    history: list[OuterRecord] = field(default_factory=list)
    epochs_total: float = 0.0
    seconds: float = 0.0
    steps: int | None = None  # optimizer steps of a warm run
    penalty: str = "l1"
    final_projection: dict | None = None  # the scheduler's explicit last projection, if any
    guard_events: int = 0
    warnings: list[str] = field(default_factory=list)  # why the network may not work
    penalty_weights: dict[str, Tensor] = field(default_factory=dict, repr=False)
    validation: dict | None = None  # the held-out split, its metric and the budget search

    @property
    def works(self) -> bool:
        """Whether the network passed the checks of :func:`network_warnings`."""
        return not self.warnings

    @property
    def outer_iterations(self) -> int:
        return len(self.history)

    @property
    def lam(self) -> float | list[float]:
        """λ on the summed scale: one number for a global target, a list per layer otherwise."""
        values = list(self.lambdas.values())
        if self.target.per_layer:
            return values
        return values[0]


def auto_grad_samples(n_samples: int) -> int | None:
    """The default subsample for steering λ in retrain mode: all samples up to 20,000, else
    10,000 (a full-data gradient costs most of an epoch on large data; measured in
    ``benchmarks/RESULTS.md``)."""
    return 10_000 if n_samples > 20_000 else None


MIN_STEPS = DEFAULTS.min_steps
DEFAULT_EPOCHS = DEFAULTS.epochs


def resolve_steps(steps_per_epoch: int, epochs: float | None = None,
                  steps: int | None = None) -> int:
    """The length of a run in optimizer steps (docs/design.md §5).

    ``steps`` wins when given; else ``epochs`` passes over the data; with neither,
    ``DEFAULT_EPOCHS`` (20) passes but at least ``MIN_STEPS`` (3,000) steps, so that a small
    data set (a few batches per epoch) still gets enough steps for λ to be steered. Where the
    floor binds, :func:`fit_sparse` holds data out and chooses among :func:`budget_rungs`
    instead, unless told not to (docs/design.md §5.3): a thousand passes overfit.

    >>> resolve_steps(469), resolve_steps(2), resolve_steps(2, epochs=10), resolve_steps(2, 10, 50)
    (9380, 3000, 20, 50)
    """
    if steps is not None:
        if isinstance(steps, bool) or int(steps) != steps or steps < 1:
            raise ValueError(f"The 'steps' parameter must be a positive integer. Got {steps!r}.")
        return int(steps)
    if epochs is not None:
        if not (math.isfinite(float(epochs)) and epochs > 0):
            raise ValueError(f"The 'epochs' parameter must be a positive number. Got {epochs!r}.")
        return max(1, round(float(epochs) * steps_per_epoch))
    return max(DEFAULT_EPOCHS * steps_per_epoch, MIN_STEPS)


def budget_rungs(steps_per_epoch: int) -> list[int]:
    """The run lengths (optimizer steps) tried when held-out data chooses the budget.

    Doubling from ``DEFAULTS.budget_first_steps`` (or ``budget_first_epochs`` passes, if
    longer) up to ``budget_max_factor`` times the default of :func:`resolve_steps`; each is a
    whole run, its ramp, hold and learning-rate decay scaled to its length (docs/design.md
    §5.3).

    >>> budget_rungs(3), budget_rungs(469)
    ([100, 200, 400, 800, 1600, 3000], [4690, 9380])
    """
    cap = max(1, round(DEFAULTS.budget_max_factor * resolve_steps(steps_per_epoch)))
    first = min(cap, max(DEFAULTS.budget_first_steps,
                         DEFAULTS.budget_first_epochs * steps_per_epoch))
    rungs = [first]
    while 2 * rungs[-1] < cap:
        rungs.append(2 * rungs[-1])
    if cap < 1.5 * rungs[-1]:
        rungs[-1] = cap
    elif rungs[-1] != cap:
        rungs.append(cap)
    return rungs


def network_warnings(model: nn.Module, X: Tensor | None, y: Tensor | None, *, task: str,
                     train_metric: float | None = None, held_out=None) -> list[str]:
    """Why a network that meets its count may still not work, one phrase each (empty: it
    works). A hidden layer with no live unit; a metric within 5 points of the trivial
    predictor (majority class accuracy; for regression MSE ≥ 0.9 of the trivial predictor's).

    With ``held_out`` (a :class:`~l1sparse.holdout.HeldOut`) the metric is judged on the
    held-out data against the predictor that always answers the training majority class or
    mean; otherwise on ``(X, y)`` (training data, at most 8,192 evenly spaced samples:
    accuracy, or MSE against 0.9·Var(y)).
    """
    from .losses import metric

    out = []
    layers = penalised_layers(model)
    for (name, m), (_, nxt) in zip(layers, layers[1:]):
        rows = (m.weight != 0).flatten(1).any(dim=1)
        cols = (nxt.weight != 0).transpose(0, 1).flatten(1).any(dim=1)
        if rows.shape == cols.shape and not bool((rows & cols).any()):
            out.append(f"no live unit is left after layer {name}: the network is constant; "
                       "ask for fewer zeros or train longer (--steps)")
    if held_out is not None:
        if task == "classification" and held_out.metric <= held_out.trivial + 0.05:
            out.append(f"validation accuracy {held_out.metric:.3f} is within 5 points of always "
                       f"predicting the majority class ({held_out.trivial:.3f}); ask for fewer "
                       "zeros, give more data or check the learning rate")
        elif task == "regression" and held_out.trivial > 0 \
                and held_out.metric >= 0.9 * held_out.trivial:
            out.append(f"validation MSE {held_out.metric:.4g} is at least 0.9 of always "
                       f"predicting the training mean ({held_out.trivial:.4g}): the network "
                       "does not generalise; standardise the target or features "
                       "(--standardize), ask for fewer zeros or give more data")
        return out
    if X is None:
        return out
    if train_metric is None:
        # the check asks whether the network is near the trivial predictor, not for the
        # exact training metric: a sample will do where a pass over a large training set
        # would cost a good part of an epoch
        sample = evenly_spaced(X.shape[0])
        train_metric = metric(model, X[sample], y[sample], task)
    if task == "classification":
        majority = float(torch.bincount(y.flatten().long()).max()) / y.numel()
        if train_metric <= majority + 0.05:
            out.append(f"train accuracy {train_metric:.3f} is within 5 points of always "
                       f"predicting the majority class ({majority:.3f}); ask for fewer zeros, "
                       "train longer (--steps) or check the learning rate")
    else:
        var = float(y.double().var(unbiased=False)) if y.numel() > 1 else 0.0
        if var > 0 and train_metric >= 0.9 * var * (y[0].numel() if y.dim() > 1 else 1):
            out.append(f"train MSE {train_metric:.4g} is at least 0.9 of the variance of y "
                       f"({var:.4g}): the network predicts little more than the mean; "
                       "standardise the target or features (--standardize), ask for fewer "
                       "zeros or train longer")
    return out


def default_penalty(model: nn.Module) -> str:
    """``"reweighted"`` for a network, ``"l1"`` for a linear model (the convex case)."""
    return (DEFAULTS.network_penalty if len(penalised_layers(model)) > 1
            else DEFAULTS.linear_penalty)


def fit_sparse(
    model: nn.Module,
    X,
    y=None,
    *,
    task: str,
    target: Target | None = None,
    zero_fraction: float | None = None,
    nnz: int | None = None,
    layer_zero_fraction=None,
    layer_nnz=None,
    tol: float | None = None,
    mode: str = "warm",
    epochs: float | None = None,
    steps: int | None = None,
    optimizer: str = DEFAULTS.optimizer,
    lr: float | None = None,
    momentum: float | None = None,
    batch_size: int | None = DEFAULTS.batch_size,
    penalty: str = "auto",
    seed: int = 0,
    device: str | torch.device | None = None,
    loss_fn: Callable | None = None,
    n_samples: int | None = None,
    lr_final: float = DEFAULTS.lr_final,
    callback: Callable[[OuterRecord], None] | None = None,
    checkpoint: Callable[[dict], None] | None = None,
    resume: dict | None = None,
    shard: tuple[int, int] | None = None,
    grad_samples: int | None | str = "auto",
    validation_fraction: float | str = "auto",
    validation=None,
    include=None,
    exclude=None,
    **scheduler_kwargs,
) -> SelectionResult:
    """Train ``model`` in place so that it meets a sparsity target; return the selection.

    ``mode="warm"`` (default) is our training loop stepped with a
    :class:`~l1sparse.scheduler.SparsityScheduler`: one run of ``steps`` optimizer steps, the
    zero fraction ramped from the dense side and λ steered so the count tracks it, then held
    while the learning rate decays (cosine, to ``lr · lr_final``). ``mode="paper"`` is the
    paper's own scheme (:func:`~l1sparse.retrain.retrain_select` with ``rule="paper"``): each
    outer iteration trains at a constant λ from the same initial weights, plain proximal SGD
    (no momentum unless given) at a constant rate, stopped on entering the tolerance, and the
    bracketed median of the full-data γ chooses the next λ. ``mode="retrain"`` is the same
    loop with the sorted-gradient rule (:func:`~l1sparse.rule.propose`) and, mini-batch, the
    default momentum and a cosine decay per training, each training run to its budget
    (``stop_on_entry=False``). Both are plain ℓ1 and return
    ``RetrainResult.to_selection()``; ``epochs`` is the budget of one training (default
    ``DEFAULTS.full_batch_epochs`` full batch, ``DEFAULTS.epochs`` mini-batch).

    Parameters
    ----------
    model : nn.Module
    X : Tensor or array, or an iterable of ``(x, y)`` batches (a ``DataLoader``)
    y : Tensor or array, optional
        Targets when ``X`` is a tensor (class indices, or float targets for regression).
    task : {"regression", "classification"}
    zero_fraction, nnz, layer_zero_fraction, layer_nnz, tol, target :
        The target (:func:`~l1sparse.targets.make_target`); counts are exact by default.
    epochs, steps :
        The budget (:func:`resolve_steps`): ``steps`` wins; with neither, 20 epochs but at
        least 3,000 steps, except on small data where that is more than 20 epochs: there a
        held-out share chooses the length (``validation_fraction``; docs/design.md §5.3).
    optimizer : {"sgd", "adam"}, default "sgd"
        Proximal SGD (momentum ``momentum``) or ProxAdam, learning rate ``lr``; the defaults
        of ``lr`` and ``momentum`` are those of :data:`l1sparse.config.DEFAULTS` (0.1 and 0.9
        for SGD, 1e-3 for Adam; no momentum full batch).
    penalty : {"auto", "reweighted", "l1"}, default "auto"
        "auto" is reweighted ℓ1 for networks in warm mode, plain ℓ1 for a linear model and in
        retrain mode.
    loss_fn : callable, optional
        ``loss_fn(output, target)`` → the mean loss of a batch (default: squared error or
        cross-entropy by ``task``). λ is on the summed scale of *this* loss.
    n_samples : int, optional
        N for λ's summed scale when ``X`` is a loader (default ``len(X.dataset)``).
    include, exclude : patterns, optional
        Which tensors are penalised (:func:`~l1sparse.tensors.select_tensors`): by default
        every ≥2-D weight of any module except embeddings and normalisation layers. The
        count, the target and every report are over that set.
    **scheduler_kwargs :
        Warm mode: passed to :class:`~l1sparse.scheduler.SparsityScheduler` (``shape``,
        ``ramp_end``, ``hold``, ``guard``, …). Paper and retrain modes: to
        :func:`~l1sparse.retrain.retrain_select` (``max_trainings``, ``rel_tol``,
        ``layers_required``, ``start``, ``widen``, ``max_widen``, ``eval_data``, …).
    callback, checkpoint, resume :
        Warm mode: ``callback`` gets each history row (one per guard window of the
        scheduler); ``checkpoint`` gets, at the end of every pass over the data, a dict of
        plain types and tensors (model, optimizer, lr schedule, scheduler, generator, step)
        that ``resume=`` continues exactly (with tensors; a loader's own order is its own).
        During a budget search they see every run; ``resume=`` finishes the run it was
        taken from (its length is in the checkpoint) and returns it.
    validation_fraction : float or "auto", default "auto"
        Warm mode: the share of ``(X, y)`` held out (seeded by ``seed``, stratified by class
        for classification; docs/design.md §5.3). "auto" is
        ``DEFAULTS.validation_fraction`` (0.2) when neither ``steps`` nor ``epochs`` is
        given and the default budget would run past 20 passes over the data (small data),
        else 0; 0 trains on everything.
    validation : (X_val, y_val) or an iterable of (x, y) batches, optional
        Held-out data given instead of a split.

        With held-out data, the run length is chosen on it when no budget is given (whole
        runs of :func:`budget_rungs` steps until one does worse than the best); the
        checkpoint returned is the best on it among the passes after λ is held that meet
        the count; and ``warnings`` judge the network on it (against always predicting the
        training majority class or mean), not on the training data. After a search on a
        split carved here, the network returned is a run of the chosen length (in passes)
        on all of ``(X, y)`` (``DEFAULTS.budget_refit``); its held-out figures are then
        those of the chosen run, an estimate for it.

    Returns
    -------
    SelectionResult
        ``lambdas`` (summed scale), ``converged`` (the count is within the tolerance),
        ``warnings`` (why the network may not work; empty when it does), ``history``,
        ``validation`` (with held-out data: its size and share, the returned model's
        held-out metric, the trivial predictor's, the checkpoint step and the run lengths
        tried; else None).

    Examples
    --------
    >>> from l1sparse import mlp
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(256, 10, generator=g); y = (X[:, 0] > 0).long()
    >>> net = mlp(10, [32], 2, seed=0)
    >>> res = fit_sparse(net, X, y, task="classification", zero_fraction=0.8, steps=600,
    ...                  lr=0.05, batch_size=64)
    >>> res.converged, res.warnings
    (True, [])
    """
    from .scheduler import SparsityScheduler
    from .validation import check_training_data

    if mode not in MODES:
        raise ValueError(f"The 'mode' parameter must be one of {list(MODES)}. Got {mode!r}.")
    if mode != "warm" and (validation is not None or validation_fraction not in ("auto", 0)):
        raise ValueError(f"mode={mode!r} keeps its training data: held-out data "
                         "('validation', 'validation_fraction') is for mode='warm'.")
    lr = DEFAULTS.lr_for(optimizer) if lr is None else lr
    momentum_given = momentum
    momentum = DEFAULTS.momentum_for(batch_size=batch_size) if momentum is None else momentum
    loader = not isinstance(X, (Tensor,)) and not hasattr(X, "__array__")
    if not loader:
        X, y = check_training_data(X, y, task=task)
    elif y is not None:
        raise ValueError("The 'y' parameter must be None when 'X' is a loader of (x, y) batches.")
    if penalty == "auto":
        penalty = (DEFAULTS.linear_penalty if mode in ("retrain", "paper")
                   else default_penalty(model))
    if target is None:
        target = make_target(model, nnz=nnz, zero_fraction=zero_fraction, layer_nnz=layer_nnz,
                             layer_zero_fraction=layer_zero_fraction, tol=tol,
                             include=include, exclude=exclude)
    if mode in ("retrain", "paper"):  # full trainings from the same start (retrain.py)
        from .retrain import retrain_select

        if loader:
            raise ValueError(f"mode={mode!r} needs tensors X, y (it re-solves from the same "
                             "start at every outer iteration).")
        if penalty != "l1":
            raise ValueError(f"mode={mode!r} retrains with plain l1: give penalty='l1' (or "
                             "'auto').")
        if epochs is None:
            epochs = DEFAULTS.full_batch_epochs if batch_size is None else DEFAULT_EPOCHS
        if mode == "paper" and momentum_given is None:
            momentum = 0.0  # the paper's plain proximal SGD
        cosine = mode == "retrain" and batch_size is not None
        # the sibling rule trains each λ to its budget, as before; the paper stops on entry
        scheduler_kwargs.setdefault("stop_on_entry", mode == "paper")
        return retrain_select(
            model, X, y, task=task, target=target, rule="paper" if mode == "paper" else "sorted",
            epochs_per_training=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
            momentum=momentum, lr_final=lr_final if cosine else None, seed=seed,
            callback=callback, shard=shard, device=device, **scheduler_kwargs).to_selection()

    # held-out data (docs/design.md §5.3): a split of small data; a budget chosen on it
    from .holdout import (AUTO, HeldOut, check_validation_data, check_validation_fraction,
                          evaluate, score_key, split_validation)

    held, split_info = None, None
    if validation is not None:
        if validation_fraction not in (AUTO, 0):
            raise ValueError("Give either 'validation' or a 'validation_fraction' > 0, not "
                             "both.")
        held = check_validation_data(validation, task=task, like=None if loader else X)
        split_info = {"fraction": None, "source": "given"}
    else:
        if validation_fraction == AUTO:
            frac = 0.0
            if not loader and steps is None and epochs is None and (
                    resume is None or resume.get("held_out", True)):
                per_all = batches_per_epoch(X.shape[0], batch_size)
                if resolve_steps(per_all) > DEFAULT_EPOCHS * per_all and X.shape[0] >= 10:
                    frac = DEFAULTS.validation_fraction
        else:
            frac = check_validation_fraction(validation_fraction)
            if frac > 0 and loader:
                raise ValueError("The 'validation_fraction' parameter cannot split a loader; "
                                 "give validation=<a loader of held-out batches> instead.")
        if frac > 0:
            X_all, y_all = X, y
            X, y, X_val, y_val = split_validation(X, y, frac, task=task, seed=seed)
            held = (X_val, y_val)
            split_info = {"fraction": frac, "source": "split"}
    if resume is not None and steps is None and epochs is None:
        steps = resume.get("total_steps")  # finish the run the checkpoint was taken from
    if held is not None and steps is None and epochs is None:
        kwargs = dict(task=task, target=target, mode=mode, optimizer=optimizer, lr=lr,
                      momentum=momentum, batch_size=batch_size, penalty=penalty,
                      seed=seed, device=device, loss_fn=loss_fn, n_samples=n_samples,
                      lr_final=lr_final, callback=callback, checkpoint=checkpoint,
                      shard=shard, grad_samples=grad_samples, validation=held,
                      validation_fraction=0, include=include, exclude=exclude,
                      **scheduler_kwargs)
        per = len(X) if loader else batches_per_epoch(X.shape[0], batch_size)
        initial = copy.deepcopy(model.state_dict())
        result = _budget_search(model, lambda total: fit_sparse(
            model, X, y, steps=total, **kwargs), budget_rungs(per), task)
        result.validation.update(split_info)
        if split_info["source"] != "split" or not DEFAULTS.budget_refit:
            return result
        # the length chosen, as passes over the data, run again on all of it: a fifth
        # more data for the network returned (on diabetes at 50 % zeros the chosen run
        # alone had a test MSE 0.026 above prune + fine-tune's, the refit 0.000)
        model.load_state_dict(initial)
        kwargs.update(validation=None, validation_fraction=0)
        refit = fit_sparse(model, X_all, y_all, epochs=result.steps / per, **kwargs)
        v = result.validation
        held_out = HeldOut(metric=v["metric"], loss=v["loss"], trivial=v["trivial_metric"],
                           n=v["n_samples"])
        refit.warnings = network_warnings(model, None, None, task=task, held_out=held_out)
        for w in refit.warnings:
            log.info("network check: %s", w)
        refit.validation = {**v, "refit": {"steps": refit.steps,
                                           "epochs": refit.epochs_total,
                                           "seconds": refit.seconds}}
        refit.seconds += result.seconds
        return refit

    dev = torch.device(device) if device is not None else None
    if dev is not None:
        model.to(dev)
        if not loader:
            X, y = X.to(dev), y.to(dev)
            if isinstance(held, tuple):
                held = (held[0].to(dev), held[1].to(dev))
    if loader:
        n = n_samples if n_samples is not None else len(X.dataset)
        per_epoch = len(X)
        data = X
    else:
        n = X.shape[0]
        per_epoch = batches_per_epoch(n, batch_size)
        data = (X, y)
    total = resolve_steps(per_epoch, epochs, steps)
    initial_l1 = {name: 0.0 for name in layer_names(model, include, exclude)}
    opt = make_optimizer(model, optimizer, lr=lr, lambdas=initial_l1, n_samples=n,
                         momentum=momentum, include=include, exclude=exclude)
    lr_sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=lr * lr_final)
    sched = SparsityScheduler(opt, total_steps=total, n_samples=n, penalty=penalty,
                              **_target_kwargs(target), **scheduler_kwargs)
    generator = torch.Generator().manual_seed(seed)
    history: list[OuterRecord] = []
    done, seconds_before = 0, 0.0
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        lr_sched.load_state_dict(resume["lr_scheduler"])
        sched.load_state_dict(resume["scheduler"])
        generator.set_state(resume["generator"])
        done, seconds_before = int(resume["step"]), float(resume["seconds"])
        history = [OuterRecord(**r) for r in resume["history"]]
    net = model
    if shard is not None and shard[1] > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [dev.index] if dev is not None and dev.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=ids)
    t_start = time.perf_counter()
    window = {"t": time.perf_counter(), "step": done}  # the history row being filled

    def after_step() -> None:
        lr_sched.step()
        sched.step()
        if sched.history and sched.history[-1]["step"] == sched.last_step and (
                not history or history[-1].iteration != sched.last_step):
            h = sched.history[-1]
            lams = h["lambdas"]
            phase = ("ramp" if sched.last_step <= sched.ramp_end * total else
                     "steer" if sched.last_step <= sched.hold * total else "hold")
            rec = OuterRecord(iteration=sched.last_step, phase=phase, lambdas=dict(lams),
                              nnz=dict(h["nnz"]), nnz_total=sum(h["nnz"].values()),
                              attained=target.attained(h["nnz"]), met=bool(h["met"]),
                              loss=float("nan"), objective=float("nan"),
                              max_violation=float("nan"),
                              epochs=(sched.last_step - window["step"]) / per_epoch,
                              seconds=time.perf_counter() - window["t"])
            window.update(t=time.perf_counter(), step=sched.last_step)
            history.append(rec)
            if callback is not None:
                callback(rec)

    y_ref = None if loader else y  # the trivial predictor answers the training mean/majority
    best = {"key": None, "state": None, "step": total, "held": None, "row": None}

    def watch(step: int) -> None:
        """The held-out metric on the latest history row (each new row, and every pass once
        λ is held); after the hold, the best checkpoint that meets the count is kept."""
        holding = step > sched.hold * total
        if not (holding or (history and history[-1] is not best["row"])):
            return
        ho = evaluate(model, held, task, trivial_from=y_ref)
        if history:
            history[-1].val_metric = ho.metric
            best["row"] = history[-1]
        if holding and target.met(nnz_per_layer(model)):
            key = score_key(ho, task)
            if best["key"] is None or key <= best["key"]:  # ties: the later, longer-trained
                best.update(key=key, state=copy.deepcopy(model.state_dict()), step=step,
                            held=ho)

    def on_epoch(step: int, loss_sum: float, samples: int) -> None:
        if history:  # the mean batch loss of the pass, on the summed scale
            history[-1].loss = loss_sum / max(samples, 1) * n
        if held is not None:
            watch(step)
        if checkpoint is not None:
            checkpoint({"format": 2, "step": step, "total_steps": total,
                        "held_out": held is not None,
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(), "lr_scheduler": lr_sched.state_dict(),
                        "scheduler": sched.state_dict(), "generator": generator.get_state(),
                        "history": [asdict(r) for r in history],
                        "seconds": seconds_before + time.perf_counter() - t_start})

    train_steps(net, data, opt, task=task, steps=total, start_step=done, batch_size=batch_size,
                generator=generator, loss_fn=loss_fn, after_step=after_step, on_epoch=on_epoch,
                shard=shard, device=dev if loader else None)
    validation_report = None
    if held is not None and best["state"] is not None and best["step"] != total:
        model.load_state_dict(best["state"])
        log.info("returning the checkpoint of step %d, the best on the held-out data",
                 best["step"])
    # BatchNorm's running statistics, re-estimated for the final weights (train.py)
    recalibrated = recalibrate_batchnorm(
        getattr(model, "module", model), data, batch_size=batch_size,
        device=dev if loader else None)
    if held is not None:
        ho = best["held"] if best["state"] is not None and not recalibrated else evaluate(
            model, held, task, trivial_from=y_ref)
        validation_report = {**(split_info or {}), "n_samples": ho.n,
                             "metric": ho.metric, "loss": ho.loss, "trivial_metric": ho.trivial,
                             "checkpoint_step": best["step"] if best["state"] is not None
                             else total}
    nnz_now = nnz_per_layer(model)
    if held is not None:
        warnings = network_warnings(model, None, None, task=task, held_out=ho)
    else:
        warnings = [] if loader else network_warnings(model, X, y, task=task)
    for w in warnings:
        log.info("network check: %s", w)
    return SelectionResult(
        lambdas=sched.lambdas, target=target, converged=target.met(nnz_now),
        distance=target.distance(nnz_now), nnz=nnz_now, history=history,
        epochs_total=total / per_epoch,
        seconds=seconds_before + time.perf_counter() - t_start, steps=total,
        penalty=sched.penalty.name, final_projection=sched.final,
        guard_events=sched.guard_events, warnings=warnings,
        penalty_weights=sched.penalty_weights, validation=validation_report)


def _budget_search(model: nn.Module, run: Callable[[int], SelectionResult],
                   rungs: Sequence[int], task: str) -> SelectionResult:
    """Whole runs of each length in ``rungs`` from the same initial weights, until
    ``DEFAULTS.budget_patience`` in a row do worse on the held-out data than the best;
    the model is left as the best run returned it (a run that meets the count beats one
    that does not)."""
    from .holdout import HeldOut, score_key

    initial = copy.deepcopy(model.state_dict())
    best_key, best_state, best_result = None, None, None
    tried, seconds, worse = [], 0.0, 0
    for total in rungs:
        model.load_state_dict(initial)
        result = run(total)
        seconds += result.seconds
        v = result.validation
        held = HeldOut(metric=v["metric"], loss=v["loss"], trivial=v["trivial_metric"],
                       n=v["n_samples"])
        key = (not result.converged, *score_key(held, task))
        tried.append({"steps": total, "metric": v["metric"], "loss": v["loss"],
                      "met": result.converged, "seconds": result.seconds})
        log.info("budget %d steps: held-out metric %.4g (count met: %s)", total, v["metric"],
                 result.converged)
        if best_key is None or key <= best_key:  # ties: the longer run
            best_key, best_state, best_result, worse = key, copy.deepcopy(
                model.state_dict()), result, 0
        else:
            worse += 1
            if worse >= DEFAULTS.budget_patience:
                break
    model.load_state_dict(best_state)
    best_result.seconds = seconds
    best_result.validation["budget"] = tried
    return best_result


def _target_kwargs(target: Target) -> dict:
    """The scheduler's target arguments that rebuild ``target``."""
    kind = target.kind
    if target.per_layer:
        values = {s.layers[0]: v for s, v in zip(target.scopes, target.value)}
        key = "layer_nnz" if kind == "nnz" else "layer_zero_fraction"
        if kind == "nnz":
            values = {k: int(v) for k, v in values.items()}
        return {key: values, "tol": target.tol}
    value = int(target.value) if kind == "nnz" else target.value
    return {kind: value, "tol": target.tol}
