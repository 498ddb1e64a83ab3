"""The ``l1sparse`` command line: ``train`` at a given λ, ``fit`` to a sparsity target.

Printing and exit codes live here; the library only logs. The exit codes are the table
:data:`EXIT_CODES` (shown by ``--help`` and in the README): every error is one line on stderr,
never a traceback.
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
from .config import DEFAULTS

log = logging.getLogger("l1sparse")

EXIT_OK, EXIT_BAD_INPUT, EXIT_NOT_MET, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 2, 3, 4, 130
EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE, as a shell reports a command writing into `| head`
EXIT_CODES = (
    (EXIT_OK, "target met, and the network works"),
    (EXIT_BAD_INPUT, "bad input: one line on stderr names the flag or file and what is allowed"),
    (EXIT_NOT_MET, "target not met, or met by a network that does not work (results written)"),
    (EXIT_DIVERGED, "training diverged (NaN/inf loss): try a smaller --lr, or --standardize"),
    (EXIT_INTERRUPTED, "interrupted (fit keeps partial results: continue with --resume)"),
    (EXIT_PIPE_CLOSED, "the reader of the output went away (e.g. | head); nothing printed"),
)


def _exit_table() -> str:
    return "exit status:\n" + "".join(f"  {code:<5}{text}\n" for code, text in EXIT_CODES)


class UsageError(ValueError):
    """Bad command-line input, reported in one line."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line naming the flag (no usage dump); exit 2.

    ``--help`` still prints the usage and every flag.
    """

    def error(self, message: str) -> None:  # type: ignore[override]
        message = " ".join(message.split())
        if "unrecognized arguments" in message or "required" in message:
            message += f" (see {self.prog} --help)"
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _number(kind, *, low=None, high=None, low_open=False, high_open=False, what=""):
    """An argparse type: an int or float within bounds, with a message stating them."""

    def parse(text: str):
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if low_open else '>='} {low:g}")
        if high is not None:
            bounds.append(f"{'<' if high_open else '<='} {high:g}")
        allowed = f"{what or ('an integer' if kind is int else 'a number')}" + (
            f" {' and '.join(bounds)}" if bounds else "")
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be {allowed}; got {text!r}") from None
        if kind is float and value != value:  # NaN
            raise argparse.ArgumentTypeError(f"must be {allowed}; got {text!r}")
        if ((low is not None and (value <= low if low_open else value < low))
                or (high is not None and (value >= high if high_open else value > high))):
            raise argparse.ArgumentTypeError(f"must be {allowed}; got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


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


def _layer_lam(text: str, example: str = "1,2,3 or fc1=0.5,fc2=1") \
        -> list[float] | dict[str, float]:
    """``1,2,3`` (one per layer) or ``fc1=2,fc3=0.5`` (by name)."""
    if "=" not in text:
        try:
            return _floats(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"must look like {example}; got {text!r}") from None
    out = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            if not name.strip() or name.strip() in out:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must look like {example} (each layer once); got {text!r}") from None
    return out


def _layer_fractions(text: str) -> list[float] | dict[str, float]:
    return _layer_lam(text, example="0.9,0.8,0.5 or fc1=0.9,fc2=0.8,fc3=0.5")


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
    if text.lower() in ("full", "none"):
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"must be a positive integer, 'full' (the whole training set per step) or 'auto'; "
            f"got {text!r}")
    return value


# --------------------------------------------------------------------------- output


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


# --------------------------------------------------------------------------- commands


def _warn(message: str) -> None:
    """One line on stderr, also under --quiet (which hides progress, not problems)."""
    print(f"l1sparse: warning: {message}", file=sys.stderr)


def _read_data(name: str, args):
    from .data import load_dataset, load_file

    if name.endswith((".npz", ".csv")) or os.path.sep in name:
        return load_file(name, task=args.task)
    return load_dataset(name, task=args.task, seed=args.seed,
                        data_dir=getattr(args, "data_dir", None))


def _load_data(args):
    """--data (and --test), checked, and standardised with --standardize.

    The raw data and the statistics stay on ``args`` (``_raw_data``, ``_standardization``) for
    the reports and the saved model, which work on the raw scale.
    """
    import dataclasses

    data = _read_data(args.data, args)
    test = getattr(args, "test", None)
    if test:
        extra = _read_data(test, args)
        # a CSV is all test data; an .npz gives its test split, or its only split
        X_t, y_t = ((extra.X_test, extra.y_test) if extra.X_test is not None
                    else (extra.X_train, extra.y_train))
        if tuple(X_t.shape[1:]) != tuple(data.X_train.shape[1:]):
            raise UsageError(
                f"--test {test}: its samples have shape {tuple(X_t.shape[1:])} but those of "
                f"--data {args.data} have {tuple(data.X_train.shape[1:])} "
                f"({data.n_features} features)")
        if data.task == "regression" and y_t.reshape(y_t.shape[0], -1).shape[1] \
                != data.n_outputs:
            raise UsageError(f"--test {test} has {y_t.reshape(y_t.shape[0], -1).shape[1]} "
                             f"target columns but --data {args.data} has {data.n_outputs}")
        if data.X_test is not None:
            _warn(f"--test {test} replaces the test split of --data {args.data}")
        data = dataclasses.replace(data, X_test=X_t, y_test=y_t)
    _check_data(args, data)
    args._raw_data = data
    args._standardization = None
    if getattr(args, "standardize", False):
        from .standardize import Standardization

        std = Standardization.from_data(
            data.X_train, data.y_train if data.task == "regression" else None)
        args._standardization = std
        data = dataclasses.replace(
            data, X_train=std.transform_X(data.X_train), y_train=std.transform_y(data.y_train),
            X_test=None if data.X_test is None else std.transform_X(data.X_test),
            y_test=None if data.y_test is None else std.transform_y(data.y_test))
    return data


def _check_data(args, data) -> None:
    """Labels 0..C-1 in training (refused otherwise); warnings for what is legal but odd."""
    from .validation import check_training_data, describe_labels

    source = f"--data {args.data}"
    try:
        check_training_data(data.X_train, data.y_train, task=data.task, name_X="X_train",
                            name_y="y_train")
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{source}: {exc}") from None
    if data.task == "classification" and data.y_test is not None and data.y_test.numel():
        seen = set(torch.unique(data.y_train).tolist())
        unseen = sorted(set(torch.unique(data.y_test).tolist()) - seen)
        if unseen:
            where = f"--test {args.test}" if getattr(args, "test", None) else source
            _warn(f"{where}: the test labels {describe_labels(unseen)} never occur in the "
                  f"training labels {describe_labels(seen)}; the network cannot learn them and "
                  "every such test sample counts as an error")
    batch = getattr(args, "batch_size", None)
    if isinstance(batch, int) and batch > data.n_train:
        _warn(f"--batch-size {batch} is larger than the {data.n_train} training samples: every "
              "step uses the whole training set (say --batch-size full to mean that)")


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
        args.batch_size = None if convex else DEFAULTS.batch_size
    if args.optimizer is None:
        args.optimizer = DEFAULTS.optimizer
    if args.momentum is None:
        # heavy-ball momentum for mini-batch networks; the paper's plain proximal gradient
        # for full batch
        args.momentum = DEFAULTS.momentum_for(batch_size=args.batch_size)
    if args.lr is None:
        if convex and args.batch_size is None and args.optimizer == "sgd":
            X = data.X_train.reshape(data.n_train, -1).double()
            Xa = torch.cat([X, torch.ones(X.shape[0], 1, dtype=X.dtype)], dim=1)
            args.lr = float(data.n_train / (2 * torch.linalg.matrix_norm(Xa, ord=2) ** 2))
        else:
            args.lr = DEFAULTS.lr_for(args.optimizer)
    if args.epochs is None:
        args.epochs = (DEFAULTS.full_batch_epochs if args.batch_size is None
                       else DEFAULTS.epochs)
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


def _raw_scale(model, args):
    """The model as saved: with --standardize, a copy that takes raw inputs (and predicts raw
    targets); otherwise ``model`` itself."""
    std = getattr(args, "_standardization", None)
    if std is None:
        return model
    import copy

    return std.fold(copy.deepcopy(model))


def _metrics(model, data, args=None) -> tuple[float, float | None]:
    """Train and test metric, on the raw scale of the data (also under --standardize)."""
    from .losses import metric

    if getattr(args, "_standardization", None) is not None:
        model, data = _raw_scale(model, args), args._raw_data
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
    from .select import TrainingSolver

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
    from .penalty import l1_weights

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
    from .characterize import stationarity

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


def _target(args, model):
    from .select import make_target

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


def _pp(fraction: float) -> str:
    return f"{100 * fraction:.6g}"


def _target_words(target) -> str:
    """The target in words: "90 % zeros ± 0.5 pp", "2000 nonzeros exactly", per layer by name."""
    words = getattr(target, "words", None)
    if callable(words):
        return words()
    echo = target.echo()
    values = echo["value"] if echo["per_layer"] else [echo["value"]]
    names = [", ".join(s.layers) if echo["per_layer"] else "" for s in target.scopes]
    if echo["kind"] == "nnz":
        tol = "exactly" if echo["tol"] == 0 else f"± {echo['tol']:g}"
        parts = [f"{int(v)} nonzeros {tol}" for v in values]
    else:
        parts = [f"{_pp(v)} % zeros ± {_pp(echo['tol'])} pp" for v in values]
    return ", ".join(f"{n}: {p}" if n else p for n, p in zip(names, parts))


def _count(value):
    """A whole-number float (a count of weights) as an int, for result.json; lists elementwise."""
    if isinstance(value, list):
        return [_count(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


CHECKPOINT = "checkpoint.pt"
_FINGERPRINT_KEYS = ("data", "task", "hidden", "activation", "target_sparsity", "target_nnz",
                     "layer_sparsity", "tol", "epochs", "batch_size", "lr", "optimizer",
                     "momentum", "mode", "seed", "max_outer", "debias_epochs", "grad_samples",
                     "standardize", "steps", "penalty")


def _fingerprint(args) -> dict:
    return {k: getattr(args, k, None) for k in _FINGERPRINT_KEYS}


# Checkpoints hold tensors and plain data only, loaded with torch.load(weights_only=True): a
# checkpoint.pt planted in a shared run directory cannot run code. The library's dataclasses
# (the selector's state and records) are written as tagged dicts and rebuilt on loading, only
# for dataclasses defined in l1sparse itself.
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
    differ = [k for k in _FINGERPRINT_KEYS if saved.get(k) != now[k]]
    if differ:
        raise UsageError(f"the checkpoint {path} belongs to a run with other settings "
                         f"(differs in: {', '.join('--' + k.replace('_', '-') for k in differ)}); "
                         "repeat that run's flags, or drop --resume to start afresh")
    return payload


def _stationarity(model, data, result, tol: float = 0.05):
    """The stationarity certificate of a fit's model at its own lambda(s), full-data gradient
    (on the data as trained: standardised under --standardize, like lambda)."""
    from .characterize import stationarity
    from .penalty import layer_names

    lambdas = getattr(result, "lambdas", None)
    if not lambdas:
        lam = result.lam
        names = layer_names(model)
        lambdas = dict(zip(names, lam)) if isinstance(lam, list) else {n: lam for n in names}
    was_training = model.training
    model.eval()
    try:
        return stationarity(model, data.X_train, data.y_train, task=data.task,
                            lambdas=lambdas, tol=tol,
                            weights=getattr(result, "penalty_weights", None))
    finally:
        model.train(was_training)


def _write_fit_results(out: Path, args, data, model, target, result, *, resumed_from,
                       interrupted: bool = False, world: int = 1,
                       debiased: dict | None = None, extra: dict | None = None) -> dict:
    from .export import save_model
    from .losses import METRIC_NAMES
    from .penalty import lambda_per_sample
    from .sparsity import sparsity

    train_m, test_m = _metrics(model, data, args)
    report = sparsity(model)
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
        "lambda_meaning": ("the final lambda of a continuation (warm mode): the network was "
                           "trained at it for the last part of the run, but a fresh training "
                           "at it need not give the same count; use --mode retrain for a "
                           "reusable lambda") if args.mode == "warm" and args.hidden else
                          "the lambda at which the returned model was trained from the start",
        "resumed_from_iteration": resumed_from,
        "interrupted": interrupted,
        "debias": debiased,
        "world_size": world,
        "settings": {**_fingerprint(args), "n_train": n},
        "version": __version__,
        # the first-order conditions at the reported lambda, on the full training data
        "stationarity": _stationarity(model, data, result).as_dict(),
        **(extra or {}),
    }
    atomic_write_text(out / "result.json", json.dumps(summary, indent=2) + "\n")
    _write_history(out / "history.csv", [r.as_row() for r in result.history])
    metadata = {"lambda": lam, "target": echo, "task": data.task, "n_train": n}
    if std is not None:  # the saved network takes raw inputs; λ is the standardised problem's
        metadata["standardize"] = std.as_metadata()
    save_model(_raw_scale(model, args), out / "model.safetensors", format="dense",
               metadata=metadata)
    penalty_weights = getattr(result, "penalty_weights", None)
    if penalty_weights:  # the c_i of the weighted penalty the model was trained with
        from safetensors.torch import save_file

        weights = {k: v.detach().cpu().contiguous() for k, v in penalty_weights.items()}
        atomic_write(out / PENALTY_WEIGHTS, lambda tmp: save_file(weights, str(tmp)))
    return summary


def cmd_fit(args) -> int:
    from .distributed import initialised, world_from_env

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
    from .select import SelectionResult, TrainingSolver, select_lambda

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
    from .select import fit_sparse
    from .train import batches_per_epoch

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

    per_epoch = batches_per_epoch(data.n_train, args.batch_size)
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
        from .sparsity import nnz_per_layer

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


def _maybe_debias(args, model, data, result, X, y) -> dict | None:
    """--debias-epochs K: fine-tune the support of a model that met its target."""
    if not (args.debias_epochs > 0 and result.converged):
        return None
    from .train import debias

    before_train, before_test = _metrics(model, data, args)
    t0 = time.perf_counter()
    lr = args.lr * DEFAULTS.debias_lr_factor
    debias(model, X, y, task=data.task, epochs=args.debias_epochs, lr=lr,
           optimizer=args.optimizer, momentum=args.momentum, batch_size=args.batch_size,
           generator=torch.Generator().manual_seed(args.seed))
    return {"epochs": args.debias_epochs, "lr": lr, "seconds": time.perf_counter() - t0,
            "l1_solution": {"train_metric": before_train, "test_metric": before_test}}


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
        print(_stationarity_line(summary), file=sys.stderr)


def _stationarity_line(summary: dict) -> str:
    st = summary["stationarity"]

    def share(v):
        return "n/a" if v is None else f"{100 * v:.1f} %"

    med = st["median_residual"]
    return (f"stationarity (tol {st['tol']:g}, {st['gradient']} gradient): nonzeros ok "
            f"{share(st['nonzeros_ok'])}, zeros ok {share(st['zeros_ok'])}, median residual "
            f"{'n/a' if med is None else f'{med:.3g}'}*lambda, max |dL/db| "
            f"{st['max_bias_gradient']:.3g}")


def _maybe_polish(args, model, data, lambdas, weights=None) -> dict | None:
    """--polish: a full-batch L-BFGS-B solve at the final lambda (l1sparse.polish)."""
    if not getattr(args, "polish", False):
        return None
    from .polish import polish

    device = next(model.parameters()).device
    result = polish(model, data.X_train.to(device), data.y_train.to(device), task=data.task,
                    lambdas=lambdas, weights=weights)
    if not args.quiet:
        print(f"polish: {result.iterations} L-BFGS-B iterations, {result.seconds:.2f}s, nnz "
              f"{result.nnz_before} -> {result.nnz_after}, largest violation "
              f"{result.max_violation:.3g}*lambda ({'converged' if result.converged else 'NOT converged: ' + result.message})",
              file=sys.stderr)
    return result.as_dict()


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

    from .convex import select, to_model
    from .penalty import layer_names

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


def cmd_export(args) -> int:
    from .export import convert, load, read_metadata, save_model

    source = Path(args.source)
    if source.is_dir():
        source = source / "model.safetensors"
    meta = read_metadata(source)
    extra = meta["extra"]
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a directory; give a file name, such as "
                         f"{str(out / ('model.' + args.format + '.safetensors'))!r}")
    if out.parent and not out.parent.exists():
        raise UsageError(f"the directory of --out {str(out)!r} does not exist")
    note = ""
    if args.compact:
        from .compact import compact
        from .models import MLP

        model = load(source) if meta["architecture"] else None
        if not isinstance(model, MLP):
            raise UsageError(f"--compact needs an MLP model file; {source} holds a "
                             f"{meta['module'].get('class', 'module')}")
        before = model.hidden
        model = compact(model)
        extra = {**extra, "compacted_from_hidden": before}
        note = f"; hidden {before} -> {model.hidden}"
        written = save_model(model, out, format=args.format, metadata=extra)
    else:  # tensor by tensor, so a file of a user's own module converts without its class
        written = convert(source, out, format=args.format)
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
    from .export import layer_sparsity, load, read_metadata

    source = Path(args.file)
    if source.is_dir():
        source = source / "model.safetensors"
    meta = read_metadata(source)
    cls = meta["module"].get("class", "YourNet")
    if args.data and not meta["architecture"]:
        raise UsageError(f"--data needs a model that l1sparse can rebuild; {source} holds the "
                         f"weights of a {cls} (the file names no code): check it in Python with "
                         f"l1sparse.load(FILE, model={cls}()) and l1sparse.characterize")
    # the table comes from the file alone, so a user's own module needs no class here
    model = load(source) if meta["architecture"] else None
    report = layer_sparsity(source)
    names = [layer.name for layer in report.layers]
    lambdas = _layer_lambdas(meta["extra"], names)
    described = (f"architecture {meta['architecture']}" if model is not None else
                 f"module {cls} (weights only: l1sparse.load(FILE, model={cls}()) fills it)")
    print(f"{source}: {meta['storage']} storage, {source.stat().st_size:,} bytes, {described}")
    w = max([10, *(len(n) + 2 for n in names)])
    print(f"{'layer':<{w}}{'shape':>14}{'nnz':>10}{'total':>10}{'zero frac':>11}{'lambda_k':>12}")
    for layer in report.layers:
        lam = f"{lambdas[layer.name]:.5g}" if lambdas else "-"
        print(f"{layer.name or '(root)':<{w}}{'x'.join(map(str, layer.shape)):>14}"
              f"{layer.nnz:>10}{layer.total:>10}{layer.zero_fraction:>11.4f}{lam:>12}")
    if report.layers:
        print(f"{'all':<{w}}{'':>14}{report.nnz:>10}{report.total:>10}"
              f"{report.zero_fraction:>11.4f}")
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
        recorded = meta["extra"].get("task")
        if recorded is not None and args.task is not None and args.task != recorded:
            raise UsageError(f"--task {args.task}: the model in {source} was trained for "
                             f"{recorded}")
        args.task = task
        stats = meta["extra"].get("standardize")
        args.standardize = False  # the model file's own statistics are used, below
        data = _load_data(args)
        _check_model_fits_data(model, data, source, args.data)
        if stats is not None:
            # the saved network takes raw inputs; its λ belongs to the standardised problem
            import dataclasses

            from .standardize import Standardization

            saved = Standardization.from_metadata(stats)
            if saved.x_mean.numel() != data.n_features:
                raise UsageError(f"the model file {source} has standardisation statistics for "
                                 f"{saved.x_mean.numel()} features, not {data.n_features}")
            data = dataclasses.replace(data, X_train=saved.transform_X(data.X_train),
                                       y_train=saved.transform_y(data.y_train))
            saved.unfold(model)
        model.eval()
        summary = characterize(model, data.X_train, data.y_train, task=task, lambdas=lambdas)
        print(summary.summary())
        from .characterize import stationarity

        weights = _read_penalty_weights(source)
        print(stationarity(model, data.X_train, data.y_train, task=task,
                           lambdas=lambdas, weights=weights).line()
              + (" (weighted penalty: c_i from " + PENALTY_WEIGHTS + ")" if weights else ""))
    return EXIT_OK


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


def _check_model_fits_data(model, data, source, name) -> None:
    """The data set of ``inspect --data`` must be one the model can take, for its task."""
    inputs, outputs = getattr(model, "in_features", None), getattr(model, "out_features", None)
    if inputs is not None and data.n_features != inputs:
        raise UsageError(f"--data {name} has {data.n_features} features but the model in "
                         f"{source} takes {inputs}: give the data set it was trained on")
    if outputs is None:
        return
    if data.task == "classification":
        top = int(data.y_train.max()) + 1
        if top > outputs:
            raise UsageError(f"--data {name} has labels up to {top - 1} but the model in "
                             f"{source} has {outputs} outputs (classes 0..{outputs - 1})")
    elif data.n_outputs != outputs:
        raise UsageError(f"--data {name} has {data.n_outputs} target columns but the model in "
                         f"{source} predicts {outputs}")


# --------------------------------------------------------------------------- parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, metavar="FILE.toml",
                   help="settings as in the flags (e.g. target-sparsity = 0.9); flags win")
    p.add_argument("--data", default=None, metavar="FILE",
                   help=".npz (X_train, y_train[, X_test, y_test]) or .csv (header row, last "
                        "column the target), or a built-in name (mnist-5k, sine1d, oscillating)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where the IDX files of --data mnist / fashion-mnist are")
    p.add_argument("--test", default=None, metavar="FILE",
                   help="test data: a .csv like --data, or an .npz (its X_test, y_test, or "
                        "else X_train, y_train); checked against the training data's features "
                        "and classes; replaces a test split of --data")
    p.add_argument("--standardize", action="store_true",
                   help="train on standardised features (and, for regression, target): mean 0, "
                        "scale 1 on the training data; the saved model takes raw inputs and "
                        "predicts raw targets, and lambda is on the standardised scale")
    p.add_argument("--task", choices=["regression", "classification"], default=None,
                   help="squared loss (regression) or cross-entropy on labels 0..C-1 "
                        "(classification)")
    p.add_argument("--hidden", type=_hidden, default=[300, 100], metavar="W1,W2,...",
                   help='hidden widths (default 300,100); "" for a linear model')
    from .models import ACTIVATIONS

    p.add_argument("--activation", default="relu", choices=sorted(ACTIVATIONS),
                   help="activation of the hidden layers (default relu)")
    p.add_argument("--epochs", type=_number(int, low=1), default=None,
                   help="length of one full training (default 20; 3000 full-batch)")
    p.add_argument("--batch-size", type=_batch, default="auto", metavar="B",
                   help="mini-batch size, or 'full' for full-batch proximal gradient "
                        "(default 128; full for a linear regression model)")
    p.add_argument("--lr", type=_number(float, low=0, low_open=True), default=None,
                   help="learning rate, > 0 (default 0.1 for sgd, 1e-3 for adam; full-batch "
                        "linear: 1/L)")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default=None,
                   help="proximal SGD (default) or proximal Adam")
    p.add_argument("--momentum", type=_number(float, low=0, high=1, high_open=True),
                   default=None,
                   help="heavy-ball momentum of --optimizer sgd, in [0, 1) (default 0.9 "
                        "mini-batch, 0 full batch)")
    p.add_argument("--seed", type=_number(int), default=0,
                   help="seed of the initial weights, the batches and built-in data (default 0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where training runs (default: cuda when available)")
    _output_flags(p)


def _output_flags(p: argparse.ArgumentParser) -> None:
    """-v and --quiet after the command too; SUPPRESS keeps a value given before it."""
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="log the library's steps")
    p.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="no progress output (warnings, errors and the one-line result stay)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="l1sparse",
        description="Sparse neural networks with l1 regularisation: state the sparsity you "
                    "want, get the lambda that gives it.",
        epilog="examples:\n"
               "  l1sparse train --task regression --lam 5\n"
               "  l1sparse fit --data mnist-5k --task classification --target-sparsity 0.9 "
               "--out runs/mnist\n\n" + _exit_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"l1sparse {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the library's steps")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress output (warnings, errors and the one-line result stay)")
    parser.add_argument("--threads", type=_number(int, low=1), default=None, metavar="N",
                        help="PyTorch intra-op threads (default: $L1SPARSE_THREADS, else 1; "
                             "small layers run slower, not faster, on several threads)")
    sub = parser.add_subparsers(dest="command", required=True)
    parser.commands = sub.choices  # name -> subparser, for --config

    p = sub.add_parser("train", help="train at a given lambda and characterise the result",
                       description="Train at a given lambda (summed-loss scale) and print "
                                   "per-layer sparsity, the error and the first-order-condition "
                                   "summary. Without --data: synthetic 4-D regression.",
                       epilog=_exit_table(), formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.set_defaults(hidden=[64, 64])
    p.add_argument("--lam", type=_number(float, low=0), default=None,
                   help="one lambda (>= 0, summed-loss scale) for all layers")
    p.add_argument("--layer-lam", type=_layer_lam, default=None,
                   help="per-layer lambdas: 1,2,3 or fc1=2,fc3=0.5")
    p.add_argument("--penalty", choices=["l1", "reweighted"], default="l1",
                   help="plain l1 (default, the paper's model) or reweighted l1 (weights c_i "
                        "refreshed each epoch during the first 85 %% of the run, then held)")
    p.add_argument("--stop-tol", type=_number(float, low=0), default=0.0,
                   help="stop when the objective's relative change is below this")
    p.add_argument("--polish", action="store_true",
                   help="after training, a full-batch L-BFGS-B solve at lambda to a stationary "
                        "point (data in memory; converges with smooth activations such as "
                        "tanh, stalls with relu)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("fit", help="find lambda for a target sparsity and train",
                       description="Choose lambda (or one lambda_k per layer) so that the "
                                   "trained network has the requested sparsity.",
                       epilog=_exit_table(), formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    g = p.add_argument_group("target (exactly one)")
    g.add_argument("--target-sparsity", type=float, default=None, metavar="F",
                   help="fraction of zero weights overall, in [0, 1)")
    g.add_argument("--target-nnz", type=_number(int, low=0), default=None, metavar="K",
                   help="number of nonzero weights overall")
    g.add_argument("--layer-sparsity", type=_layer_fractions, default=None,
                   metavar="F1,F2,...|fc1=F1,...",
                   help="fraction of zero weights per layer, in layer order or by name")
    p.add_argument("--tol", type=_number(float, low=0), default=None,
                   help="tolerance: a fraction with --target-sparsity/--layer-sparsity "
                        "(default 0.005), a count with --target-nnz (default 0: exactly K)")
    p.add_argument("--mode", choices=["warm", "retrain"], default="warm",
                   help="warm: one continued training that moves lambda as it goes (default); "
                        "retrain: a full training from the same start for every lambda")
    p.add_argument("--steps", type=_number(int, low=1), default=None, metavar="S",
                   help="warm mode: length of the run in optimizer steps (wins over --epochs; "
                        "default 20 epochs but at least 3000 steps)")
    p.add_argument("--penalty", choices=["auto", "reweighted", "l1"], default="auto",
                   help="warm mode: reweighted l1 (auto for networks) or plain l1 (auto for "
                        "a linear model; the paper's tables and retrain mode use it)")
    p.add_argument("--max-outer", type=_number(int, low=1), default=40,
                   help="most outer iterations (lambda updates) before giving up (default 40)")
    p.add_argument("--grad-samples", type=_grad_samples, default="auto", metavar="M",
                   help="estimate the gradient magnitudes that steer lambda on M random "
                        "samples (scaled to the summed loss); 'all' for every sample; default "
                        "auto: 10000 when there are more than 20000, else all")
    p.add_argument("--debias-epochs", type=_number(float, low=0), default=0, metavar="K",
                   help="after the target is met, fine-tune the surviving weights for K epochs "
                        "with the zeros fixed and no penalty (lr/10); result.json keeps the "
                        "l1 solution's metrics under 'debias'")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output directory (result.json, history.csv, model.safetensors, "
                        "checkpoint.pt); must be empty or new unless --resume or --force")
    p.add_argument("--resume", action="store_true",
                   help="continue from DIR/checkpoint.pt (written after every outer iteration)")
    p.add_argument("--force", action="store_true",
                   help="start afresh in a non-empty --out, replacing the previous run's files")
    p.add_argument("--polish", action="store_true",
                   help="after the selection, a full-batch L-BFGS-B solve at the final lambda "
                        "to a stationary point (data in memory; converges with smooth "
                        "activations such as tanh, stalls with relu); result.json 'polish'")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("export", help="write a model file as dense or CSR safetensors",
                       description="Re-write a model (a fit output directory or a model file) "
                                   "as dense safetensors (zeros kept) or CSR per layer.",
                       epilog="example:\n  l1sparse export runs/demo --format csr "
                              "--out demo.csr.safetensors\n\n" + _exit_table(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="DIR|FILE",
                   help="a fit output directory or a model file (.safetensors)")
    p.add_argument("--format", choices=["dense", "csr"], default="csr",
                   help="csr: only the nonzeros of each weight matrix (default); dense: all")
    p.add_argument("--compact", action="store_true",
                   help="drop the hidden units with no incoming or no outgoing weight (same "
                        "function, a narrower MLP)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="the model file to write (its directory must exist)")
    _output_flags(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("inspect", help="per-layer sparsity of a model file",
                       description="Print shape, nnz, zero fraction and lambda_k per layer; "
                                   "with --data, the first-order-condition summary.",
                       epilog="example:\n  l1sparse inspect runs/demo --data mnist-5k\n\n"
                              + _exit_table(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="DIR|FILE",
                   help="a fit output directory or a model file (.safetensors)")
    p.add_argument("--data", default=None, metavar="DATA",
                   help="the training data (file or built-in name) to check the first-order "
                        "conditions on: the data set the model was trained on")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where the IDX files of --data mnist / fashion-mnist are")
    p.add_argument("--task", choices=["regression", "classification"], default=None,
                   help="the task of --data (default: the one recorded in the model file)")
    p.add_argument("--seed", type=_number(int), default=0,
                   help="seed of a built-in data set's split (as given to fit; default 0)")
    _output_flags(p)
    p.set_defaults(func=cmd_inspect)

    from .experiments.run import add_parser as add_reproduce

    add_reproduce(sub)
    for name, command in sub.choices.items():
        for action in command._actions:
            # a flag given before the command must survive the command's own default
            if action.dest in ("verbose", "quiet"):
                action.default = argparse.SUPPRESS
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
        if isinstance(value, list):
            value = ",".join(map(str, value))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # argparse then checks a file's value as it checks a flag's
        values[dest] = value
    sub.set_defaults(**values)
    return parser.parse_args(argv)


def _divergence_hint(args) -> str:
    lr = getattr(args, "lr", None)
    now = f" (now {lr:g})" if isinstance(lr, float) else ""
    scale = ("" if getattr(args, "standardize", False)
             else ", or --standardize when the target or the features are badly scaled")
    return f"Hint: a smaller --lr{now}{scale}."


def _pipe_closed() -> int:
    """The reader of stdout went away (``| head``): end quietly, as a shell command does."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
    except (OSError, ValueError):
        pass
    return EXIT_PIPE_CLOSED


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a parser error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        threads = args.threads or int(os.environ.get("L1SPARSE_THREADS", "1"))
    except ValueError:
        threads = 0
    if threads < 1:
        print(f"l1sparse: error: $L1SPARSE_THREADS must be an integer >= 1; got "
              f"{os.environ.get('L1SPARSE_THREADS')!r}", file=sys.stderr)
        return EXIT_BAD_INPUT
    torch.set_num_threads(threads)
    from .train import DivergenceError

    try:
        try:
            return _run(parser, args, argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, inside the handlers below
    except BrokenPipeError:
        return _pipe_closed()
    except SystemExit as exc:  # a parser error while re-reading with --config: already printed
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("l1sparse: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except DivergenceError as exc:
        print(f"l1sparse: error: {_one_line(exc)} {_divergence_hint(args)}", file=sys.stderr)
        return EXIT_DIVERGED
    except FileNotFoundError as exc:
        print(f"l1sparse: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ValueError, OSError, FloatingPointError) as exc:
        print(f"l1sparse: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _run(parser, args, argv) -> int:
    if getattr(args, "config", None):
        args.__dict__.update(vars(_apply_config(parser, args, argv)))
    missing = [k for k in REQUIRED[args.command] if getattr(args, k, None) is None]
    if missing:
        raise UsageError("missing " + ", ".join("--" + k for k in missing)
                         + " (on the command line or in --config)")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
