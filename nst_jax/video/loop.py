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
from nst_jax.config import StyleConfig
from nst_jax.core import temporal
from nst_jax.core.conv import prepare_params
from nst_jax.core.objective import (
    Params,
    content_features,
    loss_fn,
    make_targets,
    used_layers,
)
from nst_jax.core.optim import make_optimizer
from nst_jax.core.step import make_step
from nst_jax.files import image
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


def run_steps(
    step: Callable,
    params: Params,
    targets: Mapping[str, Any],
    x: jax.Array,
    tx: optax.GradientTransformation,
    steps: int,
    tick: Callable[[], None],
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``steps`` optimisation steps from ``x``; returns ``(x, terms)`` of the last step."""
    opt_state = tx.init(x)
    terms = {}
    for _ in range(steps):
        x, opt_state, _, terms = step(params, targets, x, opt_state)
        tick()
    return x, terms


def stylize_frames(
    params: Params,
    frames: Iterable[tuple[int, np.ndarray, FrameFlows]],
    styles: np.ndarray | Sequence[np.ndarray],
    config: StyleConfig,
    settings: VideoSettings,
    previous: Mapping[int, np.ndarray] | None = None,
    tick: Callable[[], None] = lambda: None,
    count: int | None = None,
) -> Iterator[FrameResult]:
    """Stylise ``frames`` in order, one :class:`FrameResult` each (a generator).

    Args:
      params: VGG19 params.
      frames: ``(index, frame, flows)`` in order (:class:`nst_jax.video.flow.FlowFeeder`).
      styles: the style image(s), as :func:`nst_jax.make_targets` takes them.
      config: the style settings (``steps`` per frame, ``init`` of the first frame).
      settings: the temporal settings.
      previous: earlier stylised frames by index (as written) when continuing a run.
      tick: called after every step (progress).
      count: how many frames will come (``None``: many), for ``config.conv="auto"``: the
        run's convolutions are chosen as ``stylize`` chooses them for its pixel-steps.
    """
    offsets = check_offsets(settings.offsets)
    previous = dict(previous or {})
    tx = make_optimizer(config)
    step = make_step(config, tx, loss=video_loss)
    base = None
    for index, frame, flows in frames:
        began = time.perf_counter()
        if base is None:
            work = None if count is None else count * frame.shape[0] * frame.shape[1]
            params = prepare_params(
                params, config.conv, pixel_steps=work and work * config.steps,
                layers=used_layers(config),
            )  # fmt: skip
            base = make_targets(params, frame, styles, config)
            content = base["content"]  # this frame's, made with the style's targets
        else:
            content = content_features(params, frame, config)
        earlier = [previous.get(index - o, np.zeros_like(frame)) for o in offsets]
        warped, weights, pair = temporal_inputs(
            jnp.asarray(np.stack(earlier)), flows.backward, flows.forward, flows.present
        )
        held = {"warped": warped, "weights": weights, "weight": settings.temporal_weight}
        targets = {**base, "content": content, "temporal": held}
        start = warped[0] if index > 0 else first_start(frame, config)
        x, terms = run_steps(step, params, targets, start, tx, config.steps, tick)
        written = quantised(x)
        error = None
        if index > 0:
            error = float(warping_error(written, previous[index - 1], flows.backward[0], pair[0]))
        previous[index] = written
        for old in [i for i in previous if i <= index - max(offsets)]:
            del previous[old]
        seconds = {"flow": flows.seconds, "steps": time.perf_counter() - began}
        values = {name: float(value) for name, value in terms.items()}
        yield FrameResult(index, written, values, error, seconds)
