"""``stylize``: the research core run for you, over batches, chunks, scales and devices.

A run is a composition of public pieces: :func:`nst_jax.run.inputs.batch_targets` (the
targets of :func:`nst_jax.make_targets` for every image of a scale), optimiser states
(:func:`nst_jax.run.batching.init_states`), then chunks of the batched step
(:mod:`nst_jax.run.batching`, looped by :mod:`nst_jax.run.loop`). A
:class:`~nst_jax.run.state.RunState` carries the run between chunks and scales; it is what
the hook's events carry (:mod:`nst_jax.events`), what checkpoints hold
(:mod:`nst_jax.session.checkpoint`), and what ``resume`` continues from.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nst_jax.config import StyleConfig
from nst_jax.core import extractors
from nst_jax.core.fields import check_choice
from nst_jax.core.objective import loss_fn, used_layers
from nst_jax.core.optim import (
    AverageState,
    averaged_image,
    find_state,
    make_optimizer,
    with_average,
)
from nst_jax.events import Hook
from nst_jax.run import color, groups, inputs, multiscale, rows, sweeps, tile_memory
from nst_jax.run.devices import choose_mesh, is_rows_mesh, place, tile_devices
from nst_jax.run.loop import Run, Scale, run_scale, scale_start, unstack
from nst_jax.run.plan import step_params
from nst_jax.run.state import RunState, StyleResult, check_resume, fresh_scale_state
from nst_jax.run.style_cache import StyleCache


def stylize(
    content: jax.Array | np.ndarray,
    style: jax.Array | np.ndarray | Sequence[jax.Array | np.ndarray],
    *,
    params,
    config: StyleConfig | None = None,
    optimizer: optax.GradientTransformation | None = None,
    loss: Callable = loss_fn,
    devices: Sequence[jax.Device] | None = None,
    resume: RunState | None = None,
    on_event: Hook | None = None,
    masks: jax.Array | np.ndarray | None = None,
    style_masks: Sequence[jax.Array | np.ndarray | None] | None = None,
    on_tile: Callable[[int, int], None] | None = None,
    shard: str = "auto",
    style_cache: StyleCache | None = None,
    extra_targets: Mapping[str, Any] | None = None,
    sweep: str = "zip",
) -> StyleResult:
    """Optimise an image (or a batch) to match ``content``'s features and ``style``'s Grams.

    A batch runs as one compiled program (per-image code under ``jax.vmap``); with several
    devices its batch axis is sharded over them (padded to a multiple of their count).
    With ``config.scales > 1`` (or ``min_size``) it runs coarse to fine; with
    ``config.preserve_color`` it keeps the content's colours (see :mod:`nst_jax.run.color`);
    with ``config.tol`` each image stops once its loss has converged.

    ``stylize`` runs its own loop on concrete arrays: it cannot be traced (``jax.grad``,
    ``jit``, ``vmap`` of it are refused); compose :func:`nst_jax.make_targets`,
    :func:`nst_jax.loss_fn` and :func:`nst_jax.make_step` in your own loop for that.

    Args:
      content: ``(H, W, 3)`` or ``(N, H, W, 3)`` floating-point RGB in [0, 1], used as given
        (resizing is the loader's job); or a list of ``(H_i, W_i, 3)`` images of any sizes,
        grouped by shape into batches and returned as lists, in order. The result has the
        content's dtype (float64 needs ``jax_enable_x64``).
      style: ``(h, w, 3)`` shared by all images, ``(N, h, w, 3)``, or a sequence of 1 or N
        ``(h_i, w_i, 3)`` arrays of any sizes (one style per content image). With
        ``config.style_blend``: the K styles to blend, shared by all images.
      params: the extractor's params (``config.extractor``): VGG19's from
        :func:`nst_jax.load_vgg19` by default.
      config: settings; defaults to the tutorial's. Weights and learning rate given as N
        values sweep them over the batch; a single content image is repeated N times.
      optimizer: any optax transformation instead of ``config.optimizer``'s (for L-BFGS-like
        ones that need ``value_fn``, set ``config.optimizer="lbfgs"`` too).
      loss: the objective, :func:`nst_jax.loss_fn` by default, or any function with its
        signature and results ``(scalar, {term: scalar})``: it gets batches, sweeps, scales,
        ``on_event``, resume and devices; tiled runs compute ``loss_fn`` only.
      devices: devices to shard the batch over; default every local device.
      resume: a :class:`RunState` saved from an earlier run of the same inputs and config.
      on_event: the hook (:mod:`nst_jax.events`), called after each chunk of
        ``config.steps_per_call`` steps with an :class:`~nst_jax.events.Event` whose
        ``state`` is the :class:`RunState` (progress, checkpoints, previews:
        :class:`nst_jax.session.Watcher`). Raising :class:`~nst_jax.events.StopRun` ends the
        run there and returns the result so far; any other exception ends it and propagates.
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
        split over them (:mod:`nst_jax.run.rows`). ``"auto"``: the batch, except one image that
        fits no device untiled: its rows split (without ``config.tile``, or with ``"auto"``
        where each device's share fits), else tiled whole on the first device, each pass's
        windows dealt over the accelerators (:mod:`nst_jax.run.tiling`).
      style_cache: a :class:`~nst_jax.run.style_cache.StyleCache` shared by the runs of one
        job (the same params): a style's targets computed once serve every run.
      extra_targets: more targets for a custom ``loss`` (a colour histogram, say): ``{name:
        array or pytree}``, one image's for one content image, else with a leading axis of
        the batch's N images. Every image's targets also hold ``"key"``, the PRNG key of
        its seed (``config.seed``, one per image when given so), which the step folds with
        its index (:func:`nst_jax.core.targets.step_targets`): image ``i`` draws the same
        in any batch, resumed or not.
      sweep: ``"zip"`` (default): N contents take the N swept values one each (one content
        is repeated). ``"product"``: C contents cross M swept values, C x M images,
        content-major (image ``i * M + j``: content ``i``, value ``j``;
        :mod:`nst_jax.run.sweeps`).

    Raises:
      DivergedError: a loss or image became non-finite; nothing non-finite is returned, and
        the error's ``state`` is the run after its last finite chunk (to resume from with
        other settings).

    Returns:
      A :class:`StyleResult`; ``image`` is ``(H, W, 3)`` for one content image without a
      sweep, else ``(N, H, W, 3)`` (lists for a list of contents).
    """
    refuse_traced(content, style, params, masks, extra_targets)
    config = config or StyleConfig()
    check_choice("sweep", sweep, sweeps.SWEEPS)
    options = dict(optimizer=optimizer, loss=loss, devices=devices, on_event=on_event)
    options.update(on_tile=on_tile, shard=shard, style_cache=style_cache)
    if isinstance(content, (list, tuple)):
        if resume is not None or extra_targets is not None or sweep != "zip":
            raise ValueError(
                "resume, extra_targets and sweep='product' take one batch: give content as "
                "one array"
            )
        options.update(masks=masks, style_masks=style_masks, extra=None)
        return groups.stylize_groups(_stylize_batch, content, style, params, config, options)
    if sweep == "product":
        content, style, config, masks, extra_targets = sweeps.crossed(
            content, style, config, masks, extra_targets
        )
    options.update(masks=masks, style_masks=style_masks, extra=extra_targets)
    return _stylize_batch(content, style, params, config, resume=resume, **options)


def _stylize_batch(
    content, style, params, config, *, masks, style_masks, resume, style_cache, extra, **options
):
    """:func:`stylize` of one batch (or one image)."""
    batch = inputs.make_batch(content, style, config, masks, style_masks, extra)
    run = make_run(batch, config, params, **options)
    height, width = batch.content.shape[1:3]
    start = inputs.initial_images(config, batch)
    scales = plan_scales(run, height, width)
    state = None if resume is None else check_resume(resume, run.n, [s.steps for s in scales])
    resuming = resume is not None
    for scale in scales[state.scale if resuming else 0 :]:
        targets = inputs.batch_targets(
            run.params, batch, config, scale.shape, scale.tile, style_cache
        )
        targets = place(targets, run.mesh)
        scale = scale._replace(loss=scale_loss(run, targets, scale.shape, start.dtype))
        if scale.tile is not None:  # a tiled chunk steps one image at a time
            targets = unstack(targets, run.n)
        images, states = scale_start(run, scale, state, start, resuming)
        if not resuming:
            state = fresh_scale_state(state, run.n, scale.index)
        # The last scale's arrays are no longer needed (the hook may still keep its own).
        state = state._replace(images=None, opt_states=None)
        resuming = False
        state, stopped = run_scale(run, scale, state, targets, images, states)
        if stopped:
            break
    return _result(state, batch, config)


def refuse_traced(*trees) -> None:
    """Raise ``TypeError`` when an argument is being traced (``jax.grad``, ``jit`` or
    ``vmap`` of ``stylize``), whose loop needs concrete values."""
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(trees)):
        raise TypeError(
            "stylize runs its own loop on concrete arrays and cannot be traced (jax.grad, "
            "jit, vmap); compose make_targets, loss_fn and make_step in your own loop"
        )


def _result(state: RunState, batch: inputs.Batch, config: StyleConfig) -> StyleResult:
    """The run's last state as a :class:`StyleResult`: the average of the iterates where
    one is kept, the content's colours put back under luminance transfer."""
    images = state.images
    average = find_state(state.opt_states, AverageState)
    if average is not None:
        images = jax.vmap(averaged_image)(average).astype(images.dtype)
    if config.preserve_color == "luminance":
        images = jax.vmap(color.recombine)(images, batch.content)
    if batch.single:
        return StyleResult(images[0], state.losses[0], state.evaluations[0])
    return StyleResult(images, state.losses, state.evaluations)


