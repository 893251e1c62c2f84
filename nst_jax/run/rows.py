"""One image's rows split over devices, each convolution's border rows exchanged explicitly.

When one image does not fit one device, its rows can be split over several (a 1-D ``("rows",)``
mesh). Inside ``jax.shard_map`` each device computes its own rows of every VGG layer: before
each 3x3 convolution it receives the row above its first from the device above and the row
below its last from the device below (``ppermute``, :func:`nst_jax.core.conv3x3.neighbour_rows`),
convolves the widened rows and keeps its own output rows. The loss is then assembled from sums:

- a Gram matrix is a sum over positions, so each device's unnormalised Gram is summed over the
  devices (``psum``) and divided by the whole map's positions;
- the content term is a mean over positions of equal shares, so the devices' means are averaged;
- total variation is a sum of neighbour differences, plus, at each device's last row, the
  difference to the first row of the device below.

Exact (up to the order of float sums): every device's rows of every map are the whole map's,
as long as each device holds a multiple of the layers' pooling grid
(:func:`nst_jax.core.geometry.tile_alignment`) so that no pool pairs rows of two devices
(:func:`exchanges`). The gradient is JAX's transpose of the same program: the exchanged rows'
cotangents go back to the devices they came from.

Why explicit: XLA's partitioner, given the image's rows sharded (a ``NamedSharding`` on H),
splits the activations too, but also masks the rows past the image's edges with full-size
masks, so each device holds more than its share of the temporaries; with the exchange it
holds about its share (scripts/README.md, "Print sizes: tiles and rows"). Runs
this module cannot take (other heights, other style losses, masks, a batch) still use the
partitioner.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from nst_jax.config import StyleConfig
from nst_jax.core import extractors, geometry, losses
from nst_jax.core.conv3x3 import neighbour_rows
from nst_jax.core.objective import Params, Targets, used_layers
from nst_jax.run.devices import ROWS_AXIS as AXIS


def exchanges(config: StyleConfig, n_images: int, height: int, n_devices: int) -> bool:
    """Whether a run of ``n_images`` images of ``height`` rows over ``n_devices`` can have
    its borders exchanged here (else XLA's partitioner splits it)."""
    if not extractors.has_known_fields(config.extractor):
        return False
    alignment = geometry.tile_alignment(used_layers(config), extractors.network(config.extractor))
    return (
        n_images == 1
        and n_devices > 1
        and height % (n_devices * alignment) == 0
        and config.style_loss == "gram"
        and not config.normalize_gradients
    )


@functools.lru_cache(maxsize=8)
def row_loss(mesh: Mesh) -> Callable:
    """:func:`nst_jax.loss_fn` of an image whose rows are split over ``mesh``'s ``"rows"``
    axis, with the same signature and results (the module docstring says how).

    Targets without masks; ``config`` as :func:`exchanges` accepts. The image's rows, and
    the content features', are split over the mesh; params, Grams and weights replicated.
    """

    def loss(
        params: Params, x: jax.Array, targets: Targets, config: StyleConfig
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        if "masks" in targets:
            raise ValueError("row-exchanged runs take no masks")
        target_specs = {key: P(AXIS) if key == "content" else P() for key in targets}
        local = functools.partial(_local_loss, config=config)
        return jax.shard_map(
            local, mesh=mesh, in_specs=(P(), P(AXIS), target_specs), out_specs=(P(), P())
        )(params, x, targets)

    return loss


def _layer_weights(layers, weights):
    return None if weights is None else dict(zip(layers, weights, strict=True))


def _local_loss(params: Params, x: jax.Array, targets: Targets, config: StyleConfig):
    """One device's part of the loss; every output is summed over the devices (replicated)."""
    devices = jax.lax.axis_size(AXIS)
    features = extractors.extract(params, x, used_layers(config), config, row_axis=AXIS)
    weights = targets["weights"]
    content_weights = _layer_weights(config.content_layers, config.content_layer_weights)
    content = losses.content_loss(
        {name: features[name] for name in config.content_layers},
        targets["content"],
        weights["content"],
        content_weights,
    )
    grams = {}
    for name in config.style_layers:
        h, w, _ = features[name].shape
        # A Python float, as gram_matrix divides: the whole map's positions.
        grams[name] = jax.lax.psum(losses.gram_sum(features[name]), AXIS) / float(h * devices * w)
    style_weights = _layer_weights(config.style_layers, config.style_layer_weights)
    terms = {
        # Each device's mean is over an equal share of the positions.
        "content": jax.lax.psum(content, AXIS) / devices,
        "style": losses.style_loss(grams, targets["style"], weights["style"], style_weights),
        "tv": jax.lax.psum(_local_total_variation(x, weights["tv"]), AXIS),
    }
    return terms["style"] + terms["content"] + terms["tv"], terms


def _local_total_variation(x: jax.Array, weight: jax.Array) -> jax.Array:
    """This device's rows' total variation, with the step from its last row to the first row
    of the device below (none on the last device: that row is the image's last)."""
    _, below = neighbour_rows(x, AXIS)  # the row above is unused: XLA drops it
    border = jnp.sum(losses.tf_abs(below - x[-1:]))
    last = jax.lax.axis_index(AXIS) == jax.lax.axis_size(AXIS) - 1
    return losses.total_variation_loss(x, weight) + weight * jnp.where(last, 0.0, border)
