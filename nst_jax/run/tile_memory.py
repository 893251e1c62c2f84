"""Which tile a run needs when its whole-image step does not fit in memory.

A tiled step (:mod:`nst_jax.run.tiling`) holds the whole-image arrays (image, gradient,
Adam's moments, the content) and one window's pass through VGG at a time. Its memory is
estimated as the process's, plus XLA's analysis of one window's pass (fitted as a fixed part
plus a part per window pixel, from two compiled window sizes), plus the whole-image arrays.
"""

from __future__ import annotations

import functools
import math

from nst_jax.config import StyleConfig
from nst_jax.core import extractors, geometry, layers
from nst_jax.core.fields import program_key
from nst_jax.run import memory, tiling
from nst_jax.run.memory import GIB

# Whole-image arrays a tiled step holds besides one window's pass: the image, its gradient,
# Adam's two moments, a hook's copies of those three (the command's checkpointing keeps the
# last state), the content, and the update's temporaries: 8 counted during pass 2 (a test
# in tests/test_tiling.py), with a margin for the update (peak RSS: scripts/README.md).
WHOLE_IMAGE_ARRAYS = 10
TILE_CANDIDATES = (1024, 768, 512, 384, 256, 192, 128)
# ``auto`` tiles give one window's pass at most this share of the memory left once the
# whole-image arrays are counted, and are at most 1024 px: past that a larger tile saves
# little time (the halo's share of a window shrinks slowly with the tile) and costs gigabytes
# the rest of the machine is better off keeping.
AUTO_TILE_SHARE = 0.5


def _network(config: StyleConfig) -> tuple[str, ...]:
    return extractors.network(config.extractor, "a tiled run")


def tiled_bytes(config: StyleConfig, n: int, height: int, width: int, tile: int) -> int:
    """Peak memory of a run tiled in ``tile`` px tiles: the process, one window's pass (XLA's
    analysis), and the whole-image arrays (:data:`WHOLE_IMAGE_ARRAYS`, content features)."""
    fixed, per_pixel = _window_model(config, memory.uses_winograd(config, n, height, width))
    margin = geometry.halo(config.content_layers + config.style_layers, _network(config))
    window = fixed + per_pixel * (tile + 2 * margin) ** 2
    return memory.process_rss_bytes() + int(window) + _whole_bytes(config, n, height, width)


@functools.lru_cache(maxsize=8)
def _window_model(config: StyleConfig, winograd: bool) -> tuple[float, float]:
    """A window pass's bytes as ``fixed + per_pixel * window pixels``, fitted to XLA's
    analysis of two window sizes (compiling every candidate tile would take minutes)."""
    config = program_key(config).replace(conv="winograd" if winograd else "direct")
    params = memory.param_shapes(config, 1, 1, 1)
    margin = geometry.halo(config.content_layers + config.style_layers, _network(config))
    small, large = 128, 256
    bytes_small = tiling.window_bytes(config, params, small)
    bytes_large = tiling.window_bytes(config, params, large)
    pixels = [(t + 2 * margin) ** 2 for t in (small, large)]
    per_pixel = (bytes_large - bytes_small) / (pixels[1] - pixels[0])
    return bytes_small - per_pixel * pixels[0], per_pixel


def _whole_bytes(config: StyleConfig, n: int, height: int, width: int) -> int:
    """The whole-image arrays of a tiled run, in float32: :data:`WHOLE_IMAGE_ARRAYS` images
    and the content's features."""
    network, blocks = _network(config), extractors.extractor(config.extractor).blocks
    features = sum(
        geometry.positions(name, height, width, network) * layers.channels(name, blocks)
        for name in config.content_layers
    )
    return 4 * (n * height * width * 3 * WHOLE_IMAGE_ARRAYS + n * features)


