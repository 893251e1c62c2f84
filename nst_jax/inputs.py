"""What a batch run optimises and towards what: the batch of contents, each image's styles
(colour-adapted, scaled per scale), starting images, and each scale's targets.

Styles are scaled per scale: without ``style_scale`` a style keeps its loaded size at the full
scale and shrinks with the content at coarser ones, so a texture keeps its size relative to
the image from scale to scale (else what a coarse scale paints is too coarse for the next).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import color, image, multiscale
from nst_jax.config import StyleConfig
from nst_jax.objective import (
    WEIGHT_FIELDS,
    Params,
    blend_grams,
    check_size,
    content_features,
    style_targets,
    used_layers,
)


class Batch(NamedTuple):
    """The images of one run, as the optimisation sees them.

    Attributes:
      content: ``(N, H, W, 3)`` content images as given (colours restored from these).
      run_content: ``(N, H, W, 3)`` content as optimised (grey under luminance transfer).
      style_sets: each image's style arrays (one, or the K of a blend).
      single: one content image without a sweep: results drop the batch axis.
    """

    content: jax.Array
    run_content: jax.Array
    style_sets: list[list[jax.Array]]
    single: bool


def as_batch(name: str, images: jax.Array | np.ndarray) -> jax.Array:
    """``(N, H, W, 3)`` float images; float32 unless float64 is given with x64 enabled."""
    images = jnp.asarray(images)
    if not jnp.issubdtype(images.dtype, jnp.floating):
        images = images.astype(jnp.float32)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{name}: expected (H, W, 3) or (N, H, W, 3), got {tuple(images.shape)}")
    return images


def make_batch(content, style, config: StyleConfig) -> Batch:
    """Contents as a batch (a single image repeated for a sweep) and each image's styles."""
    single = jnp.ndim(content) == 3 and config.sweep_size is None
    content = as_batch("content", content)
    check_size(used_layers(config), content.shape, "content")
    if config.sweep_size is not None and content.shape[0] == 1:
        content = jnp.broadcast_to(content, (config.sweep_size, *content.shape[1:]))
    sets = style_sets(style, content.shape[0], config)
    run_content, sets = colour_inputs(config, content, sets)
    return Batch(content, run_content, sets, single)


def style_sets(style, n: int, config: StyleConfig) -> list[list[jax.Array]]:
    """The style images of each of the ``n`` content images, as ``(h, w, 3)`` arrays.

    Without a blend each image has one style: one shared by all, or one per image. With
    ``config.style_blend`` every image shares the same K styles (K = number of weights).
    A style shared by several images is the same array object, so its Grams are computed once.
    """
    if isinstance(style, (list, tuple)):
        converted: dict[int, jax.Array] = {}  # by id: a shared style stays one object
        for s in style:
            if id(s) not in converted:
                converted[id(s)] = as_batch("style", s)[0]
        order = [converted[id(s)] for s in style]
    else:
        order = list(as_batch("style", style))
    if config.style_blend is not None:
        if len(order) != len(config.style_blend):
            raise ValueError(
                f"style_blend has {len(config.style_blend)} weights for {len(order)} style images"
            )
        return [order] * n
    if len(order) not in (1, n):
        raise ValueError(f"got {len(order)} style images for {n} content images; give 1 or {n}")
    return [[order[0]]] * n if len(order) == 1 else [[s] for s in order]


def colour_inputs(config: StyleConfig, content: jax.Array, sets):
    """Content and styles as the optimisation sees them under ``config.preserve_color``."""
    if config.preserve_color == "none":
        return content, sets
    if config.preserve_color == "histogram":
        adapt = color.match_histogram
        run_content = content
    else:  # luminance: grey images, the style's luminance matched to the content's
        adapt = lambda s, c: color.grey(color.match_luminance(s, c))  # noqa: E731
        run_content = color.grey(color.luminance(content))
    adapted = [[adapt(s, c) for s in styles] for styles, c in zip(sets, content, strict=True)]
    return run_content, adapted


