"""One image, its rows split over every local device, against the unsharded run; prints a
JSON report. Called by test_batch.py with XLA_FLAGS=--xla_force_host_platform_device_count=4
(in its own process: the flag must be set before JAX starts). ``python tests/sharded_rows.py
WEIGHTS HEIGHT WIDTH STEPS CONV`` runs other sizes and convolutions (direct, winograd).

The run is float64, so that equality is shown exactly (the Grams' sums are split over
devices, which rounds differently only at the last bit of float64). The memory ratio is
float32's, as a run on an accelerator: XLA's per-device temporaries of the row-exchanged step
over those of the one-device step.

It also deals a tiled step's windows over the devices (``tiling.tiled_value_and_grad``'s
``devices``, as a tiled run on several accelerators does) against one device's, in float64.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

import nst_jax
from nst_jax.core import conv as convolution
from nst_jax.core import optim
from nst_jax.run import batching, devices, rows, tiling

from conftest import eight_bit_image, texture_image


def step_temp_bytes(params, targets, image, config, mesh, loss=nst_jax.loss_fn) -> int:
    """XLA's per-device temporary memory of the compiled step (``memory_analysis``)."""
    tx = optim.make_optimizer(config)
    images, states = image[None], batching.init_states(tx, image[None])
    placed = devices.place((params, targets, images, states), mesh)
    if mesh is not None:
        placed = (devices.place(params, mesh, False), *placed[1:])
    compiled = batching.batch_step(config, tx, loss).lower(*placed, np.int32(0)).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def winograd_gradient_difference(params, content, style, mesh) -> float:
    """The loss gradient by Winograd, borders exchanged over ``mesh`` against one device's,
    max abs difference over max abs (float64): the Winograd branch of the exchange, which a
    direct run does not take. Layers to block 2, for the suite's time: every Winograd layer
    exchanges its rows alike, and block 2's maps are split at a pooled boundary as deeper
    ones are."""
    config = nst_jax.StyleConfig(
        content_layers=("block2_conv2",), style_layers=("block1_conv1", "block2_conv1")
    )
    targets = nst_jax.make_targets(params, content, style, config)
    prepared = convolution.prepare_params(params, "winograd")
    x = jnp.asarray(texture_image(*content.shape[:2]), content.dtype)
    grad = lambda loss, *args: jax.jit(  # noqa: E731
        jax.grad(lambda p, x, t: loss(p, x, t, config)[0], argnums=1)
    )(*args)
    one = grad(nst_jax.loss_fn, prepared, x, targets)
    # Uncommitted arguments: the shard_map inside splits what it is given.
    split = grad(rows.row_loss(mesh), prepared, x, targets)
    return float(jnp.max(jnp.abs(split - one)) / jnp.max(jnp.abs(one)))


def dealt_tiles(params, mesh_devices) -> dict:
    """A tiled loss and gradient with the windows dealt over ``mesh_devices`` against one
    device's (float64; block 2's layers and 32 px tiles on 60 x 60 px: a 2 x 2 grid, a window
    for each device), and how many devices each pass's windows ran on."""
    config = nst_jax.StyleConfig(
        content_layers=("block2_conv2",), style_layers=("block1_conv1", "block2_conv1")
    )
    content = jnp.asarray(eight_bit_image(60, 60, seed=2), jnp.float64)
    targets = nst_jax.make_targets(params, content, texture_image(40, 60), config)
    x = jnp.asarray(texture_image(60, 60), jnp.float64)
    ran_on = {"forward": set(), "backward": set()}

    def recording(function, name):
        def record(params, window, *args, **kwargs):
            ran_on[name].update(window.devices())
            return function(params, window, *args, **kwargs)

        return record

    one = tiling.tiled_value_and_grad(params, x, targets, config, 32)
    forward, backward = tiling.window_forward, tiling.window_backward
    tiling.window_forward = recording(forward, "forward")
    tiling.window_backward = recording(backward, "backward")
    try:
        dealt = tiling.tiled_value_and_grad(params, x, targets, config, 32, None, mesh_devices)
    finally:
        tiling.window_forward, tiling.window_backward = forward, backward
    (loss_one, _), grad_one = one
    (loss_dealt, _), grad_dealt = dealt
    return {
        "dealt_loss_difference": float(abs(loss_dealt - loss_one) / abs(loss_one)),
        "dealt_gradient_difference": float(
            jnp.max(jnp.abs(grad_dealt - grad_one)) / jnp.max(jnp.abs(grad_one))
        ),
        "dealt_devices": [len(ran_on["forward"]), len(ran_on["backward"])],
        "gradient_devices": len(grad_dealt.devices()),
    }


