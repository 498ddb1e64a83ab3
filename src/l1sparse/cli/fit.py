"""``l1sparse fit``: choose λ (or one λ_k per layer) for a sparsity target, and train.

Three drivers: warm mode on a network (the scheduler, through ``fit_sparse``); retrain and
paper modes (a full training per outer iteration from the same initial weights,
:func:`l1sparse.retrain.retrain_select`, with the sorted-gradient or the paper's
bracketed-median rule; also every mode but paper of a linear model under torchrun); and the
certified convex solves of a linear model (``--hidden ""``, one process, not paper mode).
``--polish`` then re-chooses λ on the polished problem (:func:`l1sparse.polish.polish_to_target`).
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
    _warn,
)
from .output import (
    CHECKPOINT,
    _check_out,
    _clear_previous_run,
    _fingerprint,
    _load_checkpoint,
    _maybe_debias,
    _maybe_polish,
    _polish_fit,
    _prepare_out,
    _print_result,
    _save_checkpoint,
    _write_fit_results,
    _write_history,
)


def _target(args, model):
    """The target of the flags: exactly one of --target-sparsity, --target-nnz,
    --layer-sparsity, --layer-nnz; --rel-tol makes each count's tolerance relative."""
    from dataclasses import replace

    from ..targets import make_target

    flags = (("--target-sparsity", "target_sparsity", "zero_fraction"),
             ("--target-nnz", "target_nnz", "nnz"),
             ("--layer-sparsity", "layer_sparsity", "layer_zero_fraction"),
             ("--layer-nnz", "layer_nnz", "layer_nnz"))
    given = [(flag, key, getattr(args, dest)) for flag, dest, key in flags
             if getattr(args, dest, None) is not None]
    if len(given) != 1:
        raise UsageError("give exactly one of " + ", ".join(f for f, _, _ in flags))
    (flag, key, value), = given
    rel_tol = getattr(args, "rel_tol", None)
    if rel_tol is not None and args.tol is not None:
        raise UsageError("--tol (in weights or a fraction) and --rel-tol (relative to each "
                         "count) both set the tolerance; give one of them")
    try:
        target = make_target(model, tol=args.tol, **{key: value}, **_selection(args))
    except ValueError as exc:  # name the flag, not only the library's parameter
        raise UsageError(f"{flag} (with --tol {args.tol}): {exc}" if args.tol is not None
                         else f"{flag}: {exc}") from None
    if rel_tol is not None:
        target = replace(target, scopes=tuple(replace(s, tol=rel_tol * s.nnz)
                                              for s in target.scopes))
    _layers_required(args, target)  # refused here, before any training
    if getattr(args, "layers_met", None) is not None and args.mode == "warm" and args.hidden:
        raise UsageError("--layers-met (k of K layers) needs --mode paper or retrain; warm "
                         "mode steers every layer to its count")
    return target


def _selection(args) -> dict:
    """``include``/``exclude`` as given on the command line (warm mode only)."""
    chosen = {k: getattr(args, k, None) for k in ("include", "exclude")}
    chosen = {k: v for k, v in chosen.items() if v is not None}
    if chosen and (args.mode != "warm" or not args.hidden):
        raise UsageError("--include/--exclude choose the penalised tensors of a network in "
                         "warm mode; retrain, paper and linear fits penalise every weight")
    return chosen


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
    main_rank = rank == 0
    if not main_rank:
        args.quiet = True
    data = _load_data(args)
    model = _build(args, data)
    target = _target(args, model)
    out = _prepare_out(args.out)
    epochs_given = args.epochs
    args._grad_samples_given = args.grad_samples != "auto"
    if args.mode == "paper" and args.momentum is None:
        args.momentum = 0.0  # the paper's plain proximal SGD (as fit_sparse(mode='paper'))
    _linear_defaults(args, data, model)
    if getattr(args, "val_fraction", "auto") not in ("auto", 0.0) and not (
            args.mode == "warm" and args.hidden):
        raise UsageError(f"--val-fraction {args.val_fraction}: held-out data is for warm mode "
                         "on a network (--hidden); the other modes keep all their training "
                         "data")
    if args.mode == "warm" and args.hidden:
        return _fit_warm(args, data, model, target, out, rank=rank, world=world,
                         epochs=epochs_given)
    if not args.hidden and world == 1 and args.mode != "paper":
        return _fit_convex(args, data, model, target, out)
    return _fit_retrain(args, data, model, target, out, rank=rank, world=world)


