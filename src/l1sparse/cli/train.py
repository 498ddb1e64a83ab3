"""``l1sparse train``: train at a given λ and characterise the result."""

from __future__ import annotations

import time

from .common import EXIT_OK, UsageError, _build, _device, _linear_defaults, _load_data, _metrics
from .output import _maybe_polish


def cmd_train(args) -> int:
    from ..characterize import characterize
    from ..data import make_synthetic_regression
    from ..losses import METRIC_NAMES
    from ..penalty import resolve_lambdas
    from ..sparsity import sparsity

    if args.data:
        data = _load_data(args)
    else:
        if args.task != "regression":
            raise UsageError("built-in data is for --task regression; give --data FILE")
        if args.test or args.standardize:
            raise UsageError("--test and --standardize need --data FILE")
        data = make_synthetic_regression("oscillating", dim=4, n_train=1000, n_test=1000,
                               noise_std=0.1, seed=args.seed)
    model = _build(args, data)
    lambdas = resolve_lambdas(model, args.lam, args.layer_lam)
    _linear_defaults(args, data, model)
    device = _device(args.device)
    model.to(device)
    X, y = data.X_train.to(device), data.y_train.to(device)
    # the training of one outer iteration of `fit --mode retrain` (l1sparse.retrain): the
    # same initial weights, batch order and learning-rate schedule, so `train --lam λ`
    # reproduces fit's count
    full_batch = args.batch_size is None
    penalty = _train_penalty(args, model, full_batch)
    t0 = time.perf_counter()
    epochs_done, weights = _one_training(args, model, X, y, data.task, lambdas, penalty)
    seconds = time.perf_counter() - t0
    stopped = "converged" if epochs_done < args.epochs - 1e-9 else "max_epochs"
    _maybe_polish(args, model, data, lambdas)
    train_m, test_m = _metrics(model, data, args)
    report = characterize(model, X, y, task=data.task, lambdas=lambdas)
    name = METRIC_NAMES[data.task]
    print(f"data {data.name}: {data.n_train} train, {data.n_test} test; "
          f"{epochs_done:g} epochs ({stopped}) in {seconds:.2f}s")
    scale = ("summed-loss scale, standardised data" if getattr(args, "_standardization", None)
             else "summed-loss scale")
    print(f"lambda ({scale}): " + ", ".join(f"{k}={v:g}" for k, v in lambdas.items()))
    print(sparsity(model).table())
    print(f"train {name} {train_m:.6g}" + (f", test {name} {test_m:.6g}" if test_m is not None
                                           else ""))
    print(report.summary())
    from ..characterize import stationarity

    model.eval()
    print(stationarity(model, X, y, task=data.task, lambdas=lambdas,
                       weights=weights or None).line())
    return EXIT_OK


def _train_penalty(args, model, full_batch: bool) -> str:
    """`train --penalty`: plain l1 unless asked; reweighted needs mini-batch training."""
    penalty = getattr(args, "penalty", "l1")
    if penalty == "auto":
        penalty = "l1"
    if penalty == "reweighted" and full_batch:
        raise UsageError("--penalty reweighted needs mini-batch training (--batch-size B): its "
                         "weights are refreshed each epoch during the first 85 % of the run")
    return penalty


class _Converged(Exception):
    """Raised from the epoch callback when --stop-tol is reached."""


def _one_training(args, model, X, y, task: str, lambdas: dict, penalty: str):
    """One training at fixed λ from the model's weights: the same as one training of
    :func:`l1sparse.retrain.retrain_select` (optimizer, cosine decay to ``lr · lr_final``
    over the budget for mini-batches, constant full batch; batch order from ``--seed``).

    Returns the epochs trained and the penalty weights ``c_i`` (empty for plain ℓ1).
    """
    import math

    import torch

    from ..config import DEFAULTS
    from ..penalty import l1_weights, make_penalty, set_l1_weights
    from ..train import batches_per_epoch, make_optimizer, train_steps

    n = X.shape[0]
    per_epoch = batches_per_epoch(n, args.batch_size)
    budget = max(1, round(float(args.epochs) * per_epoch))
    opt = make_optimizer(model, args.optimizer, lr=args.lr, lambdas=lambdas, n_samples=n,
                         momentum=args.momentum)
    lr_final = None if args.batch_size is None else DEFAULTS.lr_final
    sched = None
    if lr_final is not None:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_final + (1 - lr_final)
                                                  * 0.5 * (1 + math.cos(math.pi * min(
                                                      1.0, s / budget))))
    reweight = make_penalty(penalty)
    state = {"steps": 0, "objective": None}

    def refresh() -> None:  # reweighted l1: c_i from the weights, each epoch of the first 85 %
        if reweight.adaptive and state["steps"] % per_epoch == 0 \
                and state["steps"] < 0.85 * budget:
            set_l1_weights(opt, reweight)

    def after_step() -> None:
        state["steps"] += 1
        if sched is not None:
            sched.step()
        refresh()

    def on_epoch(step: int, loss_sum: float, samples: int) -> None:
        if args.stop_tol <= 0:
            return
        with torch.no_grad():
            objective = loss_sum / max(samples, 1) * n + sum(
                lambdas[name] * float(m.weight.abs().sum()) for name, m in _layers(model))
        last = state["objective"]
        state["objective"] = objective
        if last is not None and abs(last - objective) <= args.stop_tol * max(abs(last), 1e-30):
            raise _Converged

    refresh()
    try:
        train_steps(model, (X, y), opt, task=task, steps=budget, batch_size=args.batch_size,
                    generator=torch.Generator().manual_seed(args.seed), after_step=after_step,
                    on_epoch=on_epoch)
    except _Converged:
        pass
    return state["steps"] / per_epoch, l1_weights(opt)


def _layers(model):
    from ..penalty import penalised_layers

    return penalised_layers(model)
