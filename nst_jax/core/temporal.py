"""Temporal consistency for video, per frame and pure: warping, consistency weights, losses.

Ruder, Dosovitskiy & Brox, "Artistic style transfer for videos" (GCPR 2016;
https://arxiv.org/abs/1604.08610). A flow field is ``(H, W, 2)``, ``(dx, dy)`` in pixels,
defined at the pixels of the frame it starts from: the *backward* flow ``w_hat`` of frame
``i`` points from each pixel of frame ``i`` to where it was in frame ``i - 1``, the
*forward* flow ``w`` from each pixel of frame ``i - 1`` to frame ``i``.

- :func:`warp` samples an image at ``p + flow(p)`` (bilinear; ``map_coordinates``): the
  previous stylised frame warped by the backward flow lies over frame ``i``.
- :func:`consistency_weights` is the paper's rule (its section 3.2): weight 0 where
  ``|w~ + w_hat|^2 > 0.01 (|w~|^2 + |w_hat|^2) + 0.5`` (a disocclusion: the flows do not
  cancel, with ``w~(p) = w(p + w_hat(p))``), where
  ``|grad u_hat|^2 + |grad v_hat|^2 > 0.01 |w_hat|^2 + 0.002`` (a motion boundary), and
  where ``p + w_hat(p)`` leaves the frame (the pixel entered the view); 1 elsewhere.
- :func:`temporal_loss` is the short-term loss ``(1/D) sum_k c_k (x_k - omega_k)^2``
  (``D = H * W * 3``), and the long-term loss is its sum over the offsets ``J`` (such as
  1, 2, 4) with :func:`long_term_weights`, ``c_long(i-j) = max(c(i-j) - sum_{k in J, k < j}
  c(i-k), 0)``: each pixel is held to the nearest earlier frame that saw it.

The losses take the image in [0, 1]; their weights are converted from the paper's (which
works on 0-255 values) in :mod:`nst_jax.video.loop`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy import ndimage

# The paper's thresholds (Ruder et al. 2016, equations 4 and 5).
DISOCCLUSION_SCALE, DISOCCLUSION_OFFSET = 0.01, 0.5
BOUNDARY_SCALE, BOUNDARY_OFFSET = 0.01, 0.002


def _check_flow(flow: jax.Array, height: int, width: int, what: str) -> None:
    if flow.shape != (height, width, 2):
        raise ValueError(f"{what}: expected ({height}, {width}, 2), got {tuple(flow.shape)}")


def sample_points(flow: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(rows, cols)``: where ``p + flow(p)`` lands, for every pixel ``p``."""
    height, width = flow.shape[:2]
    rows, cols = jnp.meshgrid(
        jnp.arange(height, dtype=flow.dtype), jnp.arange(width, dtype=flow.dtype), indexing="ij"
    )
    return rows + flow[..., 1], cols + flow[..., 0]


def warp(image: jax.Array, flow: jax.Array) -> jax.Array:
    """``image`` sampled at ``p + flow(p)``: bilinear, edges extended (``mode="nearest"``).

    Args:
      image: ``(H, W, C)`` (or ``(H, W)``), the frame the flow points into.
      flow: ``(H, W, 2)``, ``(dx, dy)`` at the pixels of the frame to cover.

    Returns:
      ``image``'s values over the flow's pixels, shaped ``image``'s.
    """
    _check_flow(flow, *image.shape[:2], "flow")
    rows, cols = sample_points(flow.astype(image.dtype))
    sample = lambda channel: ndimage.map_coordinates(  # noqa: E731
        channel, [rows, cols], order=1, mode="nearest"
    )
    if image.ndim == 2:
        return sample(image)
    return jnp.stack([sample(image[..., k]) for k in range(image.shape[-1])], axis=-1)


def consistency_weights(forward_flow: jax.Array, backward_flow: jax.Array) -> jax.Array:
    """Ruder et al.'s consistency weights of frame ``i``: ``(H, W)``, 1 where the backward
    flow can be trusted, 0 at disocclusions, motion boundaries and pixels new to the view.

    Args:
      forward_flow: ``(H, W, 2)``, frame ``i - 1`` -> frame ``i``, at frame ``i - 1``'s pixels.
      backward_flow: ``(H, W, 2)``, frame ``i`` -> frame ``i - 1``, at frame ``i``'s pixels.
    """
    height, width = backward_flow.shape[:2]
    _check_flow(forward_flow, height, width, "forward_flow")
    forward_there = warp(forward_flow, backward_flow)  # w~(p) = w(p + w_hat(p))
    both = jnp.sum((forward_there + backward_flow) ** 2, axis=-1)
    each = jnp.sum(forward_there**2, axis=-1) + jnp.sum(backward_flow**2, axis=-1)
    disoccluded = both > DISOCCLUSION_SCALE * each + DISOCCLUSION_OFFSET
    # Central differences inside, one-sided at the edges (numpy.gradient's rule).
    grad_u = jnp.gradient(backward_flow[..., 0])
    grad_v = jnp.gradient(backward_flow[..., 1])
    variation = sum(g**2 for g in (*grad_u, *grad_v))
    speed = jnp.sum(backward_flow**2, axis=-1)
    boundary = variation > BOUNDARY_SCALE * speed + BOUNDARY_OFFSET
    rows, cols = sample_points(backward_flow)
    outside = (rows < 0) | (rows > height - 1) | (cols < 0) | (cols > width - 1)
    return jnp.where(disoccluded | boundary | outside, 0.0, 1.0).astype(backward_flow.dtype)


def long_term_weights(weights: jax.Array) -> jax.Array:
    """Ruder et al.'s long-term weights: ``(J, H, W)`` consistency weights, the offsets in
    increasing order (such as 1, 2, 4), to ``c_long[j] = max(c[j] - sum_{k < j} c[k], 0)``."""
    earlier = jnp.cumsum(weights, axis=0) - weights
    return jnp.maximum(weights - earlier, 0.0)


def temporal_loss(x: jax.Array, warped: jax.Array, weights: jax.Array) -> jax.Array:
    """``sum_j (1/D) sum c_j * (x - warped_j)^2``, with ``D = H * W * 3``.

    Args:
      x: ``(H, W, 3)``, the frame being optimised.
      warped: ``(J, H, W, 3)``, earlier stylised frames warped onto ``x`` (or ``(H, W, 3)``).
      weights: ``(J, H, W)`` per-pixel weights (or ``(H, W)``): :func:`consistency_weights`,
        or :func:`long_term_weights` of several.

    Returns:
      The unweighted loss, a scalar.
    """
    if warped.ndim == 3:
        warped, weights = warped[None], weights[None]
    if warped.shape[1:] != x.shape or weights.shape != warped.shape[:-1]:
        raise ValueError(
            f"temporal_loss: x {tuple(x.shape)}, warped {tuple(warped.shape)} and weights "
            f"{tuple(weights.shape)} do not match"
        )
    squared = jnp.sum((x[None] - warped) ** 2, axis=-1)  # over channels
    return jnp.sum(weights * squared) / x.size
