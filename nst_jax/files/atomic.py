"""Atomic file writing: readers see the old file or the whole new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from nst_jax.errors import OutputError


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.

    The temporary file lives in the same folder so the rename is atomic (same file system); it
    is removed if ``write`` raises, or on Ctrl-C. A file-system fault (a full disk, a lost
    permission) raises :class:`~nst_jax.errors.OutputError` naming ``path``.

    Returns:
      ``path`` as a ``Path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        os.close(fd)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror})") from None
    try:
        write(Path(tmp))
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:  # a full disk, a permission lost mid-run: one line, nothing left
        Path(tmp).unlink(missing_ok=True)
        if e.errno is None:  # not the file system's (a download's URLError, say)
            raise
        raise OutputError(f"{path}: cannot write ({e.strerror})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it and put it back
    os.umask(mask)
    return mask


def nearest_existing_parent(path: str | os.PathLike) -> Path:
    """The closest ancestor of ``path`` that exists (where ``mkdir(parents=True)`` would start);
    callers check that it is a directory before promising a write."""
    # A path's parents end with "." or "/", which exist, so the search always succeeds.
    return next(parent for parent in Path(path).parents if parent.exists())
