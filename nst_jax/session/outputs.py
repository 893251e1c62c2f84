"""Every path a run will write, planned in one place and checked before any work.

A run's outputs (results, previews, sheet, log, plot, animation, checkpoint, converted
weights) are refused, with one line naming the path and the fault, when:

- the path is an input or a link to one (contents, styles, init image, weights): an input is
  never replaced, ``--force`` or not;
- two outputs are the same path (two styles with one file name, say);
- a folder stands where a file goes, or a file where a folder goes;
- the file exists, and neither ``--force`` nor ``--resume`` (for the run's own files) allows
  replacing it;
- the place cannot be written (checked by creating and removing a temporary file there).

Checking also removes what an earlier, killed run left of these outputs: the ``.NAME.*.part``
temporary files of :func:`nst_jax.atomic.atomic_write`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from nst_jax.errors import InputError, OutputError, shown
from nst_jax.files import atomic, image, json_record, sheets
from nst_jax.files.atomic import nearest_existing_parent

NAME_BYTES = 255  # the longest file name Linux and macOS take


class Output(NamedTuple):
    """One path a run will write: ``what`` names the option it comes from (for messages);
    ``own`` marks the run's own files, which ``--resume`` may replace."""

    path: Path
    what: str
    own: bool = False


def _identity(path: Path) -> tuple:
    """What makes two paths the same file: device and inode where it exists (links and hard
    links included), else the resolved path."""
    try:
        stat = path.stat()
        return ("inode", stat.st_dev, stat.st_ino)
    except OSError:
        pass
    try:
        return ("path", str(path.resolve()))
    except (OSError, RuntimeError):  # a symbolic-link loop, a name too long
        return ("path", str(path.absolute()))


def check_outputs(
    outputs: Sequence[Output],
    inputs: Iterable[tuple[Path, str]],
    force: bool = False,
    resume: bool = False,
) -> None:
    """Refuse, before any work, outputs that would lose a file or cannot be written.

    Args:
      outputs: every path the run will write.
      inputs: ``(path, what)`` of every file it reads.
      force: allow replacing existing outputs (never inputs).
      resume: allow replacing the run's own outputs (``Output.own``).

    Raises:
      OutputError: one line naming the path and the fault.
    """
    by_identity = {_identity(Path(p)): (Path(p), what) for p, what in inputs}
    planned: dict[str, str] = {}
    for out in outputs:
        path = Path(out.path)
        try:
            _check_one(path, out, planned, by_identity, force or (resume and out.own))
        except (OSError, RuntimeError) as e:  # a name too long, a symbolic-link loop
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise OutputError(f"{shown(path)}: cannot be written ({reason}; {out.what})") from None


def _check_one(path: Path, out: Output, planned: dict, by_identity: dict, may_replace: bool):
    """:func:`check_outputs` of one output (``planned``: the outputs checked before it)."""
    key = str(path.resolve())
    if key in planned:
        raise OutputError(f"{path}: written twice, as {planned[key]} and as {out.what}")
    planned[key] = out.what
    found = by_identity.get(_identity(path))
    if found is not None:
        raise OutputError(
            f"{path}: {out.what} would replace the input {found[0]} ({found[1]}); "
            "inputs are never replaced"
        )
    _check_place(path, out, may_replace)


def _check_place(path: Path, out: Output, may_replace: bool) -> None:
    atomic.check_writable(path, out.what)
    if os.path.lexists(path) and not may_replace:  # a link to nothing is there too
        raise OutputError(f"{path}: exists; --force replaces it ({out.what})")
    atomic.remove_stale_parts([path])


