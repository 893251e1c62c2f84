"""Training batches: random square crops of the images in a folder, streamed.

Stateless by design: the files and crops of step ``s`` are a function of the file list, the
seed and ``s`` alone. An epoch's order is a permutation drawn from ``(seed, stream, epoch)``
and a crop's offsets from ``(seed, stream, step, slot)`` (NumPy's ``default_rng`` of those
integers). So the data position a checkpoint needs is the step number, and a resumed run
reads exactly the batches an uninterrupted run reads.

Files are decoded ahead of the training step by worker threads
(:func:`nst_jax.files.stream.prefetch`, the loader of the dataset jobs). Each image is
scaled so its shorter side is the crop's size (bilinear, :func:`nst_jax.files.image.resize`)
and cropped at a random offset along the longer side, as the AdaIN paper crops (Johnson
et al. squash the whole image to a square instead).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from nst_jax.errors import ImageError, InputError, shown
from nst_jax.files import image
from nst_jax.files.stream import prefetch
from nst_jax.files.walk import Walk, walk_inputs

CONTENT_STREAM, STYLE_STREAM = 0, 1


class TrainingFiles(NamedTuple):
    """A training folder's images (sorted) and what its walk passed over, with why: the
    policy of dataset jobs (:mod:`nst_jax.files.walk`), plus images whose header cannot be
    read."""

    files: list[Path]
    passed: list[tuple[Path, str]]


def image_files(
    folder: str | os.PathLike, option: str = "--data", max_pixels: int | None = image.MAX_PIXELS
) -> TrainingFiles:
    """The readable images below ``folder``; everything else passed over and counted, images
    over ``max_pixels`` among them (by their headers).

    Raises:
      InputError: ``folder`` is not a folder, or holds no readable image; ``max_pixels`` is
        not a pixel limit.
    """
    image.check_max_pixels(max_pixels)
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{shown(folder)}: {option} is not a folder")
    try:
        walked = walk_inputs([folder])
    except InputError:
        walked = Walk([], [])
    files, passed = [], list(walked.passed)
    for path, _ in walked.found:
        size = image.probe_size(path)
        if size is None:
            passed.append((path, "an unreadable image"))
        elif why := image.over_pixel_limit(size[1], size[0], max_pixels):
            passed.append((path, why))
        else:
            files.append(path)
    if not files:
        reason = ""
        images = passed[len(walked.passed) :] or passed  # an image's reason says the most
        if images:
            first, why = images[0]
            reason = f" ({len(passed)} passed over; {shown(first)}: {why})"
        raise InputError(f"{shown(folder)}: no readable images for {option}{reason}")
    return TrainingFiles(files, passed)


@functools.lru_cache(maxsize=8)
def epoch_order(count: int, seed: int, stream: int, epoch: int) -> np.ndarray:
    """The order in which epoch ``epoch`` visits ``count`` files."""
    return np.random.default_rng([seed, stream, epoch]).permutation(count)


def batch_indices(count: int, batch: int, step: int, seed: int, stream: int) -> list[int]:
    """The files of step ``step``'s batch: positions ``step * batch ...`` of the epochs'
    orders laid end to end."""
    indices = []
    for position in range(step * batch, (step + 1) * batch):
        epoch, index = divmod(position, count)
        indices.append(int(epoch_order(count, seed, stream, epoch)[index]))
    return indices


def random_crop(pixels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``(size, size, 3)`` crop of ``pixels`` scaled so its shorter side is ``size``."""
    height, width = pixels.shape[:2]
    scale = size / min(height, width)
    new = (max(size, round(height * scale)), max(size, round(width * scale)))
    pixels = image.resize(pixels, *new)
    top = int(rng.integers(0, new[0] - size + 1))
    left = int(rng.integers(0, new[1] - size + 1))
    return pixels[top : top + size, left : left + size]


def load_crop(
    path: Path,
    size: int,
    seed: int,
    stream: int,
    step: int,
    slot: int,
    max_pixels: int | None = image.MAX_PIXELS,
) -> np.ndarray:
    """Slot ``slot`` of step ``step``: ``path`` decoded (refused over ``max_pixels``) and
    randomly cropped."""
    rng = np.random.default_rng([seed, stream, step, slot])
    return random_crop(image.decode(path, max_pixels), size, rng)


def load_or_next(files: list[Path], index: int, crop, unreadable: set) -> np.ndarray:
    """``crop(files[index])``, or where that file cannot be decoded (a truncated JPEG the
    header check let through), the next readable file's: the same file on every run, so a
    resumed run reads what an uninterrupted one read. Each file that fails is added to
    ``unreadable``.

    Raises:
      InputError: no file can be decoded.
    """
    for k in range(len(files)):
        path = files[(index + k) % len(files)]
        try:
            return crop(path)
        except ImageError:
            unreadable.add(path)
    raise InputError(f"{shown(files[0].parent)}: no training image can be decoded")


def batches(
    files: list[Path],
    batch: int,
    size: int,
    seed: int,
    steps: range,
    stream: int = CONTENT_STREAM,
    workers: int = 2,
    unreadable: set | None = None,
    max_pixels: int | None = image.MAX_PIXELS,
) -> Iterator[np.ndarray]:
    """``(batch, size, size, 3)`` float32 crops for each step of ``steps``, in order, decoded
    ahead by ``workers`` threads (at most two batches ahead); a file that cannot be decoded
    (or has grown over ``max_pixels``) is replaced by the next readable one and added to
    ``unreadable`` (:func:`load_or_next`)."""
    image.check_max_pixels(max_pixels)  # now, not at the first batch
    unreadable = set() if unreadable is None else unreadable
    return _crops(files, batch, size, seed, steps, stream, workers, unreadable, max_pixels)


def _crops(files, batch, size, seed, steps, stream, workers, unreadable, max_pixels):
    """:func:`batches`' generator."""
    tasks = (
        (step, slot, index)
        for step in steps
        for slot, index in enumerate(batch_indices(len(files), batch, step, seed, stream))
    )

    def load(task):
        step, slot, index = task
        crop = lambda path: load_crop(path, size, seed, stream, step, slot, max_pixels)  # noqa: E731
        return load_or_next(files, index, crop, unreadable)

    crops = []
    for _, crop in prefetch(tasks, load, workers, ahead=2 * batch):
        crops.append(crop)
        if len(crops) == batch:
            yield np.stack(crops)
            crops = []
