"""Magenta's conditional style networks, per image ``(H, W, 3)`` in [0, 1].

- The N-style network of Dumoulin, Shlens & Kudlur ("A Learned Representation for
  Artistic Style", ICLR 2017): one transformation network for many styles, each style only
  its own scale and shift of every instance normalisation (conditional instance
  normalisation). A blend of styles is a convex combination of their scales and shifts (the
  paper's section 4, "combining styles"), so a mix is one forward pass.
- The arbitrary-style transformer of Ghiasi, Lee, Kudlur, Dumoulin & Shlens ("Exploring
  the structure of a real-time, arbitrary neural artistic stylization network", BMVC 2017):
  the same network, its scales and shifts predicted from a style vector by fully connected
  layers; the vector comes from a style image (:mod:`.mobilenet`'s predictor), once per
  style. Its first three convolutions are batch-normalised in the paper: in the published
  files that normalisation is folded into their biases.

Both networks are Magenta's ``model.transform`` (Apache-2.0): reflection padding of
``kernel // 2`` before every convolution, strided convolutions down, residual blocks
``x + norm(conv(relu(norm(conv(x)))))``, nearest upsampling by 2 then a convolution up, a
9x9 convolution to RGB normalised like the others, and a sigmoid. The widths are the
published files' (:class:`MagentaSettings`), read from their tensors' shapes on import.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nst_jax.feedforward.layers import NORM_EPSILON, ReflectConv

METHODS = ("magenta26", "arbitrary")


@dataclasses.dataclass(frozen=True)
class MagentaSettings:
    """One imported network's architecture (stored in its ``model.json``).

    Attributes:
      method: ``"magenta26"`` (Dumoulin et al.: ``condition`` styles, picked by weights) or
        ``"arbitrary"`` (Ghiasi et al.: a style vector of ``condition`` numbers).
      contract: the widths of the 9x9 and the two strided 3x3 convolutions.
      expand: the widths of the two upsampling convolutions.
      residual_blocks: residual blocks at the lowest resolution.
      condition: styles (``magenta26``) or the style vector's size (``arbitrary``).
    """

    method: str
    contract: tuple[int, int, int] = (32, 64, 128)
    expand: tuple[int, int] = (64, 32)
    residual_blocks: int = 5
    condition: int = 26

    def __post_init__(self):
        # Lists (JSON's) become tuples, and NumPy integers ints: the settings are hashed
        # as a static argument of the compiled network.
        for name in ("contract", "expand"):
            value = getattr(self, name)
            if not isinstance(value, (tuple, list)):
                raise TypeError(f"{name} must be a tuple of widths, got {value!r}")
            object.__setattr__(self, name, tuple(_int(w) for w in value))
        for name in ("residual_blocks", "condition"):
            object.__setattr__(self, name, _int(getattr(self, name)))
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        widths = (*self.contract, *self.expand, self.residual_blocks, self.condition)
        if len(self.contract) != 3 or len(self.expand) != 2:
            raise ValueError("contract takes 3 widths and expand 2")
        if not all(isinstance(w, int) and not isinstance(w, bool) and 0 < w <= 4096
                   for w in widths):  # fmt: skip
            raise ValueError(f"widths and counts must be integers from 1 to 4096, got {widths}")

    @property
    def conditioned_contract(self) -> bool:
        """Whether the first three convolutions are conditionally normalised (Dumoulin)."""
        return self.method == "magenta26"


def _int(value):
    """A NumPy integer as an int; anything else as it is (checked by the caller)."""
    return int(value) if isinstance(value, np.integer) else value


class ConditionalInstanceNorm(nn.Module):
    """Instance normalisation whose scale and shift are linear in a conditioning vector
    ``c``: ``gamma = c G + g``, ``beta = c B + b`` (two ``Dense`` layers).

    Dumoulin et al.: ``c`` holds the style weights (summing to 1), ``G``'s rows are each
    style's scales and ``g = 0``. Ghiasi et al.: ``c`` is the style vector and ``(G, g)`` a
    fully connected layer. Biased variance, epsilon 1e-5, as every published file.
    """

    @nn.compact
    def __call__(self, x: jax.Array, condition: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        gamma = nn.Dense(channels, name="gamma")(condition)
        beta = nn.Dense(channels, name="beta")(condition)
        mean = jnp.mean(x, axis=(0, 1))
        variance = jnp.mean((x - mean) ** 2, axis=(0, 1))
        return (x - mean) / jnp.sqrt(variance + NORM_EPSILON) * gamma + beta


class ConditionalResidual(nn.Module):
    """``x + norm(conv(relu(norm(conv(x)))))``, 3x3 convolutions of ``x``'s channels."""

    conv: str = "direct"

    @nn.compact
    def __call__(self, x: jax.Array, condition: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        y = ReflectConv(channels, 3, conv=self.conv, name="conv0")(x)
        y = nn.relu(ConditionalInstanceNorm(name="norm0")(y, condition))
        y = ReflectConv(channels, 3, conv=self.conv, name="conv1")(y)
        return x + ConditionalInstanceNorm(name="norm1")(y, condition)


class StyleTransformer(nn.Module):
    """The transformation network (module docstring) for one ``(H, W, 3)`` image whose
    sides are multiples of 4, conditioned by style weights or a style vector.

    Attributes:
      settings: the architecture.
      conv: how its convolutions are computed (:func:`nst_jax.core.conv.conv2d`).
    """

    settings: MagentaSettings
    conv: str = "direct"

    @nn.compact
    def __call__(self, image: jax.Array, condition: jax.Array) -> jax.Array:
        s, conv = self.settings, functools.partial(ReflectConv, conv=self.conv)
        x = image
        shapes = zip(s.contract, (9, 3, 3), (1, 2, 2), strict=True)
        for k, (width, kernel, stride) in enumerate(shapes):
            x = conv(width, kernel, stride=stride, name=f"contract{k}")(x)
            if s.conditioned_contract:
                x = ConditionalInstanceNorm(name=f"contract{k}_norm")(x, condition)
            x = nn.relu(x)
        for k in range(s.residual_blocks):
            x = ConditionalResidual(self.conv, name=f"residual{k}")(x, condition)
        for k, width in enumerate(s.expand):
            x = conv(width, 3, upsample=True, name=f"expand{k}")(x)
            x = nn.relu(ConditionalInstanceNorm(name=f"expand{k}_norm")(x, condition))
        x = conv(3, 9, name="output")(x)
        return nn.sigmoid(ConditionalInstanceNorm(name="output_norm")(x, condition))
