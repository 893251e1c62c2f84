"""Targets on disk: :func:`nst_jax.make_targets`' pytree as a Flax msgpack file.

A run's targets are costly to compute for large styles and are the whole of what a style
contributes, so a study may compute them once and share them. The file holds
``{"format", "version", "targets"}``, written atomically; nothing is unpickled. On reading, the
file is untrusted data: the tree must be nested dicts of floating-point arrays with the
``content``, ``style`` and ``weights`` entries :func:`nst_jax.loss_fn` reads, and finite
values; anything else is one :class:`~nst_jax.errors.InputError` line naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flax import serialization

from nst_jax.errors import InputError
from nst_jax.files.atomic import atomic_write

FORMAT = "nst_jax-targets"
FORMAT_VERSION = 1
REQUIRED = ("content", "style", "weights")


def save_targets(path: str | os.PathLike, targets: Mapping[str, Any]) -> Path:
    """Write ``targets`` (one image's, or a batch's) to ``path``, atomically.

    Returns:
      ``path`` as a ``Path``.
    """
    path = Path(path)
    tree = _host_tree(targets, "targets")
    _check_tree(tree, path)
    payload = {"format": FORMAT, "version": FORMAT_VERSION, "targets": tree}
    atomic_write(path, lambda tmp: tmp.write_bytes(serialization.msgpack_serialize(payload)))
    return path


def load_targets(path: str | os.PathLike) -> dict[str, Any]:
    """Read targets written by :func:`save_targets`, as NumPy arrays of the saved dtypes
    (bit for bit what was saved).

    Raises:
      InputError: missing, unreadable, of another format or version, or damaged (one line).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read targets ({e.strerror})") from None
    try:
        payload = serialization.msgpack_restore(data)
    except Exception as e:  # msgpack raises several unrelated types for corrupt input
        raise InputError(f"{path}: unreadable targets file ({type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path}: not an nst_jax targets file")
    if payload.get("version") != FORMAT_VERSION:
        raise InputError(f"{path}: unsupported targets version {payload.get('version')!r}")
    tree = payload.get("targets")
    _check_tree(tree, path)
    return tree


def _host_tree(tree: Any, where: str) -> Any:
    """``tree`` with every leaf as a NumPy array (dicts kept, keys as strings)."""
    if isinstance(tree, Mapping):
        return {str(key): _host_tree(value, f"{where}/{key}") for key, value in tree.items()}
    return np.asarray(tree)


def _check_tree(tree: Any, path: Path) -> None:
    if not isinstance(tree, dict) or not all(key in tree for key in REQUIRED):
        raise InputError(f"{path}: damaged targets (no {', '.join(REQUIRED)} entries)")
    for key in REQUIRED:
        if not isinstance(tree[key], dict):
            raise InputError(f"{path}: damaged targets ({key} is not a dict of arrays)")
    _check_leaves(tree, path, "targets")


def _check_leaves(tree: Any, path: Path, where: str) -> None:
    if isinstance(tree, dict):
        for key, value in tree.items():
            _check_leaves(value, path, f"{where}/{key}")
        return
    if not isinstance(tree, np.ndarray) or tree.dtype.kind != "f":
        raise InputError(f"{path}: damaged targets ({where} is not a float array)")
    if not np.all(np.isfinite(tree)):
        raise InputError(f"{path}: damaged targets ({where} has non-finite values)")
