"""Checkpoints of a training run (:func:`nst_jax.feedforward.train.fit`) with orbax-checkpoint,
JAX's checkpointing library.

Orbax writes each checkpoint into a temporary folder and renames it when complete, so a
process killed while saving leaves the previous checkpoint as the latest; it keeps the last
few and restores arrays into the structure, shapes and dtypes asked for. A checkpoint is
still untrusted data when read back: a restored state is checked against the structure the
settings give (shapes, dtypes, finite values) before use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from nst_jax.errors import InputError, shown

KEEP = 2


class TrainCheckpoints:
    """A training run's checkpoint folder: the watcher's ``checkpoint`` for ``fit``."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def save(self, state: dict) -> Path:
        save(self.folder, state)
        return self.folder


def _manager(folder: Path):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(
        max_to_keep=KEEP, create=True, enable_async_checkpointing=False
    )
    return ocp.CheckpointManager(folder.absolute(), options=options)


def save(folder: str | os.PathLike, state: dict) -> None:
    """Save ``state`` (``{"params", "opt_state", "step"}``) as the checkpoint of its step
    (a step saved before is kept as it is: the same run writes the same state)."""
    import orbax.checkpoint as ocp

    with _manager(Path(folder)) as manager:
        step = int(state["step"])
        if step in manager.all_steps():
            return
        manager.save(step, args=ocp.args.StandardSave(state), force=True)
        manager.wait_until_finished()


def latest_step(folder: str | os.PathLike) -> int | None:
    """The step of the newest complete checkpoint in ``folder``, or ``None``."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    with _manager(folder) as manager:
        return manager.latest_step()


def restore(folder: str | os.PathLike, like: dict) -> dict:
    """The newest checkpoint, shaped like ``like`` (a state of the same settings).

    Raises:
      InputError: no checkpoint, or one that cannot be read or does not match (one line).
    """
    import orbax.checkpoint as ocp

    folder = Path(folder)
    step = latest_step(folder)
    if step is None:
        raise InputError(f"{shown(folder)}: no checkpoint to resume from")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    try:
        with _manager(folder) as manager:
            state = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # orbax and tensorstore raise many types for damaged data
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        # TensorStore appends a Python object's repr ("See full TensorStore details: <bound
        # method ...>"): of no use in the line.
        reason = reason.split(". See full TensorStore details")[0][:200]
        raise InputError(f"{shown(folder)}: damaged checkpoint at step {step} ({reason})") from None
    _check(folder, step, state, abstract)
    return state


def _check(folder: Path, step: int, state: Any, abstract: Any) -> None:
    """Refuse a restored state that does not have ``abstract``'s structure, shapes and
    dtypes, holds a non-finite value, or names another step than its folder."""
    where = f"{shown(folder)}: checkpoint at step {step}"
    if jax.tree.structure(state) != jax.tree.structure(abstract):
        raise InputError(f"{where} holds another structure than these settings give")
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(abstract), strict=True):
        if got.shape != want.shape or got.dtype != want.dtype:
            raise InputError(f"{where}: {got.shape} {got.dtype} where {want.shape} {want.dtype}")
        if np.issubdtype(got.dtype, np.floating) and not np.all(np.isfinite(np.asarray(got))):
            raise InputError(f"{where} holds non-finite values")
    if int(state["step"]) != step:
        raise InputError(f"{where} records step {int(state['step'])}")
