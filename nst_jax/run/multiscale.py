"""Coarse-to-fine: the schedule of sizes, and carrying a run from one size to the next.

Optimising first at small sizes sets the large-scale arrangement of the style cheaply (a VGG
pass at half the side costs a quarter), then each larger scale only adds detail. Images and
Adam's moments are resized bilinearly between scales; L-BFGS restarts its memory, whose
curvature pairs belong to the old size.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from nst_jax.config import SCALE_RATIO, StyleConfig


def scale_count(longest: int, config: StyleConfig) -> int:
    """Number of scales: ``config.scales``, or as many as fit above ``config.min_size``."""
    if config.min_size is None:
        return config.scales
    if config.min_size >= longest:
        return 1
    # The 1e-9 keeps an exact power (256 -> 128 is two sqrt(2) steps) from rounding down.
    return 1 + int(math.log(longest / config.min_size) / math.log(SCALE_RATIO) + 1e-9)


def scale_shapes(height: int, width: int, config: StyleConfig) -> list[tuple[int, int]]:
    """``(height, width)`` of each scale, smallest first; the last is ``(height, width)``.

    Consecutive sizes differ by ``SCALE_RATIO`` (sqrt 2) in each side, aspect ratio kept.
    """
    n = scale_count(max(height, width), config)
    shapes = []
    for i in range(n):
        factor = SCALE_RATIO ** (i - (n - 1))
        shapes.append((max(1, round(height * factor)), max(1, round(width * factor))))
    return shapes


def scale_steps(height: int, width: int, config: StyleConfig) -> list[int]:
    """Steps at each scale of :func:`scale_shapes`: ``coarse_steps`` (default ``steps``) at
    each smaller one, ``steps`` at full size."""
    n = len(scale_shapes(height, width, config))
    return [config.coarse_steps or config.steps] * (n - 1) + [config.steps]


def total_steps(height: int, width: int, config: StyleConfig) -> int:
    """Steps of a run over all its scales."""
    return sum(scale_steps(height, width, config))


def resize_batch(images: jax.Array, height: int, width: int) -> jax.Array:
    """Bilinear resize of ``(N, H, W, C)`` images (antialiased when shrinking)."""
    if images.shape[1:3] == (height, width):
        return images
    shape = (images.shape[0], height, width, images.shape[-1])
    return jax.image.resize(images, shape, method="linear", antialias=True)


def carry_state(opt_states, height: int, width: int):
    """Adam's per-pixel moments resized to the next scale; other leaves (the step count) kept.

    Bilinear interpolation keeps the second moment non-negative.
    """

    def resize_leaf(leaf):
        if leaf.ndim == 4 and leaf.shape[-1] == 3:
            return resize_batch(leaf, height, width)
        return leaf

    return jax.tree.map(resize_leaf, opt_states)


def upsample_images(images: jax.Array, start: jax.Array, height: int, width: int) -> jax.Array:
    """The previous scale's result carried to the next size, in [0, 1].

    What is upsampled is the *change* the optimisation made to the starting image
    (``images - start`` at the old size), added to the starting image at the new size. The
    start's own fine detail (the content photo's, by default) is therefore kept instead of
    being blurred by interpolation; only the stylisation, which the coarse scale computed, is
    interpolated. (Upsampling the image itself loses that detail, and the loss jumps at the
    switch: scripts/README.md, "Optimisers and coarse-to-fine".)

    Args:
      images: ``(N, h, w, 3)`` results of the previous scale.
      start: ``(N, H0, W0, 3)`` starting images at full size.
      height: the next scale's height.
      width: its width.
    """
    old_start = resize_batch(start, *images.shape[1:3])
    change = resize_batch(images - old_start, height, width)
    return jnp.clip(resize_batch(start, height, width) + change, 0.0, 1.0)
