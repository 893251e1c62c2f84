"""Pictures made from images for a person to look at: thumbnails and labelled contact
sheets (a run's previews and animation frames, a batch's ``--sheet``)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from nst_jax.files.image import to_uint8


def thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` scaled down (Lanczos) to fit a ``size`` x ``size`` box, aspect kept."""
    pil = Image.fromarray(to_uint8(image))
    pil.thumbnail((size, size), Image.LANCZOS)
    return np.asarray(pil, np.float32) / 255.0


def contact_sheet(
    images: list[np.ndarray], labels: list[str], columns: int, tile: int = 192
) -> np.ndarray:
    """A labelled grid of images, each scaled to fit a ``tile`` x ``tile`` box.

    Args:
      images: ``(H_i, W_i, 3)`` float RGB in [0, 1], any sizes.
      labels: one line of text under each image.
      columns: images per row.
      tile: box size in px.

    Returns:
      ``(rows * (tile + label), columns * tile, 3)`` float32 RGB in [0, 1], white background.
    """
    label_height = 16
    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (columns * tile, rows * (tile + label_height)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (array, label) in enumerate(zip(images, labels, strict=True)):
        thumb = Image.fromarray(to_uint8(thumbnail(array, tile)))
        x, y = (i % columns) * tile, (i // columns) * (tile + label_height)
        sheet.paste(thumb, (x + (tile - thumb.width) // 2, y + (tile - thumb.height) // 2))
        draw.text((x + 4, y + tile + 2), label, fill="black")
    return np.asarray(sheet, np.float32) / 255.0
