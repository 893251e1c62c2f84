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

from nst_jax.config import StyleConfig
from nst_jax.core.extractors import feature_spec
from nst_jax.core.objective import WEIGHT_FIELDS, Params
from nst_jax.core.targets import (
    blend_grams,
    check_image,
    check_masks,
    check_size,
    checked_extra,
    content_features,
    layer_masks,
    masked_style_targets,
    objective_key,
    resize_masks,
    stack_trees,
)
from nst_jax.files import image
from nst_jax.run import color, multiscale, tiling
from nst_jax.run.style_cache import StyleCache, style_key


class Batch(NamedTuple):
    """The images of one run, as the optimisation sees them.

    Attributes:
      content: ``(N, H, W, 3)`` content images as given (colours restored from these).
      run_content: ``(N, H, W, 3)`` content as optimised (grey under luminance transfer).
      style_sets: each image's style arrays (one, or the K of a blend or of the regions).
      single: one content image without a sweep: results drop the batch axis.
      style_scales: each image's styles' ``style_scale`` (``None``: the config's).
      masks: ``(N, K, H, W)`` each image's K regions, or ``None``.
      style_masks: the K styles' own regions (each ``(h, w)`` or ``None``), or ``None``.
      extra: more targets for a custom loss, ``{name: (N, ...)}`` (:func:`batch_extra`).
    """

    content: jax.Array
    run_content: jax.Array
    style_sets: list[list[jax.Array]]
    single: bool
    style_scales: list[list[float | None]]
    masks: jax.Array | None = None
    style_masks: list[jax.Array | None] | None = None
    extra: dict | None = None


def as_batch(name: str, images: jax.Array | np.ndarray) -> jax.Array:
    """``(N, H, W, 3)`` images, checked (:func:`nst_jax.core.targets.check_image`): their
    dtype is kept (float64 needs x64 enabled)."""
    images = check_image(images, name, batched=True)
    return images[None] if images.ndim == 3 else images


def make_batch(
    content, style, config: StyleConfig, masks=None, style_masks=None, extra=None
) -> Batch:
    """Contents as a batch (a single image repeated for a sweep), each image's styles and
    their scales, the regions (``masks`` ``(K, H, W)`` shared or ``(N, K, H, W)``) and the
    extra targets (:func:`batch_extra`)."""
    one_content = jnp.ndim(content) == 3
    single = one_content and config.sweep_size is None
    content = as_batch("content", content)
    check_size(config, content.shape, "content")
    if config.sweep_size is not None and content.shape[0] == 1:
        content = jnp.broadcast_to(content, (config.sweep_size, *content.shape[1:]))
    n, height, width, _ = content.shape
    sets = style_sets(style, n, config, regions=masks is not None)
    shared = masks is not None or config.style_blend is not None
    scales = style_scale_sets(config, style, n, shared)
    if masks is not None:
        masks = jnp.asarray(masks, content.dtype)
        check_masks(config, masks if masks.ndim == 3 else masks[0], len(sets[0]))
        if masks.ndim == 3:
            masks = jnp.broadcast_to(masks, (n, *masks.shape))
        if masks.shape[0] != n:
            raise ValueError(f"got masks for {masks.shape[0]} images, a batch of {n}")
        masks = jax.vmap(lambda m: resize_masks(m, height, width))(masks)
        style_masks = list(style_masks) if style_masks is not None else [None] * len(sets[0])
        if len(style_masks) != len(sets[0]):
            raise ValueError(f"got {len(style_masks)} style masks for {len(sets[0])} styles")
    elif style_masks is not None:
        raise ValueError("style_masks choose a style's region for a content region: give masks")
    run_content, sets = colour_inputs(config, content, sets)
    extra = batch_extra(extra, n, one_content)
    return Batch(content, run_content, sets, single, scales, masks, style_masks, extra)


