"""Style terms that compare whole feature distributions through sorts, for one image.

Each compares the distribution of an image's feature vectors at a layer with the style's,
not a summary of it (a Gram matrix, a Gaussian), and costs sorts rather than the
eigendecompositions of :func:`nst_jax.core.losses.w2_loss`:

- ``sw``: the sliced Wasserstein distance (Heitz, Vanhoey, Chambon & Belcour, "A Sliced
  Wasserstein Loss for Neural Texture Synthesis", CVPR 2021): the features projected on as
  many random unit directions as there are channels, drawn anew at every step, each
  projection's sorted values compared with the style's.
- ``efdm``: exact feature distribution matching (Zhang, Li, Zhou, Liu, Ma & Wang, "Exact
  Feature Distribution Matching for Arbitrary Style Transfer and Domain Generalization",
  CVPR 2022): each channel's values compared with the style's values of the same rank.
  Their loss, ``mse(x, sorted_style[rank(x)])``, equals the mean squared difference of the
  two sorted channels (a sum is the same in any order), which is how it is computed here;
  so it is ``sw`` on the channels' own axes, without randomness.
- ``moments``: central moment discrepancy (Kalischek, Wegner & Schindler, "In the light of
  feature distributions: moment matching for Neural Style Transfer", CVPR 2021): each
  channel's mean and central moments of orders 2 to 5 of the features passed through a
  sigmoid, compared by the L2 norm of each moment's difference over the channels. Their
  code takes VGG's activations before the ReLU; the extractors here return them after it,
  so the sigmoid sees ``relu(x)``.

Every loss is ``weight / n_layers * sum_l w_l * d_l``, as the tutorial's style term is
(:func:`nst_jax.core.losses.style_loss`). A style of another size than the image is compared
by its quantiles: its sorted values are interpolated linearly at the image's ``n``
quantile positions ``(i + 1/2) / n`` (for equal sizes, the values themselves). Heitz et al.
tile the example instead, which allows integer ratios only.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

MOMENT_ORDERS = 5  # Kalischek et al.'s K


def _flat(features: jax.Array) -> jax.Array:
    """``(h * w, c)`` positions of an ``(h, w, c)`` map, at least float32."""
    if features.ndim != 3:
        raise ValueError(f"expected an (h, w, c) feature map, got shape {tuple(features.shape)}")
    flat = features.reshape(-1, features.shape[-1])
    return flat.astype(jnp.promote_types(flat.dtype, jnp.float32))


def sorted_features(features: jax.Array) -> jax.Array:
    """``(h * w, c)``: each channel's values of an ``(h, w, c)`` map in ascending order (the
    style's side of ``efdm``; for ``sw``, whose directions change every step, the positions
    themselves are kept: :func:`flat_features`)."""
    return jnp.sort(_flat(features), axis=0)


def flat_features(features: jax.Array) -> jax.Array:
    """``(h * w, c)``: the style's positions, projected anew at every step by ``sw``."""
    return _flat(features)


def quantiles(sorted_values: jax.Array, count: int) -> jax.Array:
    """``(count, k)`` values at the quantile positions ``(i + 1/2) / count`` of ``(n, k)``
    columns sorted ascending, by linear interpolation between the ``n`` values' own
    positions ``(j + 1/2) / n`` (ends held); ``count == n`` returns the values exactly."""
    n = sorted_values.shape[0]
    if n == count:
        return sorted_values
    wanted = (jnp.arange(count) + 0.5) / count * n - 0.5  # in units of the n positions
    wanted = jnp.clip(wanted, 0.0, n - 1.0)
    below = jnp.floor(wanted).astype(jnp.int32)
    above = jnp.minimum(below + 1, n - 1)
    frac = (wanted - below)[:, None].astype(sorted_values.dtype)
    return sorted_values[below] * (1 - frac) + sorted_values[above] * frac


def sorted_distance(image_sorted: jax.Array, style_sorted: jax.Array) -> jax.Array:
    """Mean squared difference of two sets of sorted columns, the style's taken at the
    image's quantiles: the squared 1-D Wasserstein-2 distance of each column, averaged."""
    return jnp.mean(jnp.square(image_sorted - quantiles(style_sorted, image_sorted.shape[0])))


