"""Run a batch of 6 sharded over every local device and unsharded; print a JSON report.

Called by test_batch.py with XLA_FLAGS=--xla_force_host_platform_device_count=4, in its own
process because that flag must be set before JAX starts. float64, for the reason given in
test_batch.py's docstring.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

import nst_jax

from conftest import eight_bit_image, texture_image


def main(weights_path: str) -> None:
    jax.config.update("jax_enable_x64", True)
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), nst_jax.load_vgg19(weights_path))
    contents = jnp.asarray(np.stack([eight_bit_image(16, 24, seed=20 + i) for i in range(6)]))
    style = jnp.asarray(texture_image(20, 20), jnp.float64)
    config = nst_jax.StyleConfig(
        steps=20,
        steps_per_call=10,
        # Shallow layers, as in test_batch.py: float64 512-channel convolutions are slow.
        content_layers=("block3_conv2",),
        style_layers=("block1_conv1", "block2_conv1", "block3_conv1"),
    )
    halfway = {}
    sharded = nst_jax.stylize(
        contents.astype(jnp.float64), style, params=params, config=config,
        on_event=lambda e: halfway.setdefault("state", e.state),
    )  # fmt: skip
    # Resuming a sharded, padded batch (6 on 4 devices) from step 10 reaches the same images.
    resumed = nst_jax.stylize(
        contents.astype(jnp.float64), style, params=params, config=config,
        resume=halfway["state"],
    )  # fmt: skip
    resume_diff = float(np.max(np.abs(np.asarray(resumed.image) - np.asarray(sharded.image))))
    # The result lives where the optimisation ran: on every device of the mesh.
    shards = len(sharded.image.sharding.device_set)
    unsharded = nst_jax.stylize(
        contents.astype(jnp.float64), style, params=params, config=config,
        devices=jax.local_devices()[:1],
    )  # fmt: skip
    diff = float(np.max(np.abs(np.asarray(sharded.image) - np.asarray(unsharded.image))))
    print(json.dumps({"devices": jax.local_device_count(), "shards": shards,
                      "max_abs_pixel_difference": diff,
                      "resume_difference": resume_diff}))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1])
