"""The memory plan of a run, made before any work from the images' headers: whether each
batch fits, and if not, how it is run instead (tiles, the direct convolution), or that it is
refused. It returns its decisions and prints nothing::

    config = session.tiling_default(nst_jax.StyleConfig(steps=500))   # tile="auto"
    plan = session.plan_memory([("photo.jpg", 1, 4096, 3072)], config)
    plan.config.tile, plan.config.conv, plan.notes   # what to run, and why

A run whose estimate (XLA's analysis of its compiled step: :mod:`nst_jax.run.memory`)
exceeds what is available is tiled (``tile="auto"``, the largest tiles that fit) or, when
nothing fits, refused with the largest size that does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from nst_jax.config import StyleConfig
from nst_jax.errors import InputError

# One batch to plan: (what it is, for messages; images; height; width) of its largest scale.
Shape = tuple[object, int, int, int]


class MemoryPlan(NamedTuple):
    """The settings to run and why they differ from those given.

    Attributes:
      config: ``tile`` and ``conv`` as decided (the rest as given).
      notes: one line per decision (a tile chosen, Winograd given up), for the user.
    """

    config: StyleConfig
    notes: tuple[str, ...] = ()


def tiling_default(config: StyleConfig, masked: bool = False, style_losses=()) -> StyleConfig:
    """``config`` with ``tile="auto"`` where no tile is set and the run can be tiled (with
    each of ``style_losses``): a run that would not fit is tiled rather than refused."""
    if config.tile is not None:
        return config
    each = [config.replace(style_loss=loss) for loss in style_losses or ()] or [config]
    if all(c.untileable(masked) is None for c in each):
        return config.replace(tile="auto")
    return config


def plan_memory(
    shapes: Sequence[Shape], config: StyleConfig, limit_gib: float | None = None
) -> MemoryPlan:
    """The plan for batches of ``shapes`` (each checked once).

    With ``conv="auto"`` the direct convolution is taken where only it fits; with
    ``tile="auto"`` tiles (the largest that fit) where nothing untiled fits, else none.

    Args:
      shapes: ``(what, images, height, width)`` of each batch's largest scale.
      config: the run's settings.
      limit_gib: the memory the run may take (default: what is available).

    Raises:
      InputError: a batch that fits in no way, naming the largest size that would.
    """
    from nst_jax.run import memory

    available = int(limit_gib * memory.GIB) if limit_gib else None
    tiles, notes = [], []
    for first, *shape in dict.fromkeys(shapes):
        what = str(first)
        try:
            tile, note = _fitting_tile(config, shape, available, what)
            tiles.append(tile)
            notes += [note] if note else []
            if tile is None:
                fitting = memory.fitting_config(
                    config.replace(tile=None), *shape, available=available, what=what
                )
                if fitting.conv != config.conv:
                    notes.append(f"{what}: Winograd would not fit in memory; using conv=direct")
                    config = config.replace(conv=fitting.conv)
        except MemoryError as e:
            raise InputError(str(e)) from None
    return MemoryPlan(_decided_tile(config, tiles, limit_gib), tuple(notes))


def _decided_tile(config: StyleConfig, tiles: list, limit_gib) -> StyleConfig:
    if config.tile != "auto":
        return config
    chosen = [t for t in tiles if t is not None]
    if not chosen:
        return config.replace(tile=None)
    if limit_gib:
        # The limit is this plan's alone: the tile it chose holds for every scale.
        return config.replace(tile=min(chosen))
    # Else "auto" stays: each scale of a coarse-to-fine run is tiled only if it does not
    # fit when it starts (tile_memory.scale_tile), so the coarse scales run untiled.
    return config


def _fitting_tile(config: StyleConfig, shape, available, what: str) -> tuple[int | None, str]:
    """The tile the largest scale of a batch of ``shape`` needs (``None``: untiled), and a
    note saying so."""
    from nst_jax.run import tile_memory

    if config.tile is None:
        return None, ""
    # With "auto": untiled where that fits, else tiles rather than the direct convolution's
    # fallback: at print sizes the tiled Winograd step takes less memory and time
    # (scripts/README.md, "Print sizes"). check_tiled_fits decides both, and refuses sizes
    # whose whole-image arrays alone do not fit before it compiles anything.
    tile = tile_memory.check_tiled_fits(config, *shape, available=available, what=what)
    note = f"{what}: {shape[2]}x{shape[1]} px runs in {tile} px tiles" if tile else ""
    return tile, note


def check_style_memory(
    styles: Sequence[tuple[object, int, int]],
    shapes: Sequence[Shape],
    config: StyleConfig,
    limit_gib: float | None = None,
) -> None:
    """Refuse a style larger than every content whose forward pass (its targets) does not
    fit: ``style_scale`` can make it so (untiled runs; a tiled run computes a large
    style's Grams in tiles too).

    Args:
      styles: ``(what, height, width)`` of each style as it will be loaded.
      shapes: the batches' shapes (:func:`plan_memory`).
      config: the run's settings.
      limit_gib: as :func:`plan_memory`'s.
    """
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
                f"{available / memory.GIB:.1f} GiB available; give a smaller style_scale"
            )
