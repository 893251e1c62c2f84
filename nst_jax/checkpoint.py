"""Checkpoints of a run: the images, optimizer state, step and losses, with the settings and
weights they belong to, in one file written atomically.

A checkpoint lives in ``OUT.ckpt/checkpoint.msgpack`` (Flax msgpack; no pickle). Resuming
refuses a checkpoint whose settings or weights differ from the run's, naming what differs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization

from nst_jax.atomic import atomic_write
from nst_jax.errors import InputError
from nst_jax.run import RunState

FILE = "checkpoint.msgpack"
VERSION = 1


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
        "evaluations": np.asarray(
            state.evaluations if state.evaluations is not None else np.zeros(len(state.images))
        ),
        "meta": json.dumps(meta, sort_keys=True),
    }
    path = Path(folder) / FILE
    atomic_write(path, lambda tmp: tmp.write_bytes(serialization.msgpack_serialize(payload)))
    return path


def load(folder: str | os.PathLike) -> tuple[RunState, dict[str, Any]]:
    """Read a checkpoint. ``opt_states`` comes back as a flat list of leaves, which
    :func:`nst_jax.stylize` puts back into its own optimizer's structure.

    Raises:
      InputError: missing, unreadable or of another version.
    """
    path = Path(folder) / FILE
    if not path.is_file():
        raise InputError(f"{path}: no checkpoint to resume from")
    try:
        payload = serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # msgpack raises several unrelated types for corrupt input
        raise InputError(f"{path}: unreadable checkpoint ({e})") from None
    if not isinstance(payload, dict) or payload.get("version") != VERSION:
        raise InputError(f"{path}: not an nst_jax checkpoint of version {VERSION}")
    leaves = [payload["opt_leaves"][str(i)] for i in range(len(payload["opt_leaves"]))]
    state = RunState(
        step=int(payload["step"]),
        images=payload["images"],
        opt_states=leaves,
        losses=payload["losses"],
        scale=int(payload.get("scale", 0)),
        evaluations=payload.get("evaluations"),
    )
    return state, json.loads(payload["meta"])


def check_compatible(saved: dict[str, Any], current: dict[str, Any], path) -> None:
    """Raise ``InputError`` naming the first setting in which two runs' metadata differ.

    ``steps`` may differ (a run can be resumed to go further); everything else must match.
    """
    current = json.loads(json.dumps(current, sort_keys=True))  # tuples -> lists, as saved
    for key in sorted((set(saved) | set(current)) - {"command"}):  # how it was run may differ
        if key == "config":
            for field in sorted(set(saved[key]) | set(current[key])):
                if field == "steps":
                    continue
                a, b = saved[key].get(field), current[key].get(field)
                if a != b:
                    raise InputError(f"{path}: checkpoint has {field}={a}, this run {field}={b}")
        elif saved.get(key) != current.get(key):
            raise InputError(
                f"{path}: checkpoint has {key} {saved.get(key)}, this run {current.get(key)}"
            )
