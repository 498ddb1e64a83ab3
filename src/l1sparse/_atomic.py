"""Atomic file writes: a temporary file in the same directory, then ``os.replace``.

A reader (or a resumed run) sees either the previous file or the complete new one, never a
partial one, even if the process is killed mid-write.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then move the result onto ``path``.

    The final file gets the permissions of an ordinary new file (0o666 less the umask), whatever
    mode the writer created the temporary file with (safetensors and mkstemp use 0o600).
    """
    path = os.fspath(path)
    directory, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{base}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        write(tmp)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)

    atomic_write(path, write)
