"""Johnson, Alahi & Fei-Fei's image transformation network ("Perceptual Losses for
Real-Time Style Transfer and Super-Resolution", ECCV 2016; its supplementary material's
architecture), with the changes the field adopted since:

- instance normalisation instead of batch normalisation (Ulyanov et al. 2016);
- nearest upsampling then a convolution instead of fractionally strided convolutions
  (Odena et al. 2016);
- reflection padding everywhere, so the network keeps the image's size.

Layers: a 9x9 convolution (32), two strided 3x3 convolutions (64, 128), five residual
blocks (two 3x3 convolutions of 128 each), two upsampling steps (64, 32), a 9x9
convolution to RGB; every convolution but the last is followed by instance normalisation
and ReLU (a residual block's second by normalisation only). The output goes through a
sigmoid to [0, 1], where Johnson et al. scale a tanh to pixel values.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax

from nst_jax.feedforward.layers import InstanceNorm, ReflectConv


class ResidualBlock(nn.Module):
    """``x + IN(conv(relu(IN(conv(x)))))`` with 3x3 convolutions of ``x``'s channels.

    Attributes:
      conv: how its convolutions are computed (:func:`nst_jax.core.conv.conv2d`).
    """

    conv: str = "direct"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        y = nn.relu(InstanceNorm()(ReflectConv(channels, 3, conv=self.conv)(x)))
        return x + InstanceNorm()(ReflectConv(channels, 3, conv=self.conv)(y))


class TransformerNet(nn.Module):
    """The transformation network (module docstring), for one ``(H, W, 3)`` image in
    [0, 1] whose sides are multiples of 4 (two stride-2 steps down, two up).

    Attributes:
      width: channels of the first convolution (32 in the paper); the others follow it.
      residual_blocks: 5 in the paper.
      conv: how its convolutions are computed, ``"direct"`` or ``"winograd"``
        (:func:`nst_jax.core.conv.conv2d`; :func:`nst_jax.core.conv.resolve_conv` picks).
    """

    width: int = 32
    residual_blocks: int = 5
    conv: str = "direct"

    @nn.compact
    def __call__(self, image: jax.Array) -> jax.Array:
        w, conv = self.width, functools.partial(ReflectConv, conv=self.conv)
        x = nn.relu(InstanceNorm()(conv(w, 9)(image)))
        x = nn.relu(InstanceNorm()(conv(2 * w, 3, stride=2)(x)))
        x = nn.relu(InstanceNorm()(conv(4 * w, 3, stride=2)(x)))
        for _ in range(self.residual_blocks):
            x = ResidualBlock(self.conv)(x)
        x = nn.relu(InstanceNorm()(conv(2 * w, 3, upsample=True)(x)))
        x = nn.relu(InstanceNorm()(conv(w, 3, upsample=True)(x)))
        return nn.sigmoid(conv(3, 9)(x))
