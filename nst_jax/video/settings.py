"""What video adds to the style settings (no JAX here: the command line reads it).

Weights: artistic-videos' defaults (Ruder et al.'s code) are content 5 and temporal 1e3, a
ratio of 200, on images of 0-255 values; this package's images are in [0, 1], so the same
balance with the tutorial's content weight 1e4 is ``200 * 255**2 * 1e4``
(:data:`TEMPORAL_WEIGHT`). Each long-term offset weighs the same, its pixels split by
:func:`nst_jax.core.temporal.long_term_weights`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from nst_jax.core.fields import check_choice, check_finite, setting
from nst_jax.core.objective import ObjectiveConfig

PAPER_RATIO = 1e3 / 5.0  # artistic-videos: -temporal_weight 1e3, -content_weight 5
TEMPORAL_WEIGHT = PAPER_RATIO * 255.0**2 * ObjectiveConfig().content_weight
FLOW_METHODS = ("dis", "farneback")


@dataclasses.dataclass(frozen=True)
class VideoSettings:
    """What video adds to the style settings; each field's help is its metadata, from which
    ``nst-jax video``'s options are generated.

    Attributes:
      temporal_weight: weight of the temporal loss (0 turns it off; the start stays warped).
      offsets: earlier frames each frame is held to (1 alone: the short-term loss; 1, 2, 4:
        the long-term loss). Must hold 1, whose frame is the start.
      flow: ``"dis"`` or ``"farneback"``.
    """

    temporal_weight: float = setting(TEMPORAL_WEIGHT, "weight of the temporal loss; 0 turns it off")
    offsets: tuple[int, ...] = setting(
        (1,),
        "earlier frames each frame is held to: 1, or a long-term set like 1,2,4",
        "offsets",
        flag="--flow-offsets",
    )
    flow: str = setting("dis", "optical flow: OpenCV's DIS or Farneback", choices=FLOW_METHODS)

    def __post_init__(self) -> None:
        check_finite("temporal_weight", self.temporal_weight)
        object.__setattr__(self, "offsets", check_offsets(self.offsets))
        check_choice("flow", self.flow, FLOW_METHODS)


def check_offsets(offsets: Sequence[int]) -> tuple[int, ...]:
    """``offsets`` sorted, or ``ValueError``: distinct positive integers holding 1."""
    try:
        valid = bool(offsets) and all(int(o) == o and o >= 1 for o in offsets)
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"flow offsets: expected positive integers, got {offsets!r}")
    if 1 not in offsets or len(set(offsets)) != len(offsets):
        raise ValueError(f"flow offsets: expected distinct offsets holding 1, got {list(offsets)}")
    return tuple(sorted(int(o) for o in offsets))
