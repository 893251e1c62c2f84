"""A job's styles: files, folders of them (walked as contents are) and list files, each
checked to be a readable image before anything is written, named distinctly, and
identified by its SHA-256 so that a style changed under a job is caught.

A style's name (in output names, sheets and records) is its file name without extension;
where two styles would share a name (``a/s.jpg`` and ``b/s.jpg``), each takes as many of
its parent folders as make it distinct (``a_s``, ``b_s``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from nst_jax.errors import InputError, shown
from nst_jax.files import image
from nst_jax.files.digest import sha256
from nst_jax.files.walk import as_paths, walk_inputs


class Styles(NamedTuple):
    """A job's style files in order, with their names and SHA-256."""

    paths: tuple[str, ...]
    names: tuple[str, ...]
    sha256: tuple[str, ...]


def job_styles(styles, styles_from: str | os.PathLike | None = None) -> Styles:
    """The style files of ``styles`` (files and folders) and of the list ``styles_from``.

    Raises:
      InputError: no style, a missing one, or one that is no readable image (one line
        naming it). A style may be given twice (two regions' style, say).
    """
    given = as_paths(styles, "styles") if styles is not None else []
    if not given and styles_from is None:
        raise InputError("no style: give a style image, a folder of them, or a list")
    found = walk_inputs(given, styles_from, once=False).found  # a style may serve twice
    for path, _ in found:
        if image.probe_size(path) is None:
            raise InputError(f"{shown(path)}: not a style image ({_why(path)})")
    paths = tuple(str(path) for path, _ in found)
    return Styles(paths, distinct_names(paths), tuple(map(sha256, paths)))


def _why(path: Path) -> str:
    """What decoding says of an unreadable image (one line)."""
    try:
        image.decode(path)
    except Exception as e:  # noqa: BLE001 (any failure is the reason to report)
        return str(e).removeprefix(f"{path}: ")
    return "unreadable image header"


def distinct_names(paths: Sequence[str]) -> tuple[str, ...]:
    """Each style's name: its path without extension, shortened to its last parts while that
    stays distinct from the others' (parts joined by ``_``)."""
    parts = [PurePosixPath(Path(path).as_posix()).with_suffix("").parts for path in paths]
    names = []
    for own in parts:
        others = [p for p in parts if p is not own]
        for depth in range(1, len(own) + 1):
            if all(p[-depth:] != own[-depth:] for p in others):
                break
        names.append("_".join(own[-depth:]))
    return tuple(names)
