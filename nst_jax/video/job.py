"""A video run as a job: frames written atomically as they finish into one folder, with a
record of the settings, so a killed run continues from its last finished frame and gives
the frames an uninterrupted run gives.

The folder holds ``000001.png``, ``000002.png``, ... and ``.nst-jax/video.json`` (what the
frames depend on: the clip, the settings, the styles' and weights' hashes). Each frame's
PNG carries its loss terms and warping error, so a continued run reports the whole clip.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from nst_jax.config import StyleConfig
from nst_jax.errors import InputError, shown
from nst_jax.events import Hook
from nst_jax.files import image
from nst_jax.files.atomic import atomic_write, remove_stale_parts
from nst_jax.video import frames as clips
from nst_jax.video.flow import FlowFeeder
from nst_jax.video.loop import VideoSettings, stylize_frames

RECORD = Path(".nst-jax") / "video.json"
RECORD_VERSION = 1


class VideoSummary(NamedTuple):
    """What a finished run reports.

    Attributes:
      frames: number of frames.
      warping_error: mean over consecutive pairs (``nan`` for one frame).
      terms: each loss term's mean over the frames.
      seconds: per frame, the means of ``flow``, ``waited``, ``steps`` and ``write`` over
        the frames this run made (empty when it made none).
    """

    frames: int
    warping_error: float
    terms: dict[str, float]
    seconds: dict[str, float]


def record_path(folder: str | os.PathLike) -> Path:
    """Where a frames folder keeps its run's record."""
    return Path(folder) / RECORD


def finished(folder: Path, count: int) -> int:
    """How many frames from the first are written (a run writes them in order)."""
    done = 0
    while done < count and (folder / clips.frame_name(done)).is_file():
        done += 1
    return done


def stored_result(path: Path) -> tuple[dict[str, float], float | None]:
    """A written frame's terms and warping error, checked (the file is untrusted)."""
    return _checked_result(image.read_provenance(path), path)


def _checked_result(record: Mapping[str, Any], path: Path) -> tuple[dict[str, float], float | None]:
    """A frame record's terms and warping error, or one line naming the frame."""
    terms, error = record.get("terms"), record.get("warping_error")
    numbers = isinstance(terms, dict) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in terms.values()
    )
    if not numbers or not (error is None or isinstance(error, int | float)):
        raise InputError(f"{shown(path)}: frame record damaged; --force starts over")
    return {str(k): float(v) for k, v in terms.items()}, error


def run_digest(record: Mapping[str, Any]) -> str:
    """The SHA-256 of a run's record (``video.json``), which each of its frames carries."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def check_finished(
    folder: Path, start: int, size: tuple[int, int], record: Mapping[str, Any],
    optimised: bool = True,
) -> None:  # fmt: skip
    """Refuse, before any work, a continued run whose finished frames are not its own: each
    of the first ``start`` must be a PNG of the run's frame ``size`` whose record names its
    index and the run (:func:`run_digest`; for an optimised clip, its loss terms too). They
    are untrusted, and the next frames start from them.

    Raises:
      InputError: one line naming the first frame that is not.
    """
    run = run_digest(record)
    for index in range(start):
        path = folder / clips.frame_name(index)
        try:
            stored = image.read_provenance(path)
        except InputError:
            stored = {}
        own = stored.get("frame") == index and stored.get("run") == run
        if image.probe_size(path) != tuple(size) or not own:
            raise InputError(f"{shown(path)}: not frame {index + 1} of this run "
                             f"({size[1]}x{size[0]} px); --force starts over")  # fmt: skip
        if optimised:
            _checked_result(stored, path)


def run_job(
    params: Mapping[str, Any],
    clip: clips.Clip,
    styles: np.ndarray | Sequence[np.ndarray],
    config: StyleConfig,
    settings: VideoSettings,
    folder: Path,
    record: Mapping[str, Any],
    start: int = 0,
    max_dim: int | None = None,
    on_event: Hook | None = None,
    max_pixels: int | None = image.MAX_PIXELS,
) -> VideoSummary | None:
    """Stylise ``clip`` into ``folder`` from frame ``start`` (:func:`check_folder`); a frame
    file over ``max_pixels`` is refused (:func:`nst_jax.video.frames.read`).

    Frames before ``start`` are read back from ``folder``; each new frame is written as it
    finishes, before the hook hears of it (:mod:`nst_jax.events`).

    Returns:
      The whole clip's :class:`VideoSummary`, or ``None`` when the hook stopped the run
      before the last frame (the finished frames are kept: rerunning continues).
    """
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_parts([folder / clips.frame_name(i) for i in range(start, clip.count)])
    atomic_write(record_path(folder), lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
    reach = max(settings.offsets)
    first = max(0, start - reach)
    previous = {i: clips.read_frame(folder / clips.frame_name(i)) for i in range(first, start)}
    source = clips.read(clip, max_dim, first, max_pixels)
    made, results, run = [], {}, run_digest(record)
    with FlowFeeder(source, first, start, settings.offsets, settings.flow) as feeder:
        # The whole clip's length, not what is left: a continued run chooses the same
        # convolutions (conv="auto") as the uninterrupted one.
        frames = stylize_frames(
            params, feeder, styles, config, settings, previous, on_event, clip.count
        )
        for result in frames:
            began = time.perf_counter()
            meta = {
                "frame": result.index,
                "run": run,
                "terms": result.terms,
                "warping_error": result.warping_error,
            }
            image.save(folder / clips.frame_name(result.index), result.image, metadata=meta)
            made.append({**result.seconds, "write": time.perf_counter() - began})
            results[result.index] = (result.terms, result.warping_error)
    if start + len(made) < clip.count:
        return None  # stopped by the hook
    seconds = {k: float(np.mean([m[k] for m in made])) for k in made[0]} if made else {}
    if made:
        seconds["waited"] = feeder.waited / len(made)
    return summarise(folder, clip.count, seconds, results)


def summarise(
    folder: Path, count: int, seconds: dict[str, float], known: Mapping[int, tuple] | None = None
) -> VideoSummary:
    """The clip's summary: each frame's terms and warping error from ``known`` (the frames
    this run made), the others from their written records."""
    known = known or {}
    results = [
        known[i] if i in known else stored_result(folder / clips.frame_name(i))
        for i in range(count)
    ]
    errors = [error for _, error in results if error is not None]
    names = sorted({name for terms, _ in results for name in terms})
    terms = {n: float(np.mean([t.get(n, math.nan) for t, _ in results])) for n in names}
    error = float(np.mean(errors)) if errors else math.nan
    return VideoSummary(count, error, terms, seconds)
