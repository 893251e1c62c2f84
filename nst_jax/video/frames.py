"""A clip's frames on disk: a video file (ffmpeg, from the imageio-ffmpeg wheel) or a folder
of numbered images, probed before any work, read in order, and written back as a video.

ffmpeg comes with ``imageio-ffmpeg`` (the ``video`` extra), so no system install is needed;
OpenCV's reader would need its own codecs and cannot copy an audio track.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from nst_jax.errors import ImageError, InputError, shown
from nst_jax.files import image, walk
from nst_jax.files.atomic import atomic_write
from nst_jax.files.digest import sha256

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Videos written: H.264 (the most widely played), audio re-encoded as AAC.
# ffmpeg's container for each video extension written.
FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".m4v": "mp4"}
VIDEO_SUFFIXES = tuple(FORMATS)
DEFAULT_FPS = 24.0  # a folder of frames carries no rate; --fps sets it


class Clip(NamedTuple):
    """What a clip holds, from a probe.

    Attributes:
      path: the video file or folder.
      frames: for a folder, its frame files in order; for a video, ``None``.
      count: number of frames.
      size: ``(height, width)`` of every frame.
      fps: frames per second (``None`` for a folder).
      audio: whether a video has an audio track.
    """

    path: Path
    frames: tuple[Path, ...] | None
    count: int
    size: tuple[int, int]
    fps: float | None
    audio: bool


def clip_record(clip: Clip) -> dict:
    """What a run's frames depend on in ``clip``: its place, length and size, and its
    contents' SHA-256 (a video file's, or the frame files' in order), so that a continued
    run notices a frame replaced under the same name, as a single run's checkpoint does."""
    if clip.frames is None:
        digest = sha256(clip.path)
    else:
        digest = hashlib.sha256("".join(sha256(f) for f in clip.frames).encode()).hexdigest()
    return {"path": str(clip.path.resolve()), "frames": clip.count, "size": clip.size,
            "sha256": digest}  # fmt: skip


def frame_name(index: int) -> str:
    """The file name of frame ``index`` (0-based) in an output folder."""
    return f"{index + 1:06d}.png"


