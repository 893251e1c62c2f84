"""Synthetic clips with known motion, for checking flow and temporal consistency (tests,
``scripts/bench_video.py``): a smooth random texture translated or rotated a little each
frame, with the exact flow of every frame."""

from __future__ import annotations

import numpy as np


def texture(height: int, width: int, seed: int = 0, blur: float = 2.0) -> np.ndarray:
    """``(height, width, 3)`` float32 in [0, 1]: coloured noise smoothed by a Gaussian of
    ``blur`` px, each channel stretched to [0, 1] (detail at every place, for the flow)."""
    import cv2

    noise = np.random.default_rng(seed).random((height, width, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), blur)
    low, high = smooth.min(axis=(0, 1)), smooth.max(axis=(0, 1))
    return ((smooth - low) / (high - low)).astype(np.float32)


def translated_clip(
    frames: int, size: int, shift: tuple[float, float] = (3.0, -2.0), seed: int = 0
) -> np.ndarray:
    """``(frames, size, size, 3)`` uint8: a texture moving by ``shift`` = ``(dx, dy)`` px a
    frame (whole pixels: each frame is an exact crop of one larger texture)."""
    dx, dy = (int(s) for s in shift)
    margin_x, margin_y = abs(dx) * frames, abs(dy) * frames
    big = texture(size + 2 * margin_y, size + 2 * margin_x, seed)
    out = []
    for t in range(frames):
        top, left = margin_y - dy * t, margin_x - dx * t
        out.append(big[top : top + size, left : left + size])
    return np.round(np.stack(out) * 255).astype(np.uint8)


def rotated_clip(frames: int, size: int, degrees: float = 2.0, seed: int = 0) -> np.ndarray:
    """``(frames, size, size, 3)`` uint8: a texture turning by ``degrees`` a frame
    (counter-clockwise on screen) about the frame's centre, cut from a larger texture so no
    border enters the view."""
    import cv2

    lo = (size + 3) // 4  # the same margin each side: the crop's centre is the turn's
    big_size = size + 2 * lo
    big = texture(big_size, big_size, seed)
    centre = ((big_size - 1) / 2.0, (big_size - 1) / 2.0)
    out = []
    for t in range(frames):
        matrix = cv2.getRotationMatrix2D(centre, degrees * t, 1.0)
        turned = cv2.warpAffine(big, matrix, (big_size, big_size), flags=cv2.INTER_CUBIC)
        out.append(turned[lo : lo + size, lo : lo + size])
    return np.round(np.clip(np.stack(out), 0, 1) * 255).astype(np.uint8)


def rotation_flow(size: int, degrees: float) -> np.ndarray:
    """``(size, size, 2)``: where each pixel of a frame moves when the picture turns by
    ``degrees`` about its centre as :func:`rotated_clip` turns it (``(dx, dy)``)."""
    import cv2

    centre = ((size - 1) / 2.0, (size - 1) / 2.0)
    matrix = cv2.getRotationMatrix2D(centre, degrees, 1.0)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    x = matrix[0, 0] * cols + matrix[0, 1] * rows + matrix[0, 2]
    y = matrix[1, 0] * cols + matrix[1, 1] * rows + matrix[1, 2]
    return np.stack([x - cols, y - rows], axis=-1)
