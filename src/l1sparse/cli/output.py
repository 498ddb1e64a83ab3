"""What a run writes and prints: the output directory, ``history.csv``, checkpoints,
``result.json`` and the model, the one-line result and the certificate's line, and the
``--polish`` / ``--debias-epochs`` steps that change the model before it is written.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from pathlib import Path

import torch

from .. import __version__
from .._atomic import atomic_write, atomic_write_text
from ..config import DEFAULTS
from .common import UsageError, _count, _metrics, _raw_scale, _target_words, _warn


RUN_FILES = ("result.json", "history.csv", "model.safetensors", "checkpoint.pt",
             "penalty_weights.safetensors")


def _check_out(out: str, *, resume: bool = False, force: bool = False) -> None:
    """Refuse to overwrite a previous run: a non-empty --out needs --resume or --force."""
    if resume and force:
        raise UsageError("--force (start afresh, overwriting --out) and --resume (continue the "
                         "run in --out) contradict each other; give one of them")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out!r} is a file; the output directory must be a directory")
    if resume or force or not path.is_dir():
        return
    try:
        entries = sorted(e.name for e in path.iterdir())
    except OSError as exc:
        raise UsageError(f"cannot read the output directory {out!r}: {exc.strerror}") from None
    if entries:
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise UsageError(f"the output directory {out!r} is not empty (it holds {shown}); give "
                         "--resume to continue its run, --force to overwrite it, or another "
                         "--out")


def _clear_previous_run(out: str) -> None:
    """--force: remove the files of the previous run, so none of them outlives the new one."""
    for name in RUN_FILES:
        try:
            (Path(out) / name).unlink(missing_ok=True)
        except OSError as exc:
            raise UsageError(f"--force: cannot remove {str(Path(out) / name)!r}: "
                             f"{exc.strerror}") from None


def _prepare_out(out: str) -> Path:
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the output directory {out!r}: {exc.strerror}") from None
    if not os.access(path, os.W_OK):
        raise UsageError(f"the output directory {out!r} is not writable")
    return path


def _write_history(path: Path, rows: list[dict]) -> None:
    """One CSV row per outer iteration; per-layer lists joined with ';'."""
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (";".join(f"{x:g}" for x in v) if isinstance(v, list) else v)
                             for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


CHECKPOINT = "checkpoint.pt"


CHECKPOINT = "checkpoint.pt"
_FINGERPRINT_KEYS = ("data", "task", "hidden", "activation", "target_sparsity", "target_nnz",
                     "layer_sparsity", "tol", "epochs", "batch_size", "lr", "optimizer",
                     "momentum", "mode", "seed", "max_outer", "debias_epochs", "grad_samples",
                     "standardize", "steps", "penalty", "layer_nnz", "rel_tol", "layers_met",
                     "val_fraction")


_FINGERPRINT_ADDED = {"val_fraction": "auto"}  # keys added since CHECKPOINT_FORMAT 2


def _fingerprint(args) -> dict:
    return {k: getattr(args, k, None) for k in _FINGERPRINT_KEYS}


# Checkpoints hold tensors and plain data only, loaded with torch.load(weights_only=True): a
# checkpoint.pt planted in a shared run directory cannot run code. The library's dataclasses
# (the selector's state and records) are written as tagged dicts and rebuilt on loading, only
# for dataclasses defined in l1sparse itself.
CHECKPOINT_FORMAT = 2


CHECKPOINT_FORMAT = 2
_DATACLASS, _TUPLE = "@l1sparse.dataclass", "@tuple"


def _to_plain(obj):
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        cls = type(obj)
        if not cls.__module__.startswith("l1sparse."):
            raise TypeError(f"a checkpoint can hold l1sparse's own dataclasses only; got "
                            f"{cls.__module__}.{cls.__qualname__}")
        return {_DATACLASS: f"{cls.__module__}:{cls.__qualname__}",
                "fields": {f.name: _to_plain(getattr(obj, f.name))
                           for f in dataclasses.fields(obj)}}
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return {_TUPLE: [_to_plain(v) for v in obj]}
    if isinstance(obj, list):
        return [_to_plain(v) for v in obj]
    if obj is None or isinstance(obj, (torch.Tensor, str, bool, int, float, torch.dtype,
                                       torch.Size)):
        return obj
    if hasattr(obj, "item") and hasattr(obj, "dtype"):  # a numpy scalar
        return obj.item()
    raise TypeError(f"a checkpoint cannot hold a {type(obj).__name__}")


def _from_plain(obj):
    import dataclasses
    import importlib

    if isinstance(obj, dict):
        if _DATACLASS in obj:
            module, _, qualname = str(obj[_DATACLASS]).partition(":")
            cls = None
            if module.startswith("l1sparse."):
                try:
                    cls = importlib.import_module(module)
                    for part in qualname.split("."):
                        cls = getattr(cls, part)
                except (ImportError, AttributeError):
                    cls = None
            if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
                raise ValueError(f"it holds a {module}.{qualname}, which is not a data type of "
                                 "this l1sparse version")
            instance = cls.__new__(cls)
            for name, value in obj["fields"].items():
                object.__setattr__(instance, name, _from_plain(value))
            return instance
        if _TUPLE in obj and len(obj) == 1:
            return tuple(_from_plain(v) for v in obj[_TUPLE])
        return {k: _from_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_plain(v) for v in obj]
    return obj


def _save_checkpoint(path: Path, payload: dict) -> None:
    plain = _to_plain({**payload, "format": CHECKPOINT_FORMAT})
    atomic_write(path, lambda tmp: torch.save(plain, tmp))


def _read_checkpoint(path: Path) -> dict:
    """The payload of ``path``, unpickling nothing but tensors and plain data; else UsageError."""
    refuse = (f"the checkpoint {path} was not loaded: it is not a checkpoint of this l1sparse "
              "version")
    try:
        plain = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - corrupt, foreign, old (pickled objects): all refused
        raise UsageError(f"{refuse} (an older or foreign file, or a damaged one: it holds "
                         "more than tensors and plain data, and loading that could run code); "
                         "remove it to start afresh, or choose another --out") from None
    if not isinstance(plain, dict) or plain.get("format") != CHECKPOINT_FORMAT:
        found = plain.get("format") if isinstance(plain, dict) else type(plain).__name__
        raise UsageError(f"{refuse} (format {found!r}, expected {CHECKPOINT_FORMAT}); remove it "
                         "to start afresh, or choose another --out")
    try:
        return _from_plain(plain)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{refuse}: {exc}; remove it to start afresh") from None


def _load_checkpoint(path: Path, args):
    payload = _read_checkpoint(path)
    saved = payload.get("fingerprint", {})
    now = _fingerprint(args)
    # a key the checkpoint's version did not write matches its default ("auto")
    differ = [k for k in _FINGERPRINT_KEYS
              if saved.get(k, _FINGERPRINT_ADDED.get(k)) != now[k]]
    if differ:
        raise UsageError(f"the checkpoint {path} belongs to a run with other settings "
                         f"(differs in: {', '.join('--' + k.replace('_', '-') for k in differ)}); "
                         "repeat that run's flags, or drop --resume to start afresh")
    return payload


PENALTY_WEIGHTS = "penalty_weights.safetensors"


def _read_penalty_weights(model_file: Path) -> dict | None:
    """The c_i of a weighted penalty, saved by `fit` beside the model of a run directory."""
    path = model_file.parent / PENALTY_WEIGHTS
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - a damaged side file is one clear line
        raise UsageError(f"cannot read the penalty weights {path}: {exc}") from None


def _stationarity(model, data, result, tol: float = 0.05, selection: dict | None = None):
    """The stationarity certificate of a fit's model at its own lambda(s), full-data gradient
    (on the data as trained: standardised under --standardize, like lambda)."""
    from ..characterize import stationarity
    from ..penalty import layer_names

    selection = selection or {}
    lambdas = getattr(result, "lambdas", None)
    if not lambdas:
        lam = result.lam
        names = layer_names(model, **selection)
        lambdas = dict(zip(names, lam)) if isinstance(lam, list) else {n: lam for n in names}
    was_training = model.training
    model.eval()
    try:
        return stationarity(model, data.X_train, data.y_train, task=data.task,
                            lambdas=lambdas, tol=tol,
                            weights=getattr(result, "penalty_weights", None), **selection)
    finally:
        model.train(was_training)


def _write_fit_results(out: Path, args, data, model, target, result, *, resumed_from,
                       interrupted: bool = False, world: int = 1,
                       debiased: dict | None = None, extra: dict | None = None) -> dict:
    from ..export import save_model
    from ..losses import METRIC_NAMES
    from ..penalty import lambda_per_sample
    from ..sparsity import sparsity

    train_m, test_m = _metrics(model, data, args)
    selection = {k: getattr(args, k, None) for k in ("include", "exclude")
                 if getattr(args, k, None) is not None}
    report = sparsity(model, **selection)
    n = data.n_train
    lam = result.lam
    std = getattr(args, "_standardization", None)
    echo = target.echo()
    if echo.get("kind") == "nnz":
        echo = {**echo, "value": _count(echo["value"]), "tol": _count(echo["tol"])}
    attained = target.attained(result.nnz)
    summary = {
        "lambda": lam,
        "lambda_per_sample": ([lambda_per_sample(v, n) for v in lam] if isinstance(lam, list)
                              else lambda_per_sample(lam, n)),
        # with --standardize, λ belongs to the standardised problem (metrics are on raw data)
        "lambda_scale": "standardised data" if std is not None else "data as given",
        "standardized": None if std is None else {"features": True, "target": std.target},
        "target": echo,
        "target_words": _target_words(target),
        "attained": _count(attained) if echo.get("kind") == "nnz" else attained,
        "nnz": report.nnz,
        "total": report.total,
        "zero_fraction": report.zero_fraction,
        "layers": [layer.as_dict() for layer in report.layers],
        "penalised_tensors": [layer.name for layer in report.layers],
        "unpenalised_weights": {"nnz": report.outside_nnz, "total": report.outside_total},
        "converged": result.converged,
        "distance_nnz": _count(result.distance),
        "outer_iterations": result.outer_iterations,
        "epochs_total": result.epochs_total,
        "task": data.task,
        "metric": METRIC_NAMES[data.task],
        "train_metric": train_m,
        "test_metric": test_m,
        "seconds": result.seconds,
        "mode": args.mode,
        "penalty": getattr(result, "penalty", "l1"),
        "steps": getattr(result, "steps", None),
        "final_projection": getattr(result, "final_projection", None),
        "guard_events": getattr(result, "guard_events", 0),
        "warnings": list(getattr(result, "warnings", [])),
        # the held-out split (warm mode): its share, metric and the budget search, or None
        "validation": getattr(result, "validation", None),
        "lambda_meaning": ("the final lambda of a continuation (warm mode): the network was "
                           "trained at it for the last part of the run, but a fresh training "
                           "at it need not give the same count; use --mode retrain for a "
                           "reusable lambda") if args.mode == "warm" and args.hidden else
                          ("the lambda at which the returned model was trained from the start"
                           + (", stopped as its count entered the tolerance (paper mode)"
                              if args.mode == "paper" else "")),
        "resumed_from_iteration": resumed_from,
        "interrupted": interrupted,
        "debias": debiased,
        "world_size": world,
        "settings": {**_fingerprint(args), "n_train": n},
        "version": __version__,
        # the first-order conditions at the reported lambda, on the full training data
        "stationarity": _stationarity(model, data, result, selection=selection).as_dict(),
        **(extra or {}),
    }
    atomic_write_text(out / "result.json", json.dumps(summary, indent=2) + "\n")
    _write_history(out / "history.csv", [r.as_row() for r in result.history])
    metadata = {"lambda": lam, "target": echo, "task": data.task, "n_train": n}
    if std is not None:  # the saved network takes raw inputs; λ is the standardised problem's
        metadata["standardize"] = std.as_metadata()
    save_model(_raw_scale(model, args), out / "model.safetensors", format="dense",
               metadata=metadata, **selection)
    penalty_weights = getattr(result, "penalty_weights", None)
    if penalty_weights:  # the c_i of the weighted penalty the model was trained with
        from safetensors.torch import save_file

        weights = {k: v.detach().cpu().contiguous() for k, v in penalty_weights.items()}
        atomic_write(out / PENALTY_WEIGHTS, lambda tmp: save_file(weights, str(tmp)))
    return summary


def _print_result(args, summary: dict, target, result, out: Path, details: str, *,
                  works: bool = True) -> None:
    """fit's one-line result (also under --quiet, which hides progress only), then the
    certificate's line."""
    if not result.converged:
        met = "NOT met (" + "; ".join(target.misses(result.nnz)) + ")"
    elif not works:
        met = "met by a network that does not work (see the warning)"
    else:
        met = "met"
    test_m = summary["test_metric"]
    print(f"target ({summary['target_words']}) {met}: {details}; train {summary['metric']} "
          f"{summary['train_metric']:.4g}" + (f", test {test_m:.4g}" if test_m is not None
                                              else "")
          + f"; results in {out}", file=sys.stderr)
    if not args.quiet:
        print(_stationarity_line(summary, args), file=sys.stderr)


