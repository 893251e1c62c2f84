"""An own optimisation loop on nst_jax's public core; it reproduces ``nst_jax.stylize``.

    python scripts/own_loop.py CONTENT STYLE OUT.png [STEPS]

Weights are found as ``nst-jax`` finds them (``nst-jax weights info`` says where).
"""

import sys

import numpy as np

import nst_jax


def own_loop(params, content, style, config):
    targets = nst_jax.make_targets(params, content, style, config)
    tx = nst_jax.make_optimizer(config)
    step = nst_jax.make_step(config, tx)
    x, opt_state = content, tx.init(content)
    losses = []
    for _ in range(config.steps):
        x, opt_state, loss, terms = step(params, targets, x, opt_state)
        losses.append(loss)
    return {"image": x, "losses": np.array(losses)}


if __name__ == "__main__":
    content_path, style_path, out = sys.argv[1:4]
    config = nst_jax.StyleConfig(steps=int(sys.argv[4]) if len(sys.argv) > 4 else 1000)
    content, style = (nst_jax.image.load(path, 512) for path in (content_path, style_path))
    result = own_loop(nst_jax.load_vgg19(), content, style, config)
    nst_jax.image.save(out, np.asarray(result["image"]))