def _fit_retrain(args, data, model, target, out: Path, *, rank: int, world: int) -> int:
    """Retrain and paper modes: a full training from the same initial weights per outer
    iteration (:func:`l1sparse.retrain.retrain_select`), the sorted-gradient rule (``retrain``)
    or the paper's bracketed median (``paper``)."""
    import copy

    from ..config import DEFAULTS
    from ..retrain import BracketError, RetrainRecord, RetrainResult, retrain_select

    main_rank = rank == 0
    ckpt_path = out / CHECKPOINT
    seen: dict = {"records": [], "best": None}
    resume, resumed_from = None, None
    if args.resume and ckpt_path.exists():
        resume = _load_checkpoint(ckpt_path, args).get("retrain")
        if resume is None:
            raise UsageError(f"--resume: the checkpoint {ckpt_path} holds no trainings to "
                             "replay (written by an older version); start afresh with --force")
        # the trainings done are replayed by retrain_select without training again
        seen["records"] = [RetrainRecord(**r) for r in resume["history"]]
        best = seen["records"][resume["best_index"]]
        seen["best"] = (best, sum(target.distance(best.nnz)), resume["best_state"])
        resumed_from = len(seen["records"])
        if not args.quiet:
            print(f"resuming from {ckpt_path} after training {resumed_from}", file=sys.stderr)
    elif args.resume and not args.quiet:
        print(f"no checkpoint in {out}: starting afresh", file=sys.stderr)
    if getattr(args, "_grad_samples_given", False):
        _warn(f"--grad-samples {args.grad_samples} has no effect in {args.mode} mode: the "
              "rules read the full-data gradient")
    device = _device(args.device)
    model.to(device)
    X, y = data.X_train.to(device), data.y_train.to(device)
    rule = "paper" if args.mode == "paper" else "sorted"
    if not args.quiet:
        print(f"fit: {data.name}, {data.n_train} samples, hidden={args.hidden or 'none'}, "
              f"target {_target_words(target)}, mode {args.mode}", file=sys.stderr)
    bar = _progress_bar(args, desc="trainings", unit="it")

    def progress(record):
        seen["records"].append(record)
        distance = sum(target.distance(record.nnz))
        best = seen["best"]
        if best is None or (record.met, -distance) > (best[0].met, -best[1]):
            seen["best"] = (record, distance, copy.deepcopy(model.state_dict()))
        if bar is not None:
            lam = ",".join(f"{v:.4g}" for v in record.lambdas.values())
            bar.set_postfix_str(f"{record.phase} lambda={lam} nnz={record.nnz_total} "
                                f"epochs={record.epochs:g}")
            bar.update(1)
        if main_rank:
            _write_history(out / "history.csv", [r.as_row() for r in seen["records"]])

    def checkpoint(state: dict) -> None:  # after every training, once it is in history.csv
        if main_rank:
            _save_checkpoint(ckpt_path, {"fingerprint": _fingerprint(args), "mode": args.mode,
                                         "trainings": len(state["history"]), "retrain": state})

    def partial() -> RetrainResult:
        record, _, state = seen["best"]
        model.load_state_dict(state)
        return RetrainResult(
            rule=rule, lambdas=dict(record.lambdas), lambdas_mean=dict(record.lambdas_mean),
            target=target, layers_required=_layers_required(args, target),
            converged=record.met, nnz=dict(record.nnz), history=list(seen["records"]),
            epochs_total=sum(r.epochs for r in seen["records"]),
            seconds=sum(r.seconds for r in seen["records"]))

    try:
        retrained = retrain_select(
            model, X, y, task=data.task, target=target,  # --rel-tol is in its scopes
            layers_required=_layers_required(args, target), rule=rule,
            epochs_per_training=args.epochs, batch_size=args.batch_size, lr=args.lr,
            optimizer=args.optimizer, momentum=args.momentum,
            lr_final=None if args.batch_size is None or rule == "paper" else DEFAULTS.lr_final,
            seed=args.seed, max_trainings=args.max_outer, stop_on_entry=args.mode == "paper",
            callback=progress, checkpoint=checkpoint, resume=resume,
            shard=(rank, world) if world > 1 else None)
    except BracketError as exc:
        if bar is not None:
            bar.close()
        if seen["best"] is None or not main_rank:
            raise
        retrained = partial()
        _warn(str(exc))
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        if seen["best"] is not None and main_rank:
            _write_fit_results(out, args, data, model, target, partial().to_selection(),
                               resumed_from=resumed_from, interrupted=True, world=world)
            print(f"l1sparse: interrupted; partial results in {out} (the trainings done are "
                  "in history.csv; continue with --resume)", file=sys.stderr)
        else:
            print("l1sparse: interrupted before the first training finished", file=sys.stderr)
        return EXIT_INTERRUPTED
    if bar is not None:
        bar.close()
    result = retrained.to_selection()
    result.converged = retrained.converged  # k of K layers, where --layers-met asks it
    polished = _polish_fit(args, model, data, target, result,
                           layers_required=retrained.layers_required) if main_rank else None
    debiased = _maybe_debias(args, model, data, result, X, y)
    code = EXIT_OK if result.converged else EXIT_NOT_MET
    if not main_rank:
        return code
    lam_mean = {k: v / data.n_train for k, v in result.lambdas.items()}
    summary = _write_fit_results(
        out, args, data, model, target, result, resumed_from=resumed_from, world=world,
        debiased=debiased, extra={"polish": polished, "rule": rule,
                                  "lambda_mean": _mean_values(lam_mean),
                                  "layers_required": retrained.layers_required,
                                  **_polished_meaning(polished)})
    # the one-line result, also under --quiet (which hides progress only)
    _print_result(args, summary, target, result, out,
                  f"lambda={result.lam}"
                  f"{' (standardised data)' if summary['standardized'] else ''} "
                  f"(lambda/N {_per_sample(lam_mean)}), nnz "
                  f"{summary['nnz']}/{summary['total']} ({summary['zero_fraction']:.4f} zeros), "
                  f"{result.outer_iterations} trainings, {result.epochs_total:g} epochs, "
                  f"{result.seconds:.1f}s")
    return code


