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

from nst_jax.core import linalg


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


def gram_sum(features: jax.Array) -> jax.Array:
    """``sum_{i,j} F[i, j, :]^T F[i, j, :]``: the Gram matrix of an ``(h, w, c)`` map before
    normalisation (sums of tiles' add up to the whole map's; an empty map gives zeros)."""
    _check_rank("gram_sum", features, 3, "an (h, w, c) feature map")
    return _gram(features.reshape(-1, features.shape[-1]))


def guided_gram(features: jax.Array, mask: jax.Array) -> jax.Array:
    """Gram matrix of the region ``mask`` selects (Gatys et al., "Controlling Perceptual
    Factors in Neural Style Transfer", CVPR 2017: guided Gram matrices).

    ``G = sum_p m_p^2 F_p F_p^T / sum_p m_p^2``: the features weighted by the mask, their Gram
    normalised by the region's (squared-mask) area instead of the whole map's, so a region's
    Gram is on the same scale as a whole image's. Written as :func:`gram_matrix` of the
    weighted map times ``h w / sum m^2``, which is exactly 1 for an all-ones mask: that mask
    gives :func:`gram_matrix`'s result bit for bit. A region empty at this layer (``sum m^2 =
    0``) gives a zero Gram.

    Args:
      features: ``(h, w, c)`` activations.
      mask: ``(h, w)`` weights in [0, 1] (soft edges allowed), at the layer's resolution.
    """
    _check_rank("guided_gram", mask, 2, "an (h, w) mask")
    h, w, _ = features.shape
    area = jnp.sum(jnp.square(mask.astype(_accumulator(features))))
    guided = features * mask[..., None].astype(features.dtype)
    return gram_matrix(guided) * (float(h * w) / jnp.maximum(area, 1e-12))


def _accumulator(f: jax.Array):
    # At least float32: Gram sums run over h * w products.
    return jnp.promote_types(f.dtype, jnp.float32)