def ffmpeg() -> str:
    """The ffmpeg executable of the imageio-ffmpeg wheel."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise InputError(
            "video files need ffmpeg: pip install 'nst_jax[video]' (or give a folder of frames)"
        ) from None
    return imageio_ffmpeg.get_ffmpeg_exe()


def probe(path: str | os.PathLike) -> Clip:
    """The clip at ``path``, checked: a folder of same-size frames (its image files in
    natural order, hidden ones left out as a walk leaves them), or a video with frames.

    Raises:
      InputError: one line naming ``path``: missing, not a video, no frames, mixed sizes.
    """
    path = Path(path)
    if path.is_dir():
        return _probe_folder(path)
    if not path.is_file():
        raise InputError(f"{shown(path)}: no such video file or folder of frames")
    return _probe_video(path)


def _numbered(name: str) -> tuple:
    # Natural order: frame2 before frame10.
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def _probe_folder(path: Path) -> Clip:
    files = sorted(
        (
            p
            for p in path.iterdir()
            if p.suffix.lower() in FRAME_SUFFIXES and not walk.hidden(p.name) and p.is_file()
        ),
        key=lambda p: _numbered(p.name),
    )
    if not files:
        raise InputError(f"{shown(path)}: folder holds no frames ({', '.join(FRAME_SUFFIXES)})")
    sizes = {}
    for frame in files:
        size = image.probe_size(frame)
        if size is None:
            raise InputError(f"{shown(frame)}: not an image")
        sizes.setdefault(size, frame)
        if len(sizes) > 1:
            (first, one), (second, other) = sizes.items()
            raise InputError(
                f"{shown(path)}: frames of mixed sizes ({one.name} {first[1]}x{first[0]}, "
                f"{other.name} {second[1]}x{second[0]})"
            )
    return Clip(path, tuple(files), len(files), next(iter(sizes)), None, False)


def _probe_video(path: Path) -> Clip:
    run = subprocess.run(
        [ffmpeg(), "-hide_banner", "-nostdin", "-i", str(path)],
        capture_output=True,
        text=True,
        errors="replace",
    )
    report = run.stderr
    # ffmpeg renders any text file as an "ansi" video (its tty reader): not a clip.
    if "Input #0" not in report or re.search(r"Input #0, tty,|Video: ansi", report):
        raise InputError(f"{shown(path)}: not a video ffmpeg can read, nor a folder of frames")
    streams = re.findall(r"Stream #\S+.*?: Video: .*", report)
    if not [s for s in streams if "(attached pic)" not in s]:  # cover art is no video
        raise InputError(f"{shown(path)}: has no video frames")
    import imageio_ffmpeg

    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        reader.close()
        count, _ = imageio_ffmpeg.count_frames_and_secs(str(path))  # "-f null": passthrough
    except (OSError, RuntimeError, StopIteration):
        raise InputError(f"{shown(path)}: has no video frames") from None
    if count == 0:
        raise InputError(f"{shown(path)}: has no video frames")
    width, height = meta["size"]
    audio = re.search(r"Stream #\S+.*?: Audio: ", report) is not None
    return Clip(path, None, count, (height, width), float(meta["fps"]), audio)


# Every decoded frame once: a variable-rate video is neither padded nor thinned to a
# constant rate, so reading gives the frames counting counted (ffmpeg's null output).
PASSTHROUGH = ["-fps_mode", "passthrough"]


def check_frame_size(clip: Clip, max_pixels: int | None) -> None:
    """Refuse a clip whose frames are larger than ``max_pixels`` (``None``: no limit), from
    its probe, before any frame is decoded: a video's frames are not limited by their file
    size any more than an image's pixels are.

    Raises:
      InputError: frames over the limit, or ``max_pixels`` not a pixel limit.
    """
    height, width = clip.size
    if why := image.over_pixel_limit(width, height, max_pixels, " per frame"):
        raise InputError(f"{shown(clip.path)}: {why}")


def read(
    clip: Clip, max_dim: int | None, start: int = 0, max_pixels: int | None = image.MAX_PIXELS
) -> Iterator[np.ndarray]:
    """The clip's frames from ``start`` on, each ``(H, W, 3)`` float32 RGB in [0, 1] with
    its longer side ``max_dim`` (as :func:`nst_jax.files.image.load` scales an image).
    A frame file over ``max_pixels`` is refused as an image is (a video's frames are
    checked by :func:`check_frame_size`).

    Raises:
      InputError: the video changed since it was probed (fewer frames than counted), a
        frame file over ``max_pixels``, or ``max_pixels`` not a pixel limit (at once).
    """
    image.check_max_pixels(max_pixels)  # now, not at the first frame
    return _frames(clip, max_dim, start, max_pixels)


def _frames(clip: Clip, max_dim: int | None, start: int, max_pixels: int | None):
    """:func:`read`'s generator."""
    if clip.frames is not None:
        for frame in clip.frames[start:]:
            yield image.load(frame, max_dim, max_pixels)
        return
    import imageio_ffmpeg

    height, width = clip.size
    reader = imageio_ffmpeg.read_frames(str(clip.path), output_params=PASSTHROUGH)
    index = -1
    try:
        next(reader)  # the meta information
        for index, data in enumerate(reader):
            if index >= clip.count:
                break
            if index < start:
                continue
            pixels = np.frombuffer(data, np.uint8).reshape(height, width, 3)
            frame = pixels.astype(np.float32) / 255.0
            if max_dim is not None:
                frame = image.resize(frame, *image.scaled_shape(height, width, max_dim))
            yield frame
    finally:
        reader.close()
    if index + 1 < clip.count:
        raise InputError(f"{shown(clip.path)}: has {index + 1} frames now, {clip.count} before")


def read_frame(path: Path) -> np.ndarray:
    """A written frame back, exactly as the loop kept it (8-bit values / 255)."""
    return image.decode(path, max_pixels=None)


def write_video(
    folder: Path, count: int, fps: float, out: Path, audio_from: Path | None = None
) -> Path:
    """Encode ``folder``'s frames ``0 .. count - 1`` (:func:`frame_name`) as the video
    ``out``, atomically; with ``audio_from``, its first audio track is added (as AAC).

    Raises:
      ImageError: ffmpeg failed (its last line is given).
    """

    def encode(tmp: Path) -> None:
        first = read_frame(folder / frame_name(0))
        height, width = first.shape[:2]
        # yuv420p needs even sides: one black row or column is added where a side is odd.
        pad = f"pad={width + width % 2}:{height + height % 2}"
        command = [ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
        command += ["-framerate", repr(fps), "-i", str(folder / "%06d.png")]
        if audio_from is not None:
            # The audio read for the frames' length only (-shortest would drop frames where
            # an encoded track ends a little early, as they often do).
            command += ["-t", f"{count / fps:.6f}", "-i", str(audio_from)]
            command += ["-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac"]
        command += ["-frames:v", str(count), "-vf", pad, "-c:v", "libx264", "-pix_fmt", "yuv420p"]
        command += ["-f", FORMATS[out.suffix.lower()], str(tmp)]
        run = subprocess.run(command, capture_output=True, text=True, errors="replace")
        if run.returncode != 0:
            last = (run.stderr.strip().splitlines() or ["no message"])[-1]
            raise ImageError(f"{shown(out)}: ffmpeg could not write the video ({last})")

    return atomic_write(out, encode)
