"""The objective for one image: its targets, and the loss that is minimised.

A run's targets are a pytree, computed once before the loop::

    {"content": {layer: (h, w, c)},   # the content image's features
     "style":   {layer: (c, c)},      # the style image's Gram matrices (or a blend of several)
     "weights": {"content", "style", "tv"}}   # the three term weights, as scalars

With spatial control (``masks``: K content regions, each paired with a style), ``"style"``
holds K statistics per layer, ``{layer: (K, c, c)}``, and two entries are added:
``"masks": {layer: (K, h, w)}`` (each region at the layer's resolution) and
``"weights"["regions"]: (K,)``. Pixels outside every region have no style term.

With ``config.normalize_gradients`` (jcjohnson/neural-style's ``-normalize_gradients``), each
content and style layer's features pass through :func:`losses.normalize_gradient`: the
loss's value is unchanged, and the gradient reaching each (term, layer) is a unit-L1 direction
times that layer's coefficient (term weight x layer weight / n_layers).

The term weights travel with the targets rather than the config so that they stay traced: a
batch that sweeps them is ``jax.vmap`` over targets, one compiled program. ``loss_fn`` reads
everything structural (layers, per-layer weights, pooling, remat) from the config, which is
static under ``jax.jit``.

Loss (the TensorFlow tutorial's, https://www.tensorflow.org/tutorials/generative/style_transfer;
Gatys et al., "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016)::

    style_weight / n_style * sum_l mean((G_l(x) - A_l)^2)
      + content_weight / n_content * sum_l mean((F_l(x) - P_l)^2)
      + tv_weight * total_variation(x)
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from nst_jax.config import StyleConfig
from nst_jax.core import geometry, losses, vgg
from nst_jax.core.layers import LAYERS
from nst_jax.core.style_terms import style_term

CONTENT_LAYERS: tuple[str, ...] = StyleConfig().content_layers
STYLE_LAYERS: tuple[str, ...] = StyleConfig().style_layers
# The settings a compiled loss or step depends on; every other field only changes values
# (traced) or the loop around the step.
STATIC_FIELDS = (
    "style_loss",
    "normalize_gradients",
    "content_layers",
    "style_layers",
    "content_layer_weights",
    "style_layer_weights",
    "pooling",
    "remat",
    "optimizer",
    "beta1",
    "beta2",
    "epsilon",
    "lbfgs_memory",
    "steps_per_call",
)
TERMS = ("content", "style", "tv")
# Each term's weight, by the config field that sets it.
WEIGHT_FIELDS = {"content": "content_weight", "style": "style_weight", "tv": "tv_weight"}

Params = Mapping[str, Mapping[str, jax.Array]]
Targets = Mapping[str, Mapping[str, jax.Array]]


def static_config(config: StyleConfig) -> StyleConfig:
    """``config`` with every field outside ``STATIC_FIELDS`` at its default: a cache key that
    is equal for configs that compile to the same program."""
    return StyleConfig(**{field: getattr(config, field) for field in STATIC_FIELDS})


def used_layers(config: StyleConfig) -> tuple[str, ...]:
    """Style and content layers, each once, in that order."""
    return tuple(dict.fromkeys(config.style_layers + config.content_layers))


# Images are compared with [0, 1] allowing rounding of this much (a resize in float32).
RANGE_SLACK = 1e-5
# A style is a target only, never optimised or clipped: it may leave [0, 1] a little (a style
# whose colours were matched to the content's does), but not as far as 0-255 values do.
STYLE_RANGE = (-1.0, 2.0)


def check_image(image, what: str = "image", batched: bool = False) -> jax.Array:
    """``image`` as a JAX array, or ``ValueError`` in one line naming ``what``: RGB in
    [0, 1] with floating-point values, ``(H, W, 3)`` (or ``(N, H, W, 3)`` when ``batched``),
    finite; a style (``what`` starting "style") within :data:`STYLE_RANGE`. Values are
    checked only when concrete (not under a transformation)."""
    image = jnp.asarray(image)
    shapes = "(H, W, 3) or (N, H, W, 3)" if batched else "(H, W, 3)"
    if image.ndim not in ((3, 4) if batched else (3,)):
        raise ValueError(f"{what}: expected {shapes} RGB, got shape {tuple(image.shape)}")
    if image.shape[-1] != 3:
        raise ValueError(f"{what}: expected 3 channels (RGB), got {image.shape[-1]}")
    if not jnp.issubdtype(image.dtype, jnp.floating):
        raise ValueError(
            f"{what}: expected floating-point RGB in [0, 1], got {image.dtype} (divide by 255)"
        )
    if isinstance(image, jax.core.Tracer) or image.size == 0:
        return image
    low, high, finite = jax.device_get((jnp.min(image), jnp.max(image), jnp.isfinite(image).all()))
    if not finite:
        raise ValueError(f"{what}: has non-finite values (NaN or infinity)")
    lowest, highest = STYLE_RANGE if what.startswith("style") else (0.0, 1.0)
    if low < lowest - RANGE_SLACK or high > highest + RANGE_SLACK:
        hint = " (0-255 values? divide by 255)" if high > 2 else ""
        raise ValueError(f"{what}: values must lie in [0, 1], got {low:g} to {high:g}{hint}")
    return image


def min_side(config: StyleConfig, style: bool = False) -> int:
    """The fewest pixels an image's sides need under ``config``: every layer it passes
    through a non-empty map, and each style layer's map the positions the style term
    compares (3 x 3 patches for MRF). ``style``: the style image, which passes through the
    style layers only."""
    layers = config.style_layers if style else used_layers(config)
    patch = style_term(config.style_loss).min_side
    return max(geometry.smallest_side(layers), patch * geometry.smallest_side(config.style_layers))


def check_size(config: StyleConfig, shape: Sequence[int], what: str = "image", style=False):
    """Raise ``ValueError`` when an image of ``shape`` ``(..., H, W, 3)`` is too small for
    ``config`` (:func:`min_side`)."""
    need = min_side(config, style)
    height, width = shape[-3], shape[-2]
    if min(height, width) < need:
        raise ValueError(
            f"{what} is {width}x{height} px; the layers used need both sides >= {need} px"
        )


@functools.partial(jax.jit, static_argnames=("layers", "pooling", "statistic"))
def _features(params: Params, image: jax.Array, layers: tuple[str, ...], pooling: str, statistic):
    features = vgg.image_features(params, image, layers, pooling)
    if statistic is None:
        return features
    target = style_term(statistic).target
    return {name: target(f) for name, f in features.items()}


def style_targets(params: Params, style: jax.Array, config: StyleConfig) -> dict[str, Any]:
    """``{layer: statistic}`` of one ``(h, w, 3)`` style image for ``config.style_loss``
    (jitted): ``(c, c)`` Gram matrices for the tutorial's loss."""
    style = jnp.asarray(style)
    check_size(config, style.shape, "style", style=True)
    return _features(params, style, config.style_layers, config.pooling, config.style_loss)


