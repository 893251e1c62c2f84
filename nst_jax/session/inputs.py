"""A run's inputs besides its contents: styles at their scale, masks and label masks, and
the init image, checked from their headers before any work and loaded with one-line errors
naming the file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nst_jax.config import INITS, StyleConfig
from nst_jax.core import targets
from nst_jax.dataset.plan import style_dims
from nst_jax.errors import ImageError, InputError, shown
from nst_jax.files import image, weights


def network(config) -> str:
    """The network whose official weights a command loads for ``config.extractor``.

    Raises:
      InputError: an extractor of the user's own, whose params only Python can give.
    """
    if config.extractor not in weights.NETWORKS:
        raise InputError(
            f"--extractor {config.extractor}: the command loads the weights of "
            f"{', '.join(weights.NETWORKS)}; run an extractor of your own from Python "
            "(nst_jax.stylize(params=...))"
        )
    return config.extractor


def planned_styles(
    styles: Sequence, config: StyleConfig, max_dim: int | None, max_pixels: int | None
) -> list[tuple[Path, int, int]]:
    """``(style, height, width)`` of each style as it will be loaded, from its header.

    Raises:
      InputError: a style too small for the layers, or scaled past ``max_pixels``
        (``--style-scale 1e6``).
    """
    shapes, need = [], targets.min_side(config, style=True)
    for path, dim in zip(styles, style_dims(config, len(styles), max_dim), strict=True):
        size = image.probe_size(path)
        if size is None:
            continue  # unreadable: loading says why, in one line
        height, width = size if dim is None else image.scaled_shape(*size, dim)
        at = "" if dim is None else " as loaded"
        if why := targets.too_small(width, height, need, at):
            raise InputError(f"{path}: style is {why}")
        if why := image.over_pixel_limit(width, height, max_pixels, at):
            raise InputError(f"{path}: {why}")
        shapes.append((Path(path), height, width))
    return shapes


def load_styles(styles: Sequence, config: StyleConfig, max_dim, max_pixels) -> list[np.ndarray]:
    """Each style at its size (:func:`nst_jax.dataset.plan.style_dims`), checked."""
    arrays = []
    for path, dim in zip(styles, style_dims(config, len(styles), max_dim), strict=True):
        array = image.load(path, dim, max_pixels)
        check_size(path, array.shape, config, dim, style=True)
        arrays.append(array)
    return arrays


def check_size(path, shape: tuple, config, max_dim: int | None, style=False) -> None:
    """An image of ``shape`` (from its header, or loaded) too small for the layers is one
    line naming the file."""
    try:
        targets.check_size(config, (*shape[:2], 3), "image", style)
    except ValueError as e:
        raise ImageError(f"{path}: {e} (after scaling to max-dim {max_dim})") from None


def load_regions(masks, mask_labels, n_styles: int, max_pixels) -> list[np.ndarray] | None:
    """The content regions, one ``(H, W)`` mask per style, from mask files or a label image."""
    if mask_labels is not None:
        regions = list(image.load_labels(mask_labels, max_pixels))
        if len(regions) != n_styles:
            raise InputError(
                f"{mask_labels}: {len(regions)} regions (colours other than black) for "
                f"{n_styles} --style images: give one style per region"
            )
        return regions
    if masks is None:
        return None
    return [image.load_mask(path, max_pixels) for path in masks]


def load_style_masks(style_masks, max_pixels) -> list[np.ndarray | None] | None:
    """Each style's own region (or None: all of it), or None when no style has one."""
    if style_masks is None:
        return None
    return [None if p is None else image.load_mask(p, max_pixels) for p in style_masks]


def check_init(config: StyleConfig, max_pixels) -> None:
    """An init image that cannot be read fails now, naming the file, not mid-run."""
    if config.init not in INITS:
        image.load(config.init, None, max_pixels)


def mask_files(request) -> list[str]:
    """Every mask file a run reads (content regions, labels, styles' own regions)."""
    own = [m for m in request.style_masks or () if m is not None]
    files = [*(request.masks or []), *([request.mask_labels] if request.mask_labels else [])]
    return files + own


def input_paths(request, weights_path: os.PathLike) -> list[tuple[Path, str]]:
    """``(path, option)`` of every file a :class:`~nst_jax.session.StylizeRequest` reads
    besides its contents."""
    reads = [(Path(s), "--style") for s in request.styles]
    reads += [(Path(m), "--mask") for m in mask_files(request)]
    reads.append((Path(weights_path), "--weights"))
    if request.config.init not in INITS:
        reads.append((Path(request.config.init), "--init"))
    return reads


def input_roles(request, content: Path) -> list[tuple[str, Path]]:
    """Every input file of a single result with its role and rank (``--style #2``,
    ``--mask #1``, ``--style-mask #2``): a checkpoint keyed so tells a file moved to another
    role or rank from the same file where it was."""
    roles = [("content", content)]
    roles += [(f"--style #{k}", Path(s)) for k, s in enumerate(request.styles, start=1)]
    roles += [(f"--mask #{k}", Path(m)) for k, m in enumerate(request.masks or [], start=1)]
    if request.mask_labels:
        roles.append(("--mask-labels", Path(request.mask_labels)))
    for k, m in enumerate(request.style_masks or [], start=1):
        if m is not None:
            roles.append((f"--style-mask #{k}", Path(m)))
    if request.config.init not in INITS:
        roles.append(("--init", Path(request.config.init)))
    return roles


def passed_note(passed: Sequence[tuple[Path, str]], what: str = "") -> str:
    """One line on the files a walk passed over: how many, the first and why."""
    (first, why), more = passed[0], len(passed) - 1
    count = f"{len(passed)} file{'s' if len(passed) > 1 else ''} passed over{what}"
    return f"{count} ({shown(first)}: {why}{f' and {more} more' if more else ''})"
