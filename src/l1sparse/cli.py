"""The ``l1sparse`` command line: ``train`` at a given λ, ``fit`` to a sparsity target.

Printing and exit codes live here; the library only logs. Exit codes: 0 success (target met),
2 bad input (one line on stderr, no traceback), 3 target not met (results still written),
130 interrupted.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from . import __version__

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


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        _umask_permissions(tmp)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask_permissions(path: str) -> None:
    """mkstemp makes 0600 files; give the final file the permissions of an ordinary one."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


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
    if not rows:
        _atomic_write_text(path, "")
        return
    fields = list(rows[0])
    for row in rows[1:]:
        fields += [k for k in row if k not in fields]
    lines = []
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (";".join(f"{x:g}" for x in v) if isinstance(v, list) else v)
                         for k, v in row.items()})
    lines.append(buf.getvalue())
    _atomic_write_text(path, "".join(lines))


# --------------------------------------------------------------------------- commands


def _load_data(args):
    from .data import load_dataset, load_file

    if args.data.endswith((".npz", ".csv")) or os.path.sep in args.data:
        return load_file(args.data, task=args.task)
    return load_dataset(args.data, task=args.task, seed=args.seed)


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
        args.optimizer = "sgd" if convex and args.batch_size is None else "adam"
    if args.lr is None:
        if convex and args.batch_size is None and args.optimizer == "sgd":
            X = data.X_train.reshape(data.n_train, -1).double()
            Xa = torch.cat([X, torch.ones(X.shape[0], 1, dtype=X.dtype)], dim=1)
            args.lr = float(data.n_train / (2 * torch.linalg.matrix_norm(Xa, ord=2) ** 2))
        else:
            args.lr = 1e-3 if args.optimizer == "adam" else 0.05
    if args.epochs is None:
        args.epochs = 3000 if args.batch_size is None else 20
    args.convex = convex


def _metrics(model, data) -> tuple[float, float | None]:
    from .losses import metric

    model.eval()
    train_m = metric(model, data.X_train, data.y_train, data.task)
    test_m = None if data.X_test is None else metric(model, data.X_test, data.y_test, data.task)
    return train_m, test_m


def cmd_train(args) -> int:
    from .characterize import characterize
    from .data import make_regression
    from .losses import METRIC_NAMES
    from .penalty import resolve_lambdas
    from .sparsity import sparsity
    from .train import make_optimizer, train

    if args.data:
        data = _load_data(args)
    else:
        if args.task != "regression":
            raise UsageError("built-in data is for --task regression; give --data FILE")
        data = make_regression("oscillating", dim=4, n_train=1000, n_test=1000,
                               noise_std=0.1, seed=args.seed)
    model = _build(args, data)
    lambdas = resolve_lambdas(model, args.lam, args.layer_lam)
    _linear_defaults(args, data, model)
    opt = make_optimizer(model, args.optimizer, lr=args.lr, lambdas=lambdas,
                         n_samples=data.n_train, momentum=args.momentum)
    t0 = time.perf_counter()
    result = train(model, data.X_train, data.y_train, opt, task=data.task, epochs=args.epochs,
                   batch_size=args.batch_size, tol=args.stop_tol,
                   generator=torch.Generator().manual_seed(args.seed))
    seconds = time.perf_counter() - t0
    train_m, test_m = _metrics(model, data)
    report = characterize(model, data.X_train, data.y_train, task=data.task, lambdas=lambdas)
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
                     "momentum", "mode", "seed", "max_outer")


def _fingerprint(args) -> dict:
    return {k: getattr(args, k) for k in _FINGERPRINT_KEYS}


def _save_checkpoint(path: Path, payload: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        _umask_permissions(tmp)
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
                       interrupted: bool = False) -> dict:
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
        "world_size": 1,
        "settings": {**_fingerprint(args), "n_train": n},
        "version": __version__,
    }
    _atomic_write_text(out / "result.json", json.dumps(summary, indent=2) + "\n")
    _write_history(out / "history.csv", [r.as_row() for r in result.history])
    save_model(model, out / "model.safetensors", format="dense",
               metadata={"lambda": lam, "target": target.echo(), "task": data.task,
                         "n_train": n})
    return summary


