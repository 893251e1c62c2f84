"""Style targets computed once per style and reused across the runs of one job.

A dataset job runs thousands of batches with a few thousand styles, each style met by many
items. :class:`StyleCache` keeps the latest styles' targets (an LRU, bounded), keyed by what
determines them: the style's pixels at the scale they are used (their SHA-1), its region,
the tile, and the settings that shape targets. One cache serves one set of params: give a
job's runs the same cache and the same params.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

from nst_jax.config import StyleConfig


class StyleCache:
    """An LRU of style targets (module docstring).

    Attributes:
      maxsize: most styles kept.
      hits: lookups answered from the cache.
      misses: lookups that computed.
    """

    def __init__(self, maxsize: int = 64):
        self.maxsize = maxsize
        self.hits = self.misses = 0
        self._entries: collections.OrderedDict = collections.OrderedDict()

    def get(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """The targets stored under ``key``, or ``compute()``'s, stored."""
        if key in self._entries:
            self.hits += 1
            self._entries.move_to_end(key)
            return self._entries[key]
        self.misses += 1
        value = compute()
        self._entries[key] = value
        if len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)
        return value


def style_key(style, mask, tile: int | None, config: StyleConfig) -> tuple:
    """What a style's targets depend on, as a cache key."""
    pixels = np.asarray(style)
    digest = hashlib.sha1(pixels.tobytes()).hexdigest()
    region = None if mask is None else hashlib.sha1(np.asarray(mask).tobytes()).hexdigest()
    return (
        digest,
        pixels.shape,
        str(pixels.dtype),
        region,
        tile,
        config.extractor,
        config.style_layers,
        config.pooling,
        config.style_loss,
    )
