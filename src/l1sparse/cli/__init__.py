"""The ``l1sparse`` command line: ``train`` at a given λ, ``fit`` to a sparsity target,
``export`` and ``inspect`` model files, ``reproduce`` the paper's experiments.

One module per command (:mod:`.train`, :mod:`.fit`, :mod:`.export`, :mod:`.inspect`; ``reproduce``
lives in :mod:`l1sparse.experiments.run`), the shared argument types, data loading and exit codes
in :mod:`.common`, what a run writes and prints in :mod:`.output`, the parser in :mod:`.parser`
and the entry point :func:`main` in :mod:`.app`.

Printing and exit codes live here; the library only logs. The exit codes are the table
:data:`EXIT_CODES` (shown by ``--help`` and in the README): every error is one line on stderr,
never a traceback.
"""

from __future__ import annotations

from .app import main
from .common import (
    EXIT_BAD_INPUT,
    EXIT_CODES,
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    EXIT_NOT_MET,
    EXIT_OK,
    EXIT_PIPE_CLOSED,
    UsageError,
)
from .output import _read_checkpoint, _save_checkpoint  # noqa: F401 - for the tests
from .parser import build_parser

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_CODES",
    "EXIT_DIVERGED",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_MET",
    "EXIT_OK",
    "EXIT_PIPE_CLOSED",
    "UsageError",
    "build_parser",
    "main",
]
