"""The building blocks of the feed-forward networks, per image ``(H, W, C)``.

- Reflection padding before every convolution (Johnson et al. 2016's choice against border
  artefacts; Huang & Belongie 2017's decoder too).
- Instance normalisation (Ulyanov, Vedaldi & Lempitsky, "Instance Normalization: The
  Missing Ingredient for Fast Stylization", 2016): each channel normalised over the image's
  positions with the biased variance and epsilon 1e-5, then scaled and shifted by learned
  per-channel values (PyTorch's ``InstanceNorm2d(affine=True)``).
- Upsampling by repeating pixels (nearest), then a convolution (Odena, Dumoulin & Olah,
  "Deconvolution and Checkerboard Artifacts", 2016) rather than a transposed convolution.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nst_jax.core.blockconv import depth_to_space
from nst_jax.core.conv import conv2d

NORM_EPSILON = 1e-5


def reflect_pad(x: jax.Array, amount: int) -> jax.Array:
    """``(H, W, C)`` padded by ``amount`` pixels each side, mirrored without repeating the
    edge (``numpy.pad``'s ``reflect``, PyTorch's ``ReflectionPad2d``)."""
    return jnp.pad(x, ((amount, amount), (amount, amount), (0, 0)), mode="reflect")


def upsample_nearest(x: jax.Array, factor: int = 2) -> jax.Array:
    """``(H, W, C)`` -> ``(factor H, factor W, C)``, each pixel repeated."""
    return jnp.repeat(jnp.repeat(x, factor, axis=0), factor, axis=1)


class ReflectConv(nn.Module):
    """Reflection padding of ``kernel // 2``, then a VALID convolution of ``stride``; with
    ``upsample``, nearest upsampling by 2 first.

    Its params are ``nn.Conv``'s (``Conv_0/{kernel, bias}``, the same initialisation), so
    models trained before the convolution engine load unchanged.

    Attributes:
      features: output channels.
      kernel: odd kernel size.
      stride: the convolution's stride.
      conv: ``"direct"`` or ``"winograd"`` (:func:`nst_jax.core.conv.conv2d`).
      upsample: upsample the input by 2 first (by :func:`upsampled_conv` with Winograd).
    """

    features: int
    kernel: int
    stride: int = 1
    conv: str = "direct"
    upsample: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (self.kernel, self.kernel, x.shape[-1], self.features)
        kernel, bias = ConvWeights(shape, name="Conv_0")(x.dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias)
        if self.upsample and self.conv != "direct" and (self.kernel, self.stride) == (3, 1):
            return upsampled_conv(x, kernel, self.conv) + bias
        x = upsample_nearest(x) if self.upsample else x
        x = reflect_pad(x, self.kernel // 2)
        return conv2d(x, kernel, self.stride, self.conv) + bias


# Output row 2i + a of "upsample by 2, reflect-pad by 1, 3x3 convolution" reads kernel rows
# d = 0, 1, 2 at rows r = 0, 1, 2 of the low-resolution input edge-padded by 1:
# _PHASES[a, r, d] (a = 0: r = 0 takes d = 0, r = 1 takes d = 1 and 2; a = 1: r = 1 takes
# d = 0 and 1, r = 2 takes d = 2). Reflecting an upsampled image repeats its edge pixels.
_PHASES = np.array([[[1, 0, 0], [0, 1, 1], [0, 0, 0]], [[0, 0, 0], [1, 1, 0], [0, 0, 1]]])


def upsampled_conv(x: jax.Array, kernel: jax.Array, method: str) -> jax.Array:
    """``conv(reflect_pad(upsample_nearest(x), 1), kernel)`` as one 3x3 convolution of the
    low-resolution ``x`` (edge-padded) to the four output phases, put in place by
    depth-to-space (a sub-pixel convolution: Shi et al., "Real-Time Single Image and Video
    Super-Resolution Using an Efficient Sub-Pixel Convolutional Neural Network", 2016).
    The same multiplications as on the upsampled image, without making it, and with
    products four times wider.

    Args:
      x: ``(H, W, C)``.
      kernel: ``(3, 3, C, O)``.
      method: ``"direct"`` or ``"winograd"`` (:func:`nst_jax.core.conv.conv2d`).

    Returns:
      ``(2 H, 2 W, O)``.
    """
    phases = jnp.asarray(_PHASES, kernel.dtype)
    c, o = kernel.shape[2:]
    merged = jnp.einsum("ard,bse,deco->rscabo", phases, phases, kernel).reshape(3, 3, c, 4 * o)
    padded = jnp.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
    return depth_to_space(conv2d(padded, merged, 1, method), 2)


class ConvWeights(nn.Module):
    """A convolution's ``kernel`` (LeCun normal) and ``bias`` (zeros), as ``nn.Conv``
    makes them.

    Attributes:
      shape: the HWIO kernel's shape.
    """

    shape: tuple[int, int, int, int]

    @nn.compact
    def __call__(self, dtype) -> tuple[jax.Array, jax.Array]:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), self.shape, dtype)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.shape[-1],), dtype)
        return kernel, bias


class InstanceNorm(nn.Module):
    """Instance normalisation with a learned scale (ones) and bias (zeros) per channel."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,), x.dtype)
        bias = self.param("bias", nn.initializers.zeros, (channels,), x.dtype)
        mean = jnp.mean(x, axis=(0, 1))
        variance = jnp.mean((x - mean) ** 2, axis=(0, 1))
        return (x - mean) / jnp.sqrt(variance + NORM_EPSILON) * scale + bias