def _layers_required(args, target) -> int | None:
    """--layers-met K: a per-layer target is met when K of its layers are (default: all)."""
    k = getattr(args, "layers_met", None)
    if k is None:
        return None
    if not target.per_layer:
        raise UsageError("--layers-met needs a per-layer target (--layer-nnz or "
                         "--layer-sparsity)")
    if k > len(target.scopes):
        raise UsageError(f"--layers-met {k}: the target has {len(target.scopes)} layers "
                         f"({', '.join(s.layers[0] for s in target.scopes)})")
    return k


def _polished_meaning(polished: dict | None) -> dict:
    """After --polish, what the reported λ is."""
    if not polished:
        return {}
    return {"lambda_meaning": "the lambda re-chosen on the polished (full-batch) problem: the "
                              "returned network is the polish at it, started from the trained "
                              "weights" + ("" if polished.get("converged") else
                                           " (the polish did not converge)")}


def _mean_values(lambdas_mean: dict) -> float | list[float]:
    """λ/N (the authors' scale) as result.json holds λ: one number, or one per layer."""
    values = list(lambdas_mean.values())
    return values[0] if len(set(values)) == 1 else values


def _per_sample(lambdas_mean: dict) -> str:
    value = _mean_values(lambdas_mean)
    return f"{value:.4g}" if isinstance(value, float) else "[" + ", ".join(
        f"{v:.4g}" for v in value) + "]"


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
            checkpoint=checkpoint, resume=resume, **_selection(args),
            validation_fraction=getattr(args, "val_fraction", "auto"),
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
    if main_rank:  # the polish moves weights and λ: result then describes the polished model
        polished = _polish_fit(args, model, data, target, result,
                               weights=result.penalty_weights or None)
    debiased = _maybe_debias(args, model, data, result, data.X_train.to(device),
                             data.y_train.to(device))
    works = not result.warnings
    code = EXIT_OK if (result.converged and works) else EXIT_NOT_MET
    if not main_rank:
        return code
    summary = _write_fit_results(out, args, data, model, target, result,
                                 resumed_from=resumed_from, world=world, debiased=debiased,
                                 extra={"polish": polished, **_polished_meaning(polished)})
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
