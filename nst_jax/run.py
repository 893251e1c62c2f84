"""``stylize``: the research core run for you, over batches, chunks, scales and devices.

A run is a composition of public pieces: :func:`nst_jax.inputs.batch_targets` (the
targets of :func:`nst_jax.make_targets` for every image of a scale), optimiser states
(:func:`nst_jax.batching.init_states`), then chunks of the batched step
(:mod:`nst_jax.batching`). A :class:`RunState` carries the run between chunks and scales; it
is what ``on_chunk`` sees, what checkpoints hold, and what ``resume`` continues from.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nst_jax import batching, color, inputs, memory, multiscale, rows, tiling, vgg
from nst_jax.config import StyleConfig
from nst_jax.objective import TERMS, loss_fn, used_layers
from nst_jax.optim import (
    AverageState,
    averaged_image,
    make_optimizer,
    restart_average,
    with_average,
)


class StyleResult(NamedTuple):
    """What :func:`stylize` returns.

    Attributes:
      image: float32 in [0, 1], same leading shape as the content: ``(H, W, 3)`` or
        ``(N, H, W, 3)``.
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
    """

    step: int
    images: jax.Array
    opt_states: optax.OptState
    losses: np.ndarray
    terms: dict[str, np.ndarray] | None = None
    scale: int = 0
    evaluations: np.ndarray | None = None


class DivergedError(RuntimeError):
    """The loss or the image became non-finite (too large a learning rate, usually)."""

    def __init__(self, step: int):
        super().__init__(f"the run diverged: non-finite loss or image at step {step}")
        self.step = step


def pixel_steps(config: StyleConfig, n: int, height: int, width: int) -> int:
    """Images x pixels x steps of a run, over all its scales: what ``conv="auto"`` weighs
    against Winograd's longer compile (:func:`nst_jax.vgg.resolve_conv`)."""
    shapes = multiscale.scale_shapes(height, width, config)
    steps = multiscale.scale_steps(height, width, config)
    return n * sum(s * h * w for s, (h, w) in zip(steps, shapes, strict=True))


def step_params(params, config: StyleConfig, n: int, height: int, width: int):
    """``params`` prepared for the step's convolutions (Winograd on CPU for long runs)."""
    work = pixel_steps(config, n, height, width)
    return vgg.prepare_params(params, config.conv, pixel_steps=work, layers=used_layers(config))


class _Run(NamedTuple):
    """What every chunk of a run needs, fixed for the whole run."""

    config: StyleConfig
    tx: optax.GradientTransformation
    params: dict
    step_params: dict
    mesh: jax.sharding.Mesh | None
    n: int
    on_chunk: Callable[[RunState], None] | None
    learning_rates: jax.Array | None  # (N,) of a learning-rate sweep
    tile: int | None = None  # this scale's tile (tiling.py), or None: untiled
    on_tile: Callable[[int, int], None] | None = None
    loss: Callable = loss_fn  # this scale's (rows.row_loss when its rows are exchanged)
    tile_devices: tuple | None = None  # devices a tiled step deals its windows over


def _check_finite(chunk: np.ndarray, images: jax.Array, done: int) -> None:
    finite_steps = np.all(np.isfinite(chunk), axis=0)
    if not finite_steps.all():
        raise DivergedError(done + 1 + int(np.argmin(finite_steps)))
    if not bool(jnp.all(jnp.isfinite(images))):
        raise DivergedError(done + chunk.shape[1])  # the chunk's last update broke the image


def run_chunk(run: _Run, targets, images, states, k: int):
    """``k`` steps of the (padded, placed) batch.

    Returns:
      images, states, ``(N, k)`` total losses, ``{term: (N,)}`` terms before the last step
      (with ``"total"``), and ``(N,)`` evaluations made.
    """
    config, lbfgs = run.config, run.config.optimizer == "lbfgs"
    if run.tile is not None:
        return _tiled_chunk(run, targets, images, states, k)
    if batching.resolve_loop(config.loop) == "device":
        chunk = batching.batch_chunk(config, run.tx, run.loss)
        images, states, history, terms, evaluations, before = chunk(
            run.step_params, targets, images, states, k
        )
        totals = np.asarray(history[:, :k])
        if lbfgs:
            before = batching.batch_terms(config, run.loss)(run.step_params, targets, before)
    else:
        step = batching.batch_step(config, run.tx, run.loss)
        totals, evaluations, before = [], 0, None
        for i in range(k):
            if i == k - 1 and lbfgs:  # the step donates the image: its terms first
                before = batching.batch_terms(config, run.loss)(run.step_params, targets, images)
            images, states, loss, terms, used = step(run.step_params, targets, images, states)
            totals.append(loss)
            evaluations = evaluations + used
        totals = np.stack([np.asarray(t) for t in totals], axis=1)
    terms = before if lbfgs else terms
    terms = {**{t: np.asarray(terms[t]) for t in TERMS}, "total": totals[:, -1]}
    return images, states, totals, terms, np.asarray(evaluations)