def scaled_style(
    style: jax.Array, shape: tuple[int, int], style_scale: float | None, factor: float = 1.0
) -> jax.Array:
    """The style at the size a scale of content size ``shape`` (``factor`` times full) uses:
    with ``style_scale``, its longest side is that times the content's; else its loaded size
    times ``factor``."""
    if style_scale is None and factor == 1.0:
        return style
    if style_scale is None:
        longest = max(1, round(factor * max(style.shape[:2])))
    else:
        longest = max(1, round(style_scale * max(shape)))
    h, w = image.scaled_shape(style.shape[0], style.shape[1], longest)
    return multiscale.resize_batch(style[None], max(h, 1), max(w, 1))[0]


def batch_weights(config: StyleConfig, n: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    """``{"content", "style", "tv"}: (n,)`` term weights: a number broadcast, a sweep checked."""
    return {term: per_image(config, field, n, dtype) for term, field in WEIGHT_FIELDS.items()}


def per_image(config: StyleConfig, field: str, n: int, dtype=jnp.float32) -> jax.Array:
    """``(n,)`` values of a setting that may be swept."""
    value = np.asarray(getattr(config, field), dtype)
    if value.ndim == 1 and value.shape[0] != n:
        raise ValueError(f"{field} has {value.shape[0]} values for a batch of {n}")
    return jnp.broadcast_to(jnp.asarray(value), (n,))


def batch_targets(
    params: Params, batch: Batch, config: StyleConfig, shape: tuple[int, int]
) -> dict:
    """Targets of every image for the scale of size ``shape``: ``make_targets``' pytree with
    a leading batch axis."""
    n = batch.content.shape[0]
    factor = max(shape) / max(batch.content.shape[1:3])
    content = multiscale.resize_batch(batch.run_content, *shape)
    what = "content" if factor == 1.0 else f"content at the {shape[1]}x{shape[0]} px scale"
    check_size(used_layers(config), content.shape, what)
    once: dict[tuple, Mapping[str, jax.Array]] = {}
    grams = []
    for styles in batch.style_sets:
        per_style = []
        for s in styles:
            if id(s) not in once:
                scaled = scaled_style(s, shape, config.style_scale, factor)
                once[id(s)] = style_targets(params, scaled, config)
            per_style.append(once[id(s)])
        grams.append(blend_grams(per_style, config.style_blend))
    return {
        # One batched forward pass for the batch, not one call per image.
        "content": jax.vmap(lambda c: content_features(params, c, config))(content),
        "style": jax.tree.map(lambda *g: jnp.stack(g), *grams),
        "weights": batch_weights(config, n, content.dtype),
    }


def initial_images(config: StyleConfig, batch: Batch) -> jax.Array:
    """The starting images, at the content's size.

    ``"content"``: the content itself. ``"noise"``: uniform noise seeded by ``config.seed``,
    drawn once per image shape and shared by the batch, so an image starts the same whatever
    batch it runs in. ``"style"``: each image's (most heavily blended) style, resized.
    Anything else is an image file's path, loaded and resized.
    """
    content = batch.run_content
    n, height, width, _ = content.shape
    if config.init == "content":
        return content
    if config.init == "noise":
        noise = jax.random.uniform(jax.random.key(config.seed), content.shape[1:], content.dtype)
        return jnp.broadcast_to(noise, content.shape)
    if config.init == "style":
        pick = 0 if config.style_blend is None else int(np.argmax(config.style_blend))
        starts = [
            multiscale.resize_batch(styles[pick][None], height, width)[0]
            for styles in batch.style_sets
        ]
        return jnp.clip(jnp.stack(starts), 0.0, 1.0).astype(content.dtype)
    start = image.load(config.init)
    start = jnp.asarray(image.resize(start, height, width), content.dtype)
    if config.preserve_color == "luminance":
        start = color.grey(color.luminance(start))
    return jnp.broadcast_to(start, content.shape)
