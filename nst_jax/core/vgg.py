"""The VGG feature extractors (VGG19, VGG16) in Flax, with Keras' "caffe" preprocessing.

A network is the convolutional part of VGG19 or VGG16 ("notop") exactly as Keras builds it,
given by its blocks (:mod:`nst_jax.core.layers`), so the official Keras weights load without
any transposition: kernels are HWIO ``(3, 3, in, out)``,
which is Flax's layout too. Layer names are Keras' names (:mod:`nst_jax.core.layers`) and a
conv layer's output is its activation *after* ReLU, as in Keras where ``Conv2D`` carries
``activation="relu"``.

This module knows no files: params come from :mod:`nst_jax.files.weights`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from nst_jax.core.conv3x3 import Conv3x3
from nst_jax.core.layers import BLOCKS, Blocks, channels, check_layers, deepest, network_layers

# Keras' ImageNet mean in BGR order ("caffe" mode of keras.applications.imagenet_utils).
BGR_MEAN = (103.939, 116.779, 123.68)

Params = Mapping[str, Mapping[str, jax.Array]]


def preprocess(image: jax.Array) -> jax.Array:
    """Map an RGB image in [0, 1] to VGG input: ``x * 255``, RGB -> BGR, minus the BGR mean.

    Args:
      image: ``(..., 3)`` float RGB in [0, 1].

    Returns:
      ``(..., 3)`` float BGR, mean-subtracted (Keras ``preprocess_input``, caffe mode).
    """
    return image[..., ::-1] * 255.0 - jnp.asarray(BGR_MEAN, dtype=image.dtype)


def deprocess(x: jax.Array) -> jax.Array:
    """Inverse of :func:`preprocess`: add the mean back, BGR -> RGB, divide by 255."""
    return (x + jnp.asarray(BGR_MEAN, dtype=x.dtype))[..., ::-1] / 255.0


def pool_2x2(x: jax.Array, pooling: str = "max") -> jax.Array:
    """2x2 pooling, stride 2, VALID padding (an odd last row or column is dropped), of
    ``(..., H, W, C)`` features.

    Written with a reshape rather than ``reduce_window``: XLA:CPU runs the window's four
    strided views and their gradient faster than ``reduce_window`` and its
    ``select_and_scatter`` gradient (scripts/README.md, "Step speed and memory"). Values and
    gradients are identical to Keras' and Flax's pools, ties included (see :func:`_max4`).

    Args:
      x: ``(..., H, W, C)`` features.
      pooling: ``"max"`` or ``"avg"``.
    """
    *lead, h, w, c = x.shape
    x = x[..., : h // 2 * 2, : w // 2 * 2, :].reshape(*lead, h // 2, 2, w // 2, 2, c)
    # The window's elements in row-major order, each an (..., H/2, W/2, C) strided view.
    window = [x[..., :, i, :, j, :] for i in (0, 1) for j in (0, 1)]
    if pooling == "max":
        return _max4(*window)
    return (window[0] + window[1] + window[2] + window[3]) / 4


@jax.custom_jvp
def _max4(a: jax.Array, b: jax.Array, c: jax.Array, d: jax.Array) -> jax.Array:
    """Element-wise maximum of a pooling window's four elements.

    Its derivative follows the *first* maximal element in row-major order, as TensorFlow's
    and XLA's max-pool gradients do. ``jnp.max`` would share it among tied elements, and ties
    are common: flat areas of 8-bit images give equal activations in block 1.
    """
    return jnp.maximum(jnp.maximum(a, b), jnp.maximum(c, d))


@_max4.defjvp
def _max4_jvp(primals, tangents):
    a, b, c, _ = primals
    ta, tb, tc, td = tangents
    out = _max4(*primals)
    return out, jnp.where(a == out, ta, jnp.where(b == out, tb, jnp.where(c == out, tc, td)))


class _Block(nn.Module):
    """One VGG block: its convolutions (each followed by ReLU) and its pool.

    Attributes:
      index: block number, 1 to 5.
      wanted: names of the outputs to return.
      last: index in the network's layers of the deepest layer needed; later layers are not
        computed.
      pooling: ``"max"`` or ``"avg"``.
      crops: ``((layer, (top, bottom, left, right)), ...)``: the part of a layer's output
        kept for the next layer (a tile's window shrinking with depth:
        :func:`nst_jax.core.geometry.plan_window`).
      row_axis: the ``shard_map`` axis the rows are split over, or None (:class:`Conv3x3`).
      blocks: the network (:mod:`nst_jax.core.layers`).
    """

    index: int
    wanted: tuple[str, ...]
    last: int
    pooling: str
    crops: tuple = ()
    row_axis: str | None = None
    blocks: Blocks = BLOCKS

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        out = {}
        crops = dict(self.crops)
        for name in network_layers(self.blocks)[: self.last + 1]:
            if not name.startswith(f"block{self.index}_"):
                continue
            if name.endswith("_pool"):
                x = pool_2x2(x, self.pooling)
            else:
                # Keras' names at the leaves: the params tree is {layer: {kernel, bias}}.
                x = nn.relu(Conv3x3(channels(name, self.blocks), self.row_axis, name=name)(x))
            if name in crops:
                top, bottom, left, right = crops[name]
                x = x[top:bottom, left:right]
            if name in self.wanted:
                out[name] = x
        return x, out


class VGG(nn.Module):
    """A VGG convolutional base (VGG19's by default) for one image (batch it with
    ``jax.vmap``).

    Its params are ``{"block1": {"block1_conv1": {kernel, bias}, ...}, ...}``;
    :func:`image_features` takes the flat ``{layer: {kernel, bias}}`` tree and nests it.

    Attributes:
      layers: names of the outputs to return. Layers past the deepest one requested are not
        computed at all.
      pooling: ``"max"`` (Keras) or ``"avg"`` (Gatys et al. suggest average pooling for
        smoother gradients).
      crops: per layer, the part of its output kept (see ``_Block``); none by default.
      row_axis: the ``shard_map`` axis ``x``'s rows are split over, or None (one device).
      blocks: the network: ``layers.VGG19_BLOCKS`` or ``layers.VGG16_BLOCKS``.
    """

    layers: Sequence[str]
    pooling: str = "max"
    crops: tuple = ()
    row_axis: str | None = None
    blocks: Blocks = BLOCKS

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        """Map a preprocessed ``(H, W, 3)`` BGR image to ``{layer: (h, w, c)}``."""
        out = {}
        for block in _blocks(self.layers, self.pooling, self.crops, self.row_axis, self.blocks):
            x, found = block(x)
            out.update(found)
        return out


def _blocks(
    layers: Sequence[str],
    pooling: str,
    crops: tuple = (),
    row_axis: str | None = None,
    blocks: Blocks = BLOCKS,
) -> list[_Block]:
    """The blocks that compute ``layers``, in order (named ``block1`` ...)."""
    last = deepest(layers, blocks)
    count = int(network_layers(blocks)[last][len("block")])
    return [
        _Block(i, tuple(layers), last, pooling, crops, row_axis, blocks, name=f"block{i}")
        for i in range(1, count + 1)
    ]


def nest_params(params: Params) -> dict[str, dict[str, Mapping[str, jax.Array]]]:
    """``{layer: {kernel, bias}}`` -> ``{"blockB": {layer: {kernel, bias}}}`` (the module's
    tree)."""
    nested: dict[str, dict[str, Mapping[str, jax.Array]]] = {}
    for name, leaves in params.items():
        nested.setdefault(name.split("_")[0], {})[name] = leaves
    return nested


def image_features(
    params: Params,
    image: jax.Array,
    layers: Sequence[str],
    pooling: str = "max",
    remat: bool = False,
    crops: tuple = (),
    row_axis: str | None = None,
    blocks: Blocks = BLOCKS,
) -> dict[str, jax.Array]:
    """Features of one RGB image.

    Args:
      params: ``{layer: {"kernel", "bias"}}`` as returned by ``nst_jax.load_vgg19`` (or
        ``load_vgg16`` for VGG16's ``blocks``).
      image: ``(H, W, 3)`` float RGB in [0, 1].
      layers: names of the layers to return (see ``nst_jax.LAYERS``).
      pooling: ``"max"`` or ``"avg"``.
      remat: under differentiation, keep only each block's input and recompute the block's
        activations during the backward pass (``jax.checkpoint`` per block), at the cost of
        about one more forward pass. The first block, at full resolution, holds most of
        VGG's activations and must be live for its own backward pass anyway, so the saving
        is bounded (scripts/README.md, "Memory estimate and large images").
      crops: ``((layer, (top, bottom, left, right)), ...)``, static: after each listed layer
        only that part of its map is kept (a tile's window:
        :func:`nst_jax.core.geometry.plan_window`).
      row_axis: inside ``shard_map``, the mesh axis ``image``'s rows are split over: each
        device passes its rows (a multiple of the layers' pooling grid) and gets its rows of
        every map, the convolutions' borders exchanged with its neighbours
        (:mod:`nst_jax.run.rows`).
      blocks: the network: ``layers.VGG19_BLOCKS`` (default) or ``layers.VGG16_BLOCKS``.

    Returns:
      ``{layer: (h, w, c)}`` activations; conv outputs are after ReLU.
    """
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {tuple(image.shape)}")
    nested = nest_params(params)
    x = preprocess(image)
    if not remat:
        return VGG(tuple(layers), pooling, crops, row_axis, blocks).apply({"params": nested}, x)
    out = {}
    for block in _blocks(layers, pooling, crops, row_axis, blocks):
        apply = jax.checkpoint(lambda p, x, block=block: block.apply({"params": p}, x))
        x, found = apply(nested[block.name], x)
        out.update(found)
    return out


def vgg19_features(
    params: Params, images: jax.Array, layers: Sequence[str], pooling: str = "max"
) -> dict[str, jax.Array]:
    """Features of one RGB image or a batch.

    Args:
      params: ``{layer: {"kernel", "bias"}}`` as returned by ``nst_jax.load_vgg19`` (or
        :func:`nst_jax.core.conv.prepare_params`'d).
      images: ``(H, W, 3)`` or ``(N, H, W, 3)`` float RGB in [0, 1].
      layers: names of the layers to return (see ``nst_jax.LAYERS``).
      pooling: ``"max"`` or ``"avg"``.

    Returns:
      ``{layer: (h, w, c)}`` or ``{layer: (N, h, w, c)}`` activations; conv outputs are after
      ReLU.
    """
    layers = check_layers(layers)
    if images.ndim == 3:
        return image_features(params, images, layers, pooling)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (H, W, 3) or (N, H, W, 3) images, got {tuple(images.shape)}")
    return jax.vmap(lambda im: image_features(params, im, layers, pooling))(images)
