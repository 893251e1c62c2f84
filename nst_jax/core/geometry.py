"""Where each feature comes from: receptive spans, halos, and the windows of a tiled image.

A feature of a VGG layer depends on a bounded patch of input pixels, so a large image can be
computed a tile at a time, each tile inside a *window* that reaches that far past it (its
halo), or split by rows over devices with the convolutions' border rows exchanged. This
module is the arithmetic both need, walked through the network from :mod:`nst_jax.core.layers`
rather than hard-coded: it knows no arrays, devices or loops.

Every function takes ``network``, the network's layers in order (VGG19's by default,
``layers.network_layers(blocks)`` for another of the family): a ``_pool`` layer is a 2x2
pool, any other a 3x3 SAME convolution.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple

from nst_jax.core.layers import LAYERS


def _check(layers: Iterable[str], network: Sequence[str]) -> tuple[str, ...]:
    layers = tuple(layers)
    unknown = [name for name in layers if name not in network]
    if unknown:
        raise ValueError(f"unknown layer(s) {', '.join(unknown)}; known: {', '.join(network)}")
    return layers


def pools_before(layers: Iterable[str], network: Sequence[str] = LAYERS) -> int:
    """How many 2x2 pools the image passes through before the deepest of ``layers``.

    An image needs both sides at least ``2 ** pools_before(layers)`` pixels for every requested
    layer to have a non-empty output.
    """
    deepest = max(network.index(name) for name in _check(layers, network))
    return sum(1 for name in network[:deepest] if name.endswith("_pool"))


def smallest_side(layers: Iterable[str], network: Sequence[str] = LAYERS) -> int:
    """The fewest pixels an image's sides may have for every one of ``layers`` to have a
    non-empty map."""
    return 2 ** pools_before(layers, network)


def receptive_span(layer: str, network: Sequence[str] = LAYERS) -> tuple[int, int, int]:
    """``(before, after, stride)``: feature ``i`` of ``layer`` (along one axis) depends on
    input pixels ``[i * stride - before, i * stride + after]``. Walked through the network:
    a 3x3 convolution widens the span by one step of its input's stride on each side, a 2x2
    pool by one step after and doubles the stride."""
    before = after = 0
    stride = 1
    for name in network[: network.index(layer) + 1]:
        if name.endswith("_pool"):
            after += stride
            stride *= 2
        else:
            before += stride
            after += stride
    return before, after, stride


def stride(layer: str, network: Sequence[str] = LAYERS) -> int:
    """Input pixels per position of ``layer``'s map, along each axis."""
    return receptive_span(layer, network)[2]


