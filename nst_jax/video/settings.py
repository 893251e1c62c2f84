"""What video adds to the style settings (no JAX here: the command line reads it).

Weights: artistic-videos' defaults (Ruder et al.'s code) are content 5 and temporal 1e3, a
ratio of 200, on images of 0-255 values; this package's images are in [0, 1], so the same
balance with the tutorial's content weight 1e4 is ``200 * 255**2 * 1e4``
(:data:`TEMPORAL_WEIGHT`). Each long-term offset weighs the same, its pixels split by
:func:`nst_jax.core.temporal.long_term_weights`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from nst_jax.config import StyleConfig

PAPER_RATIO = 1e3 / 5.0  # artistic-videos: -temporal_weight 1e3, -content_weight 5
TEMPORAL_WEIGHT = PAPER_RATIO * 255.0**2 * StyleConfig().content_weight


class VideoSettings(NamedTuple):
    """What video adds to the style settings.

    Attributes:
      temporal_weight: weight of the temporal loss (0 turns it off; the start stays warped).
      offsets: earlier frames each frame is held to (1 alone: the short-term loss; 1, 2, 4:
        the long-term loss). Must hold 1, whose frame is the start.
      flow: ``"dis"`` or ``"farneback"``.
    """

    temporal_weight: float = TEMPORAL_WEIGHT
    offsets: tuple[int, ...] = (1,)
    flow: str = "dis"


def check_offsets(offsets: Sequence[int]) -> tuple[int, ...]:
    """``offsets`` sorted, or ``ValueError``: distinct positive integers holding 1."""
    if not offsets or any(int(o) != o or o < 1 for o in offsets):
        raise ValueError(f"flow offsets: expected positive integers, got {list(offsets)}")
    if 1 not in offsets or len(set(offsets)) != len(offsets):
        raise ValueError(f"flow offsets: expected distinct offsets holding 1, got {list(offsets)}")
    return tuple(sorted(int(o) for o in offsets))