def _stationarity_line(summary: dict, args=None) -> str:
    """The first-order conditions at the reported λ, and what they mean for this run: a
    certificate after a converged polish; otherwise a diagnostic, with why low shares are
    expected and how to certify."""
    st = summary["stationarity"]

    def share(v):
        return "n/a" if v is None else f"{100 * v:.1f} %"

    med = st["median_residual"]
    line = (f"stationarity (tol {st['tol']:g}, {st['gradient']} gradient): nonzeros ok "
            f"{share(st['nonzeros_ok'])}, zeros ok {share(st['zeros_ok'])}, median residual "
            f"{'n/a' if med is None else f'{med:.3g}'}*lambda, max |dL/db| "
            f"{st['max_bias_gradient']:.3g}")
    polish = summary.get("polish")
    if polish and polish.get("converged"):
        return line + " (polished: a stationary point of the reported lambda)"
    if summary.get("convex") or args is None:
        return line
    relu = getattr(args, "activation", None) == "relu" and bool(getattr(args, "hidden", None))
    reasons = []
    if polish:
        reasons.append("the polish did not converge")
    else:
        if getattr(args, "batch_size", None) is not None:
            reasons.append("mini-batch training ends near, not at, a stationary point")
        elif getattr(args, "mode", None) == "warm":
            reasons.append("a warm run ends near, not at, a stationary point of its lambda")
        else:
            reasons.append("a finite training ends near, not at, a stationary point")
    if relu:
        reasons.append("ReLU has kinks where the conditions do not apply")
    if polish:
        how = ("the full-batch solves ran out of iterations at this count (result.json "
               "'polish' lists them)" + ("; a smooth activation such as --activation tanh "
                                         "lets them converge" if relu else ""))
        return line + f" - not a certificate: {' and '.join(reasons)}; {how}"
    how = "--polish with --batch-size full" + (" and a smooth activation such as "
                                               "--activation tanh" if relu else "")
    return (line + f" - a diagnostic, not a certificate: {' and '.join(reasons)}, so low "
            f"shares are expected; to certify, {how}")