def check_resume_or_force(resume: bool, force: bool) -> None:
    """``resume`` continues a run and ``force`` starts it over: every driver (one result, a
    video, a training) takes one of them, never both, rather than each choosing a winner.

    Raises:
      TypeError: either is not a bool.
      InputError: both.
    """
    for name, value in (("resume", resume), ("force", force)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    if resume and force:
        raise InputError("--resume continues a run, --force starts it over: give one")


def check_folder(path: Path, what: str) -> None:
    """A folder the run writes into (a cache): it must be, or be creatable as, a writable
    folder."""
    if os.path.islink(path) and not path.exists():  # mkdir would fail at the run's start
        raise OutputError(f"{path}: a symbolic link to nothing, where {what} needs a folder")
    parent = path if path.is_dir() else nearest_existing_parent(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: is a file, where {what} needs a folder")
    if not parent.is_dir():
        raise OutputError(f"{path}: {parent} is a file, where {what} needs a folder")
    atomic.probe_folder(parent, path, what)


def check_job_outputs(paths: Sequence[str], inputs: Iterable[tuple[Path, str]]) -> None:
    """Refuse, before any work, a job whose results would replace an input: each result's
    path against every input's identity (a job's many results are not probed one by one:
    its folder was, with the manifest's)."""
    by_identity = {_identity(Path(p)): (Path(p), what) for p, what in inputs}
    folders: dict[Path, bool] = {}
    for path in paths:
        found = by_identity.get(_identity(Path(path)))
        if found is not None:
            raise OutputError(
                f"{shown(path)}: a result would replace the input {shown(found[0])} "
                f"({found[1]}); inputs are never replaced"
            )
        _check_result_place(Path(path), folders)


# The temporary file a result is written to first: ``.NAME.<8 random>.part`` (files/atomic.py).
PART_EXTRA = len(". .XXXXXXXX.part")


def _check_result_place(path: Path, folders: dict[Path, bool]) -> None:
    """A result's place, from what is on disk now: not a folder, its folders not files, its
    name short enough for its temporary file (each folder looked at once)."""
    if len(os.fsencode(path.name)) + PART_EXTRA > NAME_BYTES:
        raise OutputError(f"{shown(path)}: the name is too long to be written (its temporary file)")
    if path.is_dir() and not path.is_symlink():
        raise OutputError(f"{shown(path)}: is a folder, where a result goes")
    atomic.check_replaceable(path)
    for parent in path.parents:
        if parent in folders:
            break
        folders[parent] = parent.is_dir() or not os.path.lexists(parent)
        if not folders[parent]:
            raise OutputError(f"{shown(path)}: {shown(parent)} is a file, where a folder goes")


def write_sheet(
    path: str | os.PathLike,
    results: Sequence[str | os.PathLike],
    per_row: int,
    max_pixels: int | None = image.MAX_PIXELS,
):
    """A labelled grid of the results (read back from disk, under the run's ``max_pixels``
    as every file it reads: a continued job's too), each labelled with its file's stem;
    ``per_row`` results a row."""
    thumbs = [sheets.thumbnail(image.decode(r, max_pixels), 192) for r in results]
    labels = [Path(r).stem for r in results]
    sheet = sheets.contact_sheet(thumbs, labels, max(1, min(len(thumbs), per_row)))
    image.save(path, sheet, replace=True)


def check_job_sheet(sheet: Path, results: Sequence[str], record: Path, force: bool) -> Output:
    """A job's ``--sheet``: never one of its results; an existing file is replaced only with
    ``force`` or when the job wrote it (``record`` names it): rerunning a job is continuing
    it, and its own sheet is redrawn.

    Raises:
      OutputError: the sheet is a result (one line).
    """
    key = str(sheet.resolve())
    # Only a result of the sheet's own name can be it: a large job's paths are not resolved.
    if any(str(Path(r).resolve()) == key for r in results if Path(r).name == sheet.name):
        raise OutputError(f"{shown(sheet)}: --sheet is one of the job's results")
    return Output(sheet, "--sheet", own=force or key in _recorded_sheets(record))


def _recorded_sheets(record: Path) -> list[str]:
    """The sheets a job wrote (``record``: untrusted JSON; anything else than a list of
    paths counts as none)."""
    try:
        sheets = json_record.read(record).get("sheets")
    except (OSError, ValueError, AttributeError):
        return []
    return [s for s in sheets if isinstance(s, str)] if isinstance(sheets, list) else []


def write_job_sheet(
    sheet: str, results: Sequence[str], per_row: int, record: Path, max_pixels: int | None
) -> None:
    """:func:`write_sheet` for a job, recorded in ``record`` first (so that a job killed
    while writing it finds it its own when rerun)."""
    sheets = _recorded_sheets(record)
    key = str(Path(sheet).resolve())
    if key not in sheets:
        text = json.dumps({"sheets": [*sheets, key]})
        atomic.atomic_write(record, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    write_sheet(sheet, results, per_row, max_pixels)