def positions(layer: str, height: int, width: int, network: Sequence[str] = LAYERS) -> int:
    """The positions of ``layer``'s map for a ``height x width`` image."""
    step = stride(layer, network)
    return (height // step) * (width // step)


def tile_alignment(layers: Sequence[str], network: Sequence[str] = LAYERS) -> int:
    """Tiles are multiples of this, the stride of the deepest of ``layers``: every layer's
    part of a tile then starts and ends on that layer's grid."""
    return 2 ** pools_before(layers, network)


def needed_spans(
    wanted: Mapping[str, tuple[int, int]], size: int, network: Sequence[str] = LAYERS
) -> tuple[tuple[int, int], dict[str, tuple[int, int]]]:
    """Along one axis of a ``size`` px image: which input pixels, and which positions of every
    layer's map, compute the features ``wanted`` exactly.

    Walked back from the deepest wanted layer: a 3x3 convolution needs one more position of
    its input on each side (none past the map's ends, where its zero padding is the whole
    image's), a 2x2 pool the two positions under each output. A wanted span is added to
    what deeper layers need of its layer. Every span a pool reads starts on an even position,
    so a map computed on these spans pools the same pairs as the whole image's.

    Args:
      wanted: ``{layer: (start, end)}``, positions ``[start, end)`` of the layer's map.
      size: the image's side along this axis, in pixels.

    Returns:
      ``((start, end), {layer: (start, end)})``: the input pixels, and each layer's positions,
      for every layer up to the deepest wanted one.
    """
    chain = network[: max(network.index(name) for name in wanted) + 1]
    sizes = []  # each layer's input side
    for name in chain:
        sizes.append(size)
        size = size // 2 if name.endswith("_pool") else size
    spans: dict[str, tuple[int, int]] = {}
    need: tuple[int, int] | None = None
    for name, input_size in zip(reversed(chain), reversed(sizes), strict=True):
        if name in wanted:
            start, end = wanted[name]
            need = (start, end) if need is None else (min(need[0], start), max(need[1], end))
        spans[name] = need
        start, end = need
        if name.endswith("_pool"):
            need = (2 * start, 2 * end)
        else:
            need = (max(0, start - 1), min(input_size, end + 1))
    return need, dict(reversed(spans.items()))


def halo(layers: Sequence[str], network: Sequence[str] = LAYERS) -> int:
    """Pixels a tile's window reaches past its interior on each side (away from the image's
    borders) so that the interior's features at ``layers`` are exact (:func:`needed_spans`
    for a tile in the middle of a large image)."""
    tile = tile_alignment(layers, network) * 16
    steps = {name: stride(name, network) for name in layers}
    wanted = {name: (tile // step, 2 * tile // step) for name, step in steps.items()}
    (start, end), _ = needed_spans(wanted, 3 * tile, network)
    return max(tile - start, end - 2 * tile)


def smallest_tile(layers: Sequence[str], network: Sequence[str] = LAYERS) -> int:
    """The smallest tile :func:`check_tile` accepts: the halo, up to the alignment."""
    align = tile_alignment(layers, network)
    return -(-halo(layers, network) // align) * align


def check_tile(tile: int, layers: Sequence[str], network: Sequence[str] = LAYERS) -> None:
    """Raise ``ValueError`` unless ``tile`` is a multiple of the alignment and at least the
    halo (a smaller tile would compute mostly halo)."""
    align, margin = tile_alignment(layers, network), halo(layers, network)
    if tile % align:
        raise ValueError(f"tile {tile} is not a multiple of {align} (the layers' pooling grid)")
    if tile < margin:
        raise ValueError(
            f"tile {tile} is smaller than the {margin} px halo these layers need; give at "
            f"least {smallest_tile(layers, network)}"
        )


class Window(NamedTuple):
    """One tile: the interior it owns and the window (interior plus halo) computed.

    Rows ``[top, bottom)`` and columns ``[left, right)`` of the image are the interior;
    ``[wtop, wbottom) x [wleft, wright)`` the window, cut at the image's borders.
    """

    top: int
    bottom: int
    left: int
    right: int
    wtop: int
    wbottom: int
    wleft: int
    wright: int


class WindowPlan(NamedTuple):
    """How to compute one window: the window, the crop of every layer's map (each keeps what
    deeper layers and the tile's own features need, so the halo shrinks with depth), and per
    requested layer the tile's interior within its cropped map. Hashable: part of compiled
    functions' keys.

    Attributes:
      window: the tile and its window.
      crops: ``((layer, (top, bottom, left, right)), ...)`` for ``vgg.image_features``.
      interior: per requested layer, ``(top, bottom, left, right)`` in its cropped map.
    """

    window: Window
    crops: tuple
    interior: tuple


def tile_edges(height: int, width: int, tile: int) -> Iterator[tuple[int, int, int, int]]:
    """``(top, bottom, left, right)`` of each tile of a ``height x width`` image, row by row;
    the last row and column may be smaller (an image need not be a multiple of the tile)."""
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            yield top, min(top + tile, height), left, min(left + tile, width)


def interior_span(start: int, end: int, size: int, step: int) -> tuple[int, int]:
    """A tile's positions ``[start, end)`` of the pixels, on a map of stride ``step``.

    Interior edges are tile multiples (so stride multiples), except the image's end, where
    the feature map ends at ``floor(size / step)``.
    """
    return start // step, (size // step if end == size else end // step)


@functools.lru_cache(maxsize=4096)
def plan_window(
    top: int,
    bottom: int,
    left: int,
    right: int,
    height: int,
    width: int,
    layers: tuple,
    network: tuple = LAYERS,
) -> WindowPlan:
    """The :class:`WindowPlan` of the tile ``[top, bottom) x [left, right)`` of a
    ``height x width`` image, exact at ``layers`` (:func:`needed_spans` on each axis)."""
    strides = {name: stride(name, network) for name in layers}
    rows = {name: interior_span(top, bottom, height, s) for name, s in strides.items()}
    cols = {name: interior_span(left, right, width, s) for name, s in strides.items()}
    (wtop, wbottom), row_spans = needed_spans(rows, height, network)
    (wleft, wright), col_spans = needed_spans(cols, width, network)
    row0, col0 = wtop, wleft  # where the map being computed starts, in its layer's positions
    crops = []
    for name, (r0, r1) in row_spans.items():
        c0, c1 = col_spans[name]
        if name.endswith("_pool"):
            row0, col0 = row0 // 2, col0 // 2  # even: needed_spans starts pools on pairs
        crops.append((name, (r0 - row0, r1 - row0, c0 - col0, c1 - col0)))
        row0, col0 = r0, c0
    interior = tuple(
        (
            rows[name][0] - row_spans[name][0],
            rows[name][1] - row_spans[name][0],
            cols[name][0] - col_spans[name][0],
            cols[name][1] - col_spans[name][0],
        )
        for name in layers
    )
    window = Window(top, bottom, left, right, wtop, wbottom, wleft, wright)
    return WindowPlan(window, tuple(crops), interior)


def window_plans(
    height: int, width: int, tile: int, layers: Sequence[str], network: Sequence[str] = LAYERS
) -> list[WindowPlan]:
    """The plan of every tile of a ``height x width`` image, row by row."""
    layers, network = tuple(layers), tuple(network)
    return [
        plan_window(*edges, height, width, layers, network)
        for edges in tile_edges(height, width, tile)
    ]


def windows(
    height: int, width: int, tile: int, layers: Sequence[str], network: Sequence[str] = LAYERS
) -> list[Window]:
    """The tiles of a ``height x width`` image, row by row, with the windows that compute
    ``layers`` exactly on them."""
    return [plan.window for plan in window_plans(height, width, tile, layers, network)]