def cmd_fit(args) -> int:
    from .select import SelectionResult, TrainingSolver, select_lambda

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
    solver = TrainingSolver(
        model, data.X_train, data.y_train, task=data.task, optimizer=args.optimizer,
        lr=args.lr, momentum=args.momentum, batch_size=args.batch_size, seed=args.seed,
        tol=1e-12 if args.batch_size is None else 0.0,
        schedule_epochs=args.epochs if args.batch_size is not None else None)
    refine = 3 if (args.convex and args.mode == "retrain" and not target.per_layer) else 0
    if not args.quiet:
        print(f"fit: {data.name}, {data.n_train} samples, hidden={args.hidden or 'none'}, "
              f"target {target.echo()}, mode {args.mode}", file=sys.stderr)
    latest: dict = {}

    def progress(record):
        if not args.quiet:
            lam = ",".join(f"{v:.4g}" for v in record.lambdas.values())
            print(f"  outer {record.iteration:>3} {record.phase:<6} lambda={lam} "
                  f"nnz={record.nnz_total} met={record.met}", file=sys.stderr)

    def checkpoint(state, solver_state):
        latest["state"] = state
        _save_checkpoint(ckpt_path, {"format": 1, "fingerprint": _fingerprint(args),
                                     "state": state, "solver": solver_state})
        _write_history(out / "history.csv", [r.as_row() for r in state.history])

    try:
        result = select_lambda(solver, target, mode=args.mode, epochs=args.epochs,
                               max_outer=args.max_outer, refine=refine, callback=progress,
                               checkpoint=checkpoint, resume=resume)
    except KeyboardInterrupt:
        state = latest.get("state") or (resume[0] if resume else None)
        if state is not None and state.best is not None:
            solver.load_state(state.best[3])
            _write_fit_results(out, args, data, model, target,
                               SelectionResult.from_state(state, target),
                               resumed_from=resumed_from, interrupted=True)
            print(f"l1sparse: interrupted; partial results in {out} "
                  f"(continue with --resume)", file=sys.stderr)
        else:
            print("l1sparse: interrupted before the first outer iteration finished",
                  file=sys.stderr)
        return EXIT_INTERRUPTED
    summary = _write_fit_results(out, args, data, model, target, result,
                                 resumed_from=resumed_from)
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


# --------------------------------------------------------------------------- parser


def _common(p: argparse.ArgumentParser, *, data_required: bool) -> None:
    p.add_argument("--data", required=data_required, metavar="FILE",
                   help=".npz (X_train, y_train[, X_test, y_test]) or .csv (header row, last "
                        "column the target), or a built-in name (mnist-5k, sine1d, oscillating)")
    p.add_argument("--task", choices=["regression", "classification"], required=True)
    p.add_argument("--hidden", type=_hidden, default=[300, 100], metavar="W1,W2,...",
                   help='hidden widths (default 300,100); "" for a linear model')
    p.add_argument("--activation", default="relu")
    p.add_argument("--epochs", type=int, default=None,
                   help="length of one full training (default 20; 3000 full-batch)")
    p.add_argument("--batch-size", type=_batch, default="auto", metavar="B",
                   help="mini-batch size, or 'full' for full-batch proximal gradient "
                        "(default 128; full for a linear regression model)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--optimizer", choices=["sgd", "adam"], default=None)
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
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

    p = sub.add_parser("train", help="train at a given lambda and characterise the result",
                       description="Train at a given lambda (summed-loss scale) and print "
                                   "per-layer sparsity, the error and the first-order-condition "
                                   "summary. Without --data: synthetic 4-D regression.")
    _common(p, data_required=False)
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
    _common(p, data_required=True)
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
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--resume", action="store_true",
                   help="continue from DIR/checkpoint.pt (written after every outer iteration)")
    p.set_defaults(func=cmd_fit)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    threads = args.threads or int(os.environ.get("L1SPARSE_THREADS", "1"))
    if threads < 1:
        print(f"l1sparse: error: --threads must be >= 1; got {threads}", file=sys.stderr)
        return EXIT_BAD_INPUT
    torch.set_num_threads(threads)
    try:
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
