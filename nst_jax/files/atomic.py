"""Atomic file writing: readers see the old file or the whole new one, never half of one."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from nst_jax.errors import OutputError, shown


def atomic_write(
    path: str | os.PathLike, write: Callable[[Path], None], replace: bool = True
) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then put it at ``path``.

    The temporary file lives in the same folder so the rename is atomic (same file system); it
    is removed if ``write`` raises, or on Ctrl-C. A file-system fault (a full disk, a lost
    permission) raises :class:`~nst_jax.errors.OutputError` naming ``path``.

    Args:
      path: the file to write.
      write: writes the whole file at the path it is given.
      replace: whether an existing ``path`` is replaced. Without, the file is published by
        a hard link, which fails if ``path`` exists, so of two writers of one new path
        exactly one succeeds and the other gets an ``OutputError`` (checking first and
        renaming after would let the second silently replace the first).

    Returns:
      ``path`` as a ``Path``.
    """
    path = Path(path)
    check_replaceable(path)
    created = _missing_folders(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        os.close(fd)
    except OSError as e:
        _remove_empty(created)
        raise OutputError(f"{path}: cannot write ({e.strerror})") from None
    try:
        write(Path(tmp))
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        if replace:
            os.replace(tmp, path)
        else:
            _publish_new(Path(tmp), path)
    except OSError as e:  # a full disk, a permission lost mid-run: one line, nothing left
        Path(tmp).unlink(missing_ok=True)
        _remove_empty(created)
        if e.errno is None:  # not the file system's (a download's URLError, say)
            raise
        raise OutputError(f"{path}: cannot write ({e.strerror})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        _remove_empty(created)
        raise
    return path


def check_replaceable(path: str | os.PathLike) -> None:
    """Refuse a device, a pipe or a socket at ``path`` (or behind its link): nothing ever
    replaces one by a file (for root, ``/dev/null`` would become one). A name the system
    refuses is left to the write, which names it.

    Raises:
      OutputError: one line naming ``path``.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise OutputError(
            f"{shown(path)}: not a regular file (a device, a pipe or a socket); "
            "only files are replaced"
        )


def _missing_folders(path: Path) -> list[Path]:
    """The folders above ``path`` that do not exist yet, deepest first."""
    missing = []
    for parent in path.parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders a failed write created (deepest first), those still empty: a
    refused write leaves no empty folder behind."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (setting it and
    putting it back would give another thread's new files a wrong mode meanwhile)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)  # elsewhere the only portable way: set it and put it back
    os.umask(mask)
    return mask


def nearest_existing_parent(path: str | os.PathLike) -> Path:
    """The closest ancestor of ``path`` that exists (where ``mkdir(parents=True)`` would start),
    or ``path`` itself when it has none (``/``, ``.``); callers check that it is a directory
    before promising a write."""
    path = Path(path)
    return next((parent for parent in path.parents if parent.exists()), path)


def check_writable(path: str | os.PathLike, what: str) -> None:
    """Refuse ``path``, a file :func:`atomic_write` is to write, where that cannot be done
    or would replace what is not a file: a folder there, a device or a pipe (``/dev/null``
    replaced by a regular file, for root), a file where a folder goes, a name the system
    refuses, or a folder that cannot be written in (:func:`probe_folder`). Whether an
    existing file may be replaced is the caller's rule.

    Raises:
      OutputError: one line naming ``path`` and what is wrong.
    """
    path = Path(path)
    try:
        parent, mode = nearest_existing_parent(path), _mode(path)
        parent_is_folder = parent.is_dir()
    except (OSError, ValueError) as e:  # a name too long, a link loop, a NUL byte
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise OutputError(f"{shown(path)}: cannot be written ({reason})") from None
    if not parent_is_folder:
        raise OutputError(f"{shown(path)}: {shown(parent)} is a file, where {what} needs a folder")
    if mode is not None and stat.S_ISDIR(mode):
        raise OutputError(f"{shown(path)}: is a folder, where {what} writes a file")
    check_replaceable(path)
    probe_folder(parent, path, what)


def _mode(path: Path) -> int | None:
    """``path``'s mode, through links; ``None`` where nothing is (a link to nothing too)."""
    try:
        return path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None


def probe_folder(folder: str | os.PathLike, path: str | os.PathLike, what: str) -> None:
    """Refuse ``path`` when ``folder``, where its writes land, cannot be written in. A
    temporary file is created there: the one test of writability that also holds for root,
    read-only file systems and full disks' quotas. Unnamed where the system allows
    (``O_TMPFILE``), so a process killed meanwhile leaves nothing behind.

    Raises:
      TypeError: ``folder`` is not a path.
      OutputError: one line naming ``path``, ``folder`` and ``what``.
    """
    if not isinstance(folder, (str, os.PathLike)) or not str(folder):
        raise TypeError(f"folder must be a folder's path, got {folder!r}")
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".nst-jax-probe."):
            pass
    except OSError as e:
        raise OutputError(
            f"{shown(path)}: cannot write in {shown(folder)} ({e.strerror}; {what})"
        ) from None


def _publish_new(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` only if no file has it: a hard link (atomic, and it fails
    when ``path`` exists), then the temporary name removed."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OutputError(
            f"{path}: exists: another run wrote it while this one ran (--force replaces it)"
        ) from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV):
            raise
        # No hard links on this file system (FAT, some network shares): the best left is a
        # check just before the rename.
        if path.exists():
            raise OutputError(f"{path}: exists: another run wrote it while this one ran") from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def remove_stale_parts(paths: Iterable[str | os.PathLike]) -> None:
    """Delete the ``.NAME.*.part`` files a killed writer of these paths left behind (each
    folder listed once, so a job's many outputs cost one listing a folder). Only a path's
    own writer may call this: another process writing it now would lose its file."""
    names: dict[Path, set[str]] = {}
    for path in map(Path, paths):
        names.setdefault(path.parent, set()).add(path.name)
    for folder, wanted in names.items():
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue  # no folder yet: nothing left behind
        for entry in entries:
            name = entry.name
            if name.startswith(".") and name.endswith(".part"):
                stem = name[1:].rsplit(".", 2)[0]  # ``.NAME.<random>.part``
                if stem in wanted:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
