"""A job's inputs: files as named, folders walked recursively, or the lines of a list file.

Each input has a relative name under which its outputs mirror the input tree: a walked
file's path below the folder given; a file named in a ``--files-from`` list, its path as
listed when that is relative (without ``..``); any other file, its own name. Hidden files
and folders (a leading dot) are skipped; every other regular file is an input, so a file
that is not an image is reported as a failure rather than passed over. Folders are walked
in sorted order and symbolic links to folders are not followed (no loop can make the walk
endless).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from nst_jax.errors import InputError, shown


def walk_inputs(paths: Sequence[str | os.PathLike], files_from: str | None = None):
    """``[(path, relative name)]`` of every input, in a fixed order (the order given, each
    folder's files sorted).

    Raises:
      InputError: a named input that does not exist (one line, however many), a list file
        that cannot be read, or no input at all.
    """
    listed = _listed(files_from)
    named = [Path(p) for p in paths] + listed
    _refuse_missing(named)
    found = []
    for path in named:
        if path.is_dir():
            found.extend((file, file.relative_to(path).as_posix()) for file in _files(path))
        elif path in listed and not path.is_absolute() and ".." not in path.parts:
            found.append((path, path.as_posix()))
        else:
            found.append((path, path.name))
    if not found:
        raise InputError(f"no input files in {', '.join(shown(p) for p in named) or 'nothing'}")
    return found


def _listed(files_from: str | None) -> list[Path]:
    """The paths a ``--files-from`` list names, one per line (blank lines skipped)."""
    if files_from is None:
        return []
    try:
        text = Path(files_from).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{shown(files_from)}: cannot read the list ({e})") from None
    return [Path(line.strip()) for line in text.splitlines() if line.strip()]


def _refuse_missing(paths: list[Path]) -> None:
    missing = []
    for path in paths:
        try:
            exists = path.exists()
        except OSError:  # a name too long to look at
            exists = False
        if not exists:
            missing.append(path)
    if missing:
        more = f" (and {len(missing) - 1} more that do not exist)" if len(missing) > 1 else ""
        raise InputError(f"{shown(missing[0])}: no such file{more}")


def _files(folder: Path) -> Iterator[Path]:
    """Regular, non-hidden files below ``folder``, sorted, not following linked folders."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name
