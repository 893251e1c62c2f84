"""A clip stylised by a feed-forward model, one forward pass a frame (``nst-jax video IN
--model MODEL``): every trained or imported model, with the style options ``stylize
--model`` takes (``--style``, ``--alpha``, ``--style-index``, ``--style-blend``).

The frames folder, its record and ``--resume`` work as an optimised video's
(:mod:`nst_jax.session.video`): frames are written in order, atomically, each a function of
its input frame alone, so a killed run continued by ``--resume`` writes the frames an
uninterrupted run writes. Nothing holds frames to their neighbours (no optical flow): a
network trained per image can flicker where optimisation with the temporal loss would not.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from nst_jax.errors import InputError, shown
from nst_jax.files import image
from nst_jax.files.atomic import atomic_write, remove_stale_parts
from nst_jax.files.digest import sha256
from nst_jax.session import outputs
from nst_jax.session.control import Control
from nst_jax.session.models import applier, check_model_inputs, model_vgg
from nst_jax.session.video import VideoOutcome, VideoRequest, check_folder, places, start_over
from nst_jax.video import frames
from nst_jax.video.job import (
    RECORD_VERSION,
    VideoSummary,
    check_finished,
    record_path,
    run_digest,
)


def model_record(request: VideoRequest, clip: frames.Clip, record: dict, conv: str) -> dict:
    """What a model video's frames depend on: a run continues only on the same record."""
    import jax

    return {
        "version": RECORD_VERSION,
        "backend": jax.default_backend(),
        "clip": frames.clip_record(clip),
        "model": {"method": record["method"], "params_sha256": record["params_sha256"]},
        "style_index": list(request.style_index),
        "alpha": request.alpha,
        "style_blend": request.config.style_blend,
        "styles_sha256": [sha256(style) for style in request.styles],
        "max_dim": request.max_dim,
        "conv": conv,
    }


def run_model_video(request: VideoRequest, control: Control | None = None) -> VideoOutcome:
    """Stylise ``request``'s clip with ``request.model`` (or continue it), then encode the
    video.

    Raises:
      InputError: refused before any work (one line).
    """
    from nst_jax.core.conv import NETWORK_WINOGRAD_MIN_PIXELS, resolve_conv
    from nst_jax.feedforward import model as models

    control = control or Control()
    control.phase("checking settings")
    outputs.check_resume_or_force(request.resume, request.force)
    record = models.read_record(request.model)
    blend = request.config.style_blend
    check_model_inputs(request.model, record, request.styles, request.alpha,
                       request.style_index, blend, needs_index=True)  # fmt: skip
    clip = frames.probe(request.input)
    frames.check_frame_size(clip, request.max_pixels)
    video, folder = places(request, clip)
    if video is not None:
        frames.ffmpeg()
    vgg_path = model_vgg(request.model, request.weights, record)
    height, width = image.scaled_shape(*clip.size, request.max_dim)
    conv = resolve_conv(request.config.conv, clip.count * height * width,
                        NETWORK_WINOGRAD_MIN_PIXELS)  # fmt: skip
    made = model_record(request, clip, record, conv)
    start = check_folder(folder, made, request.resume, request.force)
    check_finished(folder, start, (height, width), made, optimised=False)
    if video is not None and video.exists() and not request.force:
        raise InputError(f"{shown(video)}: exists; --force replaces it")
    apply = _applier(request, record, vgg_path, conv)
    if request.force:
        start_over(folder)
    control.phase("running")
    control.own_outputs()
    seconds = _frames(request, clip, folder, made, start, apply, control)
    if seconds is None:
        return VideoOutcome(None, folder)
    if video is not None:
        fps = request.fps or clip.fps or frames.DEFAULT_FPS
        frames.write_video(folder, clip.count, fps, video, clip.path if clip.audio else None)
    return VideoOutcome(VideoSummary(clip.count, math.nan, {}, seconds), video or folder)


def _applier(request: VideoRequest, record: dict, vgg_path, conv: str):
    """``apply(frame) -> frame`` with the model, its styles encoded once."""
    import dataclasses

    from nst_jax.feedforward import model as models
    from nst_jax.files import weights

    loaded = models.load_model(request.model)
    vgg = None if vgg_path is None else weights.load_vgg19(vgg_path)
    styles = [image.load(s, request.max_dim, request.max_pixels) for s in request.styles]
    alpha = 1.0 if request.alpha is None else request.alpha
    config = dataclasses.replace(request.config, conv=conv)
    apply = applier(loaded, vgg, styles, config, alpha, None, request.style_index)
    chosen = tuple(range(len(styles) or len(request.style_index)))
    return lambda frame: apply(frame[None], [chosen])[0]


def _frames(request, clip, folder: Path, made: dict, start: int, apply, control) -> Any:
    """Write the frames from ``start``; the mean seconds a frame, or ``None`` if stopped."""
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_parts([folder / frames.frame_name(i) for i in range(start, clip.count)])
    atomic_write(record_path(folder), lambda tmp: tmp.write_text(json.dumps(made, indent=1)))
    spent, run = [], run_digest(made)
    source = frames.read(clip, request.max_dim, start, request.max_pixels)
    for index, frame in enumerate(source, start):
        if control.stop_requested():
            return None
        began = time.perf_counter()
        result = apply(np.asarray(frame, np.float32))
        meta = {"frame": index, "run": run, "model": made["model"]}
        image.save(folder / frames.frame_name(index), result, metadata=meta)
        spent.append(time.perf_counter() - began)
    return {"apply and write": float(np.mean(spent))} if spent else {}
