"""The entry point :func:`main`: parse, run the command, and turn every error into one line
on stderr and an exit code (the table :data:`l1sparse.cli.EXIT_CODES`)."""

from __future__ import annotations

import logging
import os
import sys

import torch

from .common import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_PIPE_CLOSED, UsageError
from .parser import REQUIRED, _apply_config, build_parser


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
    from ..train import DivergenceError

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
    _infer_task(args)
    missing = [k for k in REQUIRED[args.command] if getattr(args, k, None) is None]
    if missing:
        raise UsageError("missing " + ", ".join("--" + k for k in missing)
                         + " (on the command line or in --config)")
    return args.func(args)


def _infer_task(args) -> None:
    """A built-in data set (--data mg, mnist-5k, ...) names its task: --task may be left out."""
    data = getattr(args, "data", None)
    if getattr(args, "task", "absent") is not None or not data:
        return
    from ..data.dispatch import _TASK_OF

    key = str(data).lower().replace("_", "-")
    if key in _TASK_OF:
        args.task = _TASK_OF[key]