def content_features(
    params: Params, content: jax.Array, config: StyleConfig
) -> dict[str, jax.Array]:
    """``{layer: (h, w, c)}`` features of one ``(H, W, 3)`` content image (jitted)."""
    content = jnp.asarray(content)
    check_size(config, content.shape, "content")
    return _features(params, content, config.content_layers, config.pooling, None)


def resize_masks(masks: jax.Array, height: int, width: int) -> jax.Array:
    """``(K, H, W)`` masks at ``height x width`` (bilinear, antialiased when shrinking), in
    [0, 1]: a mask drawn at another size than its image is resized to the image's."""
    masks = jnp.asarray(masks)
    if masks.shape[-2:] == (height, width):
        return masks
    shape = (*masks.shape[:-2], height, width)
    return jnp.clip(jax.image.resize(masks, shape, method="linear", antialias=True), 0.0, 1.0)


def layer_masks(masks: jax.Array, layers: Sequence[str]) -> dict[str, jax.Array]:
    """``{layer: (K, h, w)}``: ``(K, H, W)`` image-sized masks downsampled to each layer's
    resolution by 2x2 average pooling at each of the network's pools (Gatys et al. 2017
    downsample their guidance channels to each layer; pooling as the network does gives
    exactly the layer's size, odd sides included)."""
    pooled, out, done = masks[..., None], {}, 0
    for name in sorted(set(layers), key=LAYERS.index):
        for _ in range(geometry.pools_before((name,)) - done):
            pooled = vgg.pool_2x2(pooled, "avg")
            done += 1
        out[name] = pooled[..., 0]
    return {name: out[name] for name in layers}