def efdm_distance(features: jax.Array, style_sorted: jax.Array) -> jax.Array:
    """``efdm``'s distance of one layer: ``(h, w, c)`` features against the style's
    :func:`sorted_features`."""
    return sorted_distance(jnp.sort(_flat(features), axis=0), style_sorted)


def random_directions(key: jax.Array, channels: int, dtype) -> jax.Array:
    """``(channels, channels)``: as many unit directions as channels, normal then
    normalised (Heitz et al.'s), one per row."""
    directions = jax.random.normal(key, (channels, channels), dtype)
    return directions / jnp.linalg.norm(directions, axis=1, keepdims=True)


def sw_distance(features: jax.Array, style: jax.Array, key: jax.Array) -> jax.Array:
    """``sw``'s distance of one layer: ``(h, w, c)`` features against the style's
    ``(n, c)`` :func:`flat_features`, on the random directions of ``key``."""
    flat = _flat(features)
    directions = random_directions(key, flat.shape[1], flat.dtype)
    image = jnp.sort(flat @ directions.T, axis=0)
    return sorted_distance(image, jnp.sort(style @ directions.T, axis=0))


def sigmoid_moments(features: jax.Array) -> jax.Array:
    """``(5, c)``: each channel's mean and central moments of orders 2 to 5 of
    ``sigmoid(features)`` over the map's positions (Kalischek et al.)."""
    bounded = jax.nn.sigmoid(_flat(features))
    mean = jnp.mean(bounded, axis=0)
    centred = bounded - mean
    central = [jnp.mean(centred**order, axis=0) for order in range(2, MOMENT_ORDERS + 1)]
    return jnp.stack([mean, *central])


def _norm(x: jax.Array) -> jax.Array:
    """The L2 norm of ``x`` with a zero (not NaN) gradient where ``x`` is all zeros."""
    squared = jnp.sum(jnp.square(x))
    positive = squared > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def moments_distance(moments: jax.Array, style_moments: jax.Array) -> jax.Array:
    """``sum_k ||m_k - m_k'||_2`` over the five moments of :func:`sigmoid_moments` (the
    sigmoid's values lie in [0, 1], so Kalischek et al.'s factors ``1 / |b - a|^k`` are 1)."""
    return sum(_norm(moments[k] - style_moments[k]) for k in range(moments.shape[0]))


def _weighted(distances: Mapping[str, jax.Array], weight, layer_weights) -> jax.Array:
    terms = [
        (1.0 if layer_weights is None else layer_weights[layer]) * value
        for layer, value in distances.items()
    ]
    return weight / len(terms) * sum(terms)


def sw_loss(
    features: Mapping[str, jax.Array],
    targets: Mapping[str, jax.Array],
    weight: float | jax.Array = 1.0,
    layer_weights: Mapping[str, float] | None = None,
    *,
    key: jax.Array,
) -> jax.Array:
    """Sliced Wasserstein style loss over the layers: layer ``l`` (in the order given)
    projects on the directions of ``fold_in(key, l)``, so each layer and each step has its
    own."""
    distances = {
        layer: sw_distance(f, targets[layer], jax.random.fold_in(key, i))
        for i, (layer, f) in enumerate(features.items())
    }
    return _weighted(distances, weight, layer_weights)


def efdm_loss(
    features: Mapping[str, jax.Array],
    targets: Mapping[str, jax.Array],
    weight: float | jax.Array = 1.0,
    layer_weights: Mapping[str, float] | None = None,
) -> jax.Array:
    """Exact feature distribution matching over the layers (:func:`efdm_distance`)."""
    distances = {layer: efdm_distance(f, targets[layer]) for layer, f in features.items()}
    return _weighted(distances, weight, layer_weights)


def moments_loss(
    moments: Mapping[str, jax.Array],
    targets: Mapping[str, jax.Array],
    weight: float | jax.Array = 1.0,
    layer_weights: Mapping[str, float] | None = None,
) -> jax.Array:
    """Central moment discrepancy over the layers (:func:`moments_distance`)."""
    distances = {layer: moments_distance(m, targets[layer]) for layer, m in moments.items()}
    return _weighted(distances, weight, layer_weights)
