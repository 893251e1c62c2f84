"""Scores that compare results: for video, the warping error (more metrics join here as the
methods that need them do).

The warping error measures flicker: how far each stylised frame is from the previous one
carried along the motion, over the pixels the flow can be trusted at (Lai et al., "Learning
Blind Video Temporal Consistency", ECCV 2018, their E_warp).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from nst_jax.core import temporal


def warping_error(
    frame: jax.Array, previous: jax.Array, backward_flow: jax.Array, weights: jax.Array
) -> jax.Array:
    """One pair's error: ``sum c ||frame - warp(previous)||^2 / sum c`` (squared over the
    channels, averaged over the counted pixels); 0 where no pixel counts.

    Args:
      frame: ``(H, W, 3)``, stylised frame ``i``.
      previous: ``(H, W, 3)``, stylised frame ``i - 1``.
      backward_flow: ``(H, W, 2)``, content frame ``i`` -> ``i - 1``.
      weights: ``(H, W)``, :func:`nst_jax.core.temporal.consistency_weights` of the pair.
    """
    squared = jnp.sum((frame - temporal.warp(previous, backward_flow)) ** 2, axis=-1)
    counted = jnp.sum(weights)
    return jnp.where(counted > 0, jnp.sum(weights * squared) / jnp.maximum(counted, 1.0), 0.0)


def clip_warping_error(
    frames: Sequence[jax.Array], backward: Sequence[jax.Array], forward: Sequence[jax.Array]
) -> float:
    """The mean of :func:`warping_error` over the consecutive pairs of ``frames``;
    ``backward[k]`` and ``forward[k]`` are the content flows between frames ``k`` and
    ``k + 1`` (``k + 1 -> k`` and ``k -> k + 1``); ``nan`` for fewer than two frames."""
    if len(frames) < 2:
        return float("nan")
    errors = []
    for k in range(len(frames) - 1):
        weights = temporal.consistency_weights(forward[k], backward[k])
        errors.append(warping_error(frames[k + 1], frames[k], backward[k], weights))
    return float(jnp.mean(jnp.stack(errors)))
