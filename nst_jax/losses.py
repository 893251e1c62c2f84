"""Pure loss functions of Gatys-style transfer, for one image (batch them with ``jax.vmap``).

Normalisations follow the TensorFlow tutorial
(https://www.tensorflow.org/tutorials/generative/style_transfer):
Grams are divided by the number of positions, content and style terms are means of squared
differences averaged over layers, and total variation is a plain sum of absolute differences
(``tf.image.total_variation``).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp


def _check_rank(name: str, x: jax.Array, rank: int, what: str) -> None:
    if x.ndim != rank:
        raise ValueError(f"{name}: expected {what}, got shape {tuple(x.shape)}")


def gram_matrix(features: jax.Array) -> jax.Array:
    """Gram matrix of one feature map, normalised by the number of positions.

    ``G[c, d] = sum_{i,j} F[i, j, c] * F[i, j, d] / (h * w)``.

    Args:
      features: ``(h, w, c)`` activations.

    Returns:
      ``(c, c)`` Gram matrix, at least float32 even for lower-precision features.
    """
    _check_rank("gram_matrix", features, 3, "an (h, w, c) feature map")
    h, w, c = features.shape
    # A Python float: an int past 2**31 (a print-size feature map) would overflow as int32.
    return _gram(features.reshape(h * w, c)) / float(h * w)


def _accumulator(f: jax.Array):
    # At least float32: Gram sums run over h * w products.
    return jnp.promote_types(f.dtype, jnp.float32)


@jax.custom_jvp
def _gram(f: jax.Array) -> jax.Array:
    """``f.T @ f`` of an ``(n, c)`` matrix.

    As one 2-D matrix product, XLA:CPU runs it as a single GEMM reading ``f`` transposed in
    place (an einsum over ``(h, w)`` made the 512 px step 310 ms slower). The custom JVP
    writes the tangent as ``t + t.T`` with ``t = f.T @ df``, so that its transpose, the
    gradient, is the single product ``f @ (g + g.T)`` instead of autodiff's two.
    """
    return jnp.matmul(f.T, f, preferred_element_type=_accumulator(f))


@_gram.defjvp
def _gram_jvp(primals, tangents):
    (f,), (df,) = primals, tangents
    t = jnp.matmul(f.T, df, preferred_element_type=_accumulator(f))
    return _gram(f), t + t.T


def _mean_squared_sum(
    name: str,
    values: Mapping[str, jax.Array],
    targets: Mapping[str, jax.Array],
    layer_weights: Mapping[str, float] | None = None,
) -> jax.Array:
    """``sum_l w_l * mean((values[l] - targets[l]) ** 2)`` over the layers of ``values``
    (``w_l`` = 1 without ``layer_weights``)."""
    if set(values) != set(targets):
        raise ValueError(f"{name}: layers {sorted(values)} do not match targets {sorted(targets)}")
    terms = []
    for layer, value in values.items():
        if value.shape != targets[layer].shape:
            raise ValueError(
                f"{name}: layer {layer} has shape {tuple(value.shape)}, "
                f"target {tuple(targets[layer].shape)}"
            )
        # At least float32, so lower-precision features still give an accurate mean.
        value = value.astype(jnp.promote_types(value.dtype, jnp.float32))
        term = jnp.mean(jnp.square(value - targets[layer]))
        terms.append(term if layer_weights is None else layer_weights[layer] * term)
    return sum(terms)


def content_loss(
    features: Mapping[str, jax.Array],
    targets: Mapping[str, jax.Array],
    weight: float | jax.Array = 1.0,
    layer_weights: Mapping[str, float] | None = None,
) -> jax.Array:
    """``weight / n_layers * sum_l w_l * mean((F_l - P_l) ** 2)``.

    Args:
      features: ``{layer: (h, w, c)}`` features of the image being optimised.
      targets: ``{layer: (h, w, c)}`` features of the content image.
      weight: content weight (may be a traced scalar, for sweeps).
      layer_weights: ``{layer: w_l}``; default 1 for every layer (the tutorial).

    Returns:
      Scalar loss.
    """
    total = _mean_squared_sum("content_loss", features, targets, layer_weights)
    return weight / len(features) * total


def style_loss(
    grams: Mapping[str, jax.Array],
    targets: Mapping[str, jax.Array],
    weight: float | jax.Array = 1.0,
    layer_weights: Mapping[str, float] | None = None,
) -> jax.Array:
    """``weight / n_layers * sum_l w_l * mean((G_l - A_l) ** 2)`` over Gram matrices.

    Args:
      grams: ``{layer: (c, c)}`` Grams of the image being optimised (see :func:`gram_matrix`).
      targets: ``{layer: (c, c)}`` Grams of the style image (or a blend of several).
      weight: style weight (may be a traced scalar, for sweeps).
      layer_weights: ``{layer: w_l}``; default 1 for every layer (the tutorial).

    Returns:
      Scalar loss.
    """
    for layer, gram in grams.items():
        _check_rank(f"style_loss[{layer}]", gram, 2, "a (c, c) Gram matrix")
    return weight / len(grams) * _mean_squared_sum("style_loss", grams, targets, layer_weights)


@jax.custom_jvp
def tf_abs(x: jax.Array) -> jax.Array:
    """``|x|`` with TensorFlow's subgradient: 0 at 0 (``jnp.abs`` uses 1).

    Images decoded from 8-bit files have many equal neighbours, so total variation's gradient
    differs visibly from TensorFlow's after one step unless the subgradient at 0 matches.
    """
    return jnp.abs(x)


@tf_abs.defjvp
def _tf_abs_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return jnp.abs(x), jnp.sign(x) * t


def total_variation_loss(image: jax.Array, weight: float | jax.Array = 1.0) -> jax.Array:
    """Anisotropic total variation, ``tf.image.total_variation`` times ``weight``.

    ``weight * (sum |x[:, 1:] - x[:, :-1]| + sum |x[1:] - x[:-1]|)`` over all channels: a sum,
    not a mean, so its size grows with the image.

    Args:
      image: ``(H, W, C)`` image.
      weight: total-variation weight (may be a traced scalar, for sweeps).

    Returns:
      Scalar loss.
    """
    _check_rank("total_variation_loss", image, 3, "an (H, W, C) image")
    dx = image[:, 1:, :] - image[:, :-1, :]
    dy = image[1:, :, :] - image[:-1, :, :]
    return weight * (jnp.sum(tf_abs(dx)) + jnp.sum(tf_abs(dy)))
