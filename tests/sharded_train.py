"""Five Johnson training steps through ``nst_jax.feedforward.train.fit`` with the batch split
over every local device (params replicated, ``NamedSharding``) against the same steps on
one device, in float64; prints a JSON report. Called by test_feedforward.py with
XLA_FLAGS=--xla_force_host_platform_device_count=4 (the flag must be set before JAX starts).
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

import nst_jax
from nst_jax.feedforward import train

# VGG's first block only: the compile is what this test pays for, and the split is the same.
CONFIG = nst_jax.StyleConfig(content_layers=("block1_conv2",), style_layers=("block1_conv1",))
SETTINGS = train.TrainSettings(
    "johnson", steps=5, batch_size=8, size=16, learning_rate=1e-2, width=4, residual_blocks=1
).resolved()


def main(weights_path: str) -> None:
    jax.config.update("jax_enable_x64", True)
    vgg = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), nst_jax.load_vgg19(weights_path))
    rng = np.random.default_rng(0)
    batches = [(rng.random((8, 16, 16, 3)), None) for _ in range(5)]
    style, new = rng.random((16, 16, 3)), rng.random((16, 16, 3))
    wide = lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a  # noqa: E731
    start = jax.tree.map(wide, train.init_state(SETTINGS))
    targets = nst_jax.make_targets(vgg, jnp.asarray(batches[0][0][0]), style, CONFIG)
    runs = {}
    for name, devices in (("one", jax.devices()[:1]), ("many", jax.devices())):
        losses = []

        def log(event, losses=losses):
            losses.append(float(event.loss))

        end = train.fit(SETTINGS, start, vgg, iter(batches), targets, CONFIG, log, devices)
        runs[name] = (end["params"], losses)
    net = train.network(SETTINGS)
    (one, one_losses), (many, many_losses) = runs["one"], runs["many"]
    a, b = (np.asarray(net.apply(p, jnp.asarray(new))) for p in (one, many))
    first = np.asarray(net.apply(start["params"], jnp.asarray(new)))
    pairs = zip(one_losses, many_losses, strict=True)
    print(json.dumps({
        "devices": len(train.data_mesh(8).devices.flat),
        "steps": len(many_losses),
        "loss_difference": max(abs(x - y) / abs(x) for x, y in pairs),
        "output_difference": float(np.max(np.abs(a - b))),
        "changed": float(np.max(np.abs(a - first))),
    }))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1])
