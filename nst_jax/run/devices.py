"""Which devices a run uses and how its arrays are placed on them.

A batch is sharded by its leading axis over a 1-D ``("batch",)`` mesh (``NamedSharding``,
padded to a multiple of the devices); one image too large for a device has its rows split
over a ``("rows",)`` mesh (:mod:`nst_jax.run.rows`), or is tiled whole on one device with
its windows dealt over the accelerators (:mod:`nst_jax.run.tiling`). :func:`choose_mesh`
is the policy, :func:`place` the placement.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from nst_jax.config import StyleConfig
from nst_jax.run import memory, tile_memory

BATCH_AXIS = "batch"
ROWS_AXIS = "rows"
SHARDS = ("auto", "batch", "rows")


def batch_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh | None:
    """A 1-D ``("batch",)`` mesh over ``devices`` (default: every local device), or ``None``
    when there is only one device."""
    devices = list(devices) if devices is not None else jax.local_devices()
    return Mesh(np.array(devices), (BATCH_AXIS,)) if len(devices) > 1 else None


def rows_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh | None:
    """A 1-D ``("rows",)`` mesh over ``devices`` (default: every local device), to split one
    image's rows over them, or ``None`` with one device."""
    devices = list(devices) if devices is not None else jax.local_devices()
    return Mesh(np.array(devices), (ROWS_AXIS,)) if len(devices) > 1 else None


def is_rows_mesh(mesh: Mesh | None) -> bool:
    """Whether ``mesh`` splits one image's rows (:func:`rows_mesh`)."""
    return mesh is not None and mesh.axis_names == (ROWS_AXIS,)


def row_sharding(leaf, mesh: Mesh) -> NamedSharding:
    """How :func:`place` puts ``leaf`` (an array or its shape) on a :func:`rows_mesh`:
    ``(N, H, W, C)`` arrays (images, Adam's moments, content features) split by rows when
    their rows divide evenly; everything else (Grams, counts, weights) replicated.

    The step then exchanges the convolutions' borders: explicitly (:mod:`nst_jax.run.rows`),
    or by XLA's partitioner for runs that module does not take.
    """
    if np.ndim(leaf) == 4 and np.shape(leaf)[1] % mesh.size == 0:
        return NamedSharding(mesh, P(None, ROWS_AXIS))
    return NamedSharding(mesh, P())


def pad(tree, extra: int):
    """Append ``extra`` copies of each leaf's last item along axis 0 (a ragged last batch)."""
    if not extra:
        return tree
    return jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)]), tree)


def place(tree, mesh: Mesh | None, batched: bool = True):
    """Shard ``tree`` over ``mesh`` by its leading axis (or replicate it), padding that axis to
    a multiple of the mesh size; unchanged without a mesh. Over a :func:`rows_mesh`, batched
    images are split by rows instead."""
    if mesh is None:
        return tree
    if is_rows_mesh(mesh):
        if not batched:
            return jax.device_put(tree, NamedSharding(mesh, P()))
        return jax.tree.map(lambda x: jax.device_put(x, row_sharding(x, mesh)), tree)
    if batched:
        tree = pad(tree, -jax.tree.leaves(tree)[0].shape[0] % mesh.size)
    return jax.device_put(tree, NamedSharding(mesh, P(BATCH_AXIS) if batched else P()))


def choose_mesh(
    config: StyleConfig, devices: Sequence[jax.Device], shard: str, n: int, height: int, width: int
) -> Mesh | None:
    """The device mesh of a run of ``n`` images over ``devices`` (``stylize``'s ``shard``),
    or ``None`` on one device, or for one image tiled whole on the first device."""
    devices = list(devices)
    if shard not in SHARDS:
        raise ValueError(f"shard must be auto, batch or rows, got {shard!r}")
    if config.tile is not None and shard == "rows":
        raise ValueError("a tiled run runs on one device: give shard='batch' or tile=None")
    if shard == "auto" and len(devices) > 1 and n == 1:
        untiled = config.replace(tile=None)
        if not fits(untiled, height, width, devices[0]):
            if config.tile is None or (
                config.tile == "auto" and split_fits(untiled, height, width, devices)
            ):
                shard = "rows"
            else:
                return None  # tiled on the first device (tile_devices)
    return rows_mesh(devices) if shard == "rows" else batch_mesh(devices)


def fits(config: StyleConfig, height: int, width: int, device: jax.Device) -> bool:
    """Whether one image's untiled run fits ``device``'s memory
    (:func:`tile_memory.check_tiled_fits` untiled: by arithmetic first, the whole-image
    arrays alone, then by the compiled estimate)."""
    untiled = config.replace(tile=None)
    try:
        tile_memory.check_tiled_fits(untiled, 1, height, width, memory.available_bytes(device))
    except MemoryError:
        return False
    except ValueError:  # an extractor of unknown param shapes: its memory cannot be told
        return True
    return True


def split_fits(config: StyleConfig, height: int, width: int, devices: Sequence[jax.Device]):
    """Whether one image split by rows over ``devices`` fits (``config`` untiled), each
    device counted as one running its share of the rows (the two border rows each
    convolution adds are a few percent of a share, within the estimate's slack). Host devices
    share one memory: split, the image takes no less of it."""
    if devices[0].platform == "cpu":
        return False
    return fits(config, -(-height // len(devices)), width, devices[0])


def tile_devices(devices: Sequence[jax.Device], mesh: Mesh | None, n: int) -> tuple | None:
    """The devices a tiled step of one image deals its windows over: every device, when the
    image is on one (no mesh) and each device has its own memory (an accelerator); else
    ``None``, the image's device alone. Host devices share one memory and the same cores, so
    windows at once on several would only multiply the memory a window takes."""
    if mesh is not None or n != 1 or len(devices) < 2 or devices[0].platform == "cpu":
        return None
    return tuple(devices)
