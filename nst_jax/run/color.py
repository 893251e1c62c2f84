"""Colour control (Gatys et al. 2016, "Preserving Color in Neural Artistic Style Transfer").

Two ways to keep the content photo's colours:

- **luminance**: style transfer on luminance alone (both images as grey YIQ luminance, the
  style's luminance matched to the content's mean and spread), then the result's luminance is
  recombined with the content's own chroma (I, Q).
- **histogram**: the style image's colours are first mapped by an affine transform so that their
  per-channel mean and 3x3 covariance equal the content's; the transfer then runs as usual.

Pure functions of ``(H, W, 3)`` float RGB arrays; the batch is added by the caller.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax.core import linalg

MODES = ("luminance", "histogram")

# NTSC YIQ, as in Gatys et al. 2016 (rows: Y, I, Q). NumPy, so importing nst_jax starts no
# JAX backend (XLA reads its flags when the first one starts).
RGB_TO_YIQ = np.array(
    [
        [0.299, 0.587, 0.114],
        [0.595716, -0.274453, -0.321263],
        [0.211456, -0.522591, 0.311135],
    ]
)


def rgb_to_yiq(image: jax.Array) -> jax.Array:
    """``(..., 3)`` RGB -> YIQ (Y in [0, 1] for RGB in [0, 1])."""
    return image @ jnp.asarray(RGB_TO_YIQ.T, image.dtype)


def yiq_to_rgb(image: jax.Array) -> jax.Array:
    """Inverse of :func:`rgb_to_yiq`."""
    return image @ jnp.asarray(np.linalg.inv(RGB_TO_YIQ).T, image.dtype)


def luminance(image: jax.Array) -> jax.Array:
    """``(H, W)`` YIQ luminance of an ``(H, W, 3)`` RGB image."""
    return rgb_to_yiq(image)[..., 0]


def grey(y: jax.Array) -> jax.Array:
    """``(H, W)`` luminance as an ``(H, W, 3)`` grey RGB image (what VGG sees in luminance mode)."""
    return jnp.repeat(y[..., None], 3, axis=-1)


def match_luminance(style: jax.Array, content: jax.Array) -> jax.Array:
    """The style's luminance, shifted and scaled to the content luminance's mean and standard
    deviation (Gatys et al. 2016, eq. 1), as an ``(h, w)`` array."""
    ys, yc = luminance(style), luminance(content)
    scale = jnp.std(yc) / jnp.maximum(jnp.std(ys), 1e-8)
    return (ys - jnp.mean(ys)) * scale + jnp.mean(yc)


def recombine(result: jax.Array, content: jax.Array) -> jax.Array:
    """The result's luminance with the content's chroma, as RGB in [0, 1].

    The chroma (I, Q) is kept exactly: where the combination falls outside the RGB cube, the
    luminance is moved (not the colour) to the nearest value that fits. The content itself lies
    in the cube, so such a value always exists.
    """
    chroma = rgb_to_yiq(content)[..., 1:]
    offsets = yiq_to_rgb(jnp.concatenate([jnp.zeros_like(chroma[..., :1]), chroma], -1))
    # RGB = Y + offsets (each channel), so 0 <= Y + o_c <= 1 for all c bounds Y.
    low = jnp.max(-offsets, axis=-1)
    high = jnp.min(1.0 - offsets, axis=-1)
    y = jnp.clip(luminance(result), low, high)
    return yiq_to_rgb(jnp.concatenate([y[..., None], chroma], -1))


def _stats(image: jax.Array) -> tuple[jax.Array, jax.Array]:
    pixels = image.reshape(-1, 3)
    mean = jnp.mean(pixels, axis=0)
    centred = pixels - mean
    return mean, centred.T @ centred / pixels.shape[0]


def _sqrt_psd(matrix: jax.Array, inverse: bool = False) -> jax.Array:
    """Symmetric square root (or inverse square root) of a covariance matrix."""
    values, vectors = linalg.eigh(matrix)
    values = jnp.maximum(values, 1e-10)  # a flat-coloured image has a singular covariance
    power = -0.5 if inverse else 0.5
    return (vectors * values**power) @ vectors.T


def match_histogram(style: jax.Array, content: jax.Array) -> jax.Array:
    """The style image with its colours mapped to the content's mean and covariance.

    ``x' = C_c^(1/2) C_s^(-1/2) (x - mu_s) + mu_c`` per pixel (the "Image Analogies" colour
    transfer Gatys et al. 2016 use), so ``x'`` has the content's mean and covariance exactly.
    Not clipped to [0, 1]: it is only a target for Gram matrices, and clipping would change
    the statistics just matched.
    """
    mean_s, cov_s = _stats(style)
    mean_c, cov_c = _stats(content)
    transform = _sqrt_psd(cov_c) @ _sqrt_psd(cov_s, inverse=True)
    return (style - mean_s) @ transform.T + mean_c


def colour_stats(image: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-channel mean ``(3,)`` and covariance ``(3, 3)`` of an ``(H, W, 3)`` image."""
    return _stats(image)
