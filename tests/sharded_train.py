"""Five Johnson training steps with the batch split over every local device (params
replicated, ``NamedSharding``) against the same steps on one device, in float64; prints a
JSON report. Called by test_feedforward.py with
XLA_FLAGS=--xla_force_host_platform_device_count=4 (the flag must be set before JAX starts).
"""

import functools
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import nst_jax
from nst_jax.feedforward import johnson, objective

CONFIG = nst_jax.StyleConfig(
    content_layers=("block2_conv2",),
    style_layers=("block1_conv1", "block2_conv1"),
)


def train(step, params, tx, batch, steps: int = 5):
    state, losses = tx.init(params), []
    for _ in range(steps):
        params, state, value, _ = step(params, state, *batch)
        losses.append(float(value))
    return params, losses


def main(weights_path: str) -> None:
    jax.config.update("jax_enable_x64", True)
    vgg = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), nst_jax.load_vgg19(weights_path))
    rng = np.random.default_rng(0)
    contents, style, new = (
        rng.random((8, 16, 16, 3)),
        rng.random((16, 16, 3)),
        rng.random((16, 16, 3)),
    )
    net = johnson.TransformerNet(width=4, residual_blocks=1)
    params = jax.jit(net.init)(jax.random.key(0), jnp.zeros((16, 16, 3), jnp.float64))
    targets = nst_jax.make_targets(vgg, jnp.asarray(contents[0]), style, CONFIG)
    tx = optax.adam(1e-2)
    step = objective.make_train_step(
        functools.partial(objective.johnson_loss, net, config=CONFIG), tx
    )
    one, one_losses = train(step, params, tx, (vgg, jnp.asarray(contents), targets))
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    replicated = NamedSharding(mesh, PartitionSpec())
    split = jax.device_put(jnp.asarray(contents), NamedSharding(mesh, PartitionSpec("batch")))
    placed = jax.device_put((params, vgg, targets), replicated)
    many, many_losses = train(step, placed[0], tx, (placed[1], split, placed[2]))
    a, b = (np.asarray(net.apply(p, jnp.asarray(new))) for p in (one, many))
    pairs = zip(one_losses, many_losses, strict=True)
    print(json.dumps({
        "devices": len(split.sharding.device_set),
        "loss_difference": max(abs(x - y) / abs(x) for x, y in pairs),
        "output_difference": float(np.max(np.abs(a - b))),
        "changed": float(np.max(np.abs(a - np.asarray(net.apply(params, jnp.asarray(new)))))),
    }))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1])
