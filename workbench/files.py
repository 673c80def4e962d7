"""Writing a file so that no reader ever sees half of it: write a temporary file beside it, then rename.

A rename within one folder is atomic: a reader, or a process killed mid-save, finds the old file or the new one,
never a mixture. Every file the package writes for others to read (checkpoints, the ``latest`` pointer, model
cards, the compiled kernel) goes through :func:`atomic_write`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def umask_mode(directory: bool = False) -> int:
    """The permissions a plain ``open()`` (or ``mkdir``) would give a new file (mkstemp's are private, 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Make ``path`` by calling ``write(tmp)`` on a new temporary path in the same folder, then renaming it.

    ``write`` may create the file itself (a compiler, ``safetensors``) or open it. Afterwards the file gets the
    permissions the umask gives a plain ``open()``, is flushed to disk, and replaces ``path`` in one rename; if
    ``write`` raises, nothing is left behind and ``path`` is untouched.
    """
    path = Path(path)
    # The same folder: a rename across file systems would be a copy, and not atomic.
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, umask_mode())  # after writing: a writer that recreates the file resets its mode
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the data on disk before the name points at it, or a crash may leave it empty
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