def fitting_tile(
    config: StyleConfig,
    n: int,
    height: int,
    width: int,
    available: int | None = None,
    what: str = "this run",
) -> int | None:
    """``None`` when the untiled step fits; else the largest tile whose window pass fits in
    :data:`AUTO_TILE_SHARE` of the memory the whole-image arrays leave (or, failing that, in
    all of it); else
    ``MemoryError`` naming the largest size that fits tiled (:data:`TILE_CANDIDATES`, at
    least the layers' halo; a tile past the image's longer side is not tried)."""
    available = available if available is not None else memory.available_bytes()
    check_whole_arrays_fit(config, n, height, width, available, what)
    untiled = config.replace(tile=None)
    if available is None or memory.estimate_bytes(untiled, n, height, width) <= available:
        return None
    if max(height, width) <= geometry.smallest_tile(
        config.content_layers + config.style_layers, _network(config)
    ):
        memory.check_fits(untiled, n, height, width, available, what)  # no tile is smaller: refuse
    base = memory.process_rss_bytes() + _whole_bytes(config, n, height, width)
    for share in (AUTO_TILE_SHARE, 1.0):
        tile = _largest_tile(config, n, height, width, base + share * (available - base))
        if tile is not None:
            return tile
    smallest = geometry.smallest_tile(config.content_layers + config.style_layers, _network(config))
    tile = _tile_candidates(config, height, width)[-1]
    needed = tiled_bytes(config, n, height, width, tile)
    whole = base - memory.process_rss_bytes()
    per_pixel = whole / (height * width)
    room = available - (needed - whole)
    side = int(math.sqrt(max(room, 0) / per_pixel * max(height, width) / min(height, width)))
    if side < smallest:
        raise MemoryError(
            f"{what}: needs about {needed / GIB:.1f} GiB even in {tile} px tiles, "
            f"{available / GIB:.1f} GiB available: no image size fits"
        )
    raise MemoryError(
        f"{what}: {width}x{height} px needs about {needed / GIB:.1f} GiB even in {tile} px "
        f"tiles, {available / GIB:.1f} GiB available; about max_dim={side} fits tiled"
    )


def check_whole_arrays_fit(
    config: StyleConfig,
    n: int,
    height: int,
    width: int,
    available: int | None = None,
    what: str = "this run",
) -> None:
    """``MemoryError`` when the process and the whole-image arrays alone, which every tiled
    or untiled step holds, exceed ``available``: such a size is refused from arithmetic,
    without compiling the estimates' programs (which take seconds each at any size). The
    size named is an upper bound: it leaves out the window's pass."""
    if min(n, height, width) < 1:
        raise ValueError(f"n, height and width must be positive, got {n}, {height}, {width}")
    available = available if available is not None else memory.available_bytes()
    held, whole = memory.process_rss_bytes(), _whole_bytes(config, n, height, width)
    if available is None or held + whole <= available:
        return
    side = memory.largest_side(config, n, height, width, held + whole, available)
    smallest = geometry.smallest_tile(config.content_layers + config.style_layers, _network(config))
    fits = "no image size fits" if side < smallest else f"at most about max_dim={side} fits tiled"
    raise MemoryError(
        f"{what}: {width}x{height} px needs more than {_gib(held + whole)} in any tiles (what "
        f"the process holds, {_gib(held)}, and the whole-image arrays, {_gib(whole)}), "
        f"{_gib(max(available, 0))} available; {fits}"
    )


def _gib(size: float) -> str:
    """Bytes in GiB: one decimal, or two significant digits below 0.1 GiB."""
    return f"{size / GIB:.1f} GiB" if size >= GIB / 10 else f"{size / GIB:.2g} GiB"


def _tile_candidates(config: StyleConfig, height: int, width: int) -> list[int]:
    """:data:`TILE_CANDIDATES` from the smallest tile up to below the longer side (the
    smallest tile alone when none is)."""
    smallest = geometry.smallest_tile(config.content_layers + config.style_layers, _network(config))
    candidates = [t for t in TILE_CANDIDATES if smallest <= t < max(height, width)]
    return candidates or [smallest]


def _largest_tile(config: StyleConfig, n: int, height: int, width: int, budget: float):
    for tile in _tile_candidates(config, height, width):
        if tiled_bytes(config, n, height, width, tile) <= budget:
            return tile
    return None


def check_tiled_fits(
    config: StyleConfig,
    n: int,
    height: int,
    width: int,
    available: int | None = None,
    what: str = "this run",
) -> int | None:
    """The tile the largest scale runs in (``None``: untiled), or ``MemoryError`` when that
    does not fit: ``auto`` chooses (:func:`fitting_tile`); a given tile is checked."""
    if config.tile == "auto":
        return fitting_tile(config, n, height, width, available, what)
    check_whole_arrays_fit(config, n, height, width, available, what)
    tile = scale_tile(config, n, height, width)
    if tile is None:
        memory.check_fits(config.replace(tile=None), n, height, width, available, what)
        return None
    available = available if available is not None else memory.available_bytes()
    needed = tiled_bytes(config, n, height, width, tile)
    if available is not None and needed > available:
        raise MemoryError(
            f"{what}: {width}x{height} px needs about {needed / GIB:.1f} GiB in {tile} px "
            f"tiles, {available / GIB:.1f} GiB available; try a smaller tile or tile=auto"
        )
    return tile


def scale_tile(config: StyleConfig, n: int, height: int, width: int) -> int | None:
    """The tile a scale of ``height x width`` runs in: ``None`` (untiled) without
    ``config.tile``, or when one tile holds the image; ``auto``: :func:`fitting_tile`."""
    if config.tile is None:
        return None
    if config.tile == "auto":
        return fitting_tile(config, n, height, width)
    return config.tile if max(height, width) > config.tile else None