def _tiled_chunk(run: _Run, targets: list, images, states, k: int):
    """:func:`run_chunk` with each image's loss and gradient tiled (one image at a time).

    ``targets`` is the list of each image's targets. Like the untiled chunk, which donates
    them, this consumes ``images`` and ``states``: at print sizes each whole-image array
    (image, Adam's two moments) is gigabytes, so the step holds each once. The rows that pad
    the batch to a mesh are carried, not stepped (each would cost a whole tiled step).
    """
    step = tiling.tiled_step(run.config, run.tx, run.tile, run.tile_devices)
    pending = _unstack((images, states), images.shape[0])
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
            last_terms.append({t: np.asarray(terms[t]) for t in TERMS})
        done.append((x, state))
    del x, state
    images, states = _stack(done)
    totals = np.asarray(totals)
    terms = {t: np.array([row[t] for row in last_terms]) for t in TERMS}
    terms["total"] = totals[:, -1]
    return images, states, totals, terms, np.full(run.n, k)


def _unstack(tree, n: int) -> list:
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


def _stack(rows: list):
    """:func:`_unstack` undone: one batched pytree, each row's maps freed once stacked."""
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


def _scale_start(run: _Run, state: RunState | None, start, shape, resumed: bool):
    """Images and optimiser states at the start of a scale (placed, padded)."""
    config = run.config
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
    if state is not None and (resumed or config.optimizer != "lbfgs"):
        states = state.opt_states
        if resumed:
            lrs = run.learning_rates
            structure = jax.eval_shape(lambda x: batching.init_states(run.tx, x, lrs), images)
            states = _restore_states(structure, states)
        else:
            states = multiscale.carry_state(states, *shape)
            if isinstance(states, AverageState):  # each scale averages its own iterates
                states = jax.vmap(restart_average)(states, images)
    else:
        states = batching.init_states(run.tx, images, run.learning_rates)
    images, states = batching.place((images, states), run.mesh)
    return images, states


def _restore_states(structure, saved):
    """Saved states (maybe a checkpoint's flat list of leaves) in this run's structure."""
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
    return jax.tree.unflatten(jax.tree.structure(structure), restored)


def _run_scale(run: _Run, state: RunState, targets, images, states, end: int) -> RunState:
    """Chunks of this scale until step ``end``; the state after each goes to ``on_chunk``."""
    history = [np.asarray(state.losses)]
    evaluations = np.array(state.evaluations, np.int64)
    done, terms = state.step, state.terms
    while done < end:
        k = min(run.config.steps_per_call, end - done)
        images, states, chunk, terms, used = run_chunk(run, targets, images, states, k)
        chunk = chunk[: run.n]
        _check_finite(chunk, images, done)
        history.append(chunk)
        evaluations = evaluations + used[: run.n]
        done += k
        if run.on_chunk is not None:
            # Copies without padding rows: the next chunk donates the live buffers, and a
            # hook may keep the state (to resume from, say).
            now = jax.tree.map(lambda x: jnp.array(x[: run.n], copy=True), (images, states))
            terms_now = {name: value[: run.n] for name, value in terms.items()}
            losses = np.concatenate(history, axis=1)
            run.on_chunk(RunState(done, *now, losses, terms_now, state.scale, evaluations))
            del now  # what the hook keeps stays; nothing else holds the copies during a chunk
    images, states = jax.tree.map(lambda x: x[: run.n], (images, states))
    losses = np.concatenate(history, axis=1)
    return RunState(done, images, states, losses, terms, state.scale, evaluations)


