"""The objective for one image: its targets, and the loss that is minimised.

A run's targets are a pytree, computed once before the loop::

    {"content": {layer: (h, w, c)},   # the content image's features
     "style":   {layer: (c, c)},      # the style image's Gram matrices (or a blend of several)
     "weights": {"content", "style", "tv"}}   # the three term weights, as scalars

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

from nst_jax import losses, vgg
from nst_jax.config import StyleConfig

CONTENT_LAYERS: tuple[str, ...] = StyleConfig().content_layers
STYLE_LAYERS: tuple[str, ...] = StyleConfig().style_layers
# The settings a compiled loss or step depends on; every other field only changes values
# (traced) or the loop around the step.
STATIC_FIELDS = (
    "style_loss",
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


def check_size(layers: Sequence[str], shape: Sequence[int], what: str = "image") -> None:
    """Raise ``ValueError`` when an image is too small for the deepest of ``layers``."""
    need = 2 ** vgg.pools_before(layers)
    height, width = shape[-3], shape[-2]
    if min(height, width) < need:
        raise ValueError(
            f"{what} is {width}x{height} px; the layers used need both sides >= {need} px"
        )


# Per style loss: the style's statistic computed once (the target), the image's statistic in
# the loss, and the loss over layers (all in losses.py).
STYLE_TERMS = {
    "gram": (losses.gram_matrix, losses.gram_matrix, losses.style_loss),
    "mean_std": (losses.feature_moments, losses.feature_moments, losses.mean_std_loss),
    "w2": (losses.w2_target, losses.gaussian_stats, losses.w2_loss),
    "mrf": (losses.mrf_target, lambda features: features, losses.mrf_loss),
}


@functools.partial(jax.jit, static_argnames=("layers", "pooling", "statistic"))
def _features(params: Params, image: jax.Array, layers: tuple[str, ...], pooling: str, statistic):
    features = vgg.image_features(params, image, layers, pooling)
    if statistic is None:
        return features
    return {name: STYLE_TERMS[statistic][0](f) for name, f in features.items()}


def style_targets(params: Params, style: jax.Array, config: StyleConfig) -> dict[str, Any]:
    """``{layer: statistic}`` of one ``(h, w, 3)`` style image for ``config.style_loss``
    (jitted): ``(c, c)`` Gram matrices for the tutorial's loss."""
    style = jnp.asarray(style)
    check_size(config.style_layers, style.shape, "style")
    return _features(params, style, config.style_layers, config.pooling, config.style_loss)


def content_features(
    params: Params, content: jax.Array, config: StyleConfig
) -> dict[str, jax.Array]:
    """``{layer: (h, w, c)}`` features of one ``(H, W, 3)`` content image (jitted)."""
    content = jnp.asarray(content)
    check_size(used_layers(config), content.shape, "content")
    return _features(params, content, config.content_layers, config.pooling, None)


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
) -> dict:
    """Targets of one image: the content's features, the style's Grams, the term weights.

    Args:
      params: VGG19 params (``nst_jax.load_vgg19``), direct or :func:`vgg.prepare_params`'d.
      content: ``(H, W, 3)`` float RGB in [0, 1].
      style: ``(h, w, 3)`` float RGB in [0, 1] (any size: Grams do not depend on it), or with
        ``config.style_blend`` the K styles to blend.
      config: layers, pooling, term weights and blend (single values, not a sweep).

    Returns:
      ``{"content": {layer: (h, w, c)}, "style": {layer: statistic}, "weights": {...}}``;
      the statistic is ``config.style_loss``'s: ``(c, c)`` Grams for the tutorial's.
    """
    content = jnp.asarray(content)
    styles = list(style) if config.style_blend is not None else [style]
    grams = blend_grams([style_targets(params, s, config) for s in styles], config.style_blend)
    return {
        "content": content_features(params, content, config),
        "style": grams,
        "weights": term_weights(config, content.dtype),
    }


def _layer_weights(layers: Sequence[str], weights: Sequence[float] | None):
    return None if weights is None else dict(zip(layers, weights, strict=True))


def loss_fn(
    params: Params, x: jax.Array, targets: Targets, config: StyleConfig
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The total loss of one image and its three weighted terms. Pure; differentiable in ``x``.

    Args:
      params: VGG19 params (direct or :func:`vgg.prepare_params`'d: Winograd on CPU).
      x: ``(H, W, 3)`` float RGB image, the one being optimised.
      targets: from :func:`make_targets` (term weights included).
      config: layers, per-layer weights, pooling and ``remat`` (static under ``jax.jit``).

    Returns:
      ``(loss, {"content", "style", "tv"})``, scalars; ``loss`` is their sum.
    """
    features = vgg.image_features(params, x, used_layers(config), config.pooling, config.remat)
    _, statistic, style_loss = STYLE_TERMS[config.style_loss]
    style = {name: statistic(features[name]) for name in config.style_layers}
    weights = targets["weights"]
    terms = {
        "content": losses.content_loss(
            {name: features[name] for name in config.content_layers},
            targets["content"],
            weights["content"],
            _layer_weights(config.content_layers, config.content_layer_weights),
        ),
        "style": style_loss(
            style,
            targets["style"],
            weights["style"],
            _layer_weights(config.style_layers, config.style_layer_weights),
        ),
        "tv": losses.total_variation_loss(x, weights["tv"]),
    }
    return terms["style"] + terms["content"] + terms["tv"], terms
