"""A list of contents of different sizes: grouped by shape into batches, each batch run as
one program, the results returned in the list's order (as the command groups files)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from nst_jax.config import StyleConfig
from nst_jax.core.targets import check_image
from nst_jax.run.state import StyleResult

# Settings that may hold one value per image (a sweep, or each image's own style's).
PER_IMAGE = ("content_weight", "style_weight", "tv_weight", "learning_rate", "seed")
PER_STYLE = ("style_weights", "style_scales")


def stylize_groups(
    stylize_batch: Callable, contents: Sequence, style, params, config: StyleConfig, options
) -> StyleResult:
    """Run ``stylize_batch`` (``stylize`` of one batch) on each group of equal-shape
    ``contents``; the images, losses and evaluations come back as lists in order.

    A ``style`` sequence as long as ``contents`` (without a blend or masks) gives each
    content its own style; settings with one value per image, and per-style settings of
    one style per image, are split with their images.
    """
    contents = [np.asarray(check_image(c, f"content[{i}]")) for i, c in enumerate(contents)]
    n = len(contents)
    if n == 0:
        raise ValueError("content: the list is empty")
    own_style = _one_style_each(style, n, config, options.get("masks"))
    groups: dict[tuple, list[int]] = {}
    for i, content in enumerate(contents):
        groups.setdefault(content.shape, []).append(i)
    results: list = [None] * n
    for members in groups.values():
        styles = [style[i] for i in members] if own_style else style
        batch = np.stack([contents[i] for i in members])
        part = _split(config, members, n, own_style)
        result = stylize_batch(batch, styles, params, part, resume=None, **options)
        for j, i in enumerate(members):
            results[i] = (result.image[j], result.losses[j], result.evaluations[j])
    images, losses, evaluations = (list(column) for column in zip(*results, strict=True))
    return StyleResult(images, losses, evaluations)


def _one_style_each(style, n: int, config: StyleConfig, masks) -> bool:
    shared = config.style_blend is not None or masks is not None
    return isinstance(style, (list, tuple)) and len(style) == n and n > 1 and not shared


def _split(config: StyleConfig, members: list[int], n: int, own_style: bool) -> StyleConfig:
    """``config`` for the images ``members`` of ``n``: per-image values taken for them."""
    if config.sweep_size is not None and config.sweep_size != n:
        raise ValueError(f"swept settings have {config.sweep_size} values for {n} contents")
    changes = {}
    fields = PER_IMAGE + (PER_STYLE if own_style else ())
    for field in fields:
        values = getattr(config, field)
        if isinstance(values, tuple) and len(values) == n:
            changes[field] = tuple(values[i] for i in members)
    return config.replace(**changes)
