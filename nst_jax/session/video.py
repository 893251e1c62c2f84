"""A clip stylised frame by frame with its lifecycle (what ``nst-jax video`` runs): the
places it writes, its record, continuing a stopped run, progress, stopping when asked, and
the video encoded at the end (:mod:`nst_jax.video`).

IN is a video file or a folder of frames; OUT a video (``.mp4``, ``.mov``, ``.mkv``,
``.m4v``) or a folder of frames. A video's frames are made in ``OUT.frames/`` beside it and
kept: the frames folder, with its record ``.nst-jax/video.json`` (what the frames depend
on), is the run's checkpoint, and a run with ``resume=True`` continues from its last
finished frame. The video is encoded from the frames at the end, at IN's frame rate (or
``fps``), with IN's audio track where it has one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

from nst_jax.config import StyleConfig, check_honoured
from nst_jax.errors import InputError, shown
from nst_jax.files import image, json_record, weights
from nst_jax.files.digest import sha256
from nst_jax.session import inputs, outputs
from nst_jax.session.control import Control
from nst_jax.session.plugins import Plugin, plugin_records
from nst_jax.session.watch import Watcher
from nst_jax.video import flow, frames
from nst_jax.video.job import RECORD_VERSION, VideoSummary, finished, record_path
from nst_jax.video.settings import VideoSettings


@dataclasses.dataclass(frozen=True)
class VideoRequest:
    """A clip to stylise.

    Attributes:
      input: a video file or a folder of frames.
      styles: one style image, or several blended (``config.style_blend``).
      output: a video file or a folder of frames.
      config: the style settings (``steps`` per frame).
      settings: what video adds (temporal weight, flow offsets, flow method).
      max_dim: the frames' longest side.
      max_pixels: frames and styles larger than this are refused (``None``: no limit).
      fps: OUT's frame rate (default: IN's, or 24 for a folder).
      resume: continue the run the frames folder holds; ``force``: start it over.
      weights: the VGG19 weights file (``None``: searched).
      progress: draw a progress bar.
      plugins: the plug-ins the run's terms come from (recorded: a run continues only with
        the same ones).
      model: a model folder: each frame in one forward pass instead of optimisation
        (:mod:`nst_jax.session.model_video`); ``styles`` then as the model takes them.
      style_index: a magenta26 model's styles (several: blended by ``config.style_blend``).
      alpha: an adain or arbitrary model's content (0) to style (1).
    """

    input: str
    styles: tuple[str, ...]
    output: str
    config: StyleConfig = StyleConfig()
    settings: VideoSettings = VideoSettings()
    max_dim: int = image.DEFAULT_MAX_DIM
    max_pixels: int | None = image.MAX_PIXELS
    fps: float | None = None
    resume: bool = False
    force: bool = False
    weights: str | None = None
    progress: bool = False
    plugins: tuple[Plugin, ...] = ()
    model: str | None = None
    style_index: tuple[int, ...] = ()
    alpha: float | None = None


class VideoOutcome(NamedTuple):
    """What a video run did: the clip's summary (``None`` when it stopped when asked), and
    where its frames (or video) are."""

    summary: VideoSummary | None
    output: Path


def check_config(request: VideoRequest) -> None:
    """The style settings a frame loop can honour (one line naming the rest)."""
    try:
        request.config.check_style_count(len(request.styles))
        check_honoured("frames", request.config)
    except ValueError as e:
        raise InputError(str(e)) from None
    if len(request.styles) > 1 and request.config.style_blend is None:
        raise InputError("video takes one style, or several blended with style_blend")


def places(request: VideoRequest, clip: frames.Clip) -> tuple[Path | None, Path]:
    """``(video or None, frames folder)`` of OUT, checked against IN before any work."""
    out = Path(request.output)
    suffix = out.suffix.lower()
    if suffix in frames.VIDEO_SUFFIXES and not out.is_dir():
        video, folder = out, out.with_name(out.name + ".frames")
    elif suffix == "" or out.is_dir():
        video, folder = None, out
    else:
        raise InputError(
            f"{shown(out)}: OUT is a folder of frames or a video "
            f"({', '.join(frames.VIDEO_SUFFIXES)})"
        )
    source = clip.path.resolve()
    for path in filter(None, (video, folder)):
        same = path.exists() and os.path.samefile(path, clip.path)  # links, case-folding
        if same or path.resolve() == source:
            raise InputError(f"{shown(path)}: OUT is IN; inputs are never replaced")
        if clip.frames is not None and source in path.resolve().parents:
            raise InputError(f"{shown(path)}: OUT lies inside the frames folder IN")
    reads = [(clip.path, "IN"), *((Path(s), "--style") for s in request.styles)]
    planned = [outputs.Output(video, "the video")] if video is not None else []
    outputs.check_outputs(planned, reads, force=True)
    outputs.check_folder(folder, "the frames")
    return video, folder


def record(request: VideoRequest, clip: frames.Clip, weights_path) -> dict[str, Any]:
    """What the frames depend on (``OUT/.nst-jax/video.json``): a run continues only on
    the same record."""
    import jax

    made = {
        "version": RECORD_VERSION,
        "backend": jax.default_backend(),  # another backend rounds differently
        "clip": frames.clip_record(clip),
        "config": dataclasses.asdict(request.config),
        "video": dataclasses.asdict(request.settings),
        "max_dim": request.max_dim,
        "styles_sha256": [sha256(style) for style in request.styles],
        "weights_md5": weights.md5sum(weights_path),
    }
    # Only when there are some: a record from before plug-ins continues as it was.
    return made | plugin_records(request.plugins)


def check_folder(folder: Path, record: dict, resume: bool, force: bool) -> int:
    """Where the run starts: 0 for a new run, the finished frames when continuing.

    A folder with neither frames nor a record starts a new run, ``resume`` or not.

    Raises:
      InputError: frames or a record already there without ``resume`` or ``force``, or
        ``resume`` on a folder of another run (other settings, clip or backend) or with a
        damaged record.
    """
    path = record_path(folder)
    if path.parent.is_symlink():  # its record would be written elsewhere (as a job's)
        raise InputError(f"{shown(path.parent)}: is a symbolic link; a video writes only into OUT")
    has_frames = folder.is_dir() and any(folder.glob("[0-9]" * 6 + ".png"))
    if force or not (has_frames or path.exists()):
        return 0
    if not resume:
        raise InputError(
            f"{shown(folder)}: holds a run's frames or record; --resume continues it, "
            "--force starts over"
        )
    try:
        stored = json_record.read(path)
    except (OSError, ValueError):
        raise InputError(f"{shown(path)}: missing or damaged; cannot continue this run") from None
    record = json.loads(json.dumps(record))  # as stored: tuples become lists
    if stored != record:
        stored = stored if isinstance(stored, dict) else {}
        changed = sorted(k for k in {*stored, *record} if stored.get(k) != record.get(k))
        raise InputError(
            f"{shown(folder)}: was made with other settings ({', '.join(changed)}); "
            "--force starts over"
        )
    return finished(folder, record["clip"]["frames"])


def start_over(folder: Path) -> None:
    """Remove the frames and record of an earlier run (``force``)."""
    for frame in folder.glob("[0-9]" * 6 + ".png"):
        frame.unlink()
    record_path(folder).unlink(missing_ok=True)


def run_video(request: VideoRequest, control: Control | None = None) -> VideoOutcome:
    """Stylise ``request``'s clip (or continue it), then encode the video.

    Raises:
      InputError: refused before any work (one line).
    """
    from nst_jax.video import job

    if request.model is not None:
        raise ValueError("request.model: a model's video runs by run_model_video")
    control = control or Control()
    control.phase("checking settings")
    outputs.check_resume_or_force(request.resume, request.force)
    flow.require()
    check_config(request)
    clip = frames.probe(request.input)
    frames.check_frame_size(clip, request.max_pixels)
    shape = (*image.scaled_shape(*clip.size, request.max_dim), 3)
    inputs.check_size(clip.path, shape, request.config, request.max_dim)
    video, folder = places(request, clip)
    if video is not None:
        frames.ffmpeg()  # installed, before the run rather than after it
    network = inputs.network(request.config)
    weights_path = weights.find_weights(request.weights, network)
    styles = _styles(request)
    made = record(request, clip, weights_path)
    start = check_folder(folder, made, request.resume, request.force)
    job.check_finished(folder, start, shape[:2], made)
    if video is not None and video.exists() and not request.force:
        raise InputError(f"{shown(video)}: exists; --force replaces it")
    control.phase("loading weights")
    params = weights.load_weights(weights_path, network)
    if request.force:
        start_over(folder)
    watcher = Watcher(progress=request.progress, stop=control.stop_requested)
    control.phase("running")
    control.own_outputs()
    style = styles[0] if len(styles) == 1 else styles
    summary = job.run_job(
        params, clip, style, request.config, request.settings, folder, made, start,
        request.max_dim, watcher, request.max_pixels,
    )  # fmt: skip
    watcher.finish()
    if summary is None:
        return VideoOutcome(None, folder)
    if video is not None:
        fps = request.fps or clip.fps or frames.DEFAULT_FPS
        frames.write_video(folder, clip.count, fps, video, clip.path if clip.audio else None)
    return VideoOutcome(summary, video or folder)


def _styles(request: VideoRequest) -> list:
    """The style images loaded at their scale (``style_scale`` times ``max_dim``), which the
    frame loop's own scaling then keeps."""
    config, max_dim = request.config, request.max_dim
    inputs.planned_styles(request.styles, config, max_dim, request.max_pixels)
    return inputs.load_styles(request.styles, config, max_dim, request.max_pixels)
