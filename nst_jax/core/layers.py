"""The layers of the VGG networks by Keras' names, and the shapes of their params.

VGG19 and VGG16 are configurations E and D of Simonyan & Zisserman ("Very Deep
Convolutional Networks for Large-Scale Image Recognition", ICLR 2015) without their
classifier ("notop"): five blocks of 3x3 convolutions, each block ending in a 2x2 pool. A
network of this family is its ``blocks``, ``((convs, filters), ...)``. Layer names are
Keras' (``block1_conv1`` ... ``block5_conv4``, ``block1_pool`` ... ``block5_pool``), so the
official weights files' groups map onto them one to one.

Every function takes ``blocks`` (VGG19's by default); :mod:`nst_jax.core.extractors` names
the networks.
"""

from __future__ import annotations

from collections.abc import Iterable

Blocks = tuple[tuple[int, int], ...]

# (number of convs, filters) per block.
VGG19_BLOCKS: Blocks = ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))
VGG16_BLOCKS: Blocks = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
BLOCKS = VGG19_BLOCKS


def conv_layers(blocks: Blocks = BLOCKS) -> tuple[str, ...]:
    """The conv layers of the network ``blocks``, in order."""
    return tuple(
        f"block{b}_conv{c}" for b, (n, _) in enumerate(blocks, start=1) for c in range(1, n + 1)
    )


def network_layers(blocks: Blocks = BLOCKS) -> tuple[str, ...]:
    """Every named output of the network ``blocks`` in network order, pools included."""
    return tuple(
        name
        for b, (n, _) in enumerate(blocks, start=1)
        for name in [f"block{b}_conv{c}" for c in range(1, n + 1)] + [f"block{b}_pool"]
    )


CONV_LAYERS: tuple[str, ...] = conv_layers(VGG19_BLOCKS)
POOL_LAYERS: tuple[str, ...] = tuple(f"block{b}_pool" for b in range(1, len(BLOCKS) + 1))
# Every named output of VGG19 in network order.
LAYERS: tuple[str, ...] = network_layers(VGG19_BLOCKS)


def conv_shapes(blocks: Blocks = BLOCKS) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """The expected ``(kernel shape, bias shape)`` of every conv layer, keyed by Keras name.

    Kernels are HWIO ``(3, 3, in, out)``, Keras' layout and Flax's.
    """
    shapes = {}
    in_channels = 3
    for b, (n, filters) in enumerate(blocks, start=1):
        for c in range(1, n + 1):
            shapes[f"block{b}_conv{c}"] = ((3, 3, in_channels, filters), (filters,))
            in_channels = filters
    return shapes


def check_layers(layers: Iterable[str], blocks: Blocks = BLOCKS) -> tuple[str, ...]:
    """Return ``layers`` as a tuple, or raise ``ValueError`` naming any unknown layer."""
    layers, known = tuple(layers), network_layers(blocks)
    unknown = [name for name in layers if name not in known]
    if unknown:
        raise ValueError(f"unknown layer(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return layers


def deepest(layers: Iterable[str], blocks: Blocks = BLOCKS) -> int:
    """The index in the network's layers of the deepest of ``layers``: later layers need
    not be computed."""
    known = network_layers(blocks)
    return max(known.index(name) for name in check_layers(layers, blocks))


def channels(layer: str, blocks: Blocks = BLOCKS) -> int:
    """The channels of a layer's output (a pool keeps its block's)."""
    block = int(layer[len("block")])
    return blocks[block - 1][1]