@jax.custom_jvp
def _gram(f: jax.Array) -> jax.Array:
    """``f.T @ f`` of an ``(n, c)`` matrix.

    As one 2-D matrix product, XLA:CPU runs it as a single GEMM reading ``f`` transposed in
    place (an einsum over ``(h, w)`` is slower). The custom JVP
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


# --- Other style losses, each comparing one statistic of the features with the style's, for
# one image as ``style_loss`` is: ``weight / n_layers * sum_l w_l * distance_l``, the style's
# statistic computed once (``*_target``). Their scales differ from the Gram loss's, and so do
# their weights.


MOMENT_EPS = 1e-5  # AdaIN's: sqrt(var + eps), whose gradient stays finite at var = 0


def feature_moments(features: jax.Array) -> jax.Array:
    """``(2, c)``: each channel's mean and standard deviation ``sqrt(var + 1e-5)`` over the
    ``(h, w, c)`` map (a 1 x 1 map, a deep layer of a small image, has variance 0)."""
    _check_rank("feature_moments", features, 3, "an (h, w, c) feature map")
    flat = features.reshape(-1, features.shape[-1]).astype(_accumulator(features))
    return jnp.stack([flat.mean(0), jnp.sqrt(flat.var(0) + MOMENT_EPS)])


def mean_std_loss(
    moments: Mapping[str, jax.Array],
    targets: Mapping[str, jax.Array],
    weight: float | jax.Array = 1.0,
    layer_weights: Mapping[str, float] | None = None,
) -> jax.Array:
    """Moment matching (Huang & Belongie, "Arbitrary Style Transfer in Real-time with
    Adaptive Instance Normalization", ICCV 2017): ``weight / n_layers * sum_l w_l *
    mean((m_l - t_l) ** 2)`` over each layer's channel means and standard deviations.

    Args:
      moments: ``{layer: (2, c)}`` :func:`feature_moments` of the image being optimised.
      targets: ``{layer: (2, c)}`` the style's.
      weight: style weight (may be traced).
      layer_weights: ``{layer: w_l}``; default 1 each.
    """
    total = _mean_squared_sum("mean_std_loss", moments, targets, layer_weights)
    return weight / len(moments) * total


def gaussian_stats(features: jax.Array) -> dict[str, jax.Array]:
    """``{"mean": (c,), "cov": (c, c)}`` of the ``(h, w, c)`` map's positions (the covariance
    divides by the number of positions, as the Gram does)."""
    _check_rank("gaussian_stats", features, 3, "an (h, w, c) feature map")
    flat = features.reshape(-1, features.shape[-1]).astype(_accumulator(features))
    mean = flat.mean(0)
    centred = flat - mean
    return {"mean": mean, "cov": centred.T @ centred / flat.shape[0]}


def w2_target(features: jax.Array) -> dict[str, jax.Array]:
    """The style's side of :func:`w2_loss`: its Gaussian and the covariance's square root."""
    stats = gaussian_stats(features)
    return {**stats, "cov_sqrt": linalg.psd_sqrt(stats["cov"])}


def _live(values: jax.Array) -> jax.Array:
    """Eigenvalues above rounding: NumPy's rank tolerance, ``max |value| * n * eps``. Those
    below are rounding noise around 0 (a float32 zero eigenvalue of ``S^2`` comes out near
    1e-7 of the largest, and its square root would count as 3e-4 of it)."""
    tol = jnp.max(jnp.abs(values)) * values.shape[-1] * jnp.finfo(values.dtype).eps
    return values > tol


@jax.custom_jvp
def _trace_sqrt(matrix: jax.Array) -> jax.Array:
    """``tr(M^1/2)`` of a symmetric positive semi-definite matrix: the sum of the square
    roots of its eigenvalues (those below rounding, :func:`_live`, count as 0)."""
    values = linalg.eigvalsh(matrix)
    return jnp.sum(jnp.sqrt(jnp.where(_live(values), values, 0.0)))


@_trace_sqrt.defjvp
def _trace_sqrt_jvp(primals, tangents):
    # d tr(f(M)) = tr(V f'(L) V^T dM): eigenvalues' derivatives only. Autodiff of eigh would
    # also differentiate the eigenvectors, 1 / (l_i - l_j), which is NaN for the repeated
    # zero eigenvalues of a rank-deficient covariance (fewer positions than channels: deep
    # layers of small images). d sqrt(l) = 1 / (2 sqrt(l)) is infinite at 0; zero
    # eigenvalues take derivative 0, the subgradient at the kink, so the gradient is finite.
    (matrix,), (dot,) = primals, tangents
    values, vectors = linalg.eigh(matrix)
    live = _live(values)
    roots = jnp.sqrt(jnp.where(live, values, 1.0))
    slope = jnp.where(live, 0.5 / roots, 0.0)
    along = jnp.einsum("ji,jk,ki->i", vectors, dot, vectors)  # v_i^T dM v_i
    return jnp.sum(jnp.where(live, roots, 0.0)), jnp.sum(slope * along)


def w2_distance(stats: Mapping[str, jax.Array], target: Mapping[str, jax.Array]) -> jax.Array:
    """Squared Wasserstein-2 distance between two Gaussians:
    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_b^1/2 S_a S_b^1/2)^1/2)``.

    The trace of the matrix square root is the sum of the square roots of the eigenvalues of
    ``S_b^1/2 S_a S_b^1/2`` (a symmetric eigendecomposition); the style's ``S_b^1/2`` is a
    constant, so only eigenvalues are differentiated, which is stable where eigenvectors are
    not (repeated eigenvalues).
    """
    inner = target["cov_sqrt"] @ stats["cov"] @ target["cov_sqrt"]
    inner = (inner + inner.T) / 2  # symmetric to rounding, exactly, for eigvalsh
    root_trace = _trace_sqrt(inner)
    mean_term = jnp.sum(jnp.square(stats["mean"] - target["mean"]))
    return mean_term + jnp.trace(stats["cov"]) + jnp.trace(target["cov"]) - 2 * root_trace


def w2_loss(
    stats: Mapping[str, Mapping[str, jax.Array]],
    targets: Mapping[str, Mapping[str, jax.Array]],
    weight: float | jax.Array = 1.0,
    layer_weights: Mapping[str, float] | None = None,
) -> jax.Array:
    """Wasserstein-2 style loss between the features' Gaussians (as in Katherine Crowson's
    style-transfer-pytorch; the distance: Dowson & Landau 1982; for style, Kolkin et al.,
    "Style Transfer by Relaxed Optimal Transport and Self-Similarity", CVPR 2019):
    ``weight / n_layers * sum_l w_l * W2(N(mu_l, S_l), N(mu_l', S_l'))^2``."""
    return _over_layers(w2_distance, stats, targets, weight, layer_weights)


def patches3x3(features: jax.Array) -> jax.Array:
    """``(positions, 9 c)``: every 3x3 patch of an ``(h, w, c)`` map that lies inside it."""
    _check_rank("patches3x3", features, 3, "an (h, w, c) feature map")
    patches = jax.lax.conv_general_dilated_patches(
        features[None], (3, 3), (1, 1), "VALID", dimension_numbers=("NHWC", "OIHW", "NHWC")
    )[0]
    return patches.reshape(-1, patches.shape[-1])


def mrf_target(features: jax.Array) -> dict[str, jax.Array]:
    """The style's side of :func:`mrf_loss`: its 3x3 patches, raw and at unit length."""
    patches = patches3x3(features).astype(_accumulator(features))
    norms = jnp.linalg.norm(patches, axis=1, keepdims=True)
    return {"patches": patches, "unit": patches / jnp.maximum(norms, 1e-12)}