def plan_scales(run: Run, height: int, width: int) -> list[Scale]:
    """The run's scales, smallest first, each with its tile: none over a rows mesh (chosen
    only where the split fits, :func:`nst_jax.run.devices.choose_mesh`), else the config's
    (``"auto"``: only the scales that would not fit untiled)."""
    config = run.config
    shapes = multiscale.scale_shapes(height, width, config)
    steps = multiscale.scale_steps(height, width, config)
    split = is_rows_mesh(run.mesh)
    return [
        Scale(i, shape, k, None if split else tile_memory.scale_tile(config, run.n, *shape))
        for i, (shape, k) in enumerate(zip(shapes, steps, strict=True))
    ]


def make_run(
    batch: inputs.Batch,
    config: StyleConfig,
    params,
    *,
    optimizer: optax.GradientTransformation | None = None,
    loss: Callable = loss_fn,
    devices: Sequence[jax.Device] | None = None,
    on_event: Hook | None = None,
    on_tile: Callable[[int, int], None] | None = None,
    shard: str = "auto",
) -> Run:
    """Everything fixed for the whole run: optimiser, params placed and prepared, mesh."""
    n, height, width, _ = batch.content.shape
    dtype = batch.content.dtype
    if loss is not loss_fn and config.tile is not None:
        raise ValueError("tiled runs compute loss_fn tile by tile: a custom loss needs tile=None")
    run_devices = devices
    run_devices = list(run_devices) if run_devices is not None else jax.local_devices()
    lrs = None
    if isinstance(config.learning_rate, tuple) and config.optimizer != "lbfgs":
        lrs = inputs.per_image(config, "learning_rate", n, dtype)
    mesh = choose_mesh(config, run_devices, shard, n, height, width)
    every_layer = loss is not loss_fn  # a custom loss may read any layer
    extractors.check_params(config.extractor, params, None if every_layer else used_layers(config))
    params = jax.tree.map(lambda p: jnp.asarray(p, dtype), params)
    params = place(params, mesh, batched=False)
    tx = optimizer if optimizer is not None else make_optimizer(config)
    if optimizer is not None and config.average is not None:
        tx = _wrapped(optimizer, config.average)
    prepared = step_params(params, config, n, height, width, every_layer)
    dealt = tile_devices(run_devices, mesh, n)
    total = multiscale.total_steps(height, width, config)
    return Run(config, tx, params, prepared, mesh, n, on_event, on_tile, lrs, dealt, loss, total)


