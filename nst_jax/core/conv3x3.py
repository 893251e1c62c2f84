"""VGG's 3x3 convolution layer, computed directly or by Winograd's algorithm as its params
say (:func:`nst_jax.core.conv.prepare_params` chooses).

Inside ``jax.shard_map`` a convolution can also work on one device's rows of a map split over
a mesh axis, taking its border rows from the neighbouring devices (:func:`neighbour_rows`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from nst_jax.core import winograd


class Conv3x3(nn.Module):
    """A SAME, stride-1 3x3 convolution with bias, of one ``(H, W, C)`` image.

    Its params are ``{kernel, bias}`` (``nn.Conv``'s names), or ``{winograd,
    winograd_rotated, bias}`` after :func:`nst_jax.core.conv.prepare_params`, which it then
    computes by Winograd's algorithm (``winograd_rotated`` may be left out: it only speeds up
    the input gradient).

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
            r = self.get_variable("params", "winograd_rotated")  # None in older prepared params
            dtype = jnp.result_type(x, bias, u[0][0])
            u, r = jax.tree.map(lambda a: a.astype(dtype), (u, r))
            y = winograd.conv3x3(x.astype(dtype), u, r)
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