def mrf_distance(features: jax.Array, target: Mapping[str, jax.Array]) -> jax.Array:
    """Mean squared difference between each 3x3 patch of ``features`` and its nearest style
    patch by normalised cross-correlation (the match is not differentiated, as in Li & Wand).

    The correlations are one ``(positions, style positions)`` product: memory grows with the
    product of the two images' sizes at the layer.
    """
    patches = patches3x3(features).astype(_accumulator(features))
    # The image patch's own norm is the same for every candidate: it does not change argmax.
    nearest = jnp.argmax(jax.lax.stop_gradient(patches) @ target["unit"].T, axis=1)
    return jnp.mean(jnp.square(patches - target["patches"][nearest]))


def mrf_loss(
    features: Mapping[str, jax.Array],
    targets: Mapping[str, Mapping[str, jax.Array]],
    weight: float | jax.Array = 1.0,
    layer_weights: Mapping[str, float] | None = None,
) -> jax.Array:
    """MRF style loss (Li & Wand, "Combining Markov Random Fields and Convolutional Neural
    Networks for Image Synthesis", CVPR 2016): ``weight / n_layers * sum_l w_l *
    mrf_distance_l``; their sum over patches is a mean here, as the tutorial's terms are."""
    return _over_layers(mrf_distance, features, targets, weight, layer_weights)


def _over_layers(distance, values, targets, weight, layer_weights) -> jax.Array:
    """``weight / n_layers * sum_l w_l * distance(values[l], targets[l])``."""
    terms = [
        (1.0 if layer_weights is None else layer_weights[layer])
        * distance(values[layer], targets[layer])
        for layer in values
    ]
    return weight / len(values) * sum(terms)


# --- Gradient normalisation (Justin Johnson's neural-style, ``-normalize_gradients``). -----

NORMALIZE_EPS = 1e-8  # neural-style's: added to the L1 norm, so a zero gradient stays zero


@jax.custom_vjp
def normalize_gradient(features: jax.Array, strength: jax.Array) -> jax.Array:
    """Identity in the forward pass; in the backward pass the gradient ``g`` reaching
    ``features`` becomes ``strength * g / (||g||_1 + 1e-8)``.

    This is jcjohnson/neural-style's ``-normalize_gradients``: there, each content and style
    loss module divides the gradient of its loss with respect to its layer's features by that
    gradient's L1 norm, then multiplies it by the module's strength (its weight). Put one in
    front of each (term, layer)'s features with ``strength`` that layer's coefficient in the
    loss, and each layer's contribution to the image's gradient is a unit-L1 direction scaled
    by its weight, whatever the layer's magnitude. The loss value is unchanged.

    Args:
      features: a layer's activations, any shape.
      strength: scalar, the layer's coefficient (term weight x layer weight / n_layers).
    """
    return features


def _normalize_fwd(features, strength):
    return features, strength


def _normalize_bwd(strength, g):
    norm = jnp.sum(jnp.abs(g.astype(_accumulator(g)))) + NORMALIZE_EPS
    return (strength * g / norm).astype(g.dtype), jnp.zeros_like(strength)


normalize_gradient.defvjp(_normalize_fwd, _normalize_bwd)