def scale_loss(run: Run, targets, shape: tuple[int, int], dtype) -> Callable:
    """The loss of a scale: the run's own (checked, :func:`check_loss`);
    :func:`nst_jax.run.rows.row_loss` where a rows mesh's borders can be exchanged
    explicitly; else :func:`nst_jax.loss_fn` (over a rows mesh, XLA's partitioner then
    splits it)."""
    mesh = run.mesh
    if run.loss is not loss_fn:
        check_loss(run, targets, shape, dtype)
        return run.loss
    height = shape[0]
    if not is_rows_mesh(mesh) or "masks" in targets:
        return loss_fn
    if not rows.exchanges(run.config, run.n, height, mesh.size):
        return loss_fn
    return rows.row_loss(mesh)


def check_loss(run: Run, targets, shape: tuple[int, int], dtype) -> None:
    """Raise ``ValueError`` unless ``run.loss`` returns what ``loss_fn`` does for one image
    of the batch, a scalar and a dict of scalars (traced for shapes, nothing computed)."""
    one = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), targets)
    image = jax.ShapeDtypeStruct((*shape, 3), dtype)
    value, terms = jax.eval_shape(
        lambda p, x, t: run.loss(p, x, t, run.config), run.step_params, image, one
    )
    leaves = jax.tree.leaves(terms)
    if value.shape != () or not isinstance(terms, dict) or any(t.shape != () for t in leaves):
        raise ValueError(
            "a custom loss must return (scalar, {term: scalar}) as nst_jax.loss_fn does, "
            f"got ({value.shape}, {jax.tree.map(lambda t: t.shape, terms)})"
        )


@functools.lru_cache(maxsize=8)
def _wrapped(optimizer: optax.GradientTransformation, decay: float):
    # Cached: the same optimiser and decay give the same transformation, so compiled steps
    # are reused between runs.
    return with_average(optimizer, decay)
