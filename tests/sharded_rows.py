"""One image, its rows split over every local device, against the unsharded run; prints a
JSON report. Called by test_batch.py with XLA_FLAGS=--xla_force_host_platform_device_count=4
(in its own process: the flag must be set before JAX starts). ``python tests/sharded_rows.py
WEIGHTS HEIGHT WIDTH STEPS`` runs other sizes.

float64, so that equality is shown exactly (the Grams' sums are split over devices, which
rounds differently only at the last bit of float64).
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

import nst_jax
from nst_jax import batching, optim

from conftest import eight_bit_image, texture_image


def step_temp_bytes(params, targets, image, config, mesh) -> int:
    """XLA's per-device temporary memory of the compiled step (``memory_analysis``)."""
    tx = optim.make_optimizer(config)
    images, states = image[None], batching.init_states(tx, image[None])
    placed = batching.place((params, targets, images, states), mesh)
    if mesh is not None:
        placed = (batching.place(params, mesh, False), *placed[1:])
    compiled = batching.batch_step(config, tx).lower(*placed).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def main(weights_path: str, height: int = 96, width: int = 128, steps: int = 2) -> None:
    jax.config.update("jax_enable_x64", True)
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), nst_jax.load_vgg19(weights_path))
    content = jnp.asarray(eight_bit_image(height, width, seed=3), jnp.float64)
    style = jnp.asarray(texture_image(40, 60), jnp.float64)
    config = nst_jax.StyleConfig(steps=steps, steps_per_call=steps)
    sharded = nst_jax.stylize(content, style, params=params, config=config, shard="rows")
    single = nst_jax.stylize(content, style, params=params, config=config,
                             devices=jax.local_devices()[:1])  # fmt: skip
    diff = float(np.max(np.abs(np.asarray(sharded.image) - np.asarray(single.image))))
    targets = jax.tree.map(lambda a: a[None], nst_jax.make_targets(params, content, style, config))
    mesh = batching.rows_mesh()
    ratio = step_temp_bytes(params, targets, content, config, mesh) / step_temp_bytes(
        params, targets, content, config, None
    )
    print(json.dumps({"devices": jax.local_device_count(),
                      "shards": len(sharded.image.sharding.device_set),
                      "max_abs_pixel_difference": diff, "temp_ratio": ratio}))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[2:]))
