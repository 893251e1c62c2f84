"""The style term swapped for a moment loss (Huang & Belongie, "Arbitrary Style Transfer in
Real-time with Adaptive Instance Normalization", ICCV 2017): each style layer's channel means
and standard deviations are matched instead of its Gram matrix. Built on the public core.

    python scripts/own_style_loss.py CONTENT STYLE OUT.png [STEPS]
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

import nst_jax


def mean_std(features):  # (h, w, c) -> (2, c)
    return jnp.stack([features.mean((0, 1)), features.std((0, 1))])


def moment_loss(params, x, targets, config):
    # The tutorial's content and TV terms (style weight 0 in loss_fn), plus the moment term.
    no_gram = {**targets, "weights": {**targets["weights"], "style": 0.0}}
    base, _ = nst_jax.loss_fn(params, x, no_gram, config)
    features = nst_jax.vgg19_features(params, x, config.style_layers)
    moments = [jnp.sum((mean_std(features[n]) - targets["moments"][n]) ** 2) for n in features]
    return base + targets["weights"]["style"] * sum(moments) / len(moments)


def moment_loop(params, content, style, config):
    targets = nst_jax.make_targets(params, content, style, config)
    style_features = nst_jax.vgg19_features(params, jnp.asarray(style), config.style_layers)
    targets["moments"] = {name: mean_std(f) for name, f in style_features.items()}
    tx = nst_jax.make_optimizer(config)
    loss_and_grad = jax.jit(jax.value_and_grad(moment_loss, argnums=1), static_argnums=3)
    x, opt_state, losses = jnp.asarray(content), tx.init(content), []
    for _ in range(config.steps):
        loss, grad = loss_and_grad(params, x, targets, config)
        updates, opt_state = tx.update(grad, opt_state, x)
        x = jnp.clip(x + updates, 0.0, 1.0)
        losses.append(float(loss))
    return np.array(losses), x


if __name__ == "__main__":
    content_path, style_path, out = sys.argv[1:4]
    config = nst_jax.StyleConfig(steps=int(sys.argv[4]) if len(sys.argv) > 4 else 1000)
    content, style = (nst_jax.image.load(path, 512) for path in (content_path, style_path))
    losses, result = moment_loop(nst_jax.load_vgg19(), content, style, config)
    nst_jax.image.save(out, np.asarray(result))