def _polish_fit(args, model, data, target, result, *, weights=None,
                layers_required: int | None = None) -> dict | None:
    """fit --polish: polish on the full batch and re-choose λ on the polished problem until
    its count meets the target (:func:`l1sparse.polish.polish_to_target`); ``result`` then
    describes the returned network at the returned λ (its lambdas, nnz, converged, distance).
    """
    if not getattr(args, "polish", False):
        return None
    from ..polish import polish_to_target

    device = next(model.parameters()).device
    sel = polish_to_target(model, data.X_train.to(device), data.y_train.to(device),
                           task=data.task, target=target, lambdas=result.lambdas,
                           weights=weights, layers_required=layers_required)
    res = sel.result
    if not args.quiet:
        print(f"polish: {sel.solves} full-batch solve(s) in {sel.seconds:.1f}s, nonzeros at "
              f"each lambda (as a multiple of the run's): {sel.counts_line()}; returned lambda "
              f"{', '.join(f'{v:.4g}' for v in dict.fromkeys(sel.lambdas.values()))}, largest "
              f"violation {res.max_violation:.3g}*lambda ("
              + ("converged" if res.converged else "NOT converged: " + res.message) + ")",
              file=sys.stderr)
    if not sel.met:
        _warn(f"--polish: no lambda tried in {sel.solves} solves gives a polished network "
              f"within the target's tolerance (nonzeros at each lambda, as a multiple of the "
              f"run's: {sel.counts_line()}); the closest is returned")
    result.lambdas = dict(sel.lambdas)
    result.nnz = dict(sel.nnz)
    result.converged = sel.met
    result.distance = target.distance(sel.nnz)
    return sel.as_dict()


