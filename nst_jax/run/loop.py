"""The loop of a run: chunks of the batched step over one scale, each chunk's state handed
to the hook (``on_event``: :mod:`nst_jax.events`).

A :class:`Run` is what every chunk needs and what stays fixed for the whole run; a
:class:`Scale` what changes from one scale of a coarse-to-fine run to the next.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nst_jax.config import StyleConfig
from nst_jax.core.objective import loss_fn
from nst_jax.core.optim import ToleranceState, find_state, make_optimizer, restart_scale
from nst_jax.events import Event, Hook, tell
from nst_jax.run import batching, multiscale, tiling
from nst_jax.run.devices import place
from nst_jax.run.state import RunState, check_finite, restore_states


class Run(NamedTuple):
    """What every chunk of a run needs, fixed for the whole run.

    Attributes:
      config: the settings.
      tx: the optimiser.
      params: VGG19 params as given, placed (targets are computed with these).
      step_params: the params prepared for the step's convolutions.
      mesh: the device mesh, or None on one device.
      n: images in the batch (the mesh may pad it).
      on_event: the hook, given an :class:`~nst_jax.events.Event` after each chunk (its
        state a copy of the run's).
      on_tile: called with ``(tiles done, tiles in all)`` within a tiled step.
      learning_rates: ``(N,)`` of a learning-rate sweep, else None.
      tile_devices: devices a tiled step deals its windows over, else None.
      loss: the objective the run was given (``loss_fn`` unless a custom one).
      total: the steps of the whole run, over its scales.
    """

    config: StyleConfig
    tx: optax.GradientTransformation
    params: dict
    step_params: dict
    mesh: jax.sharding.Mesh | None
    n: int
    on_event: Hook | None
    on_tile: Callable[[int, int], None] | None
    learning_rates: jax.Array | None
    tile_devices: tuple | None
    loss: Callable = loss_fn
    total: int = 0


class Scale(NamedTuple):
    """One scale of a run.

    Attributes:
      index: its place among the run's scales, from 0.
      shape: ``(height, width)`` of its images.
      steps: its steps (fewer where every image converges first: ``config.tol``).
      tile: its tile (:mod:`nst_jax.run.tiling`), or None: untiled.
      loss: its loss, ``loss_fn`` or one computed another way with the same results
        (:func:`nst_jax.run.rows.row_loss`).
    """

    index: int
    shape: tuple[int, int]
    steps: int
    tile: int | None = None
    loss: Callable = loss_fn


def run_chunk(run: Run, scale: Scale, targets, images, states, k: int, t: int = 0):
    """``k`` steps of the (padded, placed) batch, the first the run's step ``t`` (from 0).

    Returns:
      images, states, ``(N, k)`` total losses, ``{term: (N,)}`` terms before the last step
      (with ``"total"``), and ``(N,)`` evaluations made.
    """
    config, lbfgs = run.config, run.config.optimizer == "lbfgs"
    if scale.tile is not None:
        return tiled_chunk(run, scale, targets, images, states, k)
    if batching.resolve_loop(config.loop) == "device":
        chunk = batching.batch_chunk(config, run.tx, scale.loss)
        images, states, history, terms, evaluations, before = chunk(
            run.step_params, targets, images, states, k, np.int32(t)
        )
        totals = np.asarray(history[:, :k])
        if lbfgs:
            last = np.int32(t + k - 1)
            terms = batching.batch_terms(config, scale.loss)(run.step_params, targets, before, last)
    else:
        step = batching.batch_step(config, run.tx, scale.loss)
        totals, evaluations = [], 0
        for i in range(k):
            index = np.int32(t + i)
            if i == k - 1 and lbfgs:  # the step donates the image: its terms first
                terms_of = batching.batch_terms(config, scale.loss)
                before = terms_of(run.step_params, targets, images, index)
            images, states, loss, terms, used = step(
                run.step_params, targets, images, states, index
            )
            totals.append(loss)
            evaluations = evaluations + used
        totals = np.stack([np.asarray(t) for t in totals], axis=1)
        terms = before if lbfgs else terms
    terms = {**{t: np.asarray(value) for t, value in terms.items()}, "total": totals[:, -1]}
    return images, states, totals, terms, np.asarray(evaluations)


def tiled_chunk(run: Run, scale: Scale, targets: list, images, states, k: int):
    """:func:`run_chunk` with each image's loss and gradient tiled (one image at a time).

    ``targets`` is the list of each image's targets. Like the untiled chunk, which donates
    them, this consumes ``images`` and ``states``: at print sizes each whole-image array
    (image, Adam's two moments) is gigabytes, so the step holds each once. The rows that pad
    the batch to a mesh are carried, not stepped (each would cost a whole tiled step).
    """
    step = tiling.tiled_step(run.config, run.tx, scale.tile, run.tile_devices)
    pending = unstack((images, states), images.shape[0])
    del images, states
    totals, last_terms, done = [], [], []
    for i in range(len(pending)):
        (x, state), pending[i] = pending[i], None
        if i < run.n:
            losses = []
            for _ in range(k):
                x, state, loss, terms = step(run.step_params, targets[i], x, state, run.on_tile)
                losses.append(np.asarray(loss))
            totals.append(losses)
            last_terms.append({t: np.asarray(value) for t, value in terms.items()})
        done.append((x, state))
    del x, state
    images, states = stack(done)
    totals = np.asarray(totals)
    terms = {t: np.array([row[t] for row in last_terms]) for t in last_terms[0]}
    terms["total"] = totals[:, -1]
    return images, states, totals, terms, np.full(run.n, k)


def unstack(tree, n: int) -> list:
    """The ``n`` rows of a batched pytree, each per-position map (a 4-D leaf: images, Adam's
    moments, content features) freed once split, as a donating jit would free it."""
    leaves, treedef = jax.tree.flatten(tree)
    rows = [[] for _ in range(n)]
    for leaf in leaves:
        for i, row in enumerate(rows):
            row.append(leaf[i])
        if leaf.ndim == 4:
            leaf.delete()
    return [jax.tree.unflatten(treedef, row) for row in rows]


def stack(rows: list):
    """:func:`unstack` undone: one batched pytree, each row's maps freed once stacked."""
    columns = zip(*(jax.tree.leaves(row) for row in rows), strict=True)
    treedef = jax.tree.structure(rows[0])
    rows.clear()
    stacked = []
    for column in columns:
        stacked.append(jnp.stack(column))
        for leaf in column:
            if leaf.ndim == 3:
                leaf.delete()
    return jax.tree.unflatten(treedef, stacked)


def scale_start(run: Run, scale: Scale, state: RunState | None, start, resumed: bool):
    """Images and optimiser states at the start of a scale (placed, padded): fresh, carried
    up from the last scale, or copied from a resumed state."""
    shape = scale.shape
    if state is None:
        images = jnp.array(multiscale.resize_batch(start, *shape), copy=True)  # donated later
    elif resumed:
        # Copies: the first chunk donates them, and the caller may resume from this state again.
        images = jnp.array(state.images, start.dtype, copy=True)
        if images.shape[1:3] != tuple(shape):
            raise ValueError(
                f"resumed images are {images.shape[2]}x{images.shape[1]} px, this run's scale "
                f"{shape[1]}x{shape[0]} px"
            )
    else:
        images = multiscale.upsample_images(jnp.asarray(state.images), start, *shape)
    if state is None or (not resumed and run.config.optimizer == "lbfgs"):
        # L-BFGS restarts its memory at each scale: its curvature pairs are the old size's.
        states = batching.init_states(run.tx, images, run.learning_rates)
    elif resumed:
        lrs = run.learning_rates
        structure = jax.eval_shape(lambda x: batching.init_states(run.tx, x, lrs), images)
        # The hyperparameters to hold against the saved ones, from a fresh state of one
        # pixel per image: they do not depend on the size, and a whole-size state would be
        # two more whole-image arrays at print sizes.
        own = run.tx is make_optimizer(run.config)  # the same settings: the same object
        reference = batching.init_states(run.tx, images[:, :1, :1], lrs) if own else None
        states = restore_states(structure, state.opt_states, reference)
    else:
        states = multiscale.carry_state(state.opt_states, *shape)
        states = jax.vmap(restart_scale)(states, images)  # its own average and convergence
    return place((images, states), run.mesh)


def run_scale(run: Run, scale: Scale, state: RunState, targets, images, states):
    """Chunks of this scale until its steps are done (or every image has converged); the
    state after each goes to the hook.

    Raises:
      DivergedError: a chunk left a non-finite loss or image; it holds the state after the
        last finite chunk (a copy kept for it, as the hook's is).

    Returns:
      ``(state, stopped)``: the state after the scale, and whether the hook stopped the run
      (:class:`~nst_jax.events.StopRun`).
    """
    history = [np.asarray(state.losses)]
    evaluations = np.array(state.evaluations, np.int64)
    done, within, terms, stopped = state.step, state.scale_step, state.terms, False
    last = kept(run, state._replace(images=images, opt_states=states))
    while within < scale.steps and not stopped:
        k = min(run.config.steps_per_call, scale.steps - within)
        images, states, chunk, terms, used = run_chunk(run, scale, targets, images, states, k, done)
        chunk = chunk[: run.n]
        check_finite(chunk, images, done, last)
        history.append(chunk)
        evaluations = evaluations + used[: run.n]
        done, within = done + k, within + k
        if all_converged(states, run.n):
            within = scale.steps
        losses = np.concatenate(history, axis=1)
        last = None  # the copy of the chunk before: only the newest is kept
        last = kept(
            run, RunState(done, images, states, losses, terms, scale.index, evaluations, within)
        )
        stopped = tell(run.on_event, chunk_event(run, last))
    images, states = jax.tree.map(lambda x: x[: run.n], (images, states))
    losses = np.concatenate(history, axis=1)
    state = RunState(done, images, states, losses, terms, scale.index, evaluations, within)
    return state, stopped


def all_converged(states, n: int) -> bool:
    """Whether every one of the batch's ``n`` images has converged (``config.tol``)."""
    watch = find_state(states, ToleranceState)
    return watch is not None and not bool(np.asarray(watch.active[:n]).any())


def kept(run: Run, state: RunState) -> RunState:
    """A copy of ``state`` without padding rows: the next chunk donates the live buffers,
    and the copy is what the hook gets (to keep, to resume from) and what a divergence
    returns."""
    copies = jax.tree.map(lambda x: jnp.array(x[: run.n], copy=True), state[1:3])
    terms = None if state.terms is None else {k: v[: run.n] for k, v in state.terms.items()}
    return state._replace(images=copies[0], opt_states=copies[1], terms=terms)


def chunk_event(run: Run, state: RunState) -> Event:
    """The event of a chunk that left ``state``."""
    return Event(
        "stylize",
        "chunk",
        state.step,
        run.total,
        state.losses[:, -1],
        dict(state.terms),
        state,
        state.images[0],
    )