def batch_extra(extra, n: int, one_content: bool) -> dict | None:
    """Extra targets with a leading axis of the batch's ``n`` images: those of one content
    image (given without that axis) are repeated for each image of its sweep."""
    if extra is None:
        return None
    extra = checked_extra(extra)
    leaves = jax.tree.map(jnp.asarray, extra)
    if one_content:
        return jax.tree.map(lambda a: jnp.broadcast_to(a, (n, *a.shape)), leaves)
    for name, tree in leaves.items():
        for leaf in jax.tree.leaves(tree):
            if leaf.ndim == 0 or leaf.shape[0] != n:
                raise ValueError(
                    f"extra_targets[{name!r}]: one entry per image needed, a leading axis of "
                    f"{n}, got shape {tuple(leaf.shape)}"
                )
    return leaves


def per_style(config: StyleConfig, field: str, count: int, default) -> list:
    """``config``'s per-style setting (``style_weights``, ``style_scales``) as ``count``
    values, one per style given, in order; ``default`` where none is set."""
    values = getattr(config, field)
    if values is None:
        return [default] * count
    if len(values) != count:
        raise ValueError(f"{field} has {len(values)} values for {count} styles")
    return [default if v is None else v for v in values]


def style_scale_sets(config: StyleConfig, style, n: int, shared: bool) -> list[list[float | None]]:
    """Each of the ``n`` images' styles' ``style_scale``: ``config.style_scales``' value for
    that style, else ``config.style_scale``. ``shared``: every image has every style (a blend
    or regions), else one each."""
    given = _given(style)
    scales = per_style(config, "style_scales", len(given), config.style_scale)
    if shared:
        return [scales] * n
    return [[scales[0]]] * n if len(given) == 1 else [[v] for v in scales]


def _given(style) -> list:
    """The style images as given: a sequence, or the rows of one array."""
    return list(style) if isinstance(style, (list, tuple)) or jnp.ndim(style) == 4 else [style]


def style_sets(style, n: int, config: StyleConfig, regions: bool = False) -> list[list[jax.Array]]:
    """The style images of each of the ``n`` content images, as ``(h, w, 3)`` arrays.

    Without a blend each image has one style: one shared by all, or one per image. With
    ``config.style_blend`` (or ``regions``: masks) every image shares the same K styles.
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
    if regions:
        return [order] * n
    if config.style_blend is not None:
        config.check_style_count(len(order))
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


def batch_weights(
    config: StyleConfig, n: int, dtype=jnp.float32, regions: int | None = None
) -> dict[str, jax.Array]:
    """``{"content", "style", "tv"}: (n,)`` term weights: a number broadcast, a sweep checked.

    ``config.style_weights`` give each region's weight (``"regions"``, ``(n, regions)``) when
    there are regions, else multiply each image's style weight (one per style: 1 shared by
    all images, or n).
    """
    weights = {term: per_image(config, field, n, dtype) for term, field in WEIGHT_FIELDS.items()}
    if regions is not None:
        values = jnp.asarray(per_style(config, "style_weights", regions, 1.0), dtype)
        return {**weights, "regions": jnp.broadcast_to(values, (n, regions))}
    if config.style_weights is not None:
        if len(config.style_weights) not in (1, n):
            raise ValueError(
                f"style_weights has {len(config.style_weights)} values for "
                f"{n} images with one style each"
            )
        weights["style"] = weights["style"] * jnp.asarray(config.style_weights, dtype)
    return weights


def per_image(config: StyleConfig, field: str, n: int, dtype=jnp.float32) -> jax.Array:
    """``(n,)`` values of a setting that may be swept."""
    value = np.asarray(getattr(config, field), dtype)
    if value.ndim == 1 and value.shape[0] != n:
        raise ValueError(f"{field} has {value.shape[0]} values for a batch of {n}")
    return jnp.broadcast_to(jnp.asarray(value), (n,))


def batch_targets(
    params: Params,
    batch: Batch,
    config: StyleConfig,
    shape: tuple[int, int],
    tile: int | None = None,
    cache: StyleCache | None = None,
) -> dict:
    """Targets of every image for the scale of size ``shape``: ``make_targets``' pytree with
    a leading batch axis. With ``tile``, features and Grams of images larger than a tile are
    computed tile by tile (:mod:`nst_jax.run.tiling`); with ``cache``, a style's targets
    computed by an earlier run are reused."""
    n = batch.content.shape[0]
    factor = max(shape) / max(batch.content.shape[1:3])
    content = multiscale.resize_batch(batch.run_content, *shape)
    what = "content" if factor == 1.0 else f"content at the {shape[1]}x{shape[0]} px scale"
    check_size(config, content.shape, what)
    grams = _style_statistics(params, batch, config, (shape, factor), tile, cache)
    regions = None if batch.masks is None else batch.masks.shape[1]
    if tile is not None:
        per_image = [
            tiling.tiled_features(params, c, config.content_layers, feature_spec(config), tile)
            for c in content
        ]
        features = stack_trees(per_image)
    else:  # one batched forward pass for the batch, not one call per image
        features = jax.vmap(lambda c: content_features(params, c, config))(content)
    targets = {
        "content": features,
        "style": stack_trees(grams),
        "weights": batch_weights(config, n, content.dtype, regions),
        "key": batch_keys(config, n),
        **(batch.extra or {}),
    }
    if batch.masks is not None:
        masks = jax.vmap(lambda m: resize_masks(m, *shape))(batch.masks)
        targets["masks"] = jax.vmap(
            lambda m: layer_masks(m, config.style_layers, config.extractor)
        )(masks)
    return targets


def batch_keys(config: StyleConfig, n: int) -> jax.Array:
    """``(n,)`` PRNG keys, image ``i``'s :func:`nst_jax.core.targets.objective_key` of its
    seed (``config.seed``, or its own of a seed per image)."""
    seeds = config.seed if isinstance(config.seed, tuple) else (config.seed,) * n
    if len(seeds) != n:
        raise ValueError(f"seed has {len(seeds)} values for a batch of {n}")
    keys = {seed: objective_key(seed) for seed in set(seeds)}
    return jnp.stack([keys[seed] for seed in seeds])


def _style_statistics(params, batch: Batch, config: StyleConfig, scale, tile, cache) -> list:
    """Each image's style targets at this scale (``(shape, factor)``): a blend of its
    styles' or, with regions, their stack; each style computed once per call."""
    shape, factor = scale
    style_masks = batch.style_masks or [None] * len(batch.style_sets[0])
    once: dict[tuple, Mapping[str, jax.Array]] = {}
    grams = []
    for styles, scales in zip(batch.style_sets, batch.style_scales, strict=True):
        per_style = []
        for k, (s, style_scale) in enumerate(zip(styles, scales, strict=True)):
            key = (id(s), style_scale, k if batch.masks is not None else None)
            if key not in once:
                scaled = scaled_style(s, shape, style_scale, factor)
                mask = style_masks[k] if batch.masks is not None else None
                once[key] = _one_style(params, scaled, mask, config, tile, cache)
            per_style.append(once[key])
        if batch.masks is not None:
            grams.append(stack_trees(per_style))
        else:
            grams.append(blend_grams(per_style, config.style_blend))
    return grams


