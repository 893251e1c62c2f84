"""XLA's per-device temporary memory of one image's step, its rows split over devices.

For each size and convolution method, the float32 step of one image is compiled (not run)
three ways, with the XLA flags the ``nst-jax`` command sets
(:func:`nst_jax.session.configure_for_program`): on one device; over every local device
with XLA's partitioner splitting the rows (``loss_fn`` on a row-sharded image); and with
the borders exchanged explicitly (:func:`nst_jax.run.rows.row_loss`). Prints
``memory_analysis().temp_size_in_bytes`` of each and
the ratios to one device's. Run it with forced CPU devices (the flag must be set before JAX
starts)::

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python scripts/bench_rows.py \\
        --sizes 256x384 512x768 1024x1536

Sizes are HEIGHTxWIDTH; the height must be a multiple of the devices x 16 for the exchange.
Random weights in Keras' layout stand in for VGG19's: memory does not depend on their values.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import nst_jax
from nst_jax.core import optim
from nst_jax.files import keras_h5
from nst_jax.run import batching, devices, rows
from nst_jax.session import process


def temp_mib(config, params, targets, image, mesh, loss) -> float:
    """Per-device temporaries of the compiled batch step of one image, in MiB (shapes only:
    nothing is computed)."""
    tx = optim.make_optimizer(config)
    images = jax.ShapeDtypeStruct((1, *image.shape), image.dtype)
    images = images if mesh is None else _placed(images, mesh)
    states = jax.eval_shape(lambda x: batching.init_states(tx, x), images)
    if mesh is not None:
        params = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=NamedSharding(mesh, P())),
            params,
        )
        targets, states = _placed((targets, states), mesh)
    compiled = batching.batch_step(config, tx, loss).lower(params, targets, images, states, 0)
    return compiled.compile().memory_analysis().temp_size_in_bytes / 2**20


def _placed(tree, mesh):
    """Shapes with the shardings ``devices.place`` gives a rows mesh."""
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=devices.row_sharding(a, mesh)),
        tree,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["256x384", "512x768", "1024x1536"])
    parser.add_argument("--convs", nargs="+", default=["direct", "winograd"])
    parser.add_argument(
        "--xla-defaults",
        action="store_true",
        help="XLA's own flags (a library user's process), not the nst-jax command's",
    )
    args = parser.parse_args()
    if not args.xla_defaults:
        process.configure_for_program()  # as the nst-jax command does for itself
    mesh = devices.rows_mesh()
    if mesh is None:
        raise SystemExit("one device: set XLA_FLAGS=--xla_force_host_platform_device_count=4")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vgg19_notop.h5"
        keras_h5.write_keras_h5(keras_h5.random_params(seed=0), path)
        raw = nst_jax.load_vgg19(path)
    config = nst_jax.StyleConfig()
    spec = lambda shape: jax.ShapeDtypeStruct(shape, jnp.float32)  # noqa: E731
    print(f"{mesh.size} devices; per-device step temporaries (float32, MiB)")
    print("| image (H x W) | conv | one device | partitioner | exchanged | ratios |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        height, width = map(int, size.split("x"))
        targets = jax.eval_shape(
            lambda p, c, s: jax.tree.map(
                lambda a: a[None], nst_jax.make_targets(p, c, s, config)
            ),
            raw, spec((height, width, 3)), spec((64, 64, 3)),
        )  # fmt: skip
        for conv in args.convs:
            params = jax.eval_shape(lambda p, conv=conv: nst_jax.prepare_params(p, conv), raw)
            image = jax.ShapeDtypeStruct((height, width, 3), jnp.float32)
            one = temp_mib(config, params, targets, image, None, nst_jax.loss_fn)
            split = temp_mib(config, params, targets, image, mesh, nst_jax.loss_fn)
            exchanged = temp_mib(config, params, targets, image, mesh, rows.row_loss(mesh))
            print(f"| {height} x {width} | {conv} | {one:.1f} | {split:.1f} | {exchanged:.1f} "
                  f"| {split / one:.3f} / {exchanged / one:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
