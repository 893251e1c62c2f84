"""The frame loop of Ruder et al. ("Artistic style transfer for videos", GCPR 2016): each
frame optimised with the core's objective plus the temporal loss, starting from the
previous stylised frame warped by the flow.

One compiled step serves every frame of a clip: the frame's content features, the warped
earlier frames and their weights are *targets* (arguments), and the temporal weight is one
of them too, so ``temporal_weight=0`` runs the same program. The first frame (and a frame
whose earlier frames do not exist) gets zero weights of the same shape.

Earlier frames enter as they were written (8-bit values / 255): a run continued from the
files on disk then computes exactly what the uninterrupted run computed.

The temporal weight's default is explained in :mod:`nst_jax.video.settings`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nst_jax import metrics
from nst_jax.config import StyleConfig, check_honoured
from nst_jax.core import temporal
from nst_jax.core.conv import prepare_params
from nst_jax.core.objective import Params, loss_fn, used_layers
from nst_jax.core.optim import make_optimizer
from nst_jax.core.step import make_step
from nst_jax.core.targets import content_features, make_targets
from nst_jax.events import DivergedError, Event, Hook, first_non_finite, tell
from nst_jax.files import image
from nst_jax.run.inputs import per_style, scaled_style
from nst_jax.video.flow import FrameFlows
from nst_jax.video.settings import VideoSettings, check_offsets


class FrameResult(NamedTuple):
    """One finished frame.

    Attributes:
      index: 0-based frame number.
      image: ``(H, W, 3)`` float32, 8-bit values / 255 (as it is written).
      terms: the last step's loss terms (``content``, ``style``, ``tv``, ``temporal``), of
        the image before that step's update.
      warping_error: :func:`nst_jax.metrics.warping_error` against the previous
        frame (``None`` for the first).
      seconds: ``flow`` (computing, on the workers), ``waited`` (for the flow), ``steps``.
    """

    index: int
    image: np.ndarray
    terms: dict[str, float]
    warping_error: float | None
    seconds: dict[str, float]


def video_loss(
    params: Params, x: jax.Array, targets: Mapping[str, Any], config: StyleConfig
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """:func:`nst_jax.loss_fn` plus the temporal term; ``targets["temporal"]`` holds
    ``warped`` ``(J, H, W, 3)``, ``weights`` ``(J, H, W)`` and ``weight`` (a scalar).

    Returns:
      ``(loss, terms)``, the terms with ``temporal`` added.
    """
    core = {key: value for key, value in targets.items() if key != "temporal"}
    loss, terms = loss_fn(params, x, core, config)
    held = targets["temporal"]
    value = held["weight"] * temporal.temporal_loss(x, held["warped"], held["weights"])
    return loss + value, {**terms, "temporal": value}


@jax.jit
def temporal_inputs(
    previous: jax.Array, backward: jax.Array, forward: jax.Array, present: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Earlier stylised frames ``(J, H, W, 3)`` warped onto this one, their long-term
    weights ``(J, H, W)``, and each pair's own consistency weights ``(J, H, W)``."""
    pair = jax.vmap(temporal.consistency_weights)(forward, backward)
    pair = pair * present[:, None, None].astype(pair.dtype)
    warped = jax.vmap(temporal.warp)(previous, backward)
    return warped, temporal.long_term_weights(pair), pair


warping_error = jax.jit(metrics.warping_error)


def first_start(frame: np.ndarray, config: StyleConfig) -> jax.Array:
    """The first frame's start: the content, or uniform noise from ``config.seed``."""
    if config.init == "noise":
        return jax.random.uniform(jax.random.key(config.seed), frame.shape, frame.dtype)
    return jnp.asarray(frame)


def quantised(x: jax.Array) -> np.ndarray:
    """``x`` as it is written: rounded to 8 bits, then back to [0, 1] floats."""
    return (image.to_uint8(np.asarray(x)) / np.float32(255.0)).astype(np.float32)


class FrameState(NamedTuple):
    """A frame between chunks of its steps: what a ``"chunk"`` event of the frame loop
    carries (:mod:`nst_jax.events`).

    Attributes:
      index: the frame's number.
      image: its current image (before quantisation).
      opt_state: the optimiser's state.
      step: its steps done.
    """

    index: int
    image: jax.Array
    opt_state: Any
    step: int


class _Progress(NamedTuple):
    """Where the loop stands: steps done by this run, and its total."""

    done: int
    total: int


def run_steps(
    step: Callable,
    params: Params,
    targets: Mapping[str, Any],
    frame: FrameState,
    tx: optax.GradientTransformation,
    config: StyleConfig,
    progress: _Progress,
    on_event: Hook | None,
) -> tuple[FrameState | None, dict[str, jax.Array]]:
    """``config.steps`` steps of one frame in chunks of ``config.steps_per_call``, each
    chunk checked finite and told to the hook.

    Returns:
      ``(state, terms)`` of the last step; ``state`` is ``None`` when the hook stopped the
      run (:class:`~nst_jax.events.StopRun`).

    Raises:
      DivergedError: a non-finite loss or image; its state the frame after its last finite
        chunk.
    """
    x, opt_state, terms, last = frame.image, frame.opt_state, {}, frame
    while last.step < config.steps:
        k = min(config.steps_per_call, config.steps - last.step)
        losses = []
        for i in range(k):
            t = np.int32(last.step + i)  # a random term's step index, within the frame
            x, opt_state, loss, terms = step(params, targets, x, opt_state, t)
            losses.append(loss)
        losses = np.asarray(jax.device_get(losses))
        first = first_non_finite(losses)
        done = progress.done + last.step
        if first is not None or not bool(jnp.all(jnp.isfinite(x))):
            at = done + (k if first is None else first + 1)
            raise DivergedError(at, last, "frames")
        last = FrameState(frame.index, x, opt_state, last.step + k)
        values = {name: np.asarray(value) for name, value in terms.items()}
        event = Event("frames", "chunk", done + k, progress.total, losses[-1], values, last, x)
        if tell(on_event, event):
            return None, terms
    return last, terms


