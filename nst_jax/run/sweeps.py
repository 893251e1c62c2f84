"""How a batch's contents meet its swept settings: zipped (the default: image ``i`` takes
value ``i``) or crossed (``sweep="product"``: every content with every value).

A sweep gives some settings N values (:data:`nst_jax.run.groups.PER_IMAGE`): term weights,
the learning rate, the seed. Zipped, N contents take one value each (one content is
repeated N times). Crossed, C contents and M values make C x M images, content-major: image
``i * M + j`` is content ``i`` with value ``j``. Everything that goes with a content (its
style, masks, extra targets, per-style settings of one style per content) is repeated with
it, so the crossed batch is an ordinary zipped one, run as one program.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from nst_jax.config import StyleConfig
from nst_jax.run.groups import PER_IMAGE, PER_STYLE

SWEEPS = ("zip", "product")


def crossed(content, style, config: StyleConfig, masks, extra) -> tuple:
    """``(content, style, config, masks, extra)`` with every content crossed with every
    swept value (module docstring); unchanged without a sweep or with one content.

    Raises:
      ValueError: a per-image setting whose length is neither the sweep's nor 1.
    """
    values = config.sweep_size
    content = jnp.asarray(content)
    if values is None or content.ndim == 3 or content.shape[0] == 1:
        return content, style, config, masks, extra
    count = content.shape[0]
    repeat = lambda a: jnp.repeat(jnp.asarray(a), values, axis=0)  # noqa: E731
    own_styles = _own_styles(style, count, config, masks)
    if own_styles:
        style = [s for s in style for _ in range(values)] if _listed(style) else repeat(style)
    changes = {}
    for field in PER_IMAGE:
        value = getattr(config, field)
        if isinstance(value, tuple):
            if len(value) != values:
                raise ValueError(f"{field} has {len(value)} values for a sweep of {values}")
            changes[field] = value * count
    for field in PER_STYLE if own_styles else ():
        value = getattr(config, field)
        if isinstance(value, tuple) and len(value) == count:
            changes[field] = tuple(v for v in value for _ in range(values))
    if masks is not None and jnp.ndim(masks) == 4:
        masks = repeat(masks)
    if extra is not None:
        extra = jax.tree.map(repeat, extra)
    return repeat(content), style, config.replace(**changes), masks, extra


def _listed(style: Any) -> bool:
    return isinstance(style, (list, tuple))


def _own_styles(style, count: int, config: StyleConfig, masks) -> bool:
    """Whether each of the ``count`` contents has its own style (else all share theirs)."""
    if config.style_blend is not None or masks is not None:
        return False
    given = len(style) if _listed(style) else (jnp.shape(style)[0] if jnp.ndim(style) == 4 else 1)
    return given == count and count > 1