def one_image_policy(local) -> dict:
    """What ``stylize`` does with one image that fits no device untiled (the memory each
    device has is patched to 1 byte), over these host devices."""
    from nst_jax.run import memory

    available = memory.available_bytes
    memory.available_bytes = lambda device=None: 1
    try:
        tiled = devices.choose_mesh(nst_jax.StyleConfig(tile="auto"), local, "auto", 1, 128, 96)
        untiled = devices.choose_mesh(nst_jax.StyleConfig(), local, "auto", 1, 128, 96)
    finally:
        memory.available_bytes = available
    return {
        "tiled_mesh": None if tiled is None else list(tiled.axis_names),
        "tiled_window_devices": devices.tile_devices(local, tiled, 1),
        "untiled_mesh": list(untiled.axis_names),
    }


def padded_tiled_batch(params) -> dict:
    """Three images tiled (32 px tiles of 32 x 60 px: 2 windows each) on a batch mesh of 4
    devices, which pads the batch to 4: how many windows pass 2 computed."""
    config = nst_jax.StyleConfig(
        content_layers=("block2_conv2",), style_layers=("block1_conv1", "block2_conv1"),
        steps=1, tile=32,
    )  # fmt: skip
    contents = np.stack([eight_bit_image(32, 60, seed=s) for s in (4, 5, 6)])
    windows = []
    nst_jax.stylize(contents, texture_image(40, 60), params=params, config=config,
                    on_tile=lambda done, total: windows.append(total))  # fmt: skip
    return {"padded_batch_windows": len(windows)}


def main(
    weights_path: str, height: int = 128, width: int = 96, steps: int = 2, conv: str = "direct"
) -> None:
    jax.config.update("jax_enable_x64", True)
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), nst_jax.load_vgg19(weights_path))
    content = jnp.asarray(eight_bit_image(height, width, seed=3), jnp.float64)
    style = jnp.asarray(texture_image(40, 60), jnp.float64)
    config = nst_jax.StyleConfig(steps=steps, steps_per_call=steps, conv=conv)
    sharded = nst_jax.stylize(content, style, params=params, config=config, shard="rows")
    # row_loss is made (and cached) only when a run's borders are exchanged explicitly.
    exchanged = rows.row_loss.cache_info().currsize == 1
    single = nst_jax.stylize(content, style, params=params, config=config,
                             devices=jax.local_devices()[:1])  # fmt: skip
    diff = float(np.max(np.abs(np.asarray(sharded.image) - np.asarray(single.image))))
    mesh = devices.rows_mesh()
    winograd = winograd_gradient_difference(params, content, style, mesh)
    dealt = dealt_tiles(params, jax.local_devices())
    policy = one_image_policy(jax.local_devices())
    padded = padded_tiled_batch(params)
    targets = jax.tree.map(lambda a: a[None], nst_jax.make_targets(params, content, style, config))
    # float32, as a run on an accelerator; the params as the run prepares them (conv).
    params, targets, content = jax.tree.map(
        lambda a: jnp.asarray(a, jnp.float32), (params, targets, content)
    )
    params = convolution.prepare_params(params, conv)
    sharded_bytes = step_temp_bytes(params, targets, content, config, mesh, rows.row_loss(mesh))
    ratio = sharded_bytes / step_temp_bytes(params, targets, content, config, None)
    print(json.dumps({"devices": jax.local_device_count(), "exchanged": exchanged,
                      "shards": len(sharded.image.sharding.device_set),
                      "max_abs_pixel_difference": diff, "temp_ratio": ratio,
                      "winograd_gradient_difference": winograd,
                      **dealt, **policy, **padded}))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[2:5]), *sys.argv[5:])
