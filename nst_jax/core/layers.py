"""VGG19's layers by Keras' names, and the shapes of their params.

The network is configuration E of Simonyan & Zisserman ("Very Deep Convolutional Networks for
Large-Scale Image Recognition", ICLR 2015) without its classifier ("notop"): five blocks of
3x3 convolutions, each block ending in a 2x2 pool. Layer names are Keras' (``block1_conv1``
... ``block5_conv4``, ``block1_pool`` ... ``block5_pool``), so the official weights file's
groups map onto them one to one.
"""

from __future__ import annotations

from collections.abc import Iterable

# (number of convs, filters) per block.
BLOCKS: tuple[tuple[int, int], ...] = ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))

CONV_LAYERS: tuple[str, ...] = tuple(
    f"block{b}_conv{c}" for b, (n, _) in enumerate(BLOCKS, start=1) for c in range(1, n + 1)
)
POOL_LAYERS: tuple[str, ...] = tuple(f"block{b}_pool" for b in range(1, len(BLOCKS) + 1))
# Every named output in network order.
LAYERS: tuple[str, ...] = tuple(
    name
    for b, (n, _) in enumerate(BLOCKS, start=1)
    for name in [f"block{b}_conv{c}" for c in range(1, n + 1)] + [f"block{b}_pool"]
)


def conv_shapes() -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """The expected ``(kernel shape, bias shape)`` of every conv layer, keyed by Keras name.

    Kernels are HWIO ``(3, 3, in, out)``, Keras' layout and Flax's.
    """
    shapes = {}
    in_channels = 3
    for b, (n, filters) in enumerate(BLOCKS, start=1):
        for c in range(1, n + 1):
            shapes[f"block{b}_conv{c}"] = ((3, 3, in_channels, filters), (filters,))
            in_channels = filters
    return shapes


def check_layers(layers: Iterable[str]) -> tuple[str, ...]:
    """Return ``layers`` as a tuple, or raise ``ValueError`` naming any unknown layer."""
    layers = tuple(layers)
    unknown = [name for name in layers if name not in LAYERS]
    if unknown:
        raise ValueError(f"unknown VGG19 layer(s) {', '.join(unknown)}; known: {', '.join(LAYERS)}")
    return layers


def deepest(layers: Iterable[str]) -> int:
    """The index in :data:`LAYERS` of the deepest of ``layers``: later layers need not be
    computed."""
    return max(LAYERS.index(name) for name in check_layers(layers))


def channels(layer: str) -> int:
    """The channels of a layer's output (a pool keeps its block's)."""
    block = int(layer[len("block")])
    return BLOCKS[block - 1][1]
