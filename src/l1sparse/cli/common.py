"""Shared pieces of the command line: exit codes, the one-line errors, argument types, and
reading the data and building the model as every command does.

Printing and exit codes live in :mod:`l1sparse.cli`; the library only logs. The exit codes are
the table :data:`EXIT_CODES` (shown by ``--help`` and in the README): every error is one line on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import torch

from ..config import DEFAULTS


log = logging.getLogger("l1sparse")


EXIT_OK, EXIT_BAD_INPUT, EXIT_NOT_MET, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 2, 3, 4, 130


EXIT_OK, EXIT_BAD_INPUT, EXIT_NOT_MET, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 2, 3, 4, 130
EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE, as a shell reports a command writing into `| head`


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


def _layer_counts(text: str) -> list[int] | dict[str, int]:
    """``650,1200,1000,45`` (one per layer) or ``fc1=650,fc4=45`` (by name): whole numbers."""
    example = "650,1200,1000,45 or fc1=650,fc2=1200,fc3=1000,fc4=45"
    values = _layer_lam(text, example=example)
    numbers = list(values.values()) if isinstance(values, dict) else values
    if not numbers or any(v != int(v) or v < 0 for v in numbers):
        raise argparse.ArgumentTypeError(
            f"must be whole numbers >= 0 like {example}; got {text!r}")
    if isinstance(values, dict):
        return {k: int(v) for k, v in values.items()}
    return [int(v) for v in values]


def _val_fraction(text: str) -> float | str:
    """``--val-fraction``: ``auto`` or a share in ``[0, 1)``."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (0.0 <= value < 1.0):
        raise argparse.ArgumentTypeError(f"must be 'auto' or a number >= 0 and < 1; got {text!r}")
    return value


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


def _warn(message: str) -> None:
    """One line on stderr, also under --quiet (which hides progress, not problems)."""
    print(f"l1sparse: warning: {message}", file=sys.stderr)


def _read_data(name: str, args):
    from ..data import load_dataset, load_file

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
        from ..standardize import Standardization

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
    from ..validation import check_training_data, describe_labels

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
    from ..models import mlp

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
        from ..select import auto_grad_samples

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
    from ..losses import metric

    if getattr(args, "_standardization", None) is not None:
        model, data = _raw_scale(model, args), args._raw_data
    model.eval()
    train_m = metric(model, data.X_train, data.y_train, data.task)
    test_m = None if data.X_test is None else metric(model, data.X_test, data.y_test, data.task)
    return train_m, test_m


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