def stylize(
    content: jax.Array | np.ndarray,
    style: jax.Array | np.ndarray | Sequence[jax.Array | np.ndarray],
    *,
    params,
    config: StyleConfig | None = None,
    optimizer: optax.GradientTransformation | None = None,
    devices: Sequence[jax.Device] | None = None,
    resume: RunState | None = None,
    on_chunk: Callable[[RunState], None] | None = None,
    masks: jax.Array | np.ndarray | None = None,
    style_masks: Sequence[jax.Array | np.ndarray | None] | None = None,
    on_tile: Callable[[int, int], None] | None = None,
    shard: str = "auto",
) -> StyleResult:
    """Optimise an image (or a batch) to match ``content``'s features and ``style``'s Grams.

    A batch runs as one compiled program (per-image code under ``jax.vmap``); with several
    devices its batch axis is sharded over them (padded to a multiple of their count).
    With ``config.scales > 1`` (or ``min_size``) it runs coarse to fine; with
    ``config.preserve_color`` it keeps the content's colours (see :mod:`nst_jax.color`).

    Args:
      content: ``(H, W, 3)`` or ``(N, H, W, 3)`` float RGB in [0, 1], used as given (resizing
        is the loader's job).
      style: ``(h, w, 3)`` shared by all images, ``(N, h, w, 3)``, or a sequence of 1 or N
        ``(h_i, w_i, 3)`` arrays of any sizes (one style per content image). With
        ``config.style_blend``: the K styles to blend, shared by all images.
      params: VGG19 params from :func:`nst_jax.load_vgg19`.
      config: settings; defaults to the tutorial's. Weights and learning rate given as N
        values sweep them over the batch; a single content image is repeated N times.
      optimizer: any optax transformation instead of ``config.optimizer``'s (for L-BFGS-like
        ones that need ``value_fn``, set ``config.optimizer="lbfgs"`` too).
      devices: devices to shard the batch over; default every local device.
      resume: a :class:`RunState` saved from an earlier run of the same inputs and config.
      on_chunk: called after each chunk of ``config.steps_per_call`` steps with the
        :class:`RunState` (progress, checkpoints, previews; it may raise to stop the run).
      masks: spatial control (Gatys et al. 2017): ``(K, H, W)`` content regions in [0, 1]
        shared by the batch, or ``(N, K, H, W)`` one set per image; region k takes the k-th
        of the K ``style`` images (guided Grams, :func:`nst_jax.losses.guided_gram`),
        weighted by ``config.style_weights``. Masks of another size than the content are
        resized to it; pixels outside every region keep the content (no style term).
      style_masks: with ``masks``, one entry per style: ``(h, w)`` the part of that style
        image whose Grams are matched (resized to the style), or ``None`` for all of it.
      on_tile: in a tiled scale, called with ``(tiles done, tiles in all)`` during each
        step's pass 2 (a step takes minutes at print sizes).
      shard: ``"batch"``: the batch axis over the devices. ``"rows"``: one image's rows
        split over them (:mod:`nst_jax.rows`). ``"auto"``: the batch, except one image that
        fits no device untiled: its rows split (without ``config.tile``, or with ``"auto"``
        where each device's share fits), else tiled whole on the first device, each pass's
        windows dealt over the accelerators (:mod:`nst_jax.tiling`).

    Raises:
      DivergedError: a loss or image became non-finite; nothing non-finite is returned.

    Returns:
      A :class:`StyleResult`; ``image`` is ``(H, W, 3)`` for one content image without a
      sweep, else ``(N, H, W, 3)``.
    """
    config = config or StyleConfig()
    batch = inputs.make_batch(content, style, config, masks, style_masks)
    if masks is not None and config.tile is not None:
        raise ValueError("tiled runs take no masks: give tile=None")
    run = _make_run(batch, config, params, optimizer, devices, on_chunk, shard)
    run = run._replace(on_tile=on_tile)
    height, width = batch.content.shape[1:3]
    shapes = multiscale.scale_shapes(height, width, config)
    ends = np.cumsum(multiscale.scale_steps(height, width, config))
    start = inputs.initial_images(config, batch)
    state = None if resume is None else _check_resume(resume, run.n, len(shapes))
    resuming = resume is not None
    for index in range(state.scale if resuming else 0, len(shapes)):
        # A rows mesh is chosen only where the split fits (:func:`_mesh`): no tiles then.
        split = run.mesh is not None and run.mesh.axis_names == (rows.AXIS,)
        tile = None if split else memory.scale_tile(config, run.n, *shapes[index])
        run = run._replace(tile=tile)
        targets = inputs.batch_targets(run.params, batch, config, shapes[index], tile)
        targets = batching.place(targets, run.mesh)
        run = run._replace(loss=_scale_loss(run, targets, shapes[index][0]))
        if tile is not None:  # a tiled chunk steps one image at a time
            targets = _unstack(targets, run.n)
        images, states = _scale_start(run, state, start, shapes[index], resuming)
        if not resuming:
            state = _fresh_scale_state(state, run.n, index)
        # The last scale's arrays are no longer needed (the hook may still keep its own).
        state = state._replace(images=None, opt_states=None)
        resuming = False
        state = _run_scale(run, state, targets, images, states, int(ends[index]))
    images = state.images
    if isinstance(state.opt_states, AverageState):
        images = jax.vmap(averaged_image)(state.opt_states).astype(images.dtype)
    if config.preserve_color == "luminance":
        images = jax.vmap(color.recombine)(images, batch.content)
    if batch.single:
        return StyleResult(images[0], state.losses[0], state.evaluations[0])
    return StyleResult(images, state.losses, state.evaluations)


