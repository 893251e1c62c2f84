"""Targets on disk: :func:`nst_jax.make_targets`' pytree as a Flax msgpack file.

A run's targets are costly to compute for large styles and are the whole of what a style
contributes, so a study may compute them once and share them. The file holds
``{"format", "version", "targets"}``, written atomically; nothing is unpickled. On reading, the
file is untrusted data: the tree must be nested dicts of arrays with the ``content``,
``style`` and ``weights`` entries :func:`nst_jax.loss_fn` reads, finite floating-point values
there; elsewhere integers and booleans too, and PRNG keys (a typed key is stored as its
implementation's name and its ``uint32`` data, ``{"__prng_key__": {"impl", "data"}}``, and
comes back as the same key). Anything else is one :class:`~nst_jax.errors.InputError` line
naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from nst_jax.errors import InputError
from nst_jax.files.atomic import atomic_write

FORMAT = "nst_jax-targets"
FORMAT_VERSION = 1
REQUIRED = ("content", "style", "weights")
KEY_MARK = "__prng_key__"
# Key implementations a file may name, with the shape of one key's data.
KEY_IMPLS = {"threefry2x32": (2,), "rbg": (4,), "unsafe_rbg": (4,)}


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
    return _restore_keys(tree, path, "targets")


def _host_tree(tree: Any, where: str) -> Any:
    """``tree`` with every leaf as a NumPy array (dicts kept, keys as strings), a typed PRNG
    key as its implementation's name and data."""
    if isinstance(tree, Mapping):
        if KEY_MARK in tree:
            raise InputError(f"{where}: the name {KEY_MARK} is the file format's own")
        return {str(key): _host_tree(value, f"{where}/{key}") for key, value in tree.items()}
    if isinstance(tree, jax.Array) and jnp.issubdtype(tree.dtype, jax.dtypes.prng_key):
        impl = str(jax.random.key_impl(tree))
        data = np.asarray(jax.random.key_data(tree))
        return {KEY_MARK: {"impl": np.frombuffer(impl.encode(), np.uint8).copy(), "data": data}}
    return np.asarray(tree)


def _restore_keys(tree: Any, path: Path, where: str) -> Any:
    """``tree`` with each stored key made a typed PRNG key again (checked: a known
    implementation, ``uint32`` data of its shape)."""
    if not isinstance(tree, dict):
        return tree
    if KEY_MARK not in tree:
        return {key: _restore_keys(value, path, f"{where}/{key}") for key, value in tree.items()}
    stored = tree[KEY_MARK]
    impl_bytes = stored.get("impl") if isinstance(stored, dict) and len(tree) == 1 else None
    data = stored.get("data") if isinstance(stored, dict) else None
    impl = (
        bytes(impl_bytes).decode("ascii", "replace") if isinstance(impl_bytes, np.ndarray) else None
    )
    shape = KEY_IMPLS.get(impl)
    if shape is None or not isinstance(data, np.ndarray) or data.dtype != np.uint32:
        raise InputError(f"{path}: damaged targets ({where} is not a PRNG key)")
    if data.shape[-1:] != shape:
        raise InputError(f"{path}: damaged targets ({where} is not a {impl} key)")
    return jax.random.wrap_key_data(data, impl=impl)


def _check_tree(tree: Any, path: Path) -> None:
    if not isinstance(tree, dict) or not all(key in tree for key in REQUIRED):
        raise InputError(f"{path}: damaged targets (no {', '.join(REQUIRED)} entries)")
    for key in REQUIRED:
        if not isinstance(tree[key], dict):
            raise InputError(f"{path}: damaged targets ({key} is not a dict of arrays)")
    for key, value in tree.items():
        _check_leaves(value, path, f"targets/{key}", floats=key in REQUIRED)


def _check_leaves(tree: Any, path: Path, where: str, floats: bool) -> None:
    """Leaves are arrays: finite floats (only those, with ``floats``), integers, booleans;
    a stored key is checked as it is restored."""
    if isinstance(tree, dict):
        if KEY_MARK in tree and not floats:
            return
        for key, value in tree.items():
            _check_leaves(value, path, f"{where}/{key}", floats)
        return
    kinds = "f" if floats else "fiub"
    if not isinstance(tree, np.ndarray) or tree.dtype.kind not in kinds:
        what = "a float array" if floats else "an array of numbers"
        raise InputError(f"{path}: damaged targets ({where} is not {what})")
    if tree.dtype.kind == "f" and not np.all(np.isfinite(tree)):
        raise InputError(f"{path}: damaged targets ({where} has non-finite values)")
