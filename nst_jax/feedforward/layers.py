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
    """Reflection padding of ``kernel // 2``, then a VALID convolution of ``stride``.

    Its params are ``nn.Conv``'s (``Conv_0/{kernel, bias}``, the same initialisation), so
    models trained before the convolution engine load unchanged.

    Attributes:
      features: output channels.
      kernel: odd kernel size.
      stride: the convolution's stride.
      conv: ``"direct"`` or ``"winograd"`` (:func:`nst_jax.core.conv.conv2d`).
    """

    features: int
    kernel: int
    stride: int = 1
    conv: str = "direct"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (self.kernel, self.kernel, x.shape[-1], self.features)
        kernel, bias = ConvWeights(shape, name="Conv_0")(x.dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias)
        x = reflect_pad(x, self.kernel // 2)
        return conv2d(x, kernel, self.stride, self.conv) + bias


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