def check_masks(config: StyleConfig, masks: jax.Array, n_styles: int) -> None:
    """Raise ``ValueError`` unless ``masks`` ``(K, H, W)`` can pair with ``n_styles`` styles."""
    reason = config.unmaskable()
    if reason is not None:
        raise ValueError(reason)
    if masks.ndim != 3:
        raise ValueError(f"masks: expected (K, H, W), got shape {tuple(masks.shape)}")
    if masks.shape[0] != n_styles:
        raise ValueError(f"got {masks.shape[0]} masks for {n_styles} styles; give one each")


@functools.partial(jax.jit, static_argnames=("layers", "pooling"))
def _guided_style(params: Params, style, mask, layers: tuple[str, ...], pooling: str):
    features = vgg.image_features(params, style, layers, pooling)
    masks = layer_masks(mask[None], layers)
    return {name: losses.guided_gram(f, masks[name][0]) for name, f in features.items()}


def masked_style_targets(
    params: Params, style: jax.Array, config: StyleConfig, mask: jax.Array | None = None
) -> dict[str, jax.Array]:
    """:func:`style_targets`, the Grams taken over the region ``mask`` ``(h', w')`` of the
    style image only (resized to the style's size); ``None``: the whole style."""
    if mask is None:
        return style_targets(params, style, config)
    style = jnp.asarray(style)
    check_size(config, style.shape, "style", style=True)
    mask = resize_masks(jnp.asarray(mask, style.dtype)[None], *style.shape[:2])[0]
    return _guided_style(params, style, mask, config.style_layers, config.pooling)


def blend_grams(grams: Sequence[Mapping[str, jax.Array]], weights: Sequence[float] | None):
    """``sum_k w_k G_k / sum_k w_k`` per layer: one style target from several styles.

    Weights ``(1, 0)`` give the first style's Grams exactly (``x * 1 + y * 0 == x``).
    """
    if weights is None:
        (only,) = grams
        return only
    total = sum(weights)
    return jax.tree.map(
        lambda *g: sum(w / total * x for w, x in zip(weights, g, strict=True)), *grams
    )


def term_weights(config: StyleConfig, dtype=jnp.float32) -> dict[str, jax.Array]:
    """``{"content", "style", "tv"}`` weights of one setting as scalars.

    Raises:
      ValueError: ``config`` sweeps a weight (one value per image): give each image's value.
    """
    if config.sweep_size is not None:
        raise ValueError("this config sweeps its settings: make targets per setting")
    return {
        term: jnp.asarray(getattr(config, field), dtype) for term, field in WEIGHT_FIELDS.items()
    }


def make_targets(
    params: Params,
    content: jax.Array,
    style: jax.Array | Sequence[jax.Array],
    config: StyleConfig,
    *,
    masks: jax.Array | None = None,
    style_masks: Sequence[jax.Array | None] | None = None,
) -> dict:
    """Targets of one image: the content's features, the style's Grams, the term weights.

    Args:
      params: VGG19 params (``nst_jax.load_vgg19``), direct or :func:`nst_jax.prepare_params`'d.
      content: ``(H, W, 3)`` float RGB in [0, 1].
      style: ``(h, w, 3)`` float RGB in [0, 1] (any size: Grams do not depend on it); with
        ``config.style_blend`` the K styles to blend; with ``masks`` the K styles of the
        regions.
      config: layers, pooling, term weights, blend, ``style_weights`` (single values, not a
        sweep).
      masks: ``(K, H, W)`` content regions in [0, 1], the k-th styled like the k-th style
        (resized to the content's size if drawn at another); ``config.style_weights`` weight
        the regions. Pixels outside every region keep the content. Gram loss only.
      style_masks: with ``masks``, K entries: ``(h', w')`` the region of that style image
        whose Grams are matched (resized to the style's size), or ``None`` for all of it.

    Returns:
      ``{"content": {layer: (h, w, c)}, "style": {layer: statistic}, "weights": {...}}``;
      the statistic is ``config.style_loss``'s: ``(c, c)`` Grams for the tutorial's. With
      masks, ``(K, c, c)`` Grams and ``"masks"`` (see the module's docstring).
    """
    content = check_image(content, "content")
    style = (
        [check_image(s, "style") for s in style]
        if masks is not None or (config.style_blend is not None)
        else check_image(style, "style")
    )
    weights = term_weights(config, content.dtype)
    targets = {"content": content_features(params, content, config), "weights": weights}
    if masks is not None:
        styles = list(style)
        masks = jnp.asarray(masks, content.dtype)
        check_masks(config, masks, len(styles))
        masks = resize_masks(masks, *content.shape[:2])
        style_masks = list(style_masks) if style_masks is not None else [None] * len(styles)
        grams = [
            masked_style_targets(params, s, config, m)
            for s, m in zip(styles, style_masks, strict=True)
        ]
        regions = config.style_weights or (1.0,) * len(styles)
        return {
            **targets,
            "style": jax.tree.map(lambda *g: jnp.stack(g), *grams),
            "masks": layer_masks(masks, config.style_layers),
            "weights": {**weights, "regions": jnp.asarray(regions, content.dtype)},
        }
    styles = list(style) if config.style_blend is not None else [style]
    grams = blend_grams([style_targets(params, s, config) for s in styles], config.style_blend)
    if config.style_weights is not None:
        (own,) = config.style_weights  # one style: its own weight multiplies the term's
        weights = {**weights, "style": weights["style"] * own}
    return {**targets, "style": grams, "weights": weights}


