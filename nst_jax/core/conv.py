"""VGG's 3x3 convolution, and the choice of how to compute it.

A convolution is computed directly (``lax.conv_general_dilated``) or by Winograd's
F(2x2, 3x3) algorithm (:mod:`nst_jax.core.winograd`), which XLA:CPU runs faster for every
layer but the first; GPU convolution libraries pick such algorithms themselves. The choice is
made once per run by :func:`prepare_params`, which puts each chosen layer's transformed
kernel in the params: the network reads the method from the params it is given.

Inside ``jax.shard_map`` a convolution can also work on one device's rows of a map split over
a mesh axis, taking its border rows from the neighbouring devices (:func:`neighbour_rows`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nst_jax.core import winograd
from nst_jax.core.layers import LAYERS, deepest

Params = Mapping[str, Mapping[str, jax.Array]]

CONV_METHODS: tuple[str, ...] = ("auto", "direct", "winograd")

# The fewest input channels for which a layer uses Winograd: every layer but the first, whose
# 3 input channels make its products too thin to gain (whole-step timings per threshold:
# scripts/README.md, "Winograd F(2x2, 3x3)").
WINOGRAD_MIN_CHANNELS = 64

# "auto" uses Winograd only for runs long enough to repay its longer compile (a program
# several times larger) with its faster steps: images x pixels x steps, the break-even
# measured in scripts/README.md ("Winograd F(2x2, 3x3)").
WINOGRAD_MIN_PIXEL_STEPS = 1_200_000


class Conv3x3(nn.Module):
    """A SAME, stride-1 3x3 convolution with bias, of one ``(H, W, C)`` image.

    Its params are ``{kernel, bias}`` (``nn.Conv``'s names), or ``{winograd, bias}`` after
    :func:`prepare_params`, which it then computes by Winograd's algorithm.

    With ``row_axis``, ``x`` is one device's rows of a map split over that ``shard_map`` axis:
    the rows next to its first and last come from the neighbouring devices
    (:func:`neighbour_rows`), so the result equals the whole map's convolution there.
    """

    features: int
    row_axis: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        by_winograd = self.has_variable("params", "winograd")
        rows, above = x.shape[0], 0
        if self.row_axis is not None:
            # Winograd computes output rows in pairs: with two rows from above (an even
            # count) its pairs are the whole image's, so each device rounds as one would.
            above = 2 if by_winograd else 1
            top, bottom = neighbour_rows(x, self.row_axis, above)
            x = jnp.concatenate([top, x, bottom])
        if by_winograd:
            # Like nn.Conv, compute in the promoted dtype of the input and the params.
            u = self.get_variable("params", "winograd")
            dtype = jnp.result_type(x, bias, u[0][0])
            y = winograd.conv3x3(x.astype(dtype), jax.tree.map(lambda a: a.astype(dtype), u))
            bias = bias.astype(dtype)
        else:
            shape = (3, 3, x.shape[-1], self.features)
            kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
            x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias)
            y = jax.lax.conv_general_dilated(
                x[None], kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )[0]
        if above:
            # SAME on the widened rows, less the output rows that are not this device's (not
            # a convolution unpadded in the rows, whose float64 gradient XLA:CPU runs far
            # slower: scripts/README.md, "Print sizes").
            y = y[above : above + rows]
        return y + bias


def neighbour_rows(x: jax.Array, axis: str, above: int = 1) -> tuple[jax.Array, jax.Array]:
    """The rows around one device's ``(h, W, C)`` rows of a map split over ``shard_map`` axis
    ``axis``: the last ``above`` rows of the device above, and the first row of the device
    below. The first and last devices get zeros, the SAME convolution's padding at the
    image's true edges.
    """
    n = jax.lax.axis_size(axis)
    # ppermute gives zeros to a device no pair sends to: the ends of the chain.
    top = jax.lax.ppermute(x[-above:], axis, [(i, i + 1) for i in range(n - 1)])
    bottom = jax.lax.ppermute(x[:1], axis, [(i + 1, i) for i in range(n - 1)])
    return top, bottom


def resolve_conv(conv: str, pixel_steps: int | None = None) -> str:
    """The convolution method to use: ``"direct"`` or ``"winograd"``.

    Args:
      conv: ``"direct"``, ``"winograd"``, or ``"auto"``: Winograd on CPU for runs of at least
        ``WINOGRAD_MIN_PIXEL_STEPS`` pixel-steps, direct otherwise (GPU convolution libraries
        pick Winograd-style algorithms themselves, and a short run is mostly compile time).
      pixel_steps: images x pixels x steps of the run, over its scales (``None``: long).
    """
    if conv not in CONV_METHODS:
        raise ValueError(f"unknown convolution method {conv!r}; known: {', '.join(CONV_METHODS)}")
    if conv == "auto":
        long_run = pixel_steps is None or pixel_steps >= WINOGRAD_MIN_PIXEL_STEPS
        return "winograd" if jax.default_backend() == "cpu" and long_run else "direct"
    return conv


def prepare_params(
    params: Params,
    conv: str = "auto",
    min_channels: int = WINOGRAD_MIN_CHANNELS,
    pixel_steps: int | None = None,
    layers: Sequence[str] | None = None,
) -> Params:
    """Params made ready for the convolution method ``conv``, once per run.

    With ``"winograd"``, every layer with at least ``min_channels`` input channels has its
    ``kernel`` replaced by its Winograd transform, ``{winograd: 4 x 4 (in, out) arrays, bias}``,
    and the network computes it by :func:`nst_jax.core.winograd.conv3x3`. With ``"direct"``
    the params are returned as they are. Either way the features are the same up to float
    rounding.

    Args:
      params: ``{layer: {"kernel", "bias"}}`` as returned by ``nst_jax.load_vgg19``.
      conv: ``"auto"``, ``"direct"`` or ``"winograd"`` (see :func:`resolve_conv`).
      min_channels: input channels from which a layer uses Winograd.
      pixel_steps: images x pixels x steps of the run, for ``"auto"``.
      layers: the layers the run uses; with Winograd, params of later layers are left out
        (the transformed kernels are 16/9 the size of the originals).
    """
    if resolve_conv(conv, pixel_steps) == "direct":
        return params
    if layers is not None:
        last = deepest(layers)
        params = {name: leaves for name, leaves in params.items() if LAYERS.index(name) <= last}
    chosen = {
        name: leaves["kernel"]
        for name, leaves in params.items()
        if "kernel" in leaves and leaves["kernel"].shape[2] >= min_channels
    }
    transformed = _transform_kernels(chosen)
    return {
        name: {"winograd": transformed[name], "bias": leaves["bias"]}
        if name in transformed
        else leaves
        for name, leaves in params.items()
    }


def _transform_kernels(kernels: Mapping[str, jax.Array]) -> dict[str, winograd.WinogradKernel]:
    try:
        host = {name: np.asarray(kernel) for name, kernel in kernels.items()}
    except jax.errors.TracerArrayConversionError:  # under a transformation (eval_shape, say)
        return {name: winograd.transform_kernel(kernel) for name, kernel in kernels.items()}
    # Concrete kernels are transformed by NumPy and placed where they came from: a few
    # milliseconds of additions, where a jitted transform would cost a compilation (or a
    # cache load) at every start.
    return {
        name: jax.device_put(winograd.transform_kernel(kernel), _placement(kernels[name]))
        for name, kernel in host.items()
    }


def _placement(array) -> jax.sharding.Sharding | None:
    # Only a committed array's sharding is kept: committing the kernels would commit the
    # step's outputs, and the second step (committed images) would be compiled again.
    return array.sharding if isinstance(array, jax.Array) and array.committed else None
