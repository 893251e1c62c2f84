"""A job's inputs: files as named, folders walked recursively, or the lines of a list file.

Each input has a relative name under which its outputs mirror the input tree: a walked
file's path below the folder given; a file named in a ``--files-from`` list, its path as
listed when that is relative (without ``..``); any other file, its own name.

What a walk takes: regular files with an image's extension (:data:`IMAGE_SUFFIXES`), not
hidden (a leading dot), not inside the job's own output folder. Everything else it meets is
passed over and counted, never opened: another extension (``README.txt``, ``labels.csv``),
or no regular file at all (a FIFO, a socket, a device, a link to nothing). A file named on
the command line or in a list is an input whatever its extension (it was asked for), but it
must be a regular file. Folders are walked in sorted order and links to folders are not
followed, so no loop can make the walk endless. Names are the file system's: any bytes
(:func:`name_bytes`), shown escaped in messages.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from nst_jax.errors import InputError, shown

# The extensions of the images a walk takes (Pillow reads them all).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def hidden(name: str) -> bool:
    """Whether a file or folder is hidden (a leading dot: ``.DS_Store``, the ``._x.png``
    that macOS copies leave beside ``x.png``), and so never an input of a walk."""
    return name.startswith(".")


class Walk(NamedTuple):
    """A walk's result: ``found`` as ``[(path, relative name)]`` in a fixed order, and the
    ``passed`` over as ``[(path, why)]``."""

    found: list[tuple[Path, str]]
    passed: list[tuple[Path, str]]


def name_bytes(name: str) -> bytes:
    """A file name's bytes as the file system has them (names that are not UTF-8 arrive as
    Python's surrogate escapes): what hashes and records use."""
    return os.fsencode(name)


def as_paths(value, argument: str) -> list[Path]:
    """``value`` (one path, or a sequence of paths) as a list of paths.

    Raises:
      TypeError: anything else, naming ``argument``.
    """
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    if isinstance(value, Sequence) and all(isinstance(v, (str, os.PathLike)) for v in value):
        return [Path(v) for v in value]
    raise TypeError(f"{argument} must be a path or a sequence of paths, got {value!r}")


def walk_inputs(
    paths: Sequence[str | os.PathLike],
    files_from: str | os.PathLike | None = None,
    exclude: str | os.PathLike | None = None,
    once: bool = True,
) -> Walk:
    """Every input, in a fixed order (the order given, each folder's files sorted).

    Args:
      paths: files and folders.
      files_from: a list file naming more files, one per line.
      exclude: a folder whose files are never inputs (the job's own output folder).
      once: refuse a file met twice (else it is listed each time it is met).

    Raises:
      InputError: a named input that does not exist or is no regular file (one line,
        however many), one given twice, a list file that cannot be read, or no input.
    """
    listed = _listed(files_from)
    named = as_paths(list(paths), "inputs") + listed
    _refuse_missing(named)
    skip = _identity(Path(exclude)) if exclude is not None else None
    found, passed, seen = [], [], {}
    for path in named:
        if path.is_dir():
            walked = _files(path, skip)
            passed += walked.passed
            entries = [(file, file.relative_to(path).as_posix()) for file, _ in walked.found]
        elif path in listed and not path.is_absolute() and ".." not in path.parts:
            entries = [(path, path.as_posix())]
        else:
            entries = [(path, path.name)]
        for file, rel in entries:
            if once:
                _refuse_twice(seen, file)
            found.append((file, rel))
    if not found and files_from is not None and not named:
        raise InputError(f"{shown(files_from)}: the list names no file, and no input is given")
    if not found:
        raise InputError(f"no input files in {', '.join(shown(p) for p in named) or 'nothing'}")
    return Walk(found, passed)


def _identity(path: Path) -> tuple:
    try:
        info = path.stat()
        return (info.st_dev, info.st_ino)
    except OSError:
        return ("missing", str(path.absolute()))


def _refuse_twice(seen: dict, path: Path) -> None:
    first = seen.setdefault(_identity(path), path)
    if first is not path:
        raise InputError(f"{shown(path)}: given twice (as {shown(first)}); give each input once")


def _listed(files_from) -> list[Path]:
    """The paths a ``--files-from`` list names, one per line (blank lines skipped)."""
    if files_from is None:
        return []
    try:
        text = Path(files_from).read_bytes().decode("utf-8", "surrogateescape")
    except OSError as e:
        raise InputError(f"{shown(files_from)}: cannot read the list ({e.strerror})") from None
    lines = [line.strip() for line in text.splitlines()]
    for number, line in enumerate(lines, 1):
        if "\x00" in line:  # a binary file given as the list
            raise InputError(f"{shown(files_from)}: line {number} is not a file name "
                             "(a NUL byte); the list is text, one path a line")  # fmt: skip
    return [Path(line) for line in lines if line]


def _refuse_missing(paths: list[Path]) -> None:
    missing, odd = [], []
    for path in paths:
        try:
            mode = path.stat().st_mode
        except OSError:  # missing, or a name too long to look at
            missing.append(path)
            continue
        except ValueError:  # a NUL byte: no file system holds such a name
            raise InputError(f"{shown(path)}: not a file name (it holds a NUL byte)") from None
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            odd.append(path)
    if missing:
        more = f" (and {len(missing) - 1} more that do not exist)" if len(missing) > 1 else ""
        raise InputError(f"{shown(missing[0])}: no such file{more}")
    if odd:
        raise InputError(f"{shown(odd[0])}: not a regular file or a folder; inputs are images")


def _files(folder: Path, skip) -> Walk:
    """Images below ``folder``, sorted, not following linked folders, nothing under the
    ``skip`` folder; what else is met, passed over with the reason."""
    found, passed = [], []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not hidden(d) and _identity(here / d) != skip)
        for name in sorted(files):
            path = here / name
            if hidden(name):
                continue
            why = _not_an_input(path)
            if why is None:
                found.append((path, name))
            else:
                passed.append((path, why))
    return Walk(found, passed)


def _not_an_input(path: Path) -> str | None:
    """Why a walked file is not an input (never opened), or ``None``."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return "a link to nothing"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return "not an image by its extension"
    return None