def _maybe_polish(args, model, data, lambdas, weights=None) -> dict | None:
    """train --polish (and the convex fit): a full-batch solve at the given lambda
    (:func:`l1sparse.polish.polish`)."""
    if not getattr(args, "polish", False):
        return None
    from ..polish import polish

    device = next(model.parameters()).device
    result = polish(model, data.X_train.to(device), data.y_train.to(device), task=data.task,
                    lambdas=lambdas, weights=weights)
    if not args.quiet:
        state = "converged" if result.converged else "NOT converged: " + result.message
        print(f"polish: {result.iterations} L-BFGS-B iterations, {result.seconds:.2f}s, nnz "
              f"{result.nnz_before} -> {result.nnz_after}, largest violation "
              f"{result.max_violation:.3g}*lambda ({state})", file=sys.stderr)
    return result.as_dict()


def _maybe_debias(args, model, data, result, X, y) -> dict | None:
    """--debias-epochs K: fine-tune the support of a model that met its target."""
    if not (args.debias_epochs > 0 and result.converged):
        return None
    from ..train import debias

    before_train, before_test = _metrics(model, data, args)
    t0 = time.perf_counter()
    lr = args.lr * DEFAULTS.debias_lr_factor
    debias(model, X, y, task=data.task, epochs=args.debias_epochs, lr=lr,
           optimizer=args.optimizer, momentum=args.momentum, batch_size=args.batch_size,
           generator=torch.Generator().manual_seed(args.seed))
    return {"epochs": args.debias_epochs, "lr": lr, "seconds": time.perf_counter() - t0,
            "l1_solution": {"train_metric": before_train, "test_metric": before_test}}
