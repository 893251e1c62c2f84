"""What ``nst-jax stylize`` checks before any work and after the outputs: that JAX's backend
starts, and that the memory each batch (and each large style) needs is there, from the
images' headers, before any image is resized."""

from __future__ import annotations

import os
import sys

from nst_jax.cli import outputs
from nst_jax.config import StyleConfig
from nst_jax.errors import InputError, OutputError
from nst_jax.files import compile_cache


def check_backend() -> None:
    """Refuse, in one line, a JAX backend that cannot start (``JAX_PLATFORMS=gpu`` on a
    machine without one), before any work."""
    import jax

    try:
        jax.devices()
    except RuntimeError as e:
        platforms = os.environ.get("JAX_PLATFORMS", "")
        raise InputError(f"JAX_PLATFORMS={platforms!r}: {str(e).splitlines()[0]}") from None


def check_memory(shapes, config: StyleConfig, limit_gib: float | None) -> StyleConfig:
    """Refuse, before any image is resized, a batch whose estimated memory exceeds what is
    available. Returns the config to run: with ``--conv auto``, the direct convolution where
    only that fits; with ``--tile auto``, tiles (the largest that fit) where nothing untiled
    fits, else no tiles (each said in one line on stderr)."""
    from nst_jax.run import memory

    available = int(limit_gib * memory.GIB) if limit_gib else None
    tiles = []
    for first, *shape in dict.fromkeys(shapes):
        what = str(first)
        try:
            tiles.append(_fitting_tile(config, shape, available, what))
            if tiles[-1] is None:
                fitting = memory.fitting_config(
                    config.replace(tile=None), *shape, available=available, what=what
                )
                if fitting.conv != config.conv:
                    print(
                        f"nst-jax: {what}: Winograd would not fit in memory; using --conv direct",
                        file=sys.stderr,
                    )
                    config = config.replace(conv=fitting.conv)
        except MemoryError as e:
            raise InputError(str(e)) from None
    if config.tile == "auto":
        chosen = [t for t in tiles if t is not None]
        if not chosen:
            config = config.replace(tile=None)
        elif limit_gib:
            # The limit is this check's alone: the tile it chose holds for every scale.
            config = config.replace(tile=min(chosen))
        # Else "auto" stays: each scale of a coarse-to-fine run is tiled only if it does not
        # fit when it starts (tile_memory.scale_tile), so the coarse scales run untiled.
    return config


def check_style_memory(styles, shapes, config: StyleConfig, limit_gib: float | None) -> None:
    """Refuse a style larger than every content whose forward pass (its targets) does not
    fit: ``--style-scale`` can make it so (untiled runs; a tiled run computes a large
    style's Grams in tiles too)."""
    from nst_jax.run import memory

    largest = max((h * w for _, _, h, w in shapes), default=0)
    available = int(limit_gib * memory.GIB) if limit_gib else memory.available_bytes()
    for path, height, width in styles:
        if height * width <= largest or config.tile is not None or available is None:
            continue
        needed = memory.forward_bytes(config, height, width)
        if needed > available:
            raise InputError(
                f"{path}: the style at {width}x{height} px needs about "
                f"{needed / memory.GIB:.1f} GiB for its targets, "
                f"{available / memory.GIB:.1f} GiB available; give a smaller --style-scale"
            )


def _fitting_tile(config: StyleConfig, shape, available, what: str) -> int | None:
    """The tile the largest scale of a batch of ``shape`` needs (``None``: untiled)."""
    from nst_jax.run import memory, tile_memory

    if config.tile is None:
        return None
    if config.tile == "auto":
        # Tiles rather than the direct convolution's fallback: at print sizes the tiled
        # Winograd step takes less memory and time (scripts/README.md, "Print sizes").
        try:
            memory.check_fits(config.replace(tile=None), *shape, available=available)
            return None
        except MemoryError:
            pass
    tile = tile_memory.check_tiled_fits(config, *shape, available=available, what=what)
    if tile is not None:
        print(f"nst-jax: {what}: {shape[2]}x{shape[1]} px runs in {tile} px tiles", file=sys.stderr)
    return tile


def enable_cache(args) -> None:
    """Turn on the persistent compilation cache the command uses (``--compile-cache``, or
    the default). A chosen folder that cannot be written was refused with the outputs; an
    unusable default only costs compile time, so the run goes on without it, saying so."""
    cache = compile_cache.resolve(args.compile_cache)
    if cache is None:
        return
    try:
        outputs.check_folder(cache, "--compile-cache")
    except OutputError as e:
        if compile_cache.chosen(args.compile_cache):
            raise
        print(f"nst-jax: warning: no compilation cache: {e}", file=sys.stderr)
        return
    compile_cache.enable(cache)


def check_chosen_cache(args) -> None:
    """A ``--compile-cache`` folder given (or ``$NST_JAX_COMPILE_CACHE``) must be writable:
    checked with the outputs, before any work."""
    cache = compile_cache.resolve(args.compile_cache)
    if cache is not None and compile_cache.chosen(args.compile_cache):
        outputs.check_folder(cache, "--compile-cache")
