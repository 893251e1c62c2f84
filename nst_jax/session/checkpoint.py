"""Checkpoints of a ``stylize`` run: the images, optimizer state, step and losses, with the
settings and weights they belong to, in one file written atomically.

A checkpoint lives in ``OUT.ckpt/checkpoint.msgpack`` (Flax msgpack; no pickle). Resuming
refuses a checkpoint whose settings or weights differ from the run's, naming what differs.
In Python, a run is checkpointed by a watcher and resumed exactly from its file::

    saver = RunCheckpoint("out.ckpt", {"config": dataclasses.asdict(config)})
    watcher = session.Watcher(checkpoint=saver, checkpoint_every=100)
    nst_jax.stylize(content, style, params=params, config=config, on_event=watcher)
    # ... killed; later, the same call continues where the checkpoint left it:
    state = saver.load_compatible()
    nst_jax.stylize(content, style, params=params, config=config, resume=state)
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization

from nst_jax.config import StyleConfig
from nst_jax.errors import InputError
from nst_jax.files.atomic import atomic_write
from nst_jax.run.state import RunState

FILE = "checkpoint.msgpack"
# 3: steps within the scale, and inputs keyed by role and rank (--mask #2, --style-mask #1).
VERSION = 3


class RunCheckpoint:
    """A ``stylize`` run's checkpoint folder and the record its checkpoints carry (``meta``:
    settings, weights hash, inputs' SHA-256): the watcher's ``checkpoint``."""

    def __init__(self, folder: str | os.PathLike, meta: dict[str, Any]):
        self.folder, self.meta = Path(folder), meta

    def save(self, state: RunState) -> Path:
        """Write ``state`` with the record (atomically)."""
        return save(self.folder, state, self.meta)

    def load_compatible(self) -> RunState:
        """The saved state, refused (one line) unless its record is this run's
        (:func:`check_compatible`)."""
        state, meta = load(self.folder)
        check_compatible(meta, self.meta, self.folder)
        return state


def directory(output: str | os.PathLike) -> Path:
    """The checkpoint folder of an output image: ``OUT.ckpt`` beside it."""
    output = Path(output)
    return output.with_name(output.name + ".ckpt")


def save(folder: str | os.PathLike, state: RunState, meta: dict[str, Any]) -> Path:
    """Write ``state`` and ``meta`` (JSON-able: settings, weights hash, inputs) atomically."""
    payload = {
        "version": VERSION,
        "step": state.step,
        "images": np.asarray(state.images),
        "opt_leaves": {
            str(i): np.asarray(x) for i, x in enumerate(jax.tree.leaves(state.opt_states))
        },
        "losses": np.asarray(state.losses),
        "scale": state.scale,
        "scale_step": state.scale_step if state.scale_step is not None else state.step,
        "evaluations": np.asarray(
            state.evaluations if state.evaluations is not None else np.zeros(len(state.images)),
            np.int64,
        ),
        "meta": json.dumps(meta, sort_keys=True),
    }
    path = Path(folder) / FILE
    atomic_write(path, lambda tmp: tmp.write_bytes(serialization.msgpack_serialize(payload)))
    return path


def load(folder: str | os.PathLike) -> tuple[RunState, dict[str, Any]]:
    """Read a checkpoint. ``opt_states`` comes back as a flat list of leaves, which
    :func:`nst_jax.stylize` puts back into its own optimizer's structure.

    The file is untrusted data: every field is checked for presence, type and consistency
    before anything uses it.

    Raises:
      InputError: missing, unreadable, of another version, or damaged (naming the field).
    """
    path = Path(folder) / FILE
    if not path.is_file():
        raise InputError(f"{path}: no checkpoint to resume from")
    try:
        payload = serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # msgpack raises several unrelated types for corrupt input
        raise InputError(f"{path}: unreadable checkpoint ({type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("version") != VERSION:
        raise InputError(f"{path}: not an nst_jax checkpoint of version {VERSION}")
    try:
        return _checked_state(payload), _checked_meta(payload.get("meta"))
    except (ValueError, TypeError, KeyError) as e:
        raise InputError(f"{path}: damaged checkpoint ({e})") from None


def _array(payload: dict, key: str, ndim: int, kind: str = "f") -> np.ndarray:
    value = payload.get(key)
    if not isinstance(value, np.ndarray) or value.ndim != ndim or value.dtype.kind != kind:
        raise ValueError(f"{key} is not a {ndim}-D array of kind {kind!r}")
    return value


def _integer(payload: dict, key: str) -> int:
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{key} is not a count >= 0: {value!r}")
    return int(value)


def _checked_state(payload: dict) -> RunState:
    step, scale = _integer(payload, "step"), _integer(payload, "scale")
    scale_step = _integer(payload, "scale_step")
    images = _array(payload, "images", 4)
    losses = _array(payload, "losses", 2)
    evaluations = _array(payload, "evaluations", 1, "i")
    n = images.shape[0]
    if images.shape[-1] != 3 or losses.shape != (n, step) or evaluations.shape != (n,):
        raise ValueError(
            f"images {images.shape}, losses {losses.shape} and evaluations "
            f"{evaluations.shape} do not fit {n} images at step {step}"
        )
    if not (np.all(np.isfinite(images)) and np.all((images >= 0) & (images <= 1))):
        raise ValueError("images are not finite values in [0, 1]")
    leaves = payload.get("opt_leaves")
    if not isinstance(leaves, dict) or set(leaves) != {str(i) for i in range(len(leaves))}:
        raise ValueError("opt_leaves is not a numbered set of arrays")
    opt_leaves = [leaves[str(i)] for i in range(len(leaves))]
    if not all(isinstance(a, np.ndarray) and a.dtype.kind in "fiub" for a in opt_leaves):
        raise ValueError("opt_leaves holds something other than numeric arrays")
    if not all(np.all(np.isfinite(a)) for a in opt_leaves if a.dtype.kind == "f"):
        raise ValueError("opt_leaves holds values that are not finite")
    if scale_step > step:
        raise ValueError(f"scale_step {scale_step} is past step {step}")
    return RunState(step, images, opt_leaves, losses, None, scale, evaluations, scale_step)


def _checked_meta(text: Any) -> dict[str, Any]:
    if not isinstance(text, str):
        raise ValueError("meta is not text")
    try:
        meta = json.loads(text)
    except RecursionError:
        raise ValueError("meta is nested too deeply") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise ValueError("meta has no settings")
    hashes = meta.get("sha256", {})
    if not isinstance(hashes, dict) or not all(isinstance(h, str) for h in hashes.values()):
        raise ValueError("meta's sha256 is not a table of digests")
    return meta


# Each setting's default as JSON records it (tuples as lists).
_DEFAULTS = json.loads(
    json.dumps({f.name: f.default for f in dataclasses.fields(StyleConfig)}, sort_keys=True)
)


def check_compatible(saved: dict[str, Any], current: dict[str, Any], path) -> None:
    """Raise ``InputError`` naming the first setting or input in which two runs differ.

    ``steps`` may differ (a run can be resumed to go further), and so may how it was run
    (``command``); the inputs are compared by their contents' SHA-256, so a file replaced
    under the same name is caught. A setting a checkpoint does not record (one written
    before the setting existed) had its default.
    """
    current = json.loads(json.dumps(current, sort_keys=True))  # tuples -> lists, as saved
    saved_hashes, hashes = saved.get("sha256", {}), current.get("sha256", {})
    for name in sorted(set(saved_hashes) | set(hashes)):
        if saved_hashes.get(name) != hashes.get(name):
            raise InputError(f"{path}: the input {name} changed since the checkpoint was made")
    for key in sorted((set(saved) | set(current)) - {"command", "sha256"}):
        if key == "config":
            for field in sorted(set(saved[key]) | set(current[key])):
                if field == "steps":
                    continue
                a = saved[key].get(field, _DEFAULTS.get(field))
                b = current[key].get(field)
                if a != b:
                    raise InputError(f"{path}: checkpoint has {field}={a}, this run {field}={b}")
        elif saved.get(key) != current.get(key):
            raise InputError(
                f"{path}: checkpoint has {key} {saved.get(key)}, this run {current.get(key)}"
            )
