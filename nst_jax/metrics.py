"""Scores that compare results, so that methods (optimisation, feed-forward networks) can be
set side by side on the same images.

- Feature distances between any two images, per layer, unweighted: the content distance
  (mean squared feature difference), and style distances of the Gram matrices (the
  tutorial's statistic), of the channels' means and standard deviations (Huang & Belongie
  2017) and the Wasserstein-2 distance of the features' Gaussians (as in
  :mod:`nst_jax.core.losses`).
- SSIM and PSNR, from dm-pix (DeepMind's image library for JAX; the ``metrics`` extra):
  well-tested implementations of the standard definitions, rather than another copy.
- The warping error measures flicker: how far each stylised frame is from the previous one
  carried along the motion, over the pixels the flow can be trusted at (Lai et al.,
  "Learning Blind Video Temporal Consistency", ECCV 2018, their E_warp).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from nst_jax.core import losses, temporal
from nst_jax.core.objective import CONTENT_LAYERS, STYLE_LAYERS, Params
from nst_jax.core.targets import check_image
from nst_jax.core.vgg import vgg19_features
from nst_jax.errors import InputError


def checked_pair(a, b, same_size: bool = True, smallest: int = 1) -> tuple[jax.Array, jax.Array]:
    """Two ``(H, W, 3)`` float images in [0, 1], finite (:func:`~nst_jax.core.targets.
    check_image`), of one size where ``same_size``, with sides of at least ``smallest``.

    Raises:
      ValueError: naming ``a`` or ``b`` and what is wrong.
    """
    a, b = check_image(a, "a"), check_image(b, "b")
    if same_size and a.shape != b.shape:
        raise ValueError(f"a and b must be one size, got {tuple(a.shape)} and {tuple(b.shape)}")
    for name, x in (("a", a), ("b", b)):
        if min(x.shape[:2]) < smallest:
            raise ValueError(f"{name}: sides of at least {smallest} px needed, got {x.shape[:2]}")
    return a, b


def content_distance(
    params: Params, a: jax.Array, b: jax.Array, layers: Sequence[str] = CONTENT_LAYERS
) -> dict[str, jax.Array]:
    """``{layer: mean((F_l(a) - F_l(b))^2)}`` for two ``(H, W, 3)`` images of one size."""
    a, b = checked_pair(a, b)
    fa, fb = (vgg19_features(params, x, tuple(layers)) for x in (a, b))
    return {layer: jnp.mean((fa[layer] - fb[layer]) ** 2) for layer in layers}


def style_distances(
    params: Params, a: jax.Array, b: jax.Array, layers: Sequence[str] = STYLE_LAYERS
) -> dict[str, dict[str, jax.Array]]:
    """Per statistic and layer, the distance between two images' styles (any sizes):
    ``{"gram": {layer: mean((G_a - G_b)^2)}, "mean_std": {layer: mean((m_a - m_b)^2)},
    "w2": {layer: W2(N_a, N_b)^2}}``."""
    a, b = checked_pair(a, b, same_size=False)
    fa, fb = (vgg19_features(params, x, tuple(layers)) for x in (a, b))
    out: dict[str, dict[str, jax.Array]] = {"gram": {}, "mean_std": {}, "w2": {}}
    for layer in layers:
        ga, gb = losses.gram_matrix(fa[layer]), losses.gram_matrix(fb[layer])
        out["gram"][layer] = jnp.mean((ga - gb) ** 2)
        ma, mb = losses.feature_moments(fa[layer]), losses.feature_moments(fb[layer])
        out["mean_std"][layer] = jnp.mean((ma - mb) ** 2)
        stats = losses.gaussian_stats(fa[layer])
        out["w2"][layer] = losses.w2_distance(stats, losses.w2_target(fb[layer]))
    return out


def _pix():
    try:
        import dm_pix
    except ImportError:
        raise InputError("SSIM and PSNR need dm-pix: pip install 'nst_jax[metrics]'") from None
    return dm_pix


SSIM_WINDOW = 11  # dm-pix's Gaussian filter: a smaller image has no valid window


def ssim(a: jax.Array, b: jax.Array) -> jax.Array:
    """Structural similarity of two ``(H, W, 3)`` images in [0, 1] of one size (dm-pix:
    Wang et al. 2004, Gaussian window of 11 px, sigma 1.5); 1 for equal images. Sides
    below the window are refused (dm-pix would return 1 for any two such images)."""
    a, b = checked_pair(a, b, smallest=SSIM_WINDOW)
    return _pix().ssim(a, b, max_val=1.0)


def psnr(a: jax.Array, b: jax.Array) -> jax.Array:
    """Peak signal-to-noise ratio in dB of two images in [0, 1] of one size (dm-pix); inf
    when equal."""
    a, b = checked_pair(a, b)
    return _pix().psnr(a, b)


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
