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
    from ..select import TrainingSolver

    # the training of one outer iteration of `fit --mode retrain`: the same initial weights,
    # batch order and learning-rate schedule, so `train --lam λ` reproduces fit's count
    full_batch = args.batch_size is None
    solver = TrainingSolver(model, X, y, task=data.task, optimizer=args.optimizer, lr=args.lr,
                            momentum=args.momentum, batch_size=args.batch_size, seed=args.seed,
                            tol=args.stop_tol if args.stop_tol > 0 else
                            (1e-12 if full_batch else 0.0),
                            schedule_epochs=None if full_batch else args.epochs,
                            penalty=_train_penalty(args, model, full_batch))
    t0 = time.perf_counter()
    epochs_done = solver.solve(lambdas, args.epochs)
    from ..penalty import l1_weights

    weights = l1_weights(solver.optimizer)
    seconds = time.perf_counter() - t0
    stopped = "converged" if full_batch and epochs_done < args.epochs else "max_epochs"
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
