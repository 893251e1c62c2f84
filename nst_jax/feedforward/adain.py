"""Arbitrary style transfer with adaptive instance normalisation (Huang & Belongie,
"Arbitrary Style Transfer in Real-time with Adaptive Instance Normalization", ICCV 2017).

- The encoder is the project's VGG19 up to ``block4_conv1`` (after its ReLU: the paper's
  relu4_1), frozen, with its Keras weights and caffe preprocessing.
- :func:`adain` gives the content features the style features' per-channel mean and
  standard deviation.
- The :class:`Decoder` mirrors the encoder: nearest upsampling where the encoder pools,
  reflection padding, no normalisation.

Statistics follow the paper's code: the standard deviation is ``sqrt(var + 1e-5)`` with the
unbiased variance (PyTorch's ``Tensor.var`` default), over the positions of one image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from nst_jax.core.vgg import vgg19_features
from nst_jax.feedforward.layers import ReflectConv

ENCODER_LAYER = "block4_conv1"
# The style loss's layers: relu1_1 ... relu4_1 in the paper's names.
STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1")
STAT_EPSILON = 1e-5
# The decoder, from block4_conv1's 512 channels back to RGB: (channels, upsample first).
DECODER = ((256, False), (256, True), (256, False), (256, False), (128, False))
DECODER += ((128, True), (64, False), (64, True))


def mean_std(features: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-channel mean and ``sqrt(unbiased var + 1e-5)`` of ``(h, w, c)`` features."""
    count = features.shape[0] * features.shape[1]
    mean = jnp.mean(features, axis=(0, 1))
    variance = jnp.sum((features - mean) ** 2, axis=(0, 1)) / (count - 1)
    return mean, jnp.sqrt(variance + STAT_EPSILON)


def adain(content: jax.Array, style: jax.Array) -> jax.Array:
    """``sigma(style) * (content - mu(content)) / sigma(content) + mu(style)``, per channel
    of ``(h, w, c)`` features (the two may differ in ``h`` and ``w``)."""
    content_mean, content_std = mean_std(content)
    style_mean, style_std = mean_std(style)
    return (content - content_mean) / content_std * style_std + style_mean


def encode(vgg_params, image: jax.Array, layers: Sequence[str] = (ENCODER_LAYER,)) -> dict:
    """``{layer: (h, w, c)}`` VGG19 features of one image in [0, 1]."""
    return vgg19_features(vgg_params, image, tuple(layers))


class Decoder(nn.Module):
    """block4_conv1 features ``(h, w, 512)`` -> an ``(8h, 8w, 3)`` image (not clipped:
    the training loss sees it as it is, as the paper's code does).

    Attributes:
      conv: how its convolutions are computed (:func:`nst_jax.core.conv.conv2d`).
    """

    conv: str = "direct"

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        x = features
        for channels, upsample in DECODER:
            x = nn.relu(ReflectConv(channels, 3, conv=self.conv, upsample=upsample)(x))
        return ReflectConv(3, 3, conv=self.conv)(x)


def blend_targets(
    content_features: jax.Array,
    style_features: Sequence[jax.Array],
    weights: Sequence[float] | None = None,
    alpha: float | jax.Array = 1.0,
) -> jax.Array:
    """What the decoder decodes: ``alpha * sum_k w_k adain(c, s_k) + (1 - alpha) * c``
    (the paper's content-style trade-off and style interpolation, section 7.3).

    Args:
      content_features: ``(h, w, c)`` encoder features of the content.
      style_features: each style's ``(h_k, w_k, c)`` encoder features.
      weights: one per style, summing to 1 (``None``: equal).
      alpha: 0 decodes the content's own features, 1 the style's statistics.
    """
    count = len(style_features)
    weights = [1.0 / count] * count if weights is None else list(weights)
    mixed = sum(
        w * adain(content_features, s) for w, s in zip(weights, style_features, strict=True)
    )
    return alpha * mixed + (1.0 - alpha) * content_features


def adain_loss(
    decoder_params: Mapping,
    vgg_params: Mapping,
    content: jax.Array,
    style: jax.Array,
    style_weight: float | jax.Array = 10.0,
    conv: str = "direct",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The paper's training loss of one (content, style) pair: ``L_c + style_weight * L_s``
    (the decoder's convolutions computed by ``conv``).

    ``L_c`` is the mean squared distance between the decoded image's block4_conv1 features
    and the AdaIN target ``t``; ``L_s`` sums, over :data:`STYLE_LAYERS`, the mean squared
    distances of the per-channel means and of the standard deviations to the style's
    (the paper's code, with its default style weight 10).

    Returns:
      ``(loss, {"content", "style"})``.
    """
    target = adain(
        encode(vgg_params, content)[ENCODER_LAYER], encode(vgg_params, style)[ENCODER_LAYER]
    )
    decoded = Decoder(conv).apply(decoder_params, target)
    ours, theirs = (
        encode(vgg_params, decoded, STYLE_LAYERS),
        encode(vgg_params, style, STYLE_LAYERS),
    )
    content_term = jnp.mean((ours[ENCODER_LAYER] - target) ** 2)
    style_term = 0.0
    for layer in STYLE_LAYERS:
        (m1, s1), (m2, s2) = mean_std(ours[layer]), mean_std(theirs[layer])
        style_term = style_term + jnp.mean((m1 - m2) ** 2) + jnp.mean((s1 - s2) ** 2)
    return content_term + style_weight * style_term, {"content": content_term, "style": style_term}
