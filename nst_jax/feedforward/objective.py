"""The training objectives of the feed-forward networks, pure, over a batch.

Johnson et al.'s network is trained on the very objective optimisation minimises
(:func:`nst_jax.loss_fn`): for each training image, its own content features, the style's
statistics (Grams, or another registered style term) and total variation, applied to the
network's output. So a trained model and an optimised image can be compared on equal
terms. AdaIN's decoder is trained on its paper's loss (:func:`nst_jax.feedforward.adain.
adain_loss`).

A batch's loss is the mean of its images' losses; the networks see one image at a time
(``jax.vmap``), as the core does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from nst_jax.core.objective import ObjectiveConfig, Params, loss_fn
from nst_jax.core.targets import content_features
from nst_jax.feedforward import adain


def johnson_loss(
    net: nn.Module,
    net_params: Any,
    vgg_params: Params,
    contents: jax.Array,
    style_targets: Mapping[str, Any],
    config: ObjectiveConfig,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The batch's mean of ``loss_fn(vgg, net(c), targets(c))``.

    Args:
      net: the transformation network (:class:`nst_jax.feedforward.johnson.TransformerNet`).
      net_params: its params.
      vgg_params: VGG19 params.
      contents: ``(N, H, W, 3)`` training images in [0, 1].
      style_targets: :func:`nst_jax.make_targets`'s targets for the style (their
        ``"content"`` entry is replaced by each image's own features).
      config: the objective's layers and weights (as ``make_targets`` used).

    Returns:
      ``(loss, terms)``, each the batch's mean.
    """

    def one(content: jax.Array):
        targets = {**style_targets, "content": content_features(vgg_params, content, config)}
        return loss_fn(vgg_params, net.apply(net_params, content), targets, config)

    losses, terms = jax.vmap(one)(contents)
    return jnp.mean(losses), jax.tree.map(jnp.mean, terms)


def adain_batch_loss(
    decoder_params: Any,
    vgg_params: Params,
    contents: jax.Array,
    styles: jax.Array,
    style_weight: float | jax.Array = 10.0,
    conv: str = "direct",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The mean over ``(content, style)`` pairs of :func:`adain.adain_loss` (the decoder's
    convolutions computed by ``conv``)."""
    loss = functools.partial(adain.adain_loss, conv=conv)
    losses, terms = jax.vmap(loss, in_axes=(None, None, 0, 0, None))(
        decoder_params, vgg_params, contents, styles, style_weight
    )
    return jnp.mean(losses), jax.tree.map(jnp.mean, terms)


def make_train_step(loss: Callable, tx: optax.GradientTransformation) -> Callable:
    """One jitted training step of ``loss(params, *batch) -> (value, terms)``.

    Returns:
      ``step(params, opt_state, *batch) -> (params, opt_state, value, terms)``, the value
      and terms those of the params before the update.
    """

    def step(params, opt_state, *batch):
        (value, terms), grads = jax.value_and_grad(loss, has_aux=True)(params, *batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value, terms

    return jax.jit(step)