def _make_run(
    batch: inputs.Batch, config, params, optimizer, devices, on_chunk, shard: str = "auto"
) -> _Run:
    """Everything fixed for the whole run: optimiser, params placed and prepared, mesh."""
    n, height, width, _ = batch.content.shape
    dtype = batch.content.dtype
    devices = list(devices) if devices is not None else jax.local_devices()
    lrs = None
    if isinstance(config.learning_rate, tuple) and config.optimizer != "lbfgs":
        lrs = inputs.per_image(config, "learning_rate", n, dtype)
    mesh = _mesh(config, devices, shard, n, height, width)
    params = batching.place(jax.tree.map(lambda p: jnp.asarray(p, dtype), params), mesh, False)
    tx = optimizer if optimizer is not None else make_optimizer(config)
    if optimizer is not None and config.average is not None:
        tx = _wrapped(optimizer, config.average)
    prepared = step_params(params, config, n, height, width)
    tile_devices = _tile_devices(devices, mesh, n)
    return _Run(config, tx, params, prepared, mesh, n, on_chunk, lrs, tile_devices=tile_devices)


def _scale_loss(run: _Run, targets, height: int) -> Callable:
    """The loss of a scale: :func:`rows.row_loss` where a rows mesh's borders can be
    exchanged explicitly, else :func:`nst_jax.loss_fn` (over a rows mesh, XLA's partitioner
    then splits it)."""
    mesh = run.mesh
    if mesh is None or mesh.axis_names != (rows.AXIS,) or "masks" in targets:
        return loss_fn
    if not rows.exchanges(run.config, run.n, height, mesh.size):
        return loss_fn
    return rows.row_loss(mesh)


def _mesh(config: StyleConfig, devices: list, shard: str, n: int, height: int, width: int):
    """The device mesh of a run over ``devices`` (``stylize``'s ``shard``), or ``None`` on
    one device."""
    if shard not in ("auto", "batch", "rows"):
        raise ValueError(f"shard must be auto, batch or rows, got {shard!r}")
    if config.tile is not None and shard == "rows":
        raise ValueError("a tiled run runs on one device: give shard='batch' or tile=None")
    if shard == "auto" and len(devices) > 1 and n == 1:
        untiled = config.replace(tile=None)
        if not _fits(untiled, height, width, devices[0]):
            if config.tile is None or (
                config.tile == "auto" and _split_fits(untiled, height, width, devices)
            ):
                shard = "rows"
            else:
                return None  # tiled on the first device (:func:`_tile_devices`)
    return batching.rows_mesh(devices) if shard == "rows" else batching.batch_mesh(devices)


def _fits(config: StyleConfig, height: int, width: int, device) -> bool:
    try:
        memory.check_fits(config, 1, height, width, memory.available_bytes(device))
    except MemoryError:
        return False
    return True


def _split_fits(config: StyleConfig, height: int, width: int, devices) -> bool:
    """Whether one image split by rows over ``devices`` fits (``config`` untiled), each
    device counted as one running its share of the rows (the two border rows each
    convolution adds are a few percent of a share, within the estimate's slack). Host devices
    share one memory: split, the image takes no less of it."""
    if devices[0].platform == "cpu":
        return False
    return _fits(config, -(-height // len(devices)), width, devices[0])


def _tile_devices(devices: list, mesh, n: int) -> tuple | None:
    """The devices a tiled step of one image deals its windows over: every device, when the
    image is on one (no mesh) and each device has its own memory (an accelerator); else
    ``None``, the image's device alone. Host devices share one memory and the same cores, so
    windows at once on several would only multiply the memory a window takes."""
    if mesh is not None or n != 1 or len(devices) < 2 or devices[0].platform == "cpu":
        return None
    return tuple(devices)


@functools.lru_cache(maxsize=8)
def _wrapped(optimizer: optax.GradientTransformation, decay: float):
    # Cached: the same optimiser and decay give the same transformation, so compiled steps
    # are reused between runs.
    return with_average(optimizer, decay)


def _fresh_scale_state(previous: RunState | None, n: int, index: int) -> RunState:
    """The bookkeeping at the start of scale ``index`` (losses and counts carried over)."""
    if previous is None:
        return RunState(0, None, None, np.zeros((n, 0), np.float32), None, index, np.zeros(n))
    return previous._replace(scale=index)


def _check_resume(state: RunState, n: int, scales: int) -> RunState:
    if not 0 <= state.scale < scales:
        raise ValueError(f"resumed run is at scale {state.scale}; this run has {scales} scales")
    if np.shape(state.images)[0] != n:
        raise ValueError(f"resumed run has {np.shape(state.images)[0]} images, this run {n}")
    evaluations = state.evaluations if state.evaluations is not None else np.zeros(n)
    return state._replace(evaluations=np.array(evaluations, np.int64))
