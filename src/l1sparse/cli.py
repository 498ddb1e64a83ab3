"""The ``l1sparse`` command line: ``train`` at a given λ, ``fit`` to a sparsity target.

Printing and exit codes live here; the library only logs. Exit codes: 0 success (target met),
2 bad input (one line on stderr, no traceback), 3 target not met (results still written),
130 interrupted.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch

from . import __version__
from ._atomic import atomic_write, atomic_write_text

log = logging.getLogger("l1sparse")

EXIT_OK, EXIT_BAD_INPUT, EXIT_NOT_MET, EXIT_INTERRUPTED = 0, 2, 3, 130


class UsageError(ValueError):
    """Bad command-line input, reported in one line."""


# --------------------------------------------------------------------------- parsing helpers


def _hidden(text: str) -> list[int]:
    text = text.strip()
    if not text:
        return []
    try:
        widths = [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated integers such as 300,100 (or \"\" for a linear model); "
            f"got {text!r}") from None
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"widths must be positive; got {text!r}")
    return widths


def _floats(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated numbers; got {text!r}") from None


def _layer_lam(text: str) -> list[float] | dict[str, float]:
    """``1,2,3`` (one per layer) or ``fc1=2,fc3=0.5`` (by name)."""
    if "=" not in text:
        return _floats(text)
    out = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must look like fc1=0.5,fc2=1; got {text!r}") from None
    return out


def _grad_samples(text: str) -> int | None | str:
    if text in ("auto",):
        return text
    if text.lower() in ("all", "full", "none"):
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, 'all' or 'auto'; "
                                         f"got {text!r}")
    return value


def _batch(text: str) -> int | None | str:
    if text == "auto":
        return text
    if text.lower() in ("full", "none", "0"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'full'; got {text!r}") \
            from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'full'; got {text!r}")
    return value


# --------------------------------------------------------------------------- output


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


# --------------------------------------------------------------------------- commands


def _load_data(args):
    from .data import load_dataset, load_file

    if args.data.endswith((".npz", ".csv")) or os.path.sep in args.data:
        return load_file(args.data, task=args.task)
    return load_dataset(args.data, task=args.task, seed=args.seed,
                        data_dir=getattr(args, "data_dir", None))


def _build(args, data):
    from .models import mlp

    out = data.n_outputs
    if data.task == "classification" and out < 2:
        raise UsageError("classification needs at least two classes in y_train")
    return mlp(data.n_features, args.hidden, out, activation=args.activation, seed=args.seed)


def _linear_defaults(args, data, model) -> None:
    """The convex case (no hidden layer, squared loss): full-batch proximal gradient, step 1/L."""
    convex = not args.hidden and data.task == "regression"
    if args.batch_size == "auto":
        args.batch_size = None if convex else 128
    if args.optimizer is None:
        args.optimizer = "sgd"
    if args.momentum is None:
        # heavy-ball momentum for mini-batch networks; the paper's plain proximal gradient
        # for full batch
        args.momentum = 0.9 if args.batch_size is not None else 0.0
    if args.lr is None:
        if convex and args.batch_size is None and args.optimizer == "sgd":
            X = data.X_train.reshape(data.n_train, -1).double()
            Xa = torch.cat([X, torch.ones(X.shape[0], 1, dtype=X.dtype)], dim=1)
            args.lr = float(data.n_train / (2 * torch.linalg.matrix_norm(Xa, ord=2) ** 2))
        else:
            args.lr = 1e-3 if args.optimizer == "adam" else 0.1
    if args.epochs is None:
        args.epochs = 3000 if args.batch_size is None else 20
    if getattr(args, "grad_samples", None) == "auto":
        from .select import auto_grad_samples

        args.grad_samples = auto_grad_samples(data.n_train)
    args.convex = convex


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available to PyTorch here "
                         "(use --device cpu or auto)")
    return torch.device(name)


def _progress_bar(args, **kwargs):
    """A tqdm bar on stderr, only for a person at a terminal and without --quiet."""
    if args.quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(file=sys.stderr, dynamic_ncols=True, leave=False, **kwargs)


def _metrics(model, data) -> tuple[float, float | None]:
    from .losses import metric

    model.eval()
    train_m = metric(model, data.X_train, data.y_train, data.task)
    test_m = None if data.X_test is None else metric(model, data.X_test, data.y_test, data.task)
    return train_m, test_m


def cmd_train(args) -> int:
    from .characterize import characterize
    from .data import make_synthetic_regression
    from .losses import METRIC_NAMES
    from .penalty import resolve_lambdas
    from .sparsity import sparsity
    from .train import make_optimizer, train

    if args.data:
        data = _load_data(args)
    else:
        if args.task != "regression":
            raise UsageError("built-in data is for --task regression; give --data FILE")
        data = make_synthetic_regression("oscillating", dim=4, n_train=1000, n_test=1000,
                               noise_std=0.1, seed=args.seed)
    model = _build(args, data)
    lambdas = resolve_lambdas(model, args.lam, args.layer_lam)
    _linear_defaults(args, data, model)
    device = _device(args.device)
    model.to(device)
    X, y = data.X_train.to(device), data.y_train.to(device)
    opt = make_optimizer(model, args.optimizer, lr=args.lr, lambdas=lambdas,
                         n_samples=data.n_train, momentum=args.momentum)
    bar = _progress_bar(args, desc="epochs", unit="ep", total=args.epochs)

    def progress(record):
        if bar is not None:
            bar.set_postfix_str(f"objective={record.objective:.4g} "
                                f"nnz={sum(record.nnz.values())}")
            bar.update(record.fraction)

    t0 = time.perf_counter()
    result = train(model, X, y, opt, task=data.task, epochs=args.epochs, callback=progress,
                   batch_size=args.batch_size, tol=args.stop_tol,
                   generator=torch.Generator().manual_seed(args.seed))
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    train_m, test_m = _metrics(model, data)
    report = characterize(model, X, y, task=data.task, lambdas=lambdas)
    name = METRIC_NAMES[data.task]
    print(f"data {data.name}: {data.n_train} train, {data.n_test} test; "
          f"{result.epochs} epochs ({result.stopped}) in {seconds:.2f}s")
    print("lambda (summed-loss scale): " + ", ".join(f"{k}={v:g}" for k, v in lambdas.items()))
    print(sparsity(model).table())
    print(f"train {name} {train_m:.6g}" + (f", test {name} {test_m:.6g}" if test_m is not None
                                           else ""))
    print(report.summary())
    return EXIT_OK


def _target(args, model):
    from .select import make_target

    given = [args.target_sparsity is not None, args.target_nnz is not None,
             args.layer_sparsity is not None]
    if sum(given) != 1:
        raise UsageError("give exactly one of --target-sparsity, --target-nnz, --layer-sparsity")
    if args.target_nnz is not None:
        return make_target(model, nnz=args.target_nnz, tol=args.tol)
    if args.target_sparsity is not None:
        return make_target(model, zero_fraction=args.target_sparsity, tol=args.tol)
    return make_target(model, layer_zero_fraction=args.layer_sparsity, tol=args.tol)


CHECKPOINT = "checkpoint.pt"
_FINGERPRINT_KEYS = ("data", "task", "hidden", "activation", "target_sparsity", "target_nnz",
                     "layer_sparsity", "tol", "epochs", "batch_size", "lr", "optimizer",
                     "momentum", "mode", "seed", "max_outer", "debias_epochs", "grad_samples")


def _fingerprint(args) -> dict:
    return {k: getattr(args, k) for k in _FINGERPRINT_KEYS}


def _save_checkpoint(path: Path, payload: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _load_checkpoint(path: Path, args):
    try:
        # our own file, holding the selector's dataclasses: not weights-only
        payload = torch.load(path, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is the same problem
        raise UsageError(f"cannot read the checkpoint {path}: {exc}") from None
    saved = payload.get("fingerprint", {})
    now = _fingerprint(args)
    differ = [k for k in _FINGERPRINT_KEYS if saved.get(k) != now[k]]
    if differ:
        raise UsageError(f"the checkpoint {path} belongs to a run with other settings "
                         f"(differs in: {', '.join('--' + k.replace('_', '-') for k in differ)}); "
                         "repeat that run's flags, or drop --resume to start afresh")
    return payload


def _write_fit_results(out: Path, args, data, model, target, result, *, resumed_from,
                       interrupted: bool = False, world: int = 1,
                       debiased: dict | None = None) -> dict:
    from .export import save_model
    from .losses import METRIC_NAMES
    from .penalty import lambda_per_sample
    from .sparsity import sparsity

    train_m, test_m = _metrics(model, data)
    report = sparsity(model)
    n = data.n_train
    lam = result.lam
    summary = {
        "lambda": lam,
        "lambda_per_sample": ([lambda_per_sample(v, n) for v in lam] if isinstance(lam, list)
                              else lambda_per_sample(lam, n)),
        "target": target.echo(),
        "attained": target.attained(result.nnz),
        "nnz": report.nnz,
        "total": report.total,
        "zero_fraction": report.zero_fraction,
        "layers": [layer.as_dict() for layer in report.layers],
        "converged": result.converged,
        "distance_nnz": result.distance,
        "outer_iterations": result.outer_iterations,
        "epochs_total": result.epochs_total,
        "task": data.task,
        "metric": METRIC_NAMES[data.task],
        "train_metric": train_m,
        "test_metric": test_m,
        "seconds": result.seconds,
        "mode": args.mode,
        "resumed_from_iteration": resumed_from,
        "interrupted": interrupted,
        "debias": debiased,
        "world_size": world,
        "settings": {**_fingerprint(args), "n_train": n},
        "version": __version__,
    }
    atomic_write_text(out / "result.json", json.dumps(summary, indent=2) + "\n")
    _write_history(out / "history.csv", [r.as_row() for r in result.history])
    save_model(model, out / "model.safetensors", format="dense",
               metadata={"lambda": lam, "target": target.echo(), "task": data.task,
                         "n_train": n})
    return summary


def cmd_fit(args) -> int:
    from .distributed import initialised, world_from_env

    _, world = world_from_env()
    if world == 1:
        return _fit(args, rank=0, world=1)
    with initialised(_device(args.device)) as (rank, world):
        return _fit(args, rank=rank, world=world)


def _fit(args, *, rank: int, world: int) -> int:
    """``fit`` in one process, or in one rank of a data-parallel group (rank 0 writes)."""
    from .select import SelectionResult, TrainingSolver, select_lambda

    main_rank = rank == 0
    if not main_rank:
        args.quiet = True
    data = _load_data(args)
    model = _build(args, data)
    target = _target(args, model)
    out = _prepare_out(args.out)
    _linear_defaults(args, data, model)
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
        from .distributed import DistributedSolver as solver_class
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
              f"target {target.echo()}, mode {args.mode}", file=sys.stderr)
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
    debiased = None
    if args.debias_epochs > 0 and result.converged:
        from .train import debias

        before_train, before_test = _metrics(model, data)
        t0 = time.perf_counter()
        debias(model, solver.X, solver.y, task=data.task, epochs=args.debias_epochs,
               lr=args.lr / 10, optimizer=args.optimizer, batch_size=args.batch_size,
               generator=torch.Generator().manual_seed(args.seed))
        debiased = {"epochs": args.debias_epochs, "lr": args.lr / 10,
                    "seconds": time.perf_counter() - t0,
                    "l1_solution": {"train_metric": before_train, "test_metric": before_test}}
    if not main_rank:
        return EXIT_OK if result.converged else EXIT_NOT_MET
    summary = _write_fit_results(out, args, data, model, target, result,
                                 resumed_from=resumed_from, world=world, debiased=debiased)
    if not args.quiet:
        met = "met" if result.converged else f"NOT met (off by {result.distance} weights)"
        test_m = summary["test_metric"]
        print(f"target {met}: lambda={result.lam}, nnz {summary['nnz']}/{summary['total']} "
              f"({summary['zero_fraction']:.4f} zeros), {result.outer_iterations} outer "
              f"iterations, {result.epochs_total} epochs, {result.seconds:.1f}s; "
              f"train {summary['metric']} {summary['train_metric']:.4g}"
              + (f", test {test_m:.4g}" if test_m is not None else "")
              + f"; results in {out}", file=sys.stderr)
    return EXIT_OK if result.converged else EXIT_NOT_MET


def cmd_export(args) -> int:
    from .export import load, read_metadata, save_model

    source = Path(args.source)
    if source.is_dir():
        source = source / "model.safetensors"
    model = load(source)
    extra = read_metadata(source)["extra"]
    out = Path(args.out)
    if out.parent and not out.parent.exists():
        raise UsageError(f"the directory of --out {str(out)!r} does not exist")
    note = ""
    if args.compact:
        from .compact import compact
        from .models import MLP

        if not isinstance(model, MLP):
            raise UsageError("--compact needs an MLP model file")
        before = model.hidden
        model = compact(model)
        extra = {**extra, "compacted_from_hidden": before}
        note = f"; hidden {before} -> {model.hidden}"
    written = save_model(model, out, format=args.format, metadata=extra)
    print(f"wrote {out} ({args.format}, {written:,} bytes; source {source.stat().st_size:,} "
          f"bytes{note})")
    return EXIT_OK


def _layer_lambdas(extra: dict, names: list[str]) -> dict[str, float] | None:
    lam = extra.get("lambda")
    if lam is None:
        return None
    if isinstance(lam, list):
        return dict(zip(names, (float(v) for v in lam)))
    return {n: float(lam) for n in names}


def cmd_inspect(args) -> int:
    from .characterize import characterize
    from .export import load, read_metadata
    from .penalty import layer_names
    from .sparsity import sparsity

    source = Path(args.file)
    if source.is_dir():
        source = source / "model.safetensors"
    model = load(source)
    meta = read_metadata(source)
    names = layer_names(model)
    lambdas = _layer_lambdas(meta["extra"], names)
    report = sparsity(model)
    print(f"{source}: {meta['storage']} storage, {source.stat().st_size:,} bytes, "
          f"architecture {meta['architecture']}")
    print(f"{'layer':<10}{'shape':>14}{'nnz':>10}{'total':>10}{'zero frac':>11}{'lambda_k':>12}")
    for layer in report.layers:
        lam = f"{lambdas[layer.name]:.5g}" if lambdas else "-"
        print(f"{layer.name:<10}{'x'.join(map(str, layer.shape)):>14}{layer.nnz:>10}"
              f"{layer.total:>10}{layer.zero_fraction:>11.4f}{lam:>12}")
    print(f"{'all':<10}{'':>14}{report.nnz:>10}{report.total:>10}{report.zero_fraction:>11.4f}")
    from .compact import unit_report
    from .models import MLP

    if isinstance(model, MLP) and model.hidden:
        print("hidden units (live / width; without input, without output): " + "; ".join(
            f"after {u.layer} {u.live}/{u.width} ({u.no_input}, {u.no_output})"
            for u in unit_report(model)))
    if args.data:
        task = args.task or meta["extra"].get("task")
        if task is None:
            raise UsageError("give --task: the model file does not record it")
        if lambdas is None:
            raise UsageError("the model file records no lambda to check the conditions against")
        args.task = task
        data = _load_data(args)
        model.eval()
        summary = characterize(model, data.X_train, data.y_train, task=task, lambdas=lambdas)
        print(summary.summary())
    return EXIT_OK


# --------------------------------------------------------------------------- parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, metavar="FILE.toml",
                   help="settings as in the flags (e.g. target-sparsity = 0.9); flags win")
    p.add_argument("--data", default=None, metavar="FILE",
                   help=".npz (X_train, y_train[, X_test, y_test]) or .csv (header row, last "
                        "column the target), or a built-in name (mnist-5k, sine1d, oscillating)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where the IDX files of --data mnist / fashion-mnist are")
    p.add_argument("--task", choices=["regression", "classification"], default=None)
    p.add_argument("--hidden", type=_hidden, default=[300, 100], metavar="W1,W2,...",
                   help='hidden widths (default 300,100); "" for a linear model')
    p.add_argument("--activation", default="relu")
    p.add_argument("--epochs", type=int, default=None,
                   help="length of one full training (default 20; 3000 full-batch)")
    p.add_argument("--batch-size", type=_batch, default="auto", metavar="B",
                   help="mini-batch size, or 'full' for full-batch proximal gradient "
                        "(default 128; full for a linear regression model)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default 0.1 for sgd, 1e-3 for adam; full-batch linear: 1/L)")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default=None)
    p.add_argument("--momentum", type=float, default=None,
                   help="heavy-ball momentum of --optimizer sgd (default 0.9 mini-batch, "
                        "0 full batch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where training runs (default: cuda when available)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l1sparse",
        description="Sparse neural networks with l1 regularisation: state the sparsity you "
                    "want, get the lambda that gives it.",
        epilog="examples:\n"
               "  l1sparse train --task regression --lam 5\n"
               "  l1sparse fit --data mnist-5k --task classification --target-sparsity 0.9 "
               "--out runs/mnist\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"l1sparse {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the library's steps")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="PyTorch intra-op threads (default: $L1SPARSE_THREADS, else 1; "
                             "small layers run slower, not faster, on several threads)")
    sub = parser.add_subparsers(dest="command", required=True)
    parser.commands = sub.choices  # name -> subparser, for --config

    p = sub.add_parser("train", help="train at a given lambda and characterise the result",
                       description="Train at a given lambda (summed-loss scale) and print "
                                   "per-layer sparsity, the error and the first-order-condition "
                                   "summary. Without --data: synthetic 4-D regression.")
    _common(p)
    p.set_defaults(hidden=[64, 64])
    p.add_argument("--lam", type=float, default=None, help="one lambda for all layers")
    p.add_argument("--layer-lam", type=_layer_lam, default=None,
                   help="per-layer lambdas: 1,2,3 or fc1=2,fc3=0.5")
    p.add_argument("--stop-tol", type=float, default=0.0,
                   help="stop when the objective's relative change is below this")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("fit", help="find lambda for a target sparsity and train",
                       description="Choose lambda (or one lambda_k per layer) so that the "
                                   "trained network has the requested sparsity.")
    _common(p)
    g = p.add_argument_group("target (exactly one)")
    g.add_argument("--target-sparsity", type=float, default=None, metavar="F",
                   help="fraction of zero weights overall, in [0, 1)")
    g.add_argument("--target-nnz", type=int, default=None, metavar="K",
                   help="number of nonzero weights overall")
    g.add_argument("--layer-sparsity", type=_floats, default=None, metavar="F1,F2,...",
                   help="fraction of zero weights per layer")
    p.add_argument("--tol", type=float, default=None,
                   help="tolerance: a fraction with --target-sparsity/--layer-sparsity "
                        "(default 0.005), a count with --target-nnz (default 0.5%% of weights)")
    p.add_argument("--mode", choices=["warm", "retrain"], default="warm")
    p.add_argument("--max-outer", type=int, default=40)
    p.add_argument("--grad-samples", type=_grad_samples, default="auto", metavar="M",
                   help="estimate the gradient magnitudes that steer lambda on M random "
                        "samples (scaled to the summed loss); 'all' for every sample; default "
                        "auto: 10000 when there are more than 20000, else all")
    p.add_argument("--debias-epochs", type=float, default=0, metavar="K",
                   help="after the target is met, fine-tune the surviving weights for K epochs "
                        "with the zeros fixed and no penalty (lr/10); result.json keeps the "
                        "l1 solution's metrics under 'debias'")
    p.add_argument("--out", default=None, metavar="DIR")
    p.add_argument("--resume", action="store_true",
                   help="continue from DIR/checkpoint.pt (written after every outer iteration)")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("export", help="write a model file as dense or CSR safetensors",
                       description="Re-write a model (a fit output directory or a model file) "
                                   "as dense safetensors (zeros kept) or CSR per layer.",
                       epilog="example:\n  l1sparse export runs/demo --format csr "
                              "--out demo.csr.safetensors",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="DIR|FILE")
    p.add_argument("--format", choices=["dense", "csr"], default="csr")
    p.add_argument("--compact", action="store_true",
                   help="drop the hidden units with no incoming or no outgoing weight (same "
                        "function, a narrower MLP)")
    p.add_argument("--out", required=True, metavar="FILE")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("inspect", help="per-layer sparsity of a model file",
                       description="Print shape, nnz, zero fraction and lambda_k per layer; "
                                   "with --data, the first-order-condition summary.",
                       epilog="example:\n  l1sparse inspect runs/demo --data mnist-5k",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="DIR|FILE")
    p.add_argument("--data", default=None, metavar="DATA")
    p.add_argument("--task", choices=["regression", "classification"], default=None)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_inspect)

    from .experiments.run import add_parser as add_reproduce

    add_reproduce(sub)
    return parser


REQUIRED = {"fit": ("data", "task", "out"), "train": ("task",), "export": (), "inspect": (),
            "reproduce": ()}


def _apply_config(parser: argparse.ArgumentParser, args, argv) -> argparse.Namespace:
    """Re-parse with the TOML file's values as defaults: flags still win over the file."""
    import tomllib

    try:
        with open(args.config, "rb") as fh:
            config = tomllib.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {args.config!r} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read the config file {args.config!r}: {exc}") from None
    config = config.get(args.command, config)  # a [fit] table, or flat keys
    sub = parser.commands[args.command]
    known = {a.dest for a in sub._actions if a.dest not in ("help", "config")}
    values = {}
    for key, value in config.items():
        dest = key.replace("-", "_")
        if dest not in known:
            raise UsageError(f"unknown key {key!r} in {args.config}; the '{args.command}' "
                             f"settings are {sorted(k.replace('_', '-') for k in known)}")
        values[dest] = ",".join(map(str, value)) if isinstance(value, list) else value
    sub.set_defaults(**values)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    threads = args.threads or int(os.environ.get("L1SPARSE_THREADS", "1"))
    if threads < 1:
        print(f"l1sparse: error: --threads must be >= 1; got {threads}", file=sys.stderr)
        return EXIT_BAD_INPUT
    torch.set_num_threads(threads)
    try:
        if getattr(args, "config", None):
            args = _apply_config(parser, args, argv)
        missing = [k for k in REQUIRED[args.command] if getattr(args, k, None) is None]
        if missing:
            raise UsageError("missing " + ", ".join("--" + k for k in missing)
                             + " (on the command line or in --config)")
        return args.func(args)
    except KeyboardInterrupt:
        print("l1sparse: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except FileNotFoundError as exc:
        print(f"l1sparse: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ValueError, OSError, FloatingPointError) as exc:
        print(f"l1sparse: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
