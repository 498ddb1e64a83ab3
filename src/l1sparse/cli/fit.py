"""``l1sparse fit``: choose λ (or one λ_k per layer) for a sparsity target, and train.

Three drivers: warm mode on a network (the scheduler, through ``fit_sparse``), retrain mode
(a full training per outer iteration), and the certified convex solves of a linear model.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .common import (
    EXIT_INTERRUPTED,
    EXIT_NOT_MET,
    EXIT_OK,
    UsageError,
    _build,
    _device,
    _linear_defaults,
    _load_data,
    _progress_bar,
    _target_words,
)
from .output import (
    CHECKPOINT,
    _check_out,
    _clear_previous_run,
    _fingerprint,
    _load_checkpoint,
    _maybe_debias,
    _maybe_polish,
    _prepare_out,
    _print_result,
    _save_checkpoint,
    _write_fit_results,
    _write_history,
)


def _target(args, model):
    from ..select import make_target

    given = [args.target_sparsity is not None, args.target_nnz is not None,
             args.layer_sparsity is not None]
    if sum(given) != 1:
        raise UsageError("give exactly one of --target-sparsity, --target-nnz, --layer-sparsity")
    if args.target_nnz is not None:
        flag, kwargs = "--target-nnz", {"nnz": args.target_nnz}
    elif args.target_sparsity is not None:
        flag, kwargs = "--target-sparsity", {"zero_fraction": args.target_sparsity}
    else:
        flag, kwargs = "--layer-sparsity", {"layer_zero_fraction": args.layer_sparsity}
    try:
        return make_target(model, tol=args.tol, **kwargs)
    except ValueError as exc:  # name the flag, not only the library's parameter
        raise UsageError(f"{flag} (with --tol {args.tol}): {exc}" if args.tol is not None
                         else f"{flag}: {exc}") from None


def cmd_fit(args) -> int:
    from ..distributed import initialised, world_from_env

    rank, world = world_from_env()
    _check_out(args.out, resume=args.resume, force=args.force)
    if args.force and rank == 0:
        _clear_previous_run(args.out)
    if world == 1:
        return _fit(args, rank=0, world=1)
    with initialised(_device(args.device)) as (rank, world):
        return _fit(args, rank=rank, world=world)


def _fit(args, *, rank: int, world: int) -> int:
    """``fit`` in one process, or in one rank of a data-parallel group (rank 0 writes)."""
    from ..select import SelectionResult, TrainingSolver, select_lambda

    main_rank = rank == 0
    if not main_rank:
        args.quiet = True
    data = _load_data(args)
    model = _build(args, data)
    target = _target(args, model)
    out = _prepare_out(args.out)
    epochs_given = args.epochs
    _linear_defaults(args, data, model)
    if args.mode == "warm" and args.hidden:
        return _fit_warm(args, data, model, target, out, rank=rank, world=world,
                         epochs=epochs_given)
    if not args.hidden and world == 1:
        return _fit_convex(args, data, model, target, out)
    ckpt_path = out / CHECKPOINT
    resume = None
    resumed_from = None
    if args.resume and ckpt_path.exists():
        payload = _load_checkpoint(ckpt_path, args)
        resume = (payload["state"], payload["solver"])
        resumed_from = len(payload["state"].history)
        if not args.quiet:
            print(f"resuming from {ckpt_path} after outer iteration {resumed_from}",
                  file=sys.stderr)
    elif args.resume and not args.quiet:
        print(f"no checkpoint in {out}: starting afresh", file=sys.stderr)
    if world > 1:
        from ..distributed import DistributedSolver as solver_class
    else:
        solver_class = TrainingSolver
    solver = solver_class(
        model, data.X_train, data.y_train, task=data.task, optimizer=args.optimizer,
        lr=args.lr, momentum=args.momentum, batch_size=args.batch_size, seed=args.seed,
        tol=1e-12 if args.batch_size is None else 0.0,
        schedule_epochs=args.epochs if args.batch_size is not None else None,
        device=_device(args.device), grad_samples=args.grad_samples)
    refine = 3 if (args.convex and args.mode == "retrain" and not target.per_layer) else 0
    if not args.quiet:
        print(f"fit: {data.name}, {data.n_train} samples, hidden={args.hidden or 'none'}, "
              f"target {_target_words(target)}, mode {args.mode}", file=sys.stderr)
    latest: dict = {}
    bar = _progress_bar(args, desc="outer iterations", unit="it")

    def progress(record):
        if bar is not None:
            lam = ",".join(f"{v:.4g}" for v in record.lambdas.values())
            bar.set_postfix_str(f"{record.phase} lambda={lam} nnz={record.nnz_total} "
                                f"epochs={solver.epochs_done}")
            bar.update(1)

    def checkpoint(state, solver_state):
        latest["state"] = state
        if not main_rank:
            return
        _save_checkpoint(ckpt_path, {"format": 1, "fingerprint": _fingerprint(args),
                                     "state": state, "solver": solver_state})
        _write_history(out / "history.csv", [r.as_row() for r in state.history])

    try:
        result = select_lambda(solver, target, mode=args.mode, epochs=args.epochs,
                               max_outer=args.max_outer, refine=refine, callback=progress,
                               checkpoint=checkpoint, resume=resume)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        state = latest.get("state") or (resume[0] if resume else None)
        if state is not None and state.best is not None and main_rank:
            solver.load_state(state.best[3])
            _write_fit_results(out, args, data, model, target,
                               SelectionResult.from_state(state, target),
                               resumed_from=resumed_from, interrupted=True, world=world)
            print(f"l1sparse: interrupted; partial results in {out} "
                  f"(continue with --resume)", file=sys.stderr)
        else:
            print("l1sparse: interrupted before the first outer iteration finished",
                  file=sys.stderr)
        return EXIT_INTERRUPTED
    if bar is not None:
        bar.close()
    polished = _maybe_polish(args, model, data, result.lambdas) if main_rank else None
    debiased = _maybe_debias(args, model, data, result, solver.X, solver.y)
    if not main_rank:
        return EXIT_OK if result.converged else EXIT_NOT_MET
    summary = _write_fit_results(out, args, data, model, target, result,
                                 resumed_from=resumed_from, world=world, debiased=debiased,
                                 extra={"polish": polished})
    # the one-line result, also under --quiet (which hides progress only)
    _print_result(args, summary, target, result, out,
                  f"lambda={result.lam}"
                  f"{' (standardised data)' if summary['standardized'] else ''}, nnz "
                  f"{summary['nnz']}/{summary['total']} ({summary['zero_fraction']:.4f} zeros), "
                  f"{result.outer_iterations} outer iterations, {result.epochs_total} epochs, "
                  f"{result.seconds:.1f}s")
    return EXIT_OK if result.converged else EXIT_NOT_MET


def _fit_warm(args, data, model, target, out: Path, *, rank: int, world: int,
              epochs: float | None) -> int:
    """Warm mode on a network: our loop stepped with the SparsityScheduler (``fit_sparse``)."""
    from ..select import fit_sparse

    main_rank = rank == 0
    ckpt_path = out / CHECKPOINT
    resume = None
    resumed_from = None
    if args.resume and ckpt_path.exists():
        resume = _load_checkpoint(ckpt_path, args)
        resumed_from = len(resume["history"])
        if not args.quiet:
            print(f"resuming from {ckpt_path} at step {resume['step']}", file=sys.stderr)
    elif args.resume and not args.quiet:
        print(f"no checkpoint in {out}: starting afresh", file=sys.stderr)
    device = _device(args.device)
    if not args.quiet:
        print(f"fit: {data.name}, {data.n_train} samples, hidden={args.hidden}, "
              f"target {_target_words(target)}, mode warm, penalty {args.penalty}",
              file=sys.stderr)
    bar = _progress_bar(args, desc="steps", unit="step")
    latest: dict = {}

    def progress(record):
        if bar is not None:
            lam = ",".join(f"{v:.4g}" for v in record.lambdas.values())
            bar.set_postfix_str(f"{record.phase} lambda={lam} nnz={record.nnz_total}")
            bar.update(record.iteration - bar.n)

    def checkpoint(payload):
        latest["payload"] = payload
        if not main_rank:
            return
        _save_checkpoint(ckpt_path, {**payload, "fingerprint": _fingerprint(args)})

    try:
        result = fit_sparse(
            model, data.X_train.to(device), data.y_train.to(device), task=data.task,
            target=target, epochs=epochs, steps=args.steps, optimizer=args.optimizer,
            lr=args.lr, momentum=args.momentum, batch_size=args.batch_size,
            penalty=args.penalty, seed=args.seed, device=device, callback=progress,
            checkpoint=checkpoint, resume=resume,
            shard=(rank, world) if world > 1 else None)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        print(f"l1sparse: interrupted; the last checkpoint is in {ckpt_path} "
              "(continue with --resume)" if latest else
              "l1sparse: interrupted before the first epoch finished", file=sys.stderr)
        return EXIT_INTERRUPTED
    if bar is not None:
        bar.close()
    args.epochs = result.epochs_total
    polished = None
    if main_rank:
        polished = _maybe_polish(args, model, data, result.lambdas, result.penalty_weights)
    if polished is not None:  # the polish moves weights: the count is the polished model's
        from ..sparsity import nnz_per_layer

        result.nnz = nnz_per_layer(model)
        result.converged = target.met(result.nnz)
        result.distance = target.distance(result.nnz)
    debiased = _maybe_debias(args, model, data, result, data.X_train.to(device),
                             data.y_train.to(device))
    works = not result.warnings
    code = EXIT_OK if (result.converged and works) else EXIT_NOT_MET
    if not main_rank:
        return code
    summary = _write_fit_results(out, args, data, model, target, result,
                                 resumed_from=resumed_from, world=world, debiased=debiased,
                                 extra={"polish": polished})
    for w in result.warnings:
        print(f"l1sparse: warning: {w}", file=sys.stderr)
    final = result.final_projection
    _print_result(args, summary, target, result, out,
                  f"lambda={result.lam}"
                  f"{' (standardised data)' if summary['standardized'] else ''}, nnz "
                  f"{summary['nnz']}/{summary['total']} ({summary['zero_fraction']:.4f} zeros), "
                  f"{result.steps} steps ({result.epochs_total:.3g} epochs), penalty "
                  f"{result.penalty}"
                  + (f", final projection {final['removed']} out / {final['revived']} in"
                     if final else "")
                  + f", {result.seconds:.1f}s", works=works)
    return code


class _ConvexStep:
    """One certified solve of the convex selection, as a history.csv row."""

    def __init__(self, index: int, lam: float, nnz: int):
        self.index, self.lam, self.nnz = index, lam, nnz

    def as_row(self) -> dict:
        return {"iteration": self.index, "phase": "certified solve", "lambda": self.lam,
                "nnz": self.nnz}


class _ConvexFit:
    """A :class:`l1sparse.convex.ConvexSelection` in the shape ``_write_fit_results`` reads."""

    def __init__(self, sel, layer: str, target):
        self.lam = sel.lam
        self.lambdas = {layer: sel.lam}
        self.nnz = {layer: sel.nnz}
        self.converged = target.met(self.nnz)
        self.distance = target.distance(self.nnz)
        self.history = [_ConvexStep(i, l, n) for i, (l, n) in enumerate(sel.history)]
        self.outer_iterations = len(sel.history)
        self.epochs_total = 0
        self.seconds = sel.seconds


def _fit_convex(args, data, model, target, out: Path) -> int:
    """``fit --hidden ""``: the linear model, solved and certified by l1sparse.convex."""
    import math

    from ..convex import select, to_model
    from ..penalty import layer_names

    layer = layer_names(model)[0]
    scope = target.scopes[0]
    k = max(1, int(round(scope.nnz)))
    if not args.quiet:
        print(f"fit: {data.name}, {data.n_train} samples, linear model (certified convex "
              f"solves), target {_target_words(target)}", file=sys.stderr)
    X = data.X_train.reshape(data.n_train, -1)
    sel = select(X, data.y_train, k, task=data.task, tol=math.floor(scope.tol + 1e-9),
                 n_classes=data.n_outputs if data.task == "classification" else None)
    to_model(sel, model)
    result = _ConvexFit(sel, layer, target)
    polished = _maybe_polish(args, model, data, result.lambdas)
    summary = _write_fit_results(out, args, data, model, target, result, resumed_from=None,
                                 extra={"convex": {**sel.as_dict(), "engine": (
                                     "scikit-learn coordinate descent + exact support solve"
                                     if data.task == "regression" else
                                     "scipy L-BFGS-B (split form) + Newton on the support")},
                                        "polish": polished})
    lo, hi = sel.interval if sel.interval is not None else (float("nan"), float("nan"))
    _print_result(args, summary, target, result, out,
                  f"lambda={sel.lam:.6g} (geometric middle of [{lo:.6g}, {hi:.6g}], where the "
                  f"support has {sel.nnz} weights), nnz {summary['nnz']}/{summary['total']}, "
                  f"certified violation {sel.certificate.max_violation:.2g}*lambda, "
                  f"{sel.solves} solves, {sel.seconds:.2f}s")
    return EXIT_OK if result.converged else EXIT_NOT_MET