def _first_targets(params, frame, styles, config: StyleConfig, count: int | None):
    """The params prepared for the clip's convolutions, and the targets of its first frame
    (the styles scaled relative to the frame by ``style_scale``)."""
    work = None if count is None else count * frame.shape[0] * frame.shape[1]
    params = prepare_params(
        params,
        config.conv,
        pixel_steps=work and work * config.steps,
        layers=used_layers(config),
        extractor=config.extractor,
    )
    many = isinstance(styles, (list, tuple))
    given = list(styles) if many else [styles]
    scales = per_style(config, "style_scales", len(given), config.style_scale)
    shape = frame.shape[:2]
    scaled = [scaled_style(jnp.asarray(s), shape, v) for s, v in zip(given, scales, strict=True)]
    return params, make_targets(params, frame, scaled if many else scaled[0], config)


def stylize_frames(
    params: Params,
    frames: Iterable[tuple[int, np.ndarray, FrameFlows]],
    styles: np.ndarray | Sequence[np.ndarray],
    config: StyleConfig,
    settings: VideoSettings,
    previous: Mapping[int, np.ndarray] | None = None,
    on_event: Hook | None = None,
    count: int | None = None,
) -> Iterator[FrameResult]:
    """Stylise ``frames`` in order, one :class:`FrameResult` each (an iterator; the settings
    are checked when it is made, the frames stylised as it is consumed).

    Args:
      params: VGG19 params.
      frames: ``(index, frame, flows)`` in order (:class:`nst_jax.video.flow.FlowFeeder`).
      styles: the style image(s), as :func:`nst_jax.make_targets` takes them, each resized
        relative to the frames by ``config.style_scale`` (or its own ``style_scales``).
      config: the style settings (``steps`` per frame, ``init`` of the first frame);
        settings a frame loop cannot honour are refused (:func:`nst_jax.config.
        check_honoured`).
      settings: the temporal settings.
      previous: earlier stylised frames by index (as written) when continuing a run.
      on_event: the hook (:mod:`nst_jax.events`): an event after each chunk of a frame's
        steps and after each frame; :class:`~nst_jax.events.StopRun` ends the loop after
        the frames finished.
      count: how many frames the clip has (``None``: many), for ``config.conv="auto"`` and
        the events' total: the run's convolutions are chosen as ``stylize`` chooses them for
        its pixel-steps.

    Raises:
      ValueError: a setting the frame loop cannot honour, named.
      DivergedError: a non-finite loss or image (its ``state`` the last finite
        :class:`FrameState`).
    """
    check_honoured("frames", config)
    check_offsets(settings.offsets)
    return _frames(params, frames, styles, config, settings, dict(previous or {}), on_event, count)


def _frames(params, frames, styles, config, settings, previous: dict, on_event, count):
    """:func:`stylize_frames`' generator, its arguments checked."""
    offsets = settings.offsets
    tx = make_optimizer(config)
    step = make_step(config, tx, loss=video_loss)
    base, progress = None, None
    for index, frame, flows in frames:
        began = time.perf_counter()
        if base is None:
            params, base = _first_targets(params, frame, styles, config, count)
            content = base["content"]  # this frame's, made with the style's targets
            left = (count - index) if count is not None else 1
            progress = _Progress(0, left * config.steps)
        else:
            content = content_features(params, frame, config)
        earlier = [previous.get(index - o, np.zeros_like(frame)) for o in offsets]
        warped, weights, pair = temporal_inputs(
            jnp.asarray(np.stack(earlier)), flows.backward, flows.forward, flows.present
        )
        held = {"warped": warped, "weights": weights, "weight": settings.temporal_weight}
        targets = {**base, "content": content, "temporal": held}
        start = warped[0] if index > 0 else first_start(frame, config)
        state = FrameState(index, start, tx.init(start), 0)
        state, terms = run_steps(step, params, targets, state, tx, config, progress, on_event)
        if state is None:
            return
        result = _finished(state.image, terms, index, previous, flows, pair, offsets)
        result.seconds.update(flow=flows.seconds, steps=time.perf_counter() - began)
        progress = progress._replace(done=progress.done + config.steps)
        yield result
        values = {name: np.asarray(value) for name, value in terms.items()}
        event = Event("frames", "frame", progress.done, progress.total,
                      np.asarray(sum(values.values())), values, result, result.image)  # fmt: skip
        if tell(on_event, event):
            return


def _finished(x, terms, index: int, previous: dict, flows, pair, offsets) -> FrameResult:
    """The frame as written, its warping error against the previous one; ``previous``
    updated (it keeps the frames the offsets reach)."""
    written = quantised(x)
    error = None
    if index > 0:
        error = float(warping_error(written, previous[index - 1], flows.backward[0], pair[0]))
    previous[index] = written
    for old in [i for i in previous if i <= index - max(offsets)]:
        del previous[old]
    values = {name: float(value) for name, value in terms.items()}
    return FrameResult(index, written, values, error, {})