def _layer_weights(layers: Sequence[str], weights: Sequence[float] | None):
    return None if weights is None else dict(zip(layers, weights, strict=True))


def loss_fn(
    params: Params, x: jax.Array, targets: Targets, config: StyleConfig
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The total loss of one image and its three weighted terms. Pure; differentiable in ``x``.

    Args:
      params: VGG19 params (direct or :func:`nst_jax.prepare_params`'d: Winograd on CPU).
      x: ``(H, W, 3)`` float RGB image, the one being optimised.
      targets: from :func:`make_targets` (term weights included).
      config: layers, per-layer weights, pooling and ``remat`` (static under ``jax.jit``).

    Returns:
      ``(loss, {"content", "style", "tv"})``, scalars; ``loss`` is their sum.
    """
    features = vgg.image_features(params, x, used_layers(config), config.pooling, config.remat)
    weights = targets["weights"]
    content_weights = _layer_weights(config.content_layers, config.content_layer_weights)
    style_weights = _layer_weights(config.style_layers, config.style_layer_weights)
    content = _term_features(
        features,
        config.content_layers,
        content_weights,
        weights["content"],
        config.normalize_gradients,
    )
    style = _term_features(
        features, config.style_layers, style_weights, weights["style"], config.normalize_gradients
    )
    content_term = losses.content_loss(
        content, targets["content"], weights["content"], content_weights
    )
    if "masks" in targets:
        style_value = _regions_style_loss(style, targets, style_weights)
    else:
        term = style_term(config.style_loss)
        stats = {name: term.statistic(f) for name, f in style.items()}
        style_value = term.loss(stats, targets["style"], weights["style"], style_weights)
    terms = {
        "content": content_term,
        "style": style_value,
        "tv": losses.total_variation_loss(x, weights["tv"]),
    }
    return terms["style"] + terms["content"] + terms["tv"], terms


def _term_features(features, layers, layer_weights, weight, normalize: bool):
    """The features one term sees; with ``normalize``, each behind
    :func:`losses.normalize_gradient` with its coefficient in the term (weight x layer
    weight / n_layers)."""
    if not normalize:
        return {name: features[name] for name in layers}
    return {
        name: losses.normalize_gradient(
            features[name],
            weight * (1.0 if layer_weights is None else layer_weights[name]) / len(layers),
        )
        for name in layers
    }


def _regions_style_loss(style, targets: Targets, layer_weights) -> jax.Array:
    """The sum over regions k of the Gram style loss between the image's guided Grams over
    region k and style k's, weighted by style weight x region weight. A Python loop over the
    (few) regions: one region with an all-ones mask is today's loss bit for bit."""
    weights, masks = targets["weights"], targets["masks"]
    total = 0.0
    for k in range(weights["regions"].shape[0]):
        grams = {name: losses.guided_gram(f, masks[name][k]) for name, f in style.items()}
        target = {name: targets["style"][name][k] for name in style}
        total = total + losses.style_loss(
            grams, target, weights["style"] * weights["regions"][k], layer_weights
        )
    return total