def _one_style(params, style, mask, config: StyleConfig, tile, cache: StyleCache | None):
    """One style's targets: tiled when larger than a tile, from ``cache`` when there."""
    if tile is not None and max(style.shape[:2]) > tile:
        check_size(config, style.shape, "style", style=True)
        compute = lambda: tiling.tiled_grams(  # noqa: E731
            params, style, config.style_layers, feature_spec(config), tile
        )
    else:
        compute = lambda: masked_style_targets(params, style, config, mask)  # noqa: E731
    if cache is None:
        return compute()
    return cache.get(style_key(style, mask, tile, config), compute)


def initial_images(config: StyleConfig, batch: Batch) -> jax.Array:
    """The starting images, at the content's size.

    ``"content"``: the content itself. ``"noise"``: uniform noise seeded by ``config.seed``
    (or by each image's own, when it gives one per image),
    drawn once per image shape and shared by the batch, so an image starts the same whatever
    batch it runs in. ``"style"``: each image's (most heavily blended) style, resized.
    Anything else is an image file's path, loaded and resized.
    """
    content = batch.run_content
    n, height, width, _ = content.shape
    if config.init == "content":
        return content
    if config.init == "noise":
        if isinstance(config.seed, tuple):  # each image's own seed
            if len(config.seed) != n:
                raise ValueError(f"seed has {len(config.seed)} values for a batch of {n}")
            draw = lambda s: jax.random.uniform(jax.random.key(s), content.shape[1:], content.dtype)  # noqa: E731
            return jnp.stack([draw(s) for s in config.seed])
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
