"""A run's state between chunks and what it returns: :class:`RunState`, :class:`StyleResult`.

A :class:`RunState` is what the hook's events carry (``event.state``), what checkpoints
hold and what ``resume`` continues from; a resumed state is untrusted (it may come from a
file), so it is checked against the run before use.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nst_jax.events import DivergedError, first_non_finite


class StyleResult(NamedTuple):
    """What :func:`nst_jax.stylize` returns.

    Attributes:
      image: float in [0, 1], the content's dtype (float32 for integer input), same leading
        shape as the content: ``(H, W, 3)`` or ``(N, H, W, 3)``.
      losses: total loss *before* each step, ``(steps,)`` or ``(N, steps)`` (with several
        scales, the steps of every scale in order).
      evaluations: loss-and-gradient evaluations (VGG forward + backward passes) each image
        took, ``()`` or ``(N,)``: one per Adam step; for L-BFGS, its line-search trials plus
        one to start each scale.
    """

    image: jax.Array
    losses: np.ndarray
    evaluations: np.ndarray | None = None


class RunState(NamedTuple):
    """A run between chunks: enough to save, inspect or resume it.

    Attributes:
      step: steps done, counted over all scales of a coarse-to-fine run.
      images: ``(N, H, W, 3)`` current images, at the size of scale ``scale``.
      opt_states: the optimiser state pytree of the batch (its N rows as the leading axis).
      losses: ``(N, step)`` total loss before each step so far.
      terms: ``{"content", "style", "tv", "total": (N,)}`` before the last step
        (``losses[:, -1]`` is their total).
      scale: index of the scale of a coarse-to-fine run (0 for a single-scale run).
      evaluations: ``(N,)`` loss-and-gradient evaluations so far.
      scale_step: steps done at this scale (``None``: as the schedule says, ``step`` less the
        earlier scales' steps; a scale whose images all converged ends early).
    """

    step: int
    images: jax.Array
    opt_states: optax.OptState
    losses: np.ndarray
    terms: dict[str, np.ndarray] | None = None
    scale: int = 0
    evaluations: np.ndarray | None = None
    scale_step: int | None = None


def check_finite(chunk: np.ndarray, images: jax.Array, done: int, last: RunState | None):
    """Raise :class:`~nst_jax.events.DivergedError` at the first non-finite loss of a
    chunk's ``(N, k)`` losses, or when its last update left a non-finite image; ``last`` is
    the state before the chunk (the last finite one)."""
    first = first_non_finite(chunk)
    if first is not None:
        raise DivergedError(done + 1 + first, last)
    if not bool(jnp.all(jnp.isfinite(images))):
        raise DivergedError(done + chunk.shape[1], last)  # the chunk's last update broke it


def fresh_scale_state(previous: RunState | None, n: int, index: int) -> RunState:
    """The bookkeeping at the start of scale ``index`` (losses and counts carried over)."""
    if previous is None:
        losses = np.zeros((n, 0), np.float32)
        return RunState(0, None, None, losses, None, index, np.zeros(n), 0)
    return previous._replace(scale=index, scale_step=0)


def check_resume(state: RunState, n: int, scale_steps: list[int]) -> RunState:
    """``state`` checked against a run of ``n`` images whose scales take ``scale_steps``,
    with its evaluation counts as integers and its steps within its scale."""
    scales = len(scale_steps)
    if not 0 <= state.scale < scales:
        raise ValueError(f"resumed run is at scale {state.scale}; this run has {scales} scales")
    if np.shape(state.images)[0] != n:
        raise ValueError(f"resumed run has {np.shape(state.images)[0]} images, this run {n}")
    evaluations = state.evaluations if state.evaluations is not None else np.zeros(n)
    within = state.scale_step
    if within is None:
        within = state.step - sum(scale_steps[: state.scale])
    if not 0 <= within <= scale_steps[state.scale]:
        raise ValueError(f"resumed run is {within} steps into scale {state.scale}, past its end")
    return state._replace(evaluations=np.array(evaluations, np.int64), scale_step=int(within))


def restore_states(structure, saved, reference=None):
    """Saved optimiser states (maybe a checkpoint's flat list of leaves) in this run's
    ``structure`` (shapes and dtypes from ``jax.eval_shape``), copied: the run donates them,
    and the caller may resume from the same state again. Given ``reference``, fresh states
    of the same optimizer (of any image size; for nst_jax's own optimizers, whose
    hyperparameters are constant: a schedule given to ``optax.inject_hyperparams`` changes
    them as it runs), the saved hyperparameters (the learning rate) must be its: they are
    settings, checked as a checkpoint's record is, and a tampered one would run on
    unnoticed."""
    leaves = jax.tree.leaves(saved)
    wanted = jax.tree.leaves(structure)
    if len(leaves) != len(wanted):
        raise ValueError(
            f"the saved optimizer state has {len(leaves)} arrays, this run's optimizer "
            f"{len(wanted)}: it was saved with other optimizer settings"
        )
    for leaf, want in zip(leaves, wanted, strict=True):
        if tuple(np.shape(leaf)) != tuple(want.shape):
            raise ValueError(
                f"the saved optimizer state has an array of shape {np.shape(leaf)} where this "
                f"run has {want.shape}"
            )
    restored = [
        jnp.array(leaf, want.dtype, copy=True) for leaf, want in zip(leaves, wanted, strict=True)
    ]
    if reference is not None:
        _check_hyperparams(reference, restored)
    return jax.tree.unflatten(jax.tree.structure(structure), restored)


def _check_hyperparams(reference, restored: list) -> None:
    """Refuse restored leaves under a ``hyperparams`` field that differ from
    ``reference``'s."""
    for (path, want), leaf in zip(jax.tree_util.tree_leaves_with_path(reference), restored,
                                  strict=True):  # fmt: skip
        hyper = any(getattr(key, "name", None) == "hyperparams" for key in path)
        if hyper and not np.array_equal(np.asarray(leaf), np.asarray(want)):
            name = jax.tree_util.keystr(path[-1:]).strip("[]'")
            saved_value, value = (float(np.asarray(a).ravel()[0]) for a in (leaf, want))
            raise ValueError(
                f"the saved optimizer state has {name}={saved_value:g}, this run "
                f"{name}={value:g}: it was saved with other settings"
            )
