"""Shapes grouped into few compiled programs: each image runs at a bucket's shape.

A batch is one compiled program per shape, so a dataset of mixed sizes would compile one
program per distinct shape (82 for 300 photos). Two ways to bound that:

- ``grid`` (default): the longest side is ``max_dim`` and the short side's ratio to it is
  rounded to the nearest of a few classes spaced by a constant factor, ``RATIO_STEP ** k``
  for ``k < RATIO_CLASSES``, in either orientation: at most ``2 * RATIO_CLASSES - 1``
  programs. An image is resized to its bucket for the run, and its result back to its own
  aspect, so the cost is a small aspect change while it is optimised (at most
  ``RATIO_STEP ** -0.5`` for ratios down to the last class).
- ``fixed``: one size ``(height, width)`` for every image, filled by ``crop`` (scaled to
  cover it, the middle kept) or ``pad`` (scaled to fit, the rest the image's edge
  repeated), for datasets that want one shape; results keep that size.
"""

from __future__ import annotations

import math

import numpy as np

from nst_jax.files import image

RATIO_STEP = 0.75
RATIO_CLASSES = 4
FITS = ("crop", "pad")


def grid_shape(height: int, width: int, max_dim: int, smallest: int) -> tuple[int, int]:
    """The bucket of an image of ``height x width``: longest side ``max_dim``, the short
    side its ratio's class (at least ``smallest`` px)."""
    ratio = min(height, width) / max(height, width)
    k = round(math.log(ratio) / math.log(RATIO_STEP)) if ratio < 1 else 0
    short = max(smallest, round(max_dim * RATIO_STEP ** min(k, RATIO_CLASSES - 1)))
    short = min(short, max_dim)
    return (max_dim, short) if height >= width else (short, max_dim)


def aspect_change(shape: tuple[int, int], bucket: tuple[int, int]) -> float:
    """How far a bucket stretches an image's aspect: the larger of the two ratios, >= 1."""
    own, theirs = shape[1] / shape[0], bucket[1] / bucket[0]
    return max(own / theirs, theirs / own)


def fit(pixels: np.ndarray, shape: tuple[int, int], mode: str) -> np.ndarray:
    """``pixels`` ``(h, w, 3)`` at ``shape``: resized (``grid``), or scaled and cropped or
    padded (``crop``, ``pad``)."""
    height, width = shape
    if mode not in FITS:
        return image.resize(pixels, height, width)
    h, w = pixels.shape[:2]
    scale = (max if mode == "crop" else min)(height / h, width / w)
    sized = image.resize(pixels, max(1, round(h * scale)), max(1, round(w * scale)))
    if mode == "crop":
        top, left = (sized.shape[0] - height) // 2, (sized.shape[1] - width) // 2
        return sized[top : top + height, left : left + width]
    top, left = (height - sized.shape[0]) // 2, (width - sized.shape[1]) // 2
    pad = ((top, height - sized.shape[0] - top), (left, width - sized.shape[1] - left), (0, 0))
    return np.pad(sized, pad, mode="edge")
