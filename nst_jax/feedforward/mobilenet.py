"""The style predictor of Ghiasi et al.'s arbitrary-style network as Magenta publishes it
for mobile use: MobileNetV2 (Sandler, Howard, Zhu, Zhmoginov & Chen, "MobileNetV2: Inverted
Residuals and Linear Bottlenecks", CVPR 2018) to its 1280-channel features, their mean over
the image, and a fully connected layer to the style vector (100 numbers). Where the paper
distils an Inception-v3 predictor, the published mobile files carry this one (Magenta's
``arbitrary_image_stylization``, Apache-2.0), batch normalisation folded into biases.

Per image ``(H, W, 3)`` in [0, 1] (the files take 256 x 256); padding is TensorFlow's
``SAME`` (strided convolutions pad bottom and right), activations ReLU6.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

STYLE_SIZE = 256  # the side the published predictor takes (Magenta's style_image_size)

# (expansion t, channels c, repeats n, first stride s): the paper's Table 2.
BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
          (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip


def relu6(x: jax.Array) -> jax.Array:
    """``min(max(x, 0), 6)``."""
    return jnp.clip(x, 0.0, 6.0)


class InvertedResidual(nn.Module):
    """1x1 expansion (unless ``expansion`` is 1), 3x3 depthwise convolution, linear 1x1
    projection; the input added back when the shapes allow.

    Attributes:
      expansion: channel factor of the expansion.
      features: output channels.
      stride: the depthwise convolution's stride.
    """

    expansion: int
    features: int
    stride: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = x
        if self.expansion != 1:
            y = relu6(nn.Conv(x.shape[-1] * self.expansion, (1, 1), name="expand")(y))
        channels = y.shape[-1]
        y = nn.Conv(channels, (3, 3), self.stride, padding="SAME", feature_group_count=channels,
                    name="depthwise")(y)  # fmt: skip
        y = nn.Conv(self.features, (1, 1), name="project")(relu6(y))
        return x + y if self.stride == 1 and x.shape[-1] == self.features else y


class StylePredictor(nn.Module):
    """A style image ``(H, W, 3)`` in [0, 1] to its style vector ``(bottleneck,)``.

    Attributes:
      bottleneck: the style vector's size (100 in the published files).
    """

    bottleneck: int = 100

    @nn.compact
    def __call__(self, image: jax.Array) -> jax.Array:
        x = relu6(nn.Conv(32, (3, 3), 2, padding="SAME", name="Conv")(image))
        block = 0
        for expansion, features, repeats, stride in BLOCKS:
            for i in range(repeats):
                name = "expanded_conv" + (f"_{block}" if block else "")
                x = InvertedResidual(expansion, features, stride if i == 0 else 1, name=name)(x)
                block += 1
        x = relu6(nn.Conv(1280, (1, 1), name="Conv_1")(x))
        return nn.Dense(self.bottleneck, name="bottleneck")(jnp.mean(x, axis=(0, 1)))
